import {
  BeehiveModule,
  ChannelContext,
  CloudConnected,
  CloudDisconnected,
  fromWire,
  Group,
  isErrorMessage,
  isWriteOperation,
  Logger,
  newError,
  newMessage,
  Operation,
  ReadySignal,
  silentLogger,
  splitHostPort,
  toWire,
  type DigestValue,
  type Message,
} from '@edgecore/beehive';
import { inject, injectable, optional } from 'inversify';
import {
  connect,
  type IClientOptions,
  type IConnackPacket,
  type IPublishPacket,
  type MqttClient,
} from 'mqtt';
import { AckQueue } from './ack-queue';
import { readFileSync } from 'node:fs';
import {
  EdgeHubOptions,
  HUB_MODULE_NAME,
  resolveEdgeHubOptions,
  type ResolvedEdgeHubOptions,
} from './config';
import { MalformedPayloadError, HubCode } from './edgehub-errors';
import { EmbeddedBroker } from './embedded-broker';
import { RetainedReader } from './retained-reader';
import { StateSync, type StateSyncStats } from './state-sync';
import { KIND_TO_TYPE, Topics } from './topics';

export interface EdgeHubStats {
  received: number;
  committed: number;
  malformed: number;
  connects: number;
  disconnects: number;
  published: number;
  /** Object messages whose commit was under way at once, at most (a batch of the broker's window). */
  maxPending: number;
  /** Publish (the cloud message's timestamp) → committed on this node, summed over committed messages. */
  lagMsSum: number;
  lagCount: number;
  lagMsMax: number;
  sync: StateSyncStats;
}

/**
 * EdgeHub (KubeEdge `edge/pkg/edgehub`, MQTT flavour): objects from the cloud become beehive writes
 * for MetaManager and are acknowledged to the broker only after the commit; connection status goes
 * to `meta` and `mesh`; remote queries go up and their replies come back.
 */
@injectable()
export class EdgeHubModule implements BeehiveModule {
  readonly name = HUB_MODULE_NAME;
  readonly group = Group.Hub;
  readonly stats: EdgeHubStats = {
    received: 0,
    committed: 0,
    malformed: 0,
    connects: 0,
    disconnects: 0,
    published: 0,
    maxPending: 0,
    lagMsSum: 0,
    lagCount: 0,
    lagMsMax: 0,
    sync: { checks: 0, resyncs: 0, orphansDeleted: 0, unconverged: 0, deferred: 0 },
  };
  readonly topics: Topics;
  private client?: MqttClient;
  private ctx?: ChannelContext;
  private connected = false;
  private stopped = false;
  private broker?: EmbeddedBroker;
  private reconnectTimer?: NodeJS.Timeout;
  private backoff: number;
  private readonly readiness = new ReadySignal();
  private readonly acks = new AckQueue();
  /** Commits under way; at maxInflight the next message waits (TCP holds the rest). */
  private pendingCommits = 0;
  private wakeWhenRoom?: () => void;
  private lastObjectAt = 0;
  /** Per type, the newest publish time of an object message received (see StateSync). */
  private readonly newestObjectAt = new Map<string, number>();
  private readonly sync: StateSync;
  private syncTimer?: NodeJS.Timeout;
  private checkTimer?: NodeJS.Timeout;
  private retryMs = 1_000;
  private readonly options: ResolvedEdgeHubOptions;
  /** Bumped on every (re)connect: an acknowledgement never crosses to a newer connection. */
  private linkGeneration = 0;

  constructor(
    @inject(EdgeHubOptions) input: EdgeHubOptions,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
  ) {
    const options = (this.options = resolveEdgeHubOptions(input));
    this.topics = new Topics(options.topicPrefix);
    this.backoff = options.reconnect.initialMs;
    this.sync = new StateSync({
      topics: this.topics,
      node: options.nodeName,
      openReader: () =>
        RetainedReader.open(options.mqtt.server, {
          ...this.clientAuth(),
          clientId: `${options.nodeName}.sync-${Math.random().toString(16).slice(2, 8)}`,
          protocolVersion: 4,
          keepalive: options.mqtt.keepalive,
        }),
      decode: (topic, payload) => this.decode(topic, payload),
      commit: (msg) => this.commitWrite(msg, msg.route.resource ?? ''),
      localDigest: (type) => this.queryMeta(type, 'digest') as Promise<DigestValue>,
      localVersions: async (type) => new Map((await this.queryMeta(type, 'versions')) as [string, number][]),
      settled: () => this.settled(),
      newestReceived: (type) => this.newestObjectAt.get(type) ?? 0,
      log,
    });
    this.stats.sync = this.sync.stats;
  }

