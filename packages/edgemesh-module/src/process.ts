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

/** A change held by its key only (a burst past `maxQueued`): its object is read when applied. */
export interface MeshKey {
  namespace: string;
  type: string;
  name: string;
  /** The cloud's publish time of its last change. */
  timestamp: number;
}

export interface MeshProcessHandlers {
  onConnection(connected: boolean): void;
  /**
   * The objects of these keys as stored now (MetaManager's database): a change each, a delete for
   * one that is gone. With it, a burst past `maxQueued` is held by keys; without it, applied at once.
   */
  onRead?(keys: MeshKey[]): Promise<MeshChanges>;
  /** True from the moment a change is taken until the last batch with it is applied. */
  onBusy?(busy: boolean): void;
  /** One batch: every change that came while the previous batch was being applied. */
  onChanges(batch: MeshChanges): Promise<void>;
}

/**
 * How the receive loop shares the event loop with the node's intake during a burst (see
 * `processMessages`).
 */
export interface MeshPace {
  /** Changes waiting from which a burst is under way (below it, every change is applied at once). */
  burst: number;
  /** In a burst, apply only after this long without a new change (ms). */
  quietMs: number;
  /** ...or after this long waiting, whatever comes (ms): one batch, then wait again. */
  maxDeferMs: number;
  /**
   * Changes held with their objects at most; past it a burst is held by keys (`onRead` reads their
   * objects when they are applied: the memory held is a key per object, and each is read once
   * however often it changed), or without `onRead` applied at once.
   */
  maxQueued: number;
  /** Changes in one batch at most (a batch runs on the event loop the intake shares). */
  maxBatch: number;
}

export const MESH_PACE: MeshPace = {
  burst: 256,
  quietMs: 5,
  maxDeferMs: 10_000,
  maxQueued: 50_000,
  maxBatch: 1024,
};

/**
 * EdgeMesh's receive loop (KubeEdge's `process.go`). The mailbox is drained as messages come, so
 * MetaManager is never held back by a batch being applied (it answers the VIP writes that batch
 * makes); changes that pile up meanwhile become the next batch. A single change is applied at
 * once — batching costs no wait, it only takes what is already there.
 *
 * **The intake first during a burst.** The node acknowledges a cloud message once MetaManager has
 * committed it, and a stock broker keeps only ~1,000 messages for a node that has not: while this
 * loop applies changes on the same event loop, the node takes a burst more slowly than the cloud
 * sends it, and the broker drops the rest (the digests then read it back). So once `burst` changes
 * wait, the loop applies none while more keep coming (`quietMs` without one), for `maxDeferMs` at
 * most; then it applies them in batches of `maxBatch`, yielding between two and pausing no more
 * until new changes come. Past `maxQueued` waiting, a burst is held by its keys and their objects
 * read back from the store when applied (`onRead`): the memory held is bounded by the catalog, not
 * by the burst. Measured (`bench:update-path`, 10,000 services alone: 20,000 objects to the node):
 * 3.4-4.3 s with 1-2 resyncs in each of 8 applies before, 2.6-2.9 s with none in 12 runs of 14 after
 * (`PODS_PER_SERVICE=0 ONLY=whole`); the node's intake alone takes that burst in 1.6-1.8 s. 20,000
 * services alone (40,000 objects): 8.3 s and 2 resyncs with the burst applied once 20,000 waited or
 * after 2 s; held for up to 10 s, 4.7-5.8 s and none in 10 applies, the node's peak RSS 180-201 MiB;
 * with 20,000 held and the rest by keys, 5.4-9.1 s, a resync in 3 of 22 and the same peak (181-194:
 * the held objects are not what the peak is made of, and a read-back costs the intake's loop too),
 * hence 50,000 before keys.
 */
export async function processMessages(
  ctx: ChannelContext,
  module: string,
  signal: AbortSignal,
  h: MeshProcessHandlers,
  pace: MeshPace = MESH_PACE,
): Promise<void> {
  let queue: MeshChanges = { changes: [], timestamps: [] };
  /**
   * Past `maxQueued`: every later change by its key, until all of them are applied (their objects
   * read then, so a change of a key taken before keeps its order: the read is newer).
   */
  let keys: Map<string, MeshKey> | undefined;
  const waiting = (): number => queue.changes.length + (keys?.size ?? 0);
  let running = false;
  let worker: Promise<void> = Promise.resolve();
  let failure: unknown;
  /** Changes taken so far (a burst is still coming while it grows). */
  let arrivals = 0;
  /** When the loop began to hold a burst back (-1: it does not). */
  let heldSince = -1;
  /** `arrivals` when a quiet span was last seen: until more come, a held burst drains unpaused. */
  let quietAt = -1;
  const kick = (): void => {
    if (running) return;
    running = true;
    worker = (async () => {
      try {
        while (waiting() && !signal.aborted) {
          const n = waiting();
          if (n >= pace.burst && (h.onRead || n < pace.maxQueued) && arrivals !== quietAt) {
            const now = performance.now();
            if (heldSince < 0) heldSince = now;
            if (now - heldSince < pace.maxDeferMs) {
              const seen = arrivals;
              await pause(pace.quietMs, signal);
              if (arrivals !== seen && !signal.aborted) continue; // still coming: the intake first
              quietAt = seen; // the burst is in: its batches follow one another
            }
          }
          heldSince = -1;
          let batch: MeshChanges;
          if (!queue.changes.length) {
            // the keys held past maxQueued, read now
            const some: MeshKey[] = [];
            for (const [k, v] of keys!) {
              some.push(v);
              keys!.delete(k);
              if (some.length >= pace.maxBatch) break;
            }
            if (!keys!.size) keys = undefined;
            batch = await h.onRead!(some);
          } else if (queue.changes.length <= pace.maxBatch) {
            batch = queue;
            queue = { changes: [], timestamps: [] };
          } else {
            batch = {
              changes: queue.changes.splice(0, pace.maxBatch),
              timestamps: queue.timestamps.splice(0, pace.maxBatch),
            };
          }
          await h.onChanges(batch);
          // the intake's reads between two batches
          if (waiting()) await new Promise((r) => setImmediate(r));
        }
      } catch (e) {
        failure = e;
      } finally {
        running = false; // in the same turn as the empty-queue check: no change is left behind
        if (!waiting()) h.onBusy?.(false);
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
    arrivals++;
    h.onBusy?.(true);
    if (h.onRead && (keys || queue.changes.length >= pace.maxQueued)) {
      keys ??= new Map();
      const k = `${ch.namespace}/${ch.type}/${ch.name}`;
      keys.delete(k); // in the order of their last change
      keys.set(k, { namespace: ch.namespace, type: ch.type, name: ch.name, timestamp: msg.header.timestamp });
      return;
    }
    queue.changes.push(ch);
    queue.timestamps.push(msg.header.timestamp);
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

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
