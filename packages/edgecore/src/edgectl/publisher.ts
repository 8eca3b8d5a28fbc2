import {
  digestEquals,
  fromWire,
  newMessage,
  toWire,
  parseDigest,
  TypeDigest,
  type TypeDigestValue,
} from '@edgecore/beehive';
import {
  ConnectRefusedError,
  mqttClientDefaults,
  NODE_SCOPED_TYPES,
  PublishLink,
  publishLinksFor,
  RetainedReader,
  Topics,
  TYPE_TO_KIND,
  type LinkPublishOptions,
  type PublishCallback,
} from '@edgecore/edgehub';
import { IndexMap } from '@edgecore/edgemesh-module';
import { parseWrite } from '@edgecore/metamanager';
import type { IClientOptions } from 'mqtt';
import type { PlannedObject } from './manifest';

/** An object as the broker retains it (what the slice controller reads). */
export interface RetainedObject {
  type: string;
  namespace: string;
  name: string;
  /** A node-scoped object's node (its pods). */
  node?: string;
  object: Record<string, any>;
}

/** Which of `n` links a topic's publishes take (FNV-1a): always the same, so they stay in order. */
export function linkOf(topic: string, n: number): number {
  if (n <= 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < topic.length; i++) h = Math.imul(h ^ topic.charCodeAt(i), 0x01000193);
  return (h >>> 0) % n;
}

/** A digest's scope: the type, or `<type>@<node>` for a type published per node. */
function scopeOf(type: string, node: string | undefined): string {
  return NODE_SCOPED_TYPES.has(type) ? `${type}@${node ?? ''}` : type;
}

export interface PublisherOptions {
  username?: string;
  password?: string;
  prefix?: string;
  /**
   * Publishes awaiting the broker's PUBACK at once (default 1000). Below it, an MQTT 5 broker's
   * Receive Maximum (mosquitto's `max_inflight_messages`, 20 by default) is kept on each link, over
   * up to MAX_PUBLISH_LINKS links (EdgeHub's publishLinksFor; the window then at most the links'
   * maximums together).
   */
  window?: number;
  /** MQTT 5 (default: an ACL's refusal is an error) or 3.1.1 (a broker that speaks only that). */
  protocolVersion?: 4 | 5;
  /** mqtts://: the CA that signed the broker's certificate (PEM), verified with its name. */
  ca?: Buffer;
  /**
   * How long the broker keeps a tombstone (seconds, default 86,400): MQTT 5's message expiry, so
   * the broker (and a bridged one) forgets it by itself, retained or queued for a node that is
   * away. A node that comes back later converges through the digests (the object is no longer
   * retained: a resync deletes it). 0: kept until `collectTombstones`.
   */
  tombstoneTtlSeconds?: number;
}

/** A tombstone read back in begin(): its topic and when it was published (ms). */
export interface RetainedTombstone {
  topic: string;
  resource: string;
  at: number;
}

/** The default life of a tombstone on the broker: a day. */
export const DEFAULT_TOMBSTONE_TTL_SECONDS = 86_400;

/**
 * Publishes objects as retained QoS 1 messages on `{prefix}/objects/{ns}/{type}/{name}`; a delete
 * is a retained tombstone (operation delete) so nodes that were away converge when they return.
 *
 * After its objects it publishes, retained, the digest of every live object of each type it
 * touched (`{prefix}/digest/{type}`), which nodes compare with their own to notice a lost message.
 * The digest covers the whole retained state, not only this run's objects, so `begin()` first
 * reads that state back from the broker (at QoS 0, see RetainedReader); every run recomputes it
 * from the retained truth, so a digest left wrong by an interrupted or concurrent run is repaired
 * by the next one.
 */
