import {
  digestEquals,
  EMPTY_DIGEST,
  Logger,
  newMessage,
  ObjectDigest,
  Operation,
  parseDigest,
  silentLogger,
  type Message,
  type TypeDigestValue,
} from '@edgecore/beehive';
import type { RetainedReader } from './retained-reader';
import { KIND_TO_TYPE, type Topics } from './topics';

/** What the state sync needs of EdgeHub and MetaManager. */
export interface StateSyncDeps {
  topics: Topics;
  node: string;
  /** A reader on a connection of its own (closed by the sync when done). */
  openReader(): Promise<RetainedReader>;
  /** Payload → beehive write, validated as a live message is (undefined: nothing to write). */
  decode(topic: string, payload: Buffer): Message<unknown> | undefined;
  /** Commit one write through MetaManager (resolves when committed or refused as stale). */
  commit(msg: Message<unknown>): Promise<void>;
  localDigest(type: string): Promise<TypeDigestValue>;
  localVersions(type: string): Promise<Map<string, number>>;
  /** Resolves when no object message is waiting for its commit and the link has been quiet. */
  settled(): Promise<void>;
  /** The newest publish time (message timestamp) of a live object of this type received. */
  newestReceived(type: string): number;
  log?: Logger;
  /**
   * The longest one check may take (default 5 min): past it, its read of retained state is cut
   * (the reader closed) so that the check ends and later ones can run — one that never ends would
   * hold off every later check.
   */
  maxCheckMs?: number;
}

export interface StateSyncStats {
  checks: number;
  /** Types whose local digest differed from the cloud's: each read back from retained state. */
  resyncs: number;
  /**
   * Types read from retained state after a subscription that asked for no retained replay (MQTT 5
   * retain handling 2): those the node did not hold as the cloud's digest says, and those with no
   * digest at all (read whole).
   */
  loads: number;
  /** Objects the cloud no longer has (no retained message at all) removed by a resync. */
  orphansDeleted: number;
  /** Resyncs that could not prove convergence (tried again later). */
  unconverged: number;
  /** Comparisons put off because the node held objects newer than the cloud's digest. */
  deferred: number;
  /** Checks that did not end within `maxCheckMs` and were abandoned. */
  abandoned: number;
  /** Fences of retained reads published again after a silence (the first one was lost). */
  fencesResent: number;
}

export function newStateSyncStats(): StateSyncStats {
  return {
    checks: 0,
    resyncs: 0,
    loads: 0,
    orphansDeleted: 0,
    unconverged: 0,
    deferred: 0,
    abandoned: 0,
    fencesResent: 0,
  };
}

/** Snapshot writes in flight at once (MetaManager group-commits them). */
const WINDOW = 256;

/**
 * Convergence without a reconnect. The cloud publishes, per object type, a retained digest
 * (count + hash of every live object's resourceVersion) after its objects. When the link is
 * quiet, the node compares each with its own (MetaManager keeps it at O(1) per write); a
 * difference means a message was lost on the way (a broker queue that overflowed, a session that
 * expired), and the type is read back from the broker's retained state at QoS 0 and committed.
 * Objects the node holds that the retained state no longer has are deleted only when that makes
 * the node's digest equal the cloud's — proof that what was read was complete.
 */
export class StateSync {
  readonly stats: StateSyncStats = newStateSyncStats();
  /** Keys written by live messages since the current resync began (never orphans). */
  private readonly liveWrites = new Set<string>();
  private resyncing = false;
  /** The live subscription skipped the retained replay: the next check loads what it would have. */
  private unloaded = false;
  private running?: Promise<boolean>;
  private again = false;
  private readonly log: Logger;

  constructor(private readonly d: StateSyncDeps) {
    this.log = d.log ?? silentLogger;
  }

  /**
   * The link subscribed to the objects without their retained replay (MQTT 5 retain handling 2:
   * a replay of the whole catalog overflows a stock broker's queue, which drops most of it). The
   * next check loads them instead: the types whose cloud digest differs from the node's, by
   * namespace groups a stock broker delivers whole, and every known type that has no digest (a
   * cloud that publishes none), read whole.
   */
  loadRetained(): void {
    this.unloaded = true;
  }

  /** A live write (EdgeHub calls this for each object message). */
  noteLiveWrite(resource: string): void {
    if (this.resyncing) this.liveWrites.add(resource);
  }

