import { fromWire, newMessage, toWire, TypeDigest, type TypeDigestValue } from '@edgecore/beehive';
import { RetainedReader, Topics, TYPE_TO_KIND } from '@edgecore/edgehub';
import { parseWrite } from '@edgecore/metamanager';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import type { PlannedObject } from './manifest';

export interface PublisherOptions {
  username?: string;
  password?: string;
  prefix?: string;
  /** Publishes awaiting the broker's PUBACK at once (default 1000). */
  window?: number;
}

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
   * Per type: key → resourceVersion of each live object (tombstones are absent), and their digest,
   * kept current at each publish (a step's digest costs what it changed, not the catalog).
   */
  private readonly state = new Map<string, { live: Map<string, number>; digest: TypeDigest }>();
  private readonly inflight = new Set<Promise<void>>();
  private failed?: Error;
  private wake?: () => void;

  private constructor(
    private readonly client: MqttClient,
    private readonly topics: Topics,
    private readonly server: string,
    private readonly clientOptions: IClientOptions,
    private readonly window: number,
  ) {}

  static async connect(server: string, opts: PublisherOptions = {}): Promise<ObjectPublisher> {
    const clientOptions: IClientOptions = {
      clientId: `edgectl-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      username: opts.username,
      password: opts.password,
    };
    const client = await connectAsync(server, clientOptions);
    return new ObjectPublisher(client, new Topics(opts.prefix), server, clientOptions, opts.window ?? 1000);
  }

  /** Read the retained state of these types (what the digests are computed over). */
  async begin(types: Iterable<string>): Promise<void> {
    const want = [...new Set(types)].filter((t) => !this.state.has(t));
    if (!want.length) return;
    const reader = await RetainedReader.open(this.server, {
      ...this.clientOptions,
      clientId: `${this.clientOptions.clientId}-read`,
    });
    try {
      for (const type of want) {
        const live = new Map<string, number>();
        await reader.read(
          this.topics.objectsOfType(type),
          `${this.topics.prefix}/cloud/sync/${this.clientOptions.clientId}`,
          (topic, payload) => {
            const key = this.topics.objectResource(topic);
            if (!key) return;
            live.delete(key);
            if (!payload.length) return; // a forgotten tombstone: nothing retained
            try {
              const w = parseWrite(fromWire(payload)).op;
              if (w.op === 'upsert') live.set(key, w.resourceVersion);
            } catch {
              // not an object message: nodes refuse it too, so it counts for neither side
            }
          },
        );
        const digest = new TypeDigest();
        for (const [key, rv] of live) digest.add(key.slice(0, key.indexOf('/')), key, rv);
        this.state.set(type, { live, digest });
      }
    } finally {
      await reader.close();
    }
  }

  /**
   * resourceVersions from the clock (µs resolution plus a sequence) so that a later apply wins on
   * every node, as Kubernetes' etcd revision would.
   */
  nextResourceVersion(): number {
    return Date.now() * 1000 + (this.rvSeq++ % 1000);
  }

  /** Resolves when the broker has the object (PUBACK); up to `window` publishes run at once. */
  async apply(o: PlannedObject): Promise<void> {
    const rv = this.nextResourceVersion();
    const object = { ...o.object, metadata: { ...o.object.metadata, resourceVersion: String(rv) } };
    await this.send(o, 'update', object, rv);
    this.track(o, rv);
  }

  async delete(o: PlannedObject): Promise<void> {
    const rv = this.nextResourceVersion();
    const tomb = {
      apiVersion: 'v1',
      kind: TYPE_TO_KIND[o.type],
      metadata: { name: o.name, namespace: o.namespace, resourceVersion: String(rv) },
    };
    await this.send(o, 'delete', tomb, rv);
    this.track(o, undefined);
  }

  /** The digest of a type as this publisher knows it (after begin()). */
  digest(type: string): TypeDigestValue | undefined {
    return this.state.get(type)?.digest.value;
  }

  /** A publish the broker took: the object's version now (undefined: deleted). */
  private track(o: PlannedObject, rv: number | undefined): void {
    const st = this.state.get(o.type);
    if (!st) return;
    const key = `${o.namespace}/${o.type}/${o.name}`;
    const was = st.live.get(key);
    if (was !== undefined) st.digest.remove(o.namespace, key, was);
    if (rv === undefined) st.live.delete(key);
    else {
      st.live.set(key, rv);
      st.digest.add(o.namespace, key, rv);
    }
  }

  /** Wait for every publish, then publish the digest of each type read in begin(). */
  async finish(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.failed) throw this.failed;
    for (const type of this.state.keys()) {
      const d = { ...this.digest(type)!, at: Date.now() };
      await this.client.publishAsync(this.topics.digest(type), JSON.stringify(d), {
        qos: 1,
        retain: true,
      });
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.inflight);
    await this.client.endAsync();
  }

  /** Resolves when another publish may start (fewer than `window` await their PUBACK). */
  room(): Promise<void> {
    if (this.inflight.size < this.window) return Promise.resolve();
    return new Promise<void>((r) => (this.wake = r));
  }

  private async send(o: PlannedObject, operation: string, content: object, rv: number): Promise<void> {
    if (this.failed) throw this.failed;
    const msg = newMessage(content, {
      source: 'edgectl',
      group: 'resource',
      operation,
      resource: `${o.namespace}/${o.type}/${o.name}`,
      resourceVersion: String(rv),
    });
    const p: Promise<void> = this.client
      .publishAsync(this.topics.object(o.namespace, o.type, o.name), toWire(msg), { qos: 1, retain: true })
      .then(
        () => this.settle(p),
        (e: Error) => {
          this.failed ??= e;
          this.settle(p);
          throw e;
        },
      );
    this.inflight.add(p);
    await p;
  }

  private settle(p: Promise<void>): void {
    this.inflight.delete(p);
    const w = this.wake;
    if (w && this.inflight.size < this.window) {
      this.wake = undefined;
      w();
    }
  }
}