export class ObjectPublisher {
  private rvSeq = 0;
  /**
   * Per digest scope (a type, or a type per node): key → resourceVersion of each live object
   * (tombstones are absent), and their digest, kept current at each publish (a step's digest
   * costs what it changed, not the catalog).
   */
  private readonly state = new Map<string, { live: Map<string, number>; digest: TypeDigest }>();
  /**
   * A node-scoped object's key → the nodes whose scope holds it live: found in one lookup, not by
   * asking every node's scope (a pod's apply cost grew with the fleet: 100 lookups per pod at 100
   * nodes, 1,000 at 1,000).
   */
  private readonly placed = new IndexMap();
  /**
   * Digest topic → the digest the broker retains there (read in begin(), then what finish()
   * published): finish() publishes only those that changed. Every digest reaching a node makes it
   * compare its state, so republishing unchanged ones — every node's pod digest on each apply —
   * had each of a thousand nodes check after any apply, whatever it touched.
   */
  private readonly retainedDigests = new Map<string, TypeDigestValue>();
  /** Types whose retained state was read (a node-scoped type: of every node). */
  private readonly read = new Set<string>();
  /** The live retained objects of the types read with `objects` (for the slice controller). */
  readonly retained = new Map<string, RetainedObject[]>();
  /** The retained tombstones of the types read (what `collectTombstones` may clear). */
  readonly tombstones: RetainedTombstone[] = [];
  /** Node → zone, from the nodes' retained status (with `begin(…, {zones: true})`). */
  readonly nodeZones = new Map<string, string>();
  /** Publishes awaiting their PUBACK. */
  private inflight = 0;
  /** Waiting for `inflight` to reach 0. */
  private drainWaiters: (() => void)[] = [];
  private failed?: Error;
  private wake?: () => void;

  private constructor(
    /** The links publishes go over (a topic always over the same one); digests over the first. */
    private readonly links: PublishLink[],
    private readonly topics: Topics,
    private readonly server: string,
    private readonly clientOptions: IClientOptions,
    private readonly window: number,
    private readonly tombstoneTtlSeconds: number,
  ) {}