  /**
   * Compare every published digest with the node's and resync the types that differ. Runs one at a
   * time; a call during a run makes one more run after it. Resolves true when every type matched
   * (at the end of the last run).
   */
  check(): Promise<boolean> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let ok = false;
      try {
        do {
          this.again = false;
          const limit = this.d.maxCheckMs ?? 300_000;
          let watchdog: NodeJS.Timeout | undefined;
          // a check stuck past its limit (a read or a commit that never ends) is abandoned: its
          // reader is closed and the check fails, so the next one can run
          const overdue = new Promise<never>((_, reject) => {
            watchdog = setTimeout(() => {
              this.stats.abandoned++;
              this.log.warn(
                { afterMs: limit },
                'digest check has not ended: abandoning it (its reader closed) so that later checks can run',
              );
              void this.dropReader();
              reject(new Error(`digest check abandoned after ${limit} ms`));
            }, limit);
            watchdog.unref();
          });
          try {
            ok = await Promise.race([this.runOnce(), overdue]);
          } finally {
            clearTimeout(watchdog);
          }
        } while (this.again);
      } finally {
        this.running = undefined;
      }
      return ok;
    })();
    return this.running;
  }

  /** The reader stays open between checks that come close together (one connection, not one each). */
  private reader?: Promise<RetainedReader>;
  private readerIdle?: NodeJS.Timeout;
  private closed = false;

  /** Close the reader (EdgeHub stops); a check under way fails. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.readerIdle);
    const r = this.reader;
    this.reader = undefined;
    await (await r?.catch(() => undefined))?.close();
  }

  /** Forget the open reader (the node linked to another broker: reads go there now). */
  async dropReader(): Promise<void> {
    clearTimeout(this.readerIdle);
    const r = this.reader;
    this.reader = undefined;
    await (await r?.catch(() => undefined))?.close();
  }

  private async getReader(): Promise<RetainedReader> {
    clearTimeout(this.readerIdle);
    this.reader ??= this.d.openReader();
    this.reader.catch(() => (this.reader = undefined));
    return this.reader;
  }

  private releaseReader(failed: boolean): void {
    const r = this.reader;
    if (!r) return;
    const drop = (): void => {
      if (this.reader !== r) return;
      this.reader = undefined;
      void r.then(
        (x) => x.close(),
        () => undefined,
      );
    };
    if (failed || this.closed) return drop();
    this.readerIdle = setTimeout(drop, 30_000);
    this.readerIdle.unref();
  }

  private async runOnce(): Promise<boolean> {
    await this.d.settled();
    if (this.closed) return false;
    this.stats.checks++;
    let failed = true;
    try {
      const reader = await this.getReader();
      const load = this.unloaded;
      const cloud = await this.readDigests(reader);
      let ok = true;
      if (load) {
        // the replay the subscription skipped, of the types no digest describes
        for (const type of Object.values(KIND_TO_TYPE)) {
          if (cloud.has(type)) continue;
          const read = await this.readBack(reader, [this.d.topics.objectsOfType(type)], new Set());
          if (read) this.stats.loads++;
        }
      }
      for (const [type, want] of cloud) {
        if (digestEquals(await this.d.localDigest(type), want)) continue;
        // The cloud publishes a type's digest after its objects: while the node holds an object
        // published after the digest, the digest cannot be expected to match yet.
        if (want.at !== undefined && this.d.newestReceived(type) > want.at) {
          this.stats.deferred++;
          ok = false;
          continue;
        }
        if (!(await this.resync(reader, type, want, load))) ok = false;
      }
      if (load) this.unloaded = false;
      failed = false;
      return ok;
    } finally {
      this.releaseReader(failed);
    }
  }

  /** `reader.read`, its fences published again counted. */
  private async read(reader: RetainedReader, ...args: Parameters<RetainedReader['read']>): Promise<number> {
    const before = reader.fencesResent;
    try {
      return await reader.read(...args);
    } finally {
      this.stats.fencesResent += reader.fencesResent - before;
    }
  }

  private async readDigests(reader: RetainedReader): Promise<Map<string, TypeDigestValue>> {
    const out = new Map<string, TypeDigestValue>();
    const t = this.d.topics;
    await this.read(
      reader,
      [t.digests(), t.nodeDigests(this.d.node)],
      t.fence(this.d.node, 'digest'),
      (topic, payload) => {
        const type = t.digestType(topic);
        const d = payload.length ? parseDigest(payload.toString()) : undefined;
        if (type && d) out.set(type, d);
        else if (type && payload.length) this.log.warn({ topic }, 'ignoring a malformed digest');
      },
    );
    return out;
  }

  /** Read back what differs of `type`; `load`: the node loads what a skipped replay held, not a loss. */
  private async resync(
    reader: RetainedReader,
    type: string,
    want: TypeDigestValue,
    load = false,
  ): Promise<boolean> {
    if (load) this.stats.loads++;
    else this.stats.resyncs++;
    const local = await this.d.localDigest(type);
    // only the namespaces that differ, one filter each (a broker cuts a large retained burst
    // short); a cloud digest without namespaces means the whole type in one read
    const namespaces = want.namespaces
      ? [...new Set([...Object.keys(want.namespaces), ...Object.keys(local.namespaces ?? {})])].filter(
          (ns) => !digestEquals(local.namespaces?.[ns] ?? EMPTY_DIGEST, want.namespaces![ns] ?? EMPTY_DIGEST),
        )
      : ['+'];
    const why = {
      type,
      local: { count: local.count, hash: local.hash },
      cloud: { count: want.count, hash: want.hash },
      namespaces: namespaces.length,
    };
    if (load) this.log.info(why, 'loading the objects the node does not hold from retained state');
    else
      this.log.warn(
        why,
        'local objects differ from the cloud digest: a message was lost on the way (a broker queue limit such as mosquitto max_queued_messages, or an expired session); reading them back from retained state',
      );
    this.liveWrites.clear();
    this.resyncing = true;
    try {
      const seen = new Set<string>();
      let read = 0;
      const t = this.d.topics;
      for (const group of readGroups(namespaces, want, local)) {
        read += await this.readBack(
          reader,
          group.map((ns) => t.objectsOfType(type, ns)),
          seen,
        );
      }
      const deleted = await this.deleteOrphans(type, want, namespaces, seen);
      this.stats.orphansDeleted += deleted;
      if (digestEquals(await this.d.localDigest(type), want)) {
        this.log.info({ type, read, deleted }, 'resync converged');
        return true;
      }
      this.stats.unconverged++;
      const now = await this.d.localDigest(type);
      this.log.warn(
        {
          type,
          read,
          local: { count: now.count, hash: now.hash },
          cloud: { count: want.count, hash: want.hash },
        },
        'resync did not reach the cloud digest (objects still arriving, or a digest that disagrees with the retained state); trying again later',
      );
      return false;
    } finally {
      this.resyncing = false;
      this.liveWrites.clear();
    }
  }

  /** Read the retained objects of some filters back and commit them (up to WINDOW at once). */
  private async readBack(reader: RetainedReader, filters: string[], seen: Set<string>): Promise<number> {
    const inflight = new Set<Promise<void>>();
    let failed: Error | undefined;
    const t = this.d.topics;
    const read = await this.read(reader, filters, t.fence(this.d.node, 'objects'), (topic, payload) => {
      const resource = t.objectResource(topic);
      if (resource) seen.add(resource);
      let msg: Message<unknown> | undefined;
      try {
        msg = this.d.decode(topic, payload);
      } catch (e) {
        this.log.warn({ topic, err: (e as Error).message }, 'resync: dropping malformed payload');
        return;
      }
      if (!msg) return;
      const p = this.d.commit(msg).then(
        () => void inflight.delete(p),
        (e: Error) => {
          inflight.delete(p);
          failed ??= e;
        },
      );
      inflight.add(p);
      if (inflight.size >= WINDOW) return Promise.race(inflight);
    });
    await Promise.all(inflight);
    if (failed) throw failed;
    return read;
  }

  /**
   * What the node holds that the broker no longer retains at all: deleted, per namespace that
   * still differs, but only when that gives exactly the cloud's digest of the namespace (proof
   * that what was read of it was complete). Returns how many were deleted.
   */
  private async deleteOrphans(
    type: string,
    want: TypeDigestValue,
    namespaces: string[],
    seen: Set<string>,
  ): Promise<number> {
    const local = await this.d.localDigest(type);
    const whole = namespaces[0] === '+';
    const differ = whole
      ? digestEquals(local, want)
        ? []
        : ['+']
      : namespaces.filter(
          (ns) =>
            !digestEquals(local.namespaces?.[ns] ?? EMPTY_DIGEST, want.namespaces?.[ns] ?? EMPTY_DIGEST),
        );
    if (!differ.length) return 0;
    const versions = await this.d.localVersions(type);
    let deleted = 0;
    for (const ns of differ) {
      const prefix = whole ? '' : `${ns}/`;
      const target = whole ? want : (want.namespaces?.[ns] ?? EMPTY_DIGEST);
      const keep = new ObjectDigest();
      const orphans: string[] = [];
      for (const [key, rv] of versions) {
        if (!key.startsWith(prefix)) continue;
        if (seen.has(key) || this.liveWrites.has(key)) keep.add(key, rv);
        else orphans.push(key);
      }
      if (!orphans.length || !digestEquals(keep.value, target)) continue;
      await Promise.all(
        orphans.map((key) =>
          this.d.commit(
            newMessage(null, { source: 'cloud', group: 'meta', operation: Operation.Delete, resource: key }),
          ),
        ),
      );
      deleted += orphans.length;
    }
    return deleted;
  }
}

/**
 * Objects one read may bring back: fewer than a stock mosquitto's `max_queued_messages` (1,000),
 * which drops a QoS 0 message to a client with that many packets waiting to be written to it — a
 * read this size cannot overflow it however slowly the node takes it (4,000 did when the node
 * fell behind; the join is as fast: 5.2–5.3 s for 30,000 objects against 5.3–6.8).
 */
const READ_BUDGET = 900;

/** Namespaces grouped into reads of at most READ_BUDGET expected objects ('+' alone: everything). */
function readGroups(namespaces: string[], want: TypeDigestValue, local: TypeDigestValue): string[][] {
  if (namespaces[0] === '+') return [['+']];
  const groups: string[][] = [];
  let group: string[] = [];
  let size = 0;
  for (const ns of namespaces) {
    const n = Math.max(want.namespaces?.[ns]?.count ?? 0, local.namespaces?.[ns]?.count ?? 0, 1);
    if (group.length && size + n > READ_BUDGET) {
      groups.push(group);
      group = [];
      size = 0;
    }
    group.push(ns);
    size += n;
  }
  if (group.length) groups.push(group);
  return groups;
}