  /** The periodic digest check (0: off). */
  private get checkIntervalMs(): number {
    return this.options.sync.checkIntervalSeconds * 1000;
  }

  get cloudConnected(): boolean {
    return this.connected;
  }

  enable(): boolean {
    return this.options.enable;
  }

  /** Ready once the link is being established; the edge never waits for the cloud to serve. */
  ready(): Promise<void> {
    return this.readiness.promise;
  }

  async start(ctx: ChannelContext, signal: AbortSignal): Promise<void> {
    this.ctx = ctx;
    this.stopped = false;
    this.linkClosing = undefined;
    const eb = this.options.mqtt.embeddedBroker;
    if (eb.enable && !this.broker) {
      const [host, port] = splitHostPort(eb.listen);
      this.broker = new EmbeddedBroker();
      const a = await this.broker.listen(host, port);
      this.log.info({ address: `${a.address}:${a.port}` }, 'embedded MQTT broker listening');
    }
    this.connectClient();
    this.startPeriodicCheck();
    this.readiness.resolve();
    signal.addEventListener('abort', () => void this.shutdownLink(), { once: true });
    for await (const msg of ctx.receive(this.name)) {
      if (signal.aborted) break;
      this.sendUp(ctx, msg);
    }
  }

  /**
   * Compare the cloud's digests with the node's now (once the link is quiet) and resync what
   * differs; true when everything matched. Runs by itself on connect, on a new digest and every
   * `sync.checkIntervalMs`.
   */
  checkSync(): Promise<boolean> {
    return this.sync.check();
  }

  async stop(): Promise<void> {
    await this.shutdownLink();
    await this.sync.close();
    await this.broker?.close();
    this.broker = undefined;
  }

  private connectClient(): void {
    const o = this.options;
    const node = o.nodeName;
    const opts: IClientOptions = {
      clientId: node,
      // A persistent session: QoS 1 messages published while the node is away wait for it.
      clean: false,
      protocolVersion: 4,
      keepalive: o.mqtt.keepalive,
      reconnectPeriod: 0, // we reconnect ourselves, with capped exponential backoff
      connectTimeout: 10_000,
      ...this.clientAuth(),
      will: {
        topic: this.topics.status(node),
        payload: Buffer.from(JSON.stringify({ status: 'offline', node })),
        qos: 1,
        retain: true,
      },
    };
    const client = connect(o.mqtt.server, opts);
    this.client = client;
    client.handleMessage = (packet: IPublishPacket, next: (err?: Error) => void) =>
      this.onPacket(client, packet, next);
    client.on('connect', (connack: IConnackPacket) => {
      this.stats.connects++;
      this.linkGeneration++;
      this.acks.clear();
      this.backoff = o.reconnect.initialMs;
      this.log.info({ server: o.mqtt.server, node }, 'connected to cloud');
      client.publish(this.topics.status(node), JSON.stringify({ status: 'online', node, nodeIP: o.nodeIP }), {
        qos: 1,
        retain: true,
      });
      // A session the broker kept has its subscriptions and queued messages: subscribing again
      // would make it replay every retained object into that queue at QoS 1, where a stock
      // broker's limit drops all but ~1,000 — and the live updates behind them. A new session
      // must subscribe. Either way the digest check below finds what was lost and reads it back.
      if (!connack.sessionPresent)
        client.subscribe(
          {
            [this.topics.objects()]: { qos: 1 },
            [this.topics.digests()]: { qos: 1 },
            [this.topics.down(node)]: { qos: 1 },
          },
          (err) => {
            if (err) this.log.error({ err }, 'subscribe failed');
          },
        );
      this.setConnected(true);
      this.scheduleCheck(0);
    });
    client.on('close', () => {
      this.setConnected(false);
      this.scheduleReconnect();
    });
    client.on('error', (e) => this.log.warn({ err: e.message, server: o.mqtt.server }, 'mqtt error'));
  }