  /**
   * Publishes go over a PublishLink of their own (a publish-only MQTT client: a fleet catalog is
   * tens of thousands of them); the retained state is read with mqtt.js (RetainedReader).
   */
  static async connect(server: string, opts: PublisherOptions = {}): Promise<ObjectPublisher> {
    const clientOptions: IClientOptions = {
      ...mqttClientDefaults(),
      clientId: `edgectl-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      // MQTT 5: a broker that refuses a publish (its ACL) says so in the PUBACK, and the apply
      // fails naming it; in 3.1.1 the broker drops it and acknowledges all the same
      protocolVersion: opts.protocolVersion ?? 5,
      username: opts.username,
      password: opts.password,
      ca: opts.ca,
    };
    const linkOptions = (protocolVersion: 4 | 5) => ({
      clientId: clientOptions.clientId!,
      username: opts.username,
      password: opts.password,
      ca: opts.ca,
      protocolVersion,
      connectTimeoutMs: clientOptions.connectTimeout,
    });
    let link: PublishLink;
    try {
      link = await PublishLink.connect(server, linkOptions(opts.protocolVersion ?? 5));
    } catch (e) {
      // a broker that speaks only 3.1.1 (aedes, the embedded one): "unacceptable protocol version"
      const code = e instanceof ConnectRefusedError ? e.reasonCode : undefined;
      if (opts.protocolVersion !== undefined || (code !== 1 && code !== 132)) throw e;
      clientOptions.protocolVersion = 4;
      link = await PublishLink.connect(server, linkOptions(4));
    }
    // a broker whose Receive Maximum is below the window (stock mosquitto: 20) would pace the
    // apply at that many publishes per round trip: more links, each within it (a link the broker
    // refuses only leaves fewer)
    const window = opts.window ?? 1000;
    const want = publishLinksFor(window, link.receiveMaximum);
    const v = clientOptions.protocolVersion === 4 ? 4 : 5;
    const more = await Promise.allSettled(
      Array.from({ length: want - 1 }, (_, i) =>
        PublishLink.connect(server, { ...linkOptions(v), clientId: `${clientOptions.clientId}-${i + 1}` }),
      ),
    );
    const links = [link, ...more.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))];
    return new ObjectPublisher(
      links,
      new Topics(opts.prefix),
      server,
      clientOptions,
      // no more waiting in the links than they may send (a payload waiting there is held)
      Math.min(
        window,
        links.reduce((n, l) => n + l.receiveMaximum, 0),
      ),
      opts.tombstoneTtlSeconds ?? DEFAULT_TOMBSTONE_TTL_SECONDS,
    );
  }

  /**
   * Read the retained state of these types (what the digests are computed over); with `objects`,
   * keep the live objects too (`retained`).
   */
  async begin(
    types: Iterable<string>,
    opts: { objects?: Iterable<string>; zones?: boolean } = {},
  ): Promise<void> {
    const keep = new Set(opts.objects ?? []);
    const want = [...new Set([...types, ...keep])].filter((t) => !this.read.has(t));
    if (!want.length && !opts.zones) return;
    const fence = `${this.topics.prefix}/cloud/sync/${this.clientOptions.clientId}`;
    const reader = await RetainedReader.open(this.server, {
      ...this.clientOptions,
      clientId: `${this.clientOptions.clientId}-read`,
    });
    try {
      if (opts.zones)
        await reader.read(this.topics.statuses(), fence, (topic, payload) => {
          const node = this.topics.statusNode(topic);
          if (!node || !payload.length) return;
          try {
            const zone = (JSON.parse(payload.toString()) as { zone?: unknown }).zone;
            if (typeof zone === 'string' && zone) this.nodeZones.set(node, zone);
          } catch {
            // a malformed status says nothing of a zone
          }
        });
      // what the broker retains of their digests (finish() sends only those that changed)
      if (want.length)
        await reader.read(
          want.map((t) => (NODE_SCOPED_TYPES.has(t) ? this.topics.digest(t, '+') : this.topics.digest(t))),
          fence,
          (topic, payload) => {
            const d = payload.length ? parseDigest(payload.toString()) : undefined;
            if (d) this.retainedDigests.set(topic, d);
          },
        );
      for (const type of want) {
        const live = new Map<string, { rv: number; node?: string; object?: Record<string, any> }>();
        await reader.read(this.topics.objectsOfType(type), fence, (topic, payload) => {
          const at = this.topics.objectAt(topic);
          if (!at) return;
          const id = at.node === undefined ? at.resource : `${at.node}|${at.resource}`;
          live.delete(id);
          if (!payload.length) return; // a forgotten tombstone: nothing retained
          try {
            const msg = fromWire(payload);
            const w = parseWrite(msg).op;
            if (w.op === 'delete')
              this.tombstones.push({ topic, resource: at.resource, at: msg.header.timestamp });
            if (w.op === 'upsert')
              live.set(id, {
                rv: w.resourceVersion,
                node: at.node,
                object: keep.has(type) ? (msg.content as Record<string, any>) : undefined,
              });
          } catch {
            // not an object message: nodes refuse it too, so it counts for neither side
          }
        });
        this.read.add(type);
        if (!NODE_SCOPED_TYPES.has(type)) this.stateOf(type, undefined);
        const objects: RetainedObject[] = [];
        for (const [id, o] of live) {
          const key = id.slice(id.indexOf('|') + 1);
          const st = this.stateOf(type, o.node)!;
          st.live.set(key, o.rv);
          this.place(type, key, o.node, true);
          st.digest.add(key.slice(0, key.indexOf('/')), key, o.rv);
          if (o.object) {
            const [namespace, , name] = key.split('/');
            objects.push({ type, namespace, name, node: o.node, object: o.object });
          }
        }
        if (keep.has(type)) this.retained.set(type, objects);
      }
    } finally {
      await reader.close();
    }
  }

  /** The digest state of a scope of a type read in begin() (created empty for a node not seen). */
  private stateOf(type: string, node: string | undefined) {
    if (!this.read.has(type)) return undefined;
    const scope = scopeOf(type, node);
    let st = this.state.get(scope);
    if (!st) this.state.set(scope, (st = { live: new Map(), digest: new TypeDigest() }));
    return st;
  }

  /** Whether the broker retains this object live (after begin() of its type). */
  has(o: PlannedObject): boolean {
    const key = `${o.namespace}/${o.type}/${o.name}`;
    if (NODE_SCOPED_TYPES.has(o.type)) return this.placements(o.type, key).length > 0;
    return this.state.get(o.type)?.live.has(key) ?? false;
  }

  /** Nodes whose retained objects include this node-scoped object (after begin()). */
  private placements(type: string, key: string): string[] {
    return this.read.has(type) ? [...this.placed.values(key)] : [];
  }

  /**
   * resourceVersions from the clock (µs resolution plus a sequence) so that a later apply wins on
   * every node, as Kubernetes' etcd revision would.
   */
  nextResourceVersion(): number {
    return Date.now() * 1000 + (this.rvSeq++ % 1000);
  }

  /**
   * Resolves when the broker has the object (PUBACK); up to `window` publishes run at once. A
   * node-scoped object that moved is deleted from the node that had it.
   */
  apply(o: PlannedObject): Promise<void> {
    const rv = this.nextResourceVersion();
    // copies by Object.assign: a spread of objects of many shapes took V8's slow path (1.3 µs more
    // per object in a microbenchmark)
    const object = Object.assign({}, o.object, {
      metadata: Object.assign({}, o.object.metadata, { resourceVersion: String(rv) }),
    });
    const moved = NODE_SCOPED_TYPES.has(o.type)
      ? this.placements(o.type, `${o.namespace}/${o.type}/${o.name}`).filter((node) => node !== o.node)
      : [];
    if (!moved.length) return this.send(o, 'update', object, rv, 0, this.tracker(o, rv));
    return this.applyMoved(o, object, rv, moved);
  }

  /** `apply` of a node-scoped object that other nodes have: deleted there first. */
  private async applyMoved(o: PlannedObject, object: object, rv: number, moved: string[]): Promise<void> {
    for (const node of moved) await this.delete({ ...o, node });
    await this.send(o, 'update', object, rv, 0, this.tracker(o, rv));
  }

  /**
   * What a PUBACK of `o` at `rv` records (undefined: deleted) — a closure over these alone: a
   * publish in flight holds it, and one made in `apply` held the object's copy too (its scope's),
   * a thousand of them across every young-generation collection of a large apply.
   */
  private tracker(o: PlannedObject, rv: number | undefined): () => void {
    return () => this.track(o, rv);
  }

  /** A retained tombstone; a node-scoped object's on every node that has it (and on `o.node`). */
  async delete(o: PlannedObject): Promise<void> {
    if (NODE_SCOPED_TYPES.has(o.type)) {
      const key = `${o.namespace}/${o.type}/${o.name}`;
      const nodes = new Set(this.placements(o.type, key));
      if (o.node && (!this.read.has(o.type) || !nodes.size)) nodes.add(o.node);
      await Promise.all([...nodes].map((node) => this.tombstone({ ...o, node })));
      return;
    }
    await this.tombstone(o);
  }

  private async tombstone(o: PlannedObject): Promise<void> {
    const rv = this.nextResourceVersion();
    const tomb = {
      apiVersion: 'v1',
      kind: TYPE_TO_KIND[o.type],
      metadata: { name: o.name, namespace: o.namespace, resourceVersion: String(rv) },
    };
    await this.send(o, 'delete', tomb, rv, this.tombstoneTtlSeconds, this.tracker(o, undefined));
  }

  /**
   * Clear the retained tombstones read in begin() that are older than `maxAgeMs` (an empty
   * retained message: the broker, and a bridged one, then keeps nothing on the topic). For a
   * broker without MQTT 5's message expiry, and for tombstones published without one. A node away
   * for longer converges through the digests. Returns how many were cleared.
   *
   * A topic re-applied by another edgectl between begin() and this clear would be cleared too
   * (MQTT has no compare-and-set): run it when no apply is under way, as `edgectl gc` is meant to.
   */
  async collectTombstones(maxAgeMs: number, now = Date.now()): Promise<number> {
    const old = this.tombstones.filter((t) => now - t.at >= maxAgeMs);
    for (const t of old) {
      await this.room();
      // a failure is thrown below, once every clear has its answer
      this.publish(t.topic, Buffer.alloc(0), { retain: true }).catch(() => undefined);
    }
    await this.drained();
    if (this.failed) throw this.failed;
    const gone = new Set(old);
    this.tombstones.splice(0, this.tombstones.length, ...this.tombstones.filter((t) => !gone.has(t)));
    return old.length;
  }

  /** The digest of a type (of a node-scoped type, a node's) as this publisher knows it (after begin()). */
  digest(type: string, node?: string): TypeDigestValue | undefined {
    return this.state.get(scopeOf(type, node))?.digest.value;
  }

  /** A publish the broker took: the object's version now (undefined: deleted). */
  private track(o: PlannedObject, rv: number | undefined): void {
    const st = this.stateOf(o.type, o.node);
    if (!st) return;
    const key = `${o.namespace}/${o.type}/${o.name}`;
    const was = st.live.get(key);
    if (was !== undefined) st.digest.remove(o.namespace, key, was);
    if (rv === undefined) {
      st.live.delete(key);
      this.place(o.type, key, o.node, false);
    } else {
      st.live.set(key, rv);
      this.place(o.type, key, o.node, true);
      st.digest.add(o.namespace, key, rv);
    }
  }

  /** Keep the placement index in step with a node-scoped scope's live objects. */
  private place(type: string, key: string, node: string | undefined, live: boolean): void {
    if (!NODE_SCOPED_TYPES.has(type)) return;
    if (live) this.placed.add(key, node ?? '');
    else this.placed.delete(key, node ?? '');
  }

  /**
   * Wait for every publish, then publish the digest of each scope read in begin() that differs
   * from the one the broker retains (a digest left wrong by an interrupted or concurrent run is
   * repaired; an unchanged one is not sent again).
   */
  async finish(): Promise<void> {
    await this.drained();
    if (this.failed) throw this.failed;
    for (const [scope, st] of this.state) {
      const at = scope.indexOf('@');
      const [type, node] = at < 0 ? [scope, undefined] : [scope.slice(0, at), scope.slice(at + 1)];
      const topic = this.topics.digest(type, node);
      const v = st.digest.value;
      const had = this.retainedDigests.get(topic);
      if (had && digestEquals(had, v) && !had.namespaces === !v.namespaces) continue;
      const d = { ...v, at: Date.now() };
      await this.links[0].publishAsync(topic, JSON.stringify(d), { retain: true });
      this.retainedDigests.set(topic, d);
    }
  }

  async close(): Promise<void> {
    await this.drained();
    await Promise.all(this.links.map((l) => l.end()));
  }

  /** The links to the broker publishes go over (more than one below its Receive Maximum). */
  get linkCount(): number {
    return this.links.length;
  }

  /** Resolves when another publish may start (fewer than `window` await their PUBACK). */
  room(): Promise<void> {
    if (this.inflight < this.window) return Promise.resolve();
    return new Promise<void>((r) => (this.wake = r));
  }

  /** Publish an object message; `acked` runs when the broker has it, before the promise resolves. */
  private send(
    o: PlannedObject,
    operation: string,
    content: object,
    rv: number,
    expirySeconds: number,
    acked: () => void,
  ): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const msg = newMessage(content, {
      source: 'edgectl',
      group: 'resource',
      operation,
      resource: `${o.namespace}/${o.type}/${o.name}`,
      resourceVersion: String(rv),
    });
    return this.publish(
      this.topics.object(o.namespace, o.type, o.name, o.node),
      toWire(msg),
      // the expiry is MQTT 5's: a 3.1.1 broker keeps a tombstone until collectTombstones
      { retain: true, expirySeconds },
      acked,
    );
  }

  /**
   * One publish in the window: resolves at its PUBACK (after `acked`), rejects with the first
   * failure of the run (kept in `failed`: later publishes and finish() throw it too).
   */
  private publish(
    topic: string,
    payload: string | Buffer,
    opts: LinkPublishOptions,
    acked?: () => void,
  ): Promise<void> {
    this.inflight++;
    let answered!: PublishCallback;
    const p = new Promise<void>((resolve, reject) => (answered = this.answer(resolve, reject, acked)));
    this.links[linkOf(topic, this.links.length)].publish(topic, payload, opts, answered);
    return p;
  }

  /**
   * A publish's PUBACK callback: a closure over the promise's ends and `acked` alone — one made
   * beside the link's call held the payload and topic (its scope's) until the PUBACK.
   */
  private answer(resolve: () => void, reject: (e: Error) => void, acked?: () => void): PublishCallback {
    return (err) => {
      this.settle();
      if (err) {
        this.failed ??= err;
        reject(err);
        return;
      }
      acked?.();
      resolve();
    };
  }

  /** Resolves once no publish awaits its PUBACK (failed or not). */
  private drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise<void>((r) => this.drainWaiters.push(r));
  }

  private settle(): void {
    this.inflight--;
    const w = this.wake;
    if (w && this.inflight < this.window) {
      this.wake = undefined;
      w();
    }
    if (this.inflight === 0 && this.drainWaiters.length) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const r of waiters) r();
    }
  }
}
