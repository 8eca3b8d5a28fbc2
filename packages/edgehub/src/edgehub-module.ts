import {
  BeehiveModule,
  ChannelContext,
  CloudConnected,
  CloudDisconnected,
  Group,
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
import {
  brokerUrls,
  EdgeHubOptions,
  HUB_MODULE_NAME,
  mqttClientAuth,
  resolveEdgeHubOptions,
  type ResolvedEdgeHubOptions,
} from './config';
import { HubCode } from './edgehub-errors';
import { EmbeddedBroker } from './embedded-broker';
import { RetainedReader } from './retained-reader';
import { newStateSyncStats, StateSync, type StateSyncStats } from './state-sync';
import { CheckSchedule } from './check-schedule';
import { Intake } from './intake';
import { MetaLink } from './meta-link';
import { decodePayload } from './payload';
import { Topics } from './topics';
import { UpWindow } from './up-window';
import { mqttClientDefaults } from './mqtt-packet-tuning';

export interface EdgeHubStats {
  received: number;
  committed: number;
  malformed: number;
  connects: number;
  disconnects: number;
  /** Connections made to another broker of `mqtt.servers` than the last one. */
  failovers: number;
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
/** Adds fields to this node's retained status (`EdgeHubModule.setStatus`), for other modules. */
export const NodeStatusPublisher = Symbol.for('edgecore.NodeStatusPublisher');
export interface NodeStatusPublisher {
  setStatus(fields: Record<string, unknown>): void;
}

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
    failovers: 0,
    published: 0,
    maxPending: 0,
    lagMsSum: 0,
    lagCount: 0,
    lagMsMax: 0,
    sync: newStateSyncStats(),
  };
  readonly topics: Topics;
  private client?: MqttClient;
  private ctx?: ChannelContext;
  private connected = false;
  private stopped = false;
  private statusExtra: Record<string, unknown>;
  private broker?: EmbeddedBroker;
  private reconnectTimer?: NodeJS.Timeout;
  private backoff: number;
  /** The brokers of the fleet this node may link to (`mqtt.servers`), and the one it tries now. */
  private readonly servers: string[];
  private serverIndex = 0;
  /** The broker of the last link that came up. */
  private linkedServer?: string;
  /** Attempts that ended without a link since the last one came up (a full round grows the backoff). */
  private failedAttempts = 0;
  /** The MQTT version of the next connection (see `mqtt.protocolVersion`). */
  private protocol: 4 | 5;
  /** The broker refused MQTT 5 just now: reconnect at once with 3.1.1. */
  private retryNow = false;
  private readonly readiness = new ReadySignal();
  private readonly intake: Intake;
  /** The node's own QoS 1 publishes, within the broker's Receive Maximum. */
  private readonly up = new UpWindow(() => this.client);
  /** Per type, the newest publish time of an object message received (see StateSync). */
  private readonly newestObjectAt = new Map<string, number>();
  private readonly sync: StateSync;
  private readonly meta: MetaLink;
  private readonly checks: CheckSchedule;
  private readonly options: ResolvedEdgeHubOptions;

  constructor(
    @inject(EdgeHubOptions) input: EdgeHubOptions,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
  ) {
    const options = (this.options = resolveEdgeHubOptions(input));
    this.statusExtra = { ...options.statusFields };
    this.topics = new Topics(options.topicPrefix, options.nodeName);
    this.backoff = options.reconnect.initialMs;
    this.servers = brokerUrls(options.mqtt);
    this.protocol = this.firstProtocol();
    this.intake = new Intake(
      options.maxInflight,
      this.stats,
      log,
      (client) => !this.stopped && this.client === client,
      (packet) => this.onPublish(packet),
    );
    this.meta = new MetaLink(() => this.ctx, this.name, options.commitTimeoutMs, this.stats, log);
    this.sync = new StateSync({
      topics: this.topics,
      node: options.nodeName,
      openReader: () =>
        RetainedReader.open(this.server, {
          ...this.clientAuth(),
          clientId: `${options.nodeName}.sync-${Math.random().toString(16).slice(2, 8)}`,
          protocolVersion: 4,
          keepalive: options.mqtt.keepalive,
        }),
      decode: (topic, payload) => this.decode(topic, payload),
      commit: (msg) => this.meta.commit(msg, msg.route.resource ?? ''),
      localDigest: (type) => this.meta.query(type, 'digest') as Promise<DigestValue>,
      localVersions: async (type) => new Map((await this.meta.query(type, 'versions')) as [string, number][]),
      settled: () => this.intake.settled(this.options.sync.settleMs, () => this.stopped),
      newestReceived: (type) => this.newestObjectAt.get(type) ?? 0,
      log,
      maxCheckMs: options.sync.maxCheckSeconds * 1000,
    });
    this.stats.sync = this.sync.stats;
    this.checks = new CheckSchedule(
      () => this.sync.check(),
      () => this.connected && !this.stopped,
      this.checkIntervalMs,
      log,
    );
  }

  /** auto: 5, but 3.1.1 at once with the embedded broker (aedes speaks no 5: no refusal to log). */
  private firstProtocol(): 4 | 5 {
    const v = this.options.mqtt.protocolVersion;
    return v === 4 || (v === 'auto' && this.options.mqtt.embeddedBroker.enable) ? 4 : 5;
  }

  /** The broker the node links to now, or tries next. */
  get server(): string {
    return this.servers[this.serverIndex];
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
    this.checks.startPeriodic();
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
      ...mqttClientDefaults(),
      clientId: node,
      // A persistent session: QoS 1 messages published while the node is away wait for it.
      clean: false,
      ...this.protocolOptions(),
      keepalive: o.mqtt.keepalive,
      reconnectPeriod: 0, // we reconnect ourselves, with capped exponential backoff
      connectTimeout: 10_000,
      ...this.clientAuth(),
      will: {
        topic: this.topics.status(node),
        // the will keeps what the node published of itself (its site): only the presence changes
        payload: Buffer.from(JSON.stringify({ ...this.statusExtra, status: 'offline', node })),
        qos: 1,
        retain: true,
      },
    };
    const server = this.server;
    const client = connect(server, opts);
    this.client = client;
    this.up.newClient();
    client.handleMessage = (packet: IPublishPacket, next: (err?: Error) => void) =>
      this.intake.take(client, packet, next);
    client.on('connect', (connack: IConnackPacket) => {
      if (this.client !== client) return; // a link given up for another broker
      this.stats.connects++;
      this.intake.newLink();
      this.backoff = o.reconnect.initialMs;
      this.failedAttempts = 0;
      if (this.linkedServer !== undefined && this.linkedServer !== server) {
        // another broker of the fleet: its retained state is the cloud's (bridged), its session
        // ours only if we were here before; the digest check below proves what the node holds
        this.stats.failovers++;
        void this.sync.dropReader();
        this.log.warn({ from: this.linkedServer, to: server, node }, 'failed over to another broker');
      }
      this.linkedServer = server;
      this.up.setLimit(connack.properties?.receiveMaximum);
      this.log.info({ server, node, sessionPresent: connack.sessionPresent }, 'connected to cloud');
      this.publishStatus();
      // A session the broker kept has its subscriptions and queued messages: subscribing again
      // would make it replay every retained object into that queue at QoS 1, where a stock
      // broker's limit drops all but ~1,000 — and the live updates behind them. A new session
      // must subscribe. Either way the digest check below finds what was lost and reads it back.
      // This node's own objects (its pods) are subscribed on every connect, so a session kept
      // from before they had topics of their own gets them too.
      // MQTT 5 subscribes to objects without their retained replay (retain handling 2): the
      // check below loads them instead, in reads a stock broker delivers whole — a replay of
      // 30,000 objects had mosquitto drop all but ~1,000 of them on every join. MQTT 3.1.1 has no
      // such option: its replay stays, and the digest check reads back what it lost.
      const noReplay = this.protocol === 5;
      const objects = noReplay ? { qos: 1 as const, rh: 2 } : { qos: 1 as const };
      // The link counts as connected once the broker acknowledged the subscriptions: from then
      // on every publish reaches the node live, and the load reads what was retained before
      // (loaded earlier, an object published between the CONNACK and the SUBACK came neither way)
      let pending = connack.sessionPresent ? 1 : 2;
      const subscribed = (err?: Error | null): void => {
        if (err) this.log.error({ err }, 'subscribe failed');
        if (--pending > 0 || this.client !== client || !client.connected) return;
        if (noReplay) this.sync.loadRetained();
        this.setConnected(true);
        this.checks.soon(0);
      };
      client.subscribe(
        { [this.topics.nodeObjects(node)]: objects, [this.topics.nodeDigests(node)]: { qos: 1 } },
        subscribed,
      );
      if (!connack.sessionPresent)
        client.subscribe(
          {
            [this.topics.objects()]: objects,
            [this.topics.digests()]: { qos: 1 },
            [this.topics.down(node)]: { qos: 1 },
            ...(o.nodeStatuses ? { [this.topics.statuses()]: { qos: 1 as const } } : {}),
          },
          subscribed,
        );
    });
    client.on('close', () => {
      if (this.client !== client) return;
      this.setConnected(false);
      this.scheduleReconnect();
    });
    client.on('error', (e) => {
      if (this.client !== client) return;
      const code = (e as { code?: unknown }).code;
      // CONNACK 1 (3.1.1: unacceptable protocol version) or 132 (5: unsupported protocol version)
      if (this.protocol === 5 && o.mqtt.protocolVersion === 'auto' && (code === 1 || code === 132)) {
        this.protocol = 4;
        Object.assign(client.options, this.protocolOptions());
        delete client.options.properties;
        this.retryNow = true;
        this.log.warn(
          { server },
          'broker refused MQTT 5; using 3.1.1 (its own in-flight window bounds a burst: see README)',
        );
        return;
      }
      this.log.warn({ err: e.message, server }, 'mqtt error');
    });
  }

  /** MQTT 5 asks for the broker's in-flight window (`receiveMaximum`) and a session that never expires. */
  private protocolOptions(): Pick<IClientOptions, 'protocolVersion' | 'properties'> {
    if (this.protocol === 4) return { protocolVersion: 4 };
    return {
      protocolVersion: 5,
      properties: { receiveMaximum: this.options.mqtt.receiveMaximum, sessionExpiryInterval: 0xffffffff },
    };
  }

  /** Object messages taken from the broker whose commit is under way. */
  get commitsInFlight(): number {
    return this.intake.inflight;
  }

  /** The MQTT version of the link (or of the next attempt). */
  get protocolVersion(): 4 | 5 {
    return this.protocol;
  }

  private clientAuth(): Pick<IClientOptions, 'username' | 'password' | 'ca' | 'cert' | 'key'> {
    return mqttClientAuth(this.options.mqtt);
  }

  /**
   * The next attempt after a link dropped or could not be made. One broker: the same one after the
   * backoff. Several: the next broker of the list at the first delay, the backoff growing only
   * once the whole list has failed since the last link came up.
   */
  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const r = this.options.reconnect;
    const grow = (): number => {
      const d = this.backoff;
      this.backoff = Math.min(this.backoff * r.growth, r.maxMs);
      return d;
    };
    let delay: number;
    let next = false;
    if (this.retryNow) delay = 0;
    else if (this.servers.length > 1) {
      next = true;
      this.failedAttempts++;
      delay = this.failedAttempts % this.servers.length === 0 ? grow() : r.initialMs;
    } else delay = grow();
    this.retryNow = false;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stopped || !this.client) return;
      if (!next) {
        this.log.debug({ delay }, 'reconnecting');
        this.client.reconnect();
        return;
      }
      // a client per broker: the given-up one is ended, its events ignored
      const old = this.client;
      this.serverIndex = (this.serverIndex + 1) % this.servers.length;
      this.protocol = this.firstProtocol();
      this.log.debug({ delay, server: this.server }, 'trying the next broker');
      this.connectClient();
      old.end(true);
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
    this.checks.stop();
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
        this.up.publish(
          this.topics.status(this.options.nodeName),
          JSON.stringify({ ...this.statusExtra, status: 'offline', node: this.options.nodeName }),
          { retain: true },
          () => done(),
          c,
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
    this.up.publish(this.topics.up(this.options.nodeName), toWire(msg), {}, (err) => {
      if (err && msg.header.sync)
        ctx.sendResp(newError(msg, HubCode.Disconnected, `publish failed: ${err.message}`, this.name));
    });
    this.stats.published++;
  }

  /** Cloud → node. Resolves when the message may be acknowledged; rejects to force redelivery. */
  /**
   * Fields this node adds to its retained status (EdgeTunnel: its `site`, the relays that reach
   * it, its direct address), published now when connected and on every connect.
   */
  setStatus(extra: Record<string, unknown>): void {
    this.statusExtra = { ...this.statusExtra, ...extra };
    if (this.client?.connected) this.publishStatus();
  }

  private publishStatus(): void {
    const o = this.options;
    const body = { ...this.statusExtra, status: 'online', node: o.nodeName, nodeIP: o.nodeIP };
    this.up.publish(this.topics.status(o.nodeName), JSON.stringify(body), { retain: true });
  }

  /**
   * Another node's status → MetaManager (`kube-node-lease/nodestatus/<node>`, where Kubernetes
   * keeps node heartbeats), so its site and tunnel relays survive a restart without the cloud.
   * Our own status is ours already; an empty payload (a cleared topic) deletes it.
   */
  private async peerStatus(peer: string, payload: Buffer): Promise<void> {
    if (peer === this.options.nodeName) return;
    const resource = `kube-node-lease/nodestatus/${peer}`;
    let content: Record<string, unknown> | null = null;
    if (payload.length) {
      try {
        const parsed = JSON.parse(payload.toString('utf8')) as unknown;
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
        content = { ...(parsed as Record<string, unknown>), kind: 'NodeStatus', metadata: { name: peer } };
      } catch (e) {
        this.stats.malformed++;
        this.log.warn({ node: peer, err: (e as Error).message }, 'dropping malformed node status');
        return;
      }
    }
    const msg = newMessage(content, {
      source: 'cloud',
      group: Group.Meta,
      operation: content ? Operation.Update : Operation.Delete,
      resource,
    });
    await this.meta.commit(msg, resource);
  }

  private async onPublish(packet: IPublishPacket): Promise<void> {
    const ctx = this.ctx;
    if (!ctx) throw new Error('not started');
    this.stats.received++;
    const topic = packet.topic;
    const peer = this.topics.statusNode(topic);
    if (peer !== undefined) return this.peerStatus(peer, packet.payload as Buffer);
    if (this.topics.digestType(topic)) {
      // a new digest: compare once the objects published before it are committed
      this.checks.soon(0);
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
      this.intake.touched();
      const resource = msg.route.resource ?? '';
      this.sync.noteLiveWrite(resource);
      const type = resource.split('/')[1];
      if (msg.header.timestamp > (this.newestObjectAt.get(type) ?? 0))
        this.newestObjectAt.set(type, msg.header.timestamp);
      await this.meta.commit(msg, resource);
      // once the link is quiet, compare digests: a burst the broker's queue cut short ends here
      this.checks.soon(this.options.sync.settleMs);
      const lag = Date.now() - msg.header.timestamp;
      if (msg.header.timestamp > 0 && lag >= 0) {
        this.stats.lagMsSum += lag;
        this.stats.lagCount++;
        if (lag > this.stats.lagMsMax) this.stats.lagMsMax = lag;
      }
      this.intake.touched();
      return;
    }
    if (msg.route.group) {
      await ctx
        .sendToGroup(msg.route.group, msg)
        .catch((e) => this.log.warn({ topic, err: (e as Error).message }, 'undeliverable message'));
    }
  }

  /** Payload → beehive message, validated against the topic; throws MalformedPayloadError. */
  decode(topic: string, payload: Buffer): Message<unknown> | undefined {
    return decodePayload(this.topics, topic, payload);
  }
}
