import {
  BeehiveModule,
  ChannelContext,
  Group,
  isErrorMessage,
  Logger,
  newMessage,
  Operation,
  ReadySignal,
  silentLogger,
  splitHostPort,
} from '@edgecore/beehive';
import { inject, injectable, optional } from 'inversify';
import type { Duplex } from 'node:stream';
import { TunnelAgent, type PeerRoute, type StreamJoin, type TunnelTargets } from './agent';
import { loadIdentity } from './certs';
import { loadTlsEngine } from './engines';
import { parseDenyList, REVOKED_CONFIGMAP } from './deny-list';
import { EdgeTunnelOptions, edgeTunnelConfigSchema, resolveTunnelOptions } from './config';
import type { DatagramChannel } from './framing';
import { ROLE_NODE } from './protocol';
import { InvalidTunnelOptionError } from './tunnel-errors';

export const TUNNEL_MODULE_NAME = 'edgetunnel';

/** What this node publishes in its status for the tunnel (bound by the host to EdgeHub). */
export const TunnelStatusSink = Symbol.for('edgecore.TunnelStatusSink');
export interface TunnelStatusSink {
  setStatus(fields: Record<string, unknown>): void;
}

/** This node's end of the tunnel for other modules: its node, its site, streams to other nodes. */
export const TunnelEndpoint = Symbol.for('edgecore.TunnelEndpoint');
export interface TunnelEndpoint {
  readonly node: string;
  readonly site?: string;
  /** See TunnelAgent.open (`join`: a plain connection the stream may take as its own). */
  open(route: PeerRoute, host: string, port: number, join?: StreamJoin): Promise<Duplex>;
  datagram(route: PeerRoute, host: string, port: number): Promise<DatagramChannel>;
}

/** The backends this node lets other nodes reach (bound by the host to EdgeMesh). */
export const TunnelTargetsToken = Symbol.for('edgecore.TunnelTargets');

/**
 * EdgeTunnel as a beehive module (`edgetunnel`, group `tunnel`): the node's identity is loaded and
 * checked when the module is made (a bad certificate stops edgecore at start with the file and
 * the reason), the agent links to every relay at start, and each change of the relays that reach
 * the node goes into its status with its `site` and direct address.
 */
@injectable()
export class EdgeTunnelModule implements BeehiveModule, TunnelEndpoint {
  readonly name = TUNNEL_MODULE_NAME;
  readonly group = Group.Tunnel;
  /** `metamanager` when it runs: the deny list the cloud distributes is read from it at start. */
  readonly dependencies: string[];
  readonly agent: TunnelAgent;
  readonly site?: string;
  private readonly readiness = new ReadySignal();
  private readonly advertise?: string;

  constructor(
    @inject(EdgeTunnelOptions) options: EdgeTunnelOptions,
    @inject(TunnelTargetsToken) targets: TunnelTargets,
    @inject(TunnelStatusSink) @optional() private readonly status?: TunnelStatusSink,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
  ) {
    const { nodeName, dependencies, ...config } = options;
    this.dependencies = dependencies ?? [];
    const o = resolveTunnelOptions(edgeTunnelConfigSchema, config);
    for (const k of ['certFile', 'keyFile', 'caFile'] as const)
      if (!o[k])
        throw new InvalidTunnelOptionError(
          `modules.edgeTunnel.${k}`,
          o[k],
          'a file (edgectl certs node NAME)',
        );
    const identity = loadIdentity(
      { cert: o.certFile!, key: o.keyFile!, ca: o.caFile! },
      { role: ROLE_NODE, name: nodeName },
    );
    let listen: { host: string; port: number } | undefined;
    if (o.listen) {
      const [host, port] = splitHostPort(o.listen);
      listen = { host, port };
    }
    this.site = o.site;
    this.advertise = o.advertise ?? o.listen;
    this.agent = new TunnelAgent({
      identity,
      relays: o.relays,
      listen,
      revokedFile: o.revokedFile,
      openTimeoutMs: o.openTimeoutMs,
      idleTimeoutMs: o.idleTimeoutSeconds * 1000,
      udpIdleTimeoutMs: o.udpIdleTimeoutSeconds * 1000,
      pingIntervalMs: o.pingIntervalMs,
      splice: o.splice,
      tlsEngine: o.nativeTls ? loadTlsEngine() : undefined,
      targets,
      log,
    });
    this.agent.on('change', () => this.publish());
  }

  get node(): string {
    return this.agent.name;
  }

  enable(): boolean {
    return true;
  }

  ready(): Promise<void> {
    return this.readiness.promise;
  }

  async start(ctx: ChannelContext, signal: AbortSignal): Promise<void> {
    if (this.dependencies.includes('metamanager')) await this.loadDenyList(ctx);
    await this.agent.start();
    this.publish();
    this.readiness.resolve();
    this.log.info({ node: this.node, site: this.site, relays: this.agent.relaysUp() }, 'edgetunnel started');
    // MetaManager forwards every committed ConfigMap here; the deny list is one of them
    for await (const msg of ctx.receive(this.name)) {
      if (signal.aborted) break;
      if (msg.route.resource !== REVOKED_RESOURCE) continue;
      this.applyDenyList(msg.route.operation === Operation.Delete ? undefined : msg.content);
    }
  }

  /** The deny list as the node last committed it (offline too: MetaManager answers from SQLite). */
  private async loadDenyList(ctx: ChannelContext): Promise<void> {
    const q = newMessage(null, {
      source: this.name,
      destination: 'metamanager',
      group: Group.Meta,
      operation: Operation.Query,
      resource: REVOKED_RESOURCE,
    });
    try {
      const reply = await ctx.sendSync('metamanager', q, 5000);
      if (!isErrorMessage(reply)) this.applyDenyList(reply.content);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'edgetunnel: deny list not read from the local store');
    }
  }

  /** The cloud's deny list (a ConfigMap): added to the file's; a bad one leaves the last in force. */
  private applyDenyList(obj: unknown): void {
    const text = (obj as { data?: Record<string, unknown> } | null)?.data?.[REVOKED_CONFIGMAP.key];
    if (typeof text !== 'string') {
      this.agent.denied.setDistributed([]);
      return;
    }
    try {
      const entries = parseDenyList(text, REVOKED_RESOURCE);
      this.agent.denied.setDistributed(entries);
      this.log.info({ entries: entries.length }, 'edgetunnel: deny list from the cloud');
    } catch (e) {
      this.log.warn(
        { err: (e as Error).message },
        'edgetunnel: deny list from the cloud refused; the last one stays',
      );
    }
  }

  async stop(): Promise<void> {
    await this.agent.stop();
  }

  /** A TCP stream to a backend on `route.node` (EdgeMesh's MeshTunnel). */
  open(route: PeerRoute, host: string, port: number, join?: StreamJoin): Promise<Duplex> {
    return this.agent.open(route, host, port, 'tcp', join);
  }

  datagram(route: PeerRoute, host: string, port: number): Promise<DatagramChannel> {
    return this.agent.datagram(route, host, port);
  }

  private publish(): void {
    this.status?.setStatus({
      site: this.site,
      tunnel: { relays: this.agent.reachedBy(), address: this.advertise },
    });
  }
}

const REVOKED_RESOURCE = `${REVOKED_CONFIGMAP.namespace}/configmap/${REVOKED_CONFIGMAP.name}`;