  private clientAuth(): Pick<IClientOptions, 'username' | 'password' | 'ca' | 'cert' | 'key'> {
    const m = this.options.mqtt;
    return {
      username: m.username,
      password: m.password,
      ca: m.tls?.caFile ? readFileSync(m.tls.caFile) : undefined,
      cert: m.tls?.certFile ? readFileSync(m.tls.certFile) : undefined,
      key: m.tls?.keyFile ? readFileSync(m.tls.keyFile) : undefined,
    };
  }

  /**
   * mqtt.js hands over one packet at a time and takes the next when `next` is called, and it sends
   * a QoS 1 PUBACK inside that callback. So that the messages of the broker's in-flight window are
   * committed together (one MetaManager transaction, not one round trip each), the callback is
   * called at once with an error — which makes mqtt.js go on without acknowledging — and the PUBACK
   * is written here when the commit is done, in arrival order (AckQueue).
   */
  private onPacket(client: MqttClient, packet: IPublishPacket, next: (err?: Error) => void): void {
    if (packet.qos === 0) {
      this.onPublish(packet).then(
        () => next(),
        (e) => (this.log.warn({ err: e, topic: packet.topic }, 'QoS 0 message not committed'), next()),
      );
      return;
    }
    const generation = this.linkGeneration;
    const messageId = packet.messageId;
    const ack = this.acks.enqueue(() => {
      if (generation !== this.linkGeneration || !client.connected || this.client !== client) return;
      (client as unknown as { _sendPacket(p: object, cb?: () => void): void })._sendPacket(
        { cmd: 'puback', messageId },
        () => undefined,
      );
    });
    this.pendingCommits++;
    if (this.pendingCommits > this.stats.maxPending) this.stats.maxPending = this.pendingCommits;
    this.onPublish(packet).then(
      () => {
        this.commitDone();
        ack();
      },
      (e) => {
        this.commitDone();
        if (this.stopped || generation !== this.linkGeneration) return; // the link is gone anyway
        this.log.error(
          { err: e, topic: packet.topic },
          'commit of incoming object failed; resetting the link for redelivery',
        );
        this.acks.clear();
        client.end(true);
      },
    );
    const max = this.options.maxInflight;
    if (this.pendingCommits < max) next(DEFERRED_ACK);
    else this.wakeWhenRoom = () => next(DEFERRED_ACK);
  }

  private commitDone(): void {
    this.pendingCommits--;
    const wake = this.wakeWhenRoom;
    if (wake && this.pendingCommits < this.options.maxInflight) {
      this.wakeWhenRoom = undefined;
      wake();
    }
  }

