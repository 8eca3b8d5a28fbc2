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
  type Message,
} from '@edgecore/beehive';
import { inject, injectable, optional } from 'inversify';
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { readFileSync } from 'node:fs';
import { EdgeHubOptions, HUB_MODULE_NAME } from './config';
import { MalformedPayloadError, HubCode } from './edgehub-errors';
import { EmbeddedBroker } from './embedded-broker';
import { KIND_TO_TYPE, Topics } from './topics';

export interface EdgeHubStats {
  received: number;
  committed: number;
  malformed: number;
  connects: number;
  disconnects: number;
  published: number;
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

  constructor(
    @inject(EdgeHubOptions) private readonly options: EdgeHubOptions,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
  ) {
    this.topics = new Topics(options.topicPrefix);
    this.backoff = options.reconnect?.initialMs ?? 500;
  }

  get cloudConnected(): boolean {
    return this.connected;
  }

  enable(): boolean {
    return this.options.enable ?? true;
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
    if (eb?.enable && !this.broker) {
      const [host, port] = splitHostPort(eb.listen ?? '127.0.0.1:1883');
      this.broker = new EmbeddedBroker();
      const a = await this.broker.listen(host, port);
      this.log.info({ address: `${a.address}:${a.port}` }, 'embedded MQTT broker listening');
    }
    this.connectClient();
    this.readiness.resolve();
    signal.addEventListener('abort', () => void this.shutdownLink(), { once: true });
    for await (const msg of ctx.receive(this.name)) {
      if (signal.aborted) break;
      this.sendUp(ctx, msg);
    }
  }

  async stop(): Promise<void> {
    await this.shutdownLink();
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
      keepalive: o.mqtt.keepalive ?? 30,
      reconnectPeriod: 0, // we reconnect ourselves, with capped exponential backoff
      connectTimeout: 10_000,
      username: o.mqtt.username,
      password: o.mqtt.password,
      will: {
        topic: this.topics.status(node),
        payload: Buffer.from(JSON.stringify({ status: 'offline', node })),
        qos: 1,
        retain: true,
      },
    };
    if (o.mqtt.tls?.caFile) opts.ca = readFileSync(o.mqtt.tls.caFile);
    if (o.mqtt.tls?.certFile) opts.cert = readFileSync(o.mqtt.tls.certFile);
    if (o.mqtt.tls?.keyFile) opts.key = readFileSync(o.mqtt.tls.keyFile);
    const client = connect(o.mqtt.server, opts);
    this.client = client;
    // The PUBACK of a QoS 1 message is sent only when this callback runs: after MetaManager committed.
    client.handleMessage = (packet: IPublishPacket, done: (err?: Error) => void) => {
      this.onPublish(packet).then(
        () => done(),
        (e) => {
          if (this.stopped) return; // shutting down: the link is being closed anyway
          this.log.error(
            { err: e, topic: packet.topic },
            'commit of incoming object failed; resetting the link for redelivery',
          );
          client.end(true);
        },
      );
    };
    client.on('connect', () => {
      this.stats.connects++;
      this.backoff = o.reconnect?.initialMs ?? 500;
      this.log.info({ server: o.mqtt.server, node }, 'connected to cloud');
      client.publish(this.topics.status(node), JSON.stringify({ status: 'online', node, nodeIP: o.nodeIP }), {
        qos: 1,
        retain: true,
      });
      // Subscribing again on every connect replays the retained state of every object, so a node
      // converges even if its queued messages were lost (session expired, queue limit).
      client.subscribe(
        { [this.topics.objects()]: { qos: 1 }, [this.topics.down(node)]: { qos: 1 } },
        (err) => {
          if (err) this.log.error({ err }, 'subscribe failed');
        },
      );
      this.setConnected(true);
    });
    client.on('close', () => {
      this.setConnected(false);
      this.scheduleReconnect();
    });
    client.on('error', (e) => this.log.warn({ err: e.message, server: o.mqtt.server }, 'mqtt error'));
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = this.backoff;
    const r = this.options.reconnect;
    this.backoff = Math.min(this.backoff * (r?.growth ?? 2), r?.maxMs ?? 30_000);
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
      const meta = ctx.moduleNames(Group.Meta)[0];
      if (!meta) throw new Error('no MetaManager module to commit to');
      msg.header.sync = false;
      const reply = await ctx.sendSync(meta, msg, this.options.commitTimeoutMs ?? 30_000);
      if (isErrorMessage(reply) && reply.content.code !== 'META_STALE_RESOURCE_VERSION') {
        this.log.warn(
          { topic, code: reply.content.code, err: reply.content.message },
          'object refused by MetaManager',
        );
      } else {
        this.stats.committed++;
      }
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
