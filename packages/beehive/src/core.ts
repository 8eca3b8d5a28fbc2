import { inject, injectable, multiInject, optional } from 'inversify';
import { DependencyError, DuplicateModuleError } from './beehive-errors';
import { ChannelContext } from './channel-context';
import { BeehiveOptions, beehiveOptionsSchema, resolveOptions, restartPolicySchema } from './options';
import { Logger, silentLogger } from './logger';
import { BeehiveModule, type ModuleState, type RestartPolicy } from './module';

interface Slot {
  module: BeehiveModule;
  state: ModuleState;
  restarts: number;
  abort: AbortController;
  /** Settles when the supervisor loop (all runs of start()) is over. */
  done?: Promise<void>;
  lastError?: unknown;
}

const NEVER: RestartPolicy = { type: 'Never' };

/**
 * The module registry and supervisor (KubeEdge `beehive/pkg/core`): registers modules, starts the
 * enabled ones in dependency order, restarts them per policy, and shuts down in reverse order,
 * letting each drain its mailbox first.
 */
@injectable()
export class Core {
  private readonly slots = new Map<string, Slot>();
  private order: Slot[] = [];
  private started = false;
  private stopping?: Promise<void>;
  private readonly drainTimeoutMs: number;

  constructor(
    @inject(ChannelContext) readonly ctx: ChannelContext,
    @multiInject(BeehiveModule) @optional() modules: BeehiveModule[] = [],
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
    @inject(BeehiveOptions) @optional() options?: BeehiveOptions,
  ) {
    this.drainTimeoutMs = resolveOptions(beehiveOptionsSchema, options, 'beehive').drainTimeoutMs;
    for (const m of modules ?? []) this.register(m);
  }

  register(module: BeehiveModule): void {
    if (this.started) throw new DependencyError(`cannot register "${module.name}" after start`);
    if (this.slots.has(module.name)) throw new DuplicateModuleError(module.name);
    this.slots.set(module.name, { module, state: 'registered', restarts: 0, abort: new AbortController() });
  }

  state(name: string): ModuleState | undefined {
    return this.slots.get(name)?.state;
  }

  restarts(name: string): number {
    return this.slots.get(name)?.restarts ?? 0;
  }

  lastError(name: string): unknown {
    return this.slots.get(name)?.lastError;
  }

  /** Enabled modules in start order (dependencies first; ties keep registration order). */
  startOrder(): string[] {
    const enabled = [...this.slots.values()].filter((s) => s.module.enable());
    const byName = new Map(enabled.map((s) => [s.module.name, s]));
    const out: string[] = [];
    const mark = new Map<string, 'visiting' | 'done'>();
    const visit = (s: Slot, path: string[]): void => {
      const name = s.module.name;
      if (mark.get(name) === 'done') return;
      if (mark.get(name) === 'visiting')
        throw new DependencyError(`dependency cycle: ${[...path, name].join(' -> ')}`);
      mark.set(name, 'visiting');
      for (const dep of s.module.dependencies ?? []) {
        const d = byName.get(dep);
        if (!d) {
          const why = this.slots.has(dep) ? 'is disabled' : 'is not registered';
          throw new DependencyError(`module "${name}" depends on "${dep}", which ${why}`);
        }
        visit(d, [...path, name]);
      }
      mark.set(name, 'done');
      out.push(name);
    };
    for (const s of enabled) visit(s, []);
    return out;
  }

  /**
   * Register every enabled module's mailbox (so no early message is lost), then launch them in
   * dependency order, awaiting `ready()` of a module before launching the next.
   */
  async start(): Promise<void> {
    if (this.started) return;
    const names = this.startOrder();
    this.started = true;
    for (const s of this.slots.values()) if (!s.module.enable()) s.state = 'disabled';
    this.order = names.map((n) => this.slots.get(n)!);
    for (const s of this.order) this.ctx.addModule(s.module.name, s.module.group);
    for (const s of this.order) {
      if (this.stopping) break;
      s.done = this.supervise(s);
      if (s.module.ready) {
        // A module whose start() gives up before it is ready must not hang the whole start.
        const ended = s.done.then(() => {
          throw s.lastError ?? new DependencyError(`module "${s.module.name}" ended before it was ready`);
        });
        ended.catch(() => undefined);
        await Promise.race([s.module.ready(), ended]);
      }
    }
    this.log.info({ modules: names }, 'beehive started');
  }

  /** Stop modules in reverse start order; each first drains its mailbox (bounded by drainTimeoutMs). */
  shutdown(reason = 'shutdown'): Promise<void> {
    this.stopping ??= this.doShutdown(reason);
    return this.stopping;
  }

  /** SIGINT/SIGTERM → graceful shutdown. Returns a function that removes the handlers. */
  installSignalHandlers(proc: NodeJS.Process = process, onDone?: (err?: unknown) => void): () => void {
    const handler = (sig: NodeJS.Signals): void => {
      this.log.info({ signal: sig }, 'signal received, shutting down');
      this.shutdown(sig).then(
        () => onDone?.(),
        (e) => onDone?.(e),
      );
    };
    proc.on('SIGINT', handler);
    proc.on('SIGTERM', handler);
    return () => {
      proc.off('SIGINT', handler);
      proc.off('SIGTERM', handler);
    };
  }

  private async doShutdown(reason: string): Promise<void> {
    this.log.info({ reason }, 'beehive shutting down');
    for (const s of [...this.order].reverse()) {
      const name = s.module.name;
      s.state = 'stopping';
      this.ctx.closeModule(name);
      if (s.done) {
        const drained = await settleWithin(s.done, this.drainTimeoutMs);
        if (!drained) this.log.warn({ module: name }, 'module did not drain in time; aborting');
      }
      s.abort.abort(new Error(reason));
      try {
        await s.module.stop?.();
      } catch (e) {
        this.log.error({ module: name, err: e }, 'module stop failed');
      }
      if (s.done) await settleWithin(s.done, this.drainTimeoutMs);
      s.state = 'stopped';
      this.log.info({ module: name }, 'module stopped');
    }
    this.ctx.close();
  }

  private async supervise(s: Slot): Promise<void> {
    const policy = resolveOptions(restartPolicySchema, s.module.restartPolicy ?? NEVER, 'restartPolicy');
    let backoff = policy.initialBackoffMs;
    const growth = policy.growth;
    const cap = policy.maxBackoffMs;
    for (;;) {
      s.state = 'running';
      let failed = false;
      try {
        await s.module.start(this.ctx, s.abort.signal);
      } catch (e) {
        failed = true;
        s.lastError = e;
        if (!this.stopping) this.log.error({ module: s.module.name, err: e }, 'module failed');
      }
      if (this.stopping || s.abort.signal.aborted) return;
      const again = policy.type === 'Always' || (policy.type === 'OnFailure' && failed);
      if (!again) {
        s.state = failed ? 'failed' : 'stopped';
        return;
      }
      if (policy.retries !== undefined && s.restarts >= policy.retries) {
        s.state = 'failed';
        this.log.error({ module: s.module.name, restarts: s.restarts }, 'module out of restarts');
        return;
      }
      s.state = 'restarting';
      s.restarts++;
      this.log.warn({ module: s.module.name, attempt: s.restarts, backoffMs: backoff }, 'restarting module');
      await sleep(backoff, s.abort.signal);
      if (this.stopping || s.abort.signal.aborted) return;
      backoff = Math.min(backoff * growth, cap);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

async function settleWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((r) => (t = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(t);
  }
}
