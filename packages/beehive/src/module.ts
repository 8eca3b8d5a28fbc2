import type { ChannelContext } from './channel-context';

/**
 * Restart policy of a module's `start()` (KubeEdge beehive `ModuleRestartPolicy`):
 * - `Always`: restart whenever start() returns or throws (until `retries` restarts are used up);
 * - `OnFailure`: restart only when start() throws;
 * - `Never` (default): run once.
 * Backoff between restarts starts at `initialBackoffMs`, grows by `growth`, capped at `maxBackoffMs`.
 */
export interface RestartPolicy {
  type: 'Always' | 'OnFailure' | 'Never';
  /** Maximum number of restarts; undefined = unlimited. */
  retries?: number;
  initialBackoffMs?: number;
  growth?: number;
  maxBackoffMs?: number;
}

/** Identifier for binding modules in inversify: `bind(BeehiveModule).to(MyModule)` (multi-bound). */
export const BeehiveModule = Symbol.for('edgecore.BeehiveModule');

/**
 * A beehive module. `start` is the module's life: usually a loop over `ctx.receive(this.name)`
 * that ends when the mailbox is closed and drained, or when `signal` aborts.
 */
export interface BeehiveModule {
  readonly name: string;
  readonly group: string;
  /** Modules that must be started (and ready) before this one. */
  readonly dependencies?: readonly string[];
  readonly restartPolicy?: RestartPolicy;
  /** Whether the module runs at all (KubeEdge `Enable()`; config `modules.<name>.enable`). */
  enable(): boolean;
  start(ctx: ChannelContext, signal: AbortSignal): Promise<void>;
  /** Resolves once the module serves; dependents start after it. Optional. */
  ready?(): Promise<void>;
  /** Release resources after start() ended or was aborted. Optional. */
  stop?(): Promise<void> | void;
}

/**
 * A module's readiness, for its `ready()`: resolve once it serves, reject if it cannot start.
 * A rejection nobody awaits is not an unhandled rejection.
 */
export class ReadySignal {
  readonly promise: Promise<void>;
  resolve!: () => void;
  reject!: (e: unknown) => void;
  constructor() {
    this.promise = new Promise<void>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.promise.catch(() => undefined);
  }
}

export type ModuleState =
  'registered' | 'disabled' | 'starting' | 'running' | 'restarting' | 'stopping' | 'stopped' | 'failed';
