import {
  ChannelContext,
  CloudConnected,
  CloudDisconnected,
  ContextClosedError,
  Operation,
  type Message,
} from '@edgecore/beehive';
import { decodeChange, type MetaChange } from '@edgecore/metamanager/client';

export interface MeshChanges {
  changes: MetaChange[];
  /** The cloud's publish time of each change (its message timestamp), for the apply lag. */
  timestamps: number[];
}

export interface MeshProcessHandlers {
  onConnection(connected: boolean): void;
  /** True from the moment a change is taken until the last batch with it is applied. */
  onBusy?(busy: boolean): void;
  /** One batch: every change that came while the previous batch was being applied. */
  onChanges(batch: MeshChanges): Promise<void>;
}

/**
 * EdgeMesh's receive loop (KubeEdge's `process.go`). The mailbox is drained as messages come, so
 * MetaManager is never held back by a batch being applied (it answers the VIP writes that batch
 * makes); changes that pile up meanwhile become the next batch. A single change is applied at
 * once — batching costs no wait, it only takes what is already there.
 */
export async function processMessages(
  ctx: ChannelContext,
  module: string,
  signal: AbortSignal,
  h: MeshProcessHandlers,
): Promise<void> {
  let queue: MeshChanges = { changes: [], timestamps: [] };
  let running = false;
  let worker: Promise<void> = Promise.resolve();
  let failure: unknown;
  const kick = (): void => {
    if (running) return;
    running = true;
    worker = (async () => {
      try {
        while (queue.changes.length && !signal.aborted) {
          const batch = queue;
          queue = { changes: [], timestamps: [] };
          await h.onChanges(batch);
        }
      } catch (e) {
        failure = e;
      } finally {
        running = false; // in the same turn as the empty-queue check: no change is left behind
        if (!queue.changes.length) h.onBusy?.(false);
      }
    })();
  };
  const take = (msg: Message<unknown>): void => {
    if (msg.route.operation === Operation.Connect) {
      if (msg.content === CloudConnected) h.onConnection(true);
      else if (msg.content === CloudDisconnected) h.onConnection(false);
      return;
    }
    const ch = decodeChange(msg);
    if (!ch) return;
    queue.changes.push(ch);
    queue.timestamps.push(msg.header.timestamp);
    h.onBusy?.(true);
  };
  for (;;) {
    let msg: Message<unknown>;
    try {
      msg = await ctx.receiveOne(module);
    } catch (e) {
      if (e instanceof ContextClosedError) break;
      throw e;
    }
    if (signal.aborted) break;
    take(msg);
    for (let m = ctx.poll(module); m; m = ctx.poll(module)) take(m);
    if (failure) throw failure;
    kick();
  }
  await worker;
  if (failure) throw failure;
}