  /** Resolves once no object message waits for its commit and none came for `settleMs`. */
  private async settled(): Promise<void> {
    const quiet = this.options.sync.settleMs;
    const deadline = Date.now() + 30_000; // a link that never goes quiet is checked anyway
    for (;;) {
      if (this.stopped) throw new Error('edgehub stopped');
      const idle = Date.now() - this.lastObjectAt;
      if ((this.pendingCommits === 0 && idle >= quiet) || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, Math.max(10, quiet - idle)));
    }
  }

  /** A digest check after `delayMs` (an earlier one already scheduled wins). */
  private scheduleCheck(delayMs: number): void {
    if (this.stopped || this.checkTimer) return;
    this.checkTimer = setTimeout(() => {
      this.checkTimer = undefined;
      if (this.stopped || !this.connected) return;
      this.sync.check().then(
        (ok) => {
          // not in step yet: again soon, then less often (a digest that stays wrong must not
          // cost a resync a second), up to the periodic interval
          if (ok) this.retryMs = 1_000;
          else {
            this.scheduleCheck(this.retryMs);
            this.retryMs = Math.min(this.retryMs * 2, this.checkIntervalMs || 60_000);
          }
        },
        (e) => {
          if (!this.stopped) this.log.warn({ err: (e as Error).message }, 'digest check failed');
        },
      );
    }, delayMs);
  }

  private startPeriodicCheck(): void {
    const every = this.checkIntervalMs;
    if (!every || this.syncTimer) return;
    this.syncTimer = setInterval(() => this.scheduleCheck(0), every);
    this.syncTimer.unref();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = this.backoff;
    const r = this.options.reconnect;
    this.backoff = Math.min(this.backoff * r.growth, r.maxMs);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stopped || !this.client) return;
      this.log.debug({ delay }, 'reconnecting');
      this.client.reconnect();
    }, delay);
  }

  private linkClosing?: Promise<void>;

  /** Publish offline, then end the client; concurrent callers share one closing. */
  private shutdownLink(): Promise<void> {
    this.linkClosing ??= this.closeLink();
    return this.linkClosing;
  }

  private async closeLink(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.checkTimer);
    clearInterval(this.syncTimer);
    this.checkTimer = this.syncTimer = undefined;
    const c = this.client;
    this.client = undefined;
    if (!c) return;
    // Neither step may hang a shutdown: a link that drops meanwhile never acknowledges the
    // offline publish, nor finishes a graceful end; the last will says offline then.
    const bounded = (start: (done: () => void) => void): Promise<void> =>
      new Promise<void>((r) => {
        const t = setTimeout(r, 2000);
        start(() => (clearTimeout(t), r()));
      });
    if (c.connected) {
      await bounded((done) =>
        c.publish(
          this.topics.status(this.options.nodeName),
          JSON.stringify({ status: 'offline', node: this.options.nodeName }),
          { qos: 1, retain: true },
          () => done(),
        ),
      );
    }
    await bounded((done) => c.end(false, {}, () => done()));
    if (!c.disconnected) c.end(true);
    this.setConnected(false);
  }

  private setConnected(up: boolean): void {
    if (up === this.connected) return;
    this.connected = up;
    if (!up) {
      this.stats.disconnects++;
      this.log.warn({}, 'cloud link down; serving from the local store');
    }
    const ctx = this.ctx;
    if (!ctx || ctx.isClosed) return;
    for (const group of [Group.Meta, Group.Mesh]) {
      if (!ctx.moduleNames(group).length) continue;
      const msg = newMessage(up ? CloudConnected : CloudDisconnected, {
        source: this.name,
        group,
        operation: Operation.Connect,
        resource: 'node/connection',
      });
      ctx
        .sendToGroup(group, msg)
        .catch((e) => this.log.debug({ err: e, group }, 'connect status not delivered'));
    }
  }

  /** Node → cloud: remote queries (sync) and anything else a module sends to the hub. */
  private sendUp(ctx: ChannelContext, msg: Message<unknown>): void {
    const c = this.client;
    if (!c || !this.connected) {
      if (msg.header.sync) ctx.sendResp(newError(msg, HubCode.Disconnected, 'cloud link is down', this.name));
      return;
    }
    c.publish(this.topics.up(this.options.nodeName), toWire(msg), { qos: 1 }, (err) => {
      if (err && msg.header.sync)
        ctx.sendResp(newError(msg, HubCode.Disconnected, `publish failed: ${err.message}`, this.name));
    });
    this.stats.published++;
  }

  /** Cloud → node. Resolves when the message may be acknowledged; rejects to force redelivery. */
  private async onPublish(packet: IPublishPacket): Promise<void> {
    const ctx = this.ctx;
    if (!ctx) throw new Error('not started');
    this.stats.received++;
    const topic = packet.topic;
    if (this.topics.digestType(topic)) {
      // a new digest: compare once the objects published before it are committed
      this.scheduleCheck(0);
      return;
    }
    let msg: Message<unknown> | undefined;
    try {
      msg = this.decode(topic, packet.payload as Buffer);
    } catch (e) {
      this.stats.malformed++;
      this.log.warn({ topic, err: (e as Error).message }, 'dropping malformed payload');
      return; // acknowledged: a malformed payload would be malformed on redelivery too
    }
    if (!msg) return;
    const op = msg.route.operation ?? '';
    if ((op === Operation.Response || op === Operation.Error) && msg.header.parent_msg_id) {
      ctx.sendResp(msg);
      return;
    }
    if (isWriteOperation(op)) {
      this.lastObjectAt = Date.now();
      const resource = msg.route.resource ?? '';
      this.sync.noteLiveWrite(resource);
      const type = resource.split('/')[1];
      if (msg.header.timestamp > (this.newestObjectAt.get(type) ?? 0))
        this.newestObjectAt.set(type, msg.header.timestamp);
      await this.commitWrite(msg, resource);
      // once the link is quiet, compare digests: a burst the broker's queue cut short ends here
      this.scheduleCheck(this.options.sync.settleMs);
      const lag = Date.now() - msg.header.timestamp;
      if (msg.header.timestamp > 0 && lag >= 0) {
        this.stats.lagMsSum += lag;
        this.stats.lagCount++;
        if (lag > this.stats.lagMsMax) this.stats.lagMsMax = lag;
      }
      this.lastObjectAt = Date.now();
      return;
    }
    if (msg.route.group) {
      await ctx
        .sendToGroup(msg.route.group, msg)
        .catch((e) => this.log.warn({ topic, err: (e as Error).message }, 'undeliverable message'));
    }
  }

  /** Commit a write through MetaManager; a refusal is logged (a stale one is a redelivery). */
  private async commitWrite(msg: Message<unknown>, resource: string): Promise<void> {
    const ctx = this.ctx;
    const meta = ctx?.moduleNames(Group.Meta)[0];
    if (!ctx || !meta) throw new Error('no MetaManager module to commit to');
    msg.header.sync = false;
    const reply = await ctx.sendSync(meta, msg, this.options.commitTimeoutMs);
    if (isErrorMessage(reply) && reply.content.code !== 'META_STALE_RESOURCE_VERSION') {
      this.log.warn(
        { resource, code: reply.content.code, err: reply.content.message },
        'object refused by MetaManager',
      );
    } else {
      this.stats.committed++;
    }
  }

  /** MetaManager's digest or versions of a type (what the state sync compares). */
  private async queryMeta(type: string, select: 'digest' | 'versions'): Promise<unknown> {
    const ctx = this.ctx;
    const meta = ctx?.moduleNames(Group.Meta)[0];
    if (!ctx || !meta) throw new Error('no MetaManager module to ask');
    const q = newMessage(
      { select },
      { source: this.name, group: Group.Meta, operation: Operation.Query, resource: `*/${type}` },
    );
    const reply = await ctx.sendSync(meta, q, this.options.commitTimeoutMs);
    if (isErrorMessage(reply)) throw new Error(`${reply.content.code}: ${reply.content.message}`);
    return reply.content;
  }

  /** Payload → beehive message, validated against the topic; throws MalformedPayloadError. */
  decode(topic: string, payload: Buffer): Message<unknown> | undefined {
    const objResource = this.topics.objectResource(topic);
    const isObjectTopic = topic.startsWith(`${this.topics.prefix}/objects/`);
    if (isObjectTopic && !objResource)
      throw new MalformedPayloadError(topic, 'topic is not {prefix}/objects/<ns>/<type>/<name>');
    if (payload.length === 0) {
      // An empty retained payload clears the object's topic: treat it as an unversioned delete.
      if (!objResource) return undefined;
      return newMessage(null, {
        source: 'cloud',
        group: Group.Meta,
        operation: Operation.Delete,
        resource: objResource,
      });
    }
    let msg: Message<unknown>;
    try {
      msg = fromWire(payload);
    } catch (e) {
      throw new MalformedPayloadError(topic, (e as Error).message);
    }
    if (!objResource) return msg;
    const op = msg.route.operation ?? '';
    if (!isWriteOperation(op))
      throw new MalformedPayloadError(topic, `operation "${op}" is not insert/update/patch/delete`);
    if (msg.route.resource !== objResource)
      throw new MalformedPayloadError(
        topic,
        `route.resource "${msg.route.resource ?? ''}" does not match the topic`,
      );
    const type = objResource.split('/')[1];
    const obj = msg.content as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } } | null;
    if (op !== Operation.Delete) {
      if (!obj || typeof obj !== 'object') throw new MalformedPayloadError(topic, 'content is not an object');
      if (typeof obj.kind !== 'string' || KIND_TO_TYPE[obj.kind] !== type)
        throw new MalformedPayloadError(
          topic,
          `kind ${JSON.stringify(obj.kind)} does not match type "${type}"`,
        );
      if (typeof obj.metadata?.name !== 'string' || obj.metadata.name === '')
        throw new MalformedPayloadError(topic, 'missing metadata.name');
      if (obj.metadata.name !== objResource.split('/')[2])
        throw new MalformedPayloadError(topic, 'metadata.name does not match the topic');
    }
    msg.route.source = 'cloud';
    msg.route.group = Group.Meta;
    return msg;
  }
}

/** Tells mqtt.js to take the next packet without acknowledging this one (see onPacket). */
const DEFERRED_ACK = new Error('acknowledged after the commit');
