import { startTls } from './proxy/tls/backend-tls';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ServiceCatalog } from './catalog/catalog';
import { ConnectError } from './edgemesh-errors';
import { isLocalFailure } from './open-files';
import type { Backend, Paths } from './lb/backends';
import { connectTo } from './proxy/http/upstream-pool';

/**
 * EdgeMesh's view of EdgeTunnel (bound by the host when `modules.edgeTunnel` is on; EdgeMesh
 * does not depend on the tunnel package): this node's name and site, and streams to backends on
 * nodes of other sites.
 */
export interface TunnelRoute {
  node: string;
  /** Relays that reach the node (its status), tried first. */
  relays?: readonly string[];
  /** The node's direct tunnel address, when it takes direct dials. */
  address?: string;
}

/** A UDP flow through the tunnel: the part of a connected `dgram` socket the UDP proxy uses. */
export interface TunnelDatagram {
  send(d: Buffer): void;
  on(event: 'message', f: (d: Buffer) => void): this;
  on(event: 'close', f: () => void): this;
  close(): void;
}

/**
 * A plain TCP connection for a tunnel stream to carry as its own, and bytes already read from it
 * (the L4 proxy's client): a stream that moves bytes outside JavaScript takes it.
 */
export interface StreamJoin {
  client: Socket;
  first?: Buffer;
}

export interface MeshTunnel {
  readonly node: string;
  readonly site?: string;
  /**
   * A TCP stream to host:port on the route's node. With `join`, a stream that can take
   * `join.client` as its plaintext side (its TLS in a native engine) does: the promise resolves
   * to `join.client` itself, which the stream owns from there (destroyed when it ends; destroying
   * it aborts the stream); otherwise to the stream, for the caller to join. A failure leaves
   * `join.client` as it was.
   */
  open(route: TunnelRoute, host: string, port: number, join?: StreamJoin): Promise<Duplex>;
  datagram(route: TunnelRoute, host: string, port: number): Promise<TunnelDatagram>;
}
export const MeshTunnel = Symbol.for('edgecore.MeshTunnel');

/** The backends this node publishes itself (`EdgeMeshModule.publishes`): all a tunnel may open. */
export interface PublishedBackends {
  publishes(node: string, host: string, port: number, proto: 'tcp' | 'udp'): boolean;
}
export const PublishedBackends = Symbol.for('edgecore.PublishedBackends');

/** One backend of a service port and the path to it (`edgectl get endpoints -o wide`). */
export interface BackendPathRow {
  namespace: string;
  service: string;
  port: string;
  backend: string;
  node?: string;
  path: 'direct' | 'tunnel';
}

/** The backends of every portal and their paths (`EdgeMeshModule.backendPaths`). */
export interface BackendPaths {
  backendPaths(): BackendPathRow[];
}
export const BackendPaths = Symbol.for('edgecore.BackendPaths');

/** One step of `edgectl explain`: what the node found, and whether the path holds there. */
export interface ExplainStep {
  step: 'catalog' | 'name' | 'rules' | 'portal' | 'backends';
  ok: boolean;
  detail: string;
  /** The backends of each port (the backends step). */
  backends?: {
    port: string;
    key: string;
    node?: string;
    path: 'direct' | 'tunnel';
    state: 'ok' | 'unhealthy' | 'ejected';
    tier?: number;
    terminating?: boolean;
    lastError?: string;
    latencyMs?: number;
    active: number;
  }[];
}

/** A service as this node serves it, step by step (name → VIP → rules or portal → backends). */
export interface ServiceExplainer {
  explain(
    namespace: string,
    name: string,
  ): Promise<{ service: string; steps: ExplainStep[]; brokenAt?: string }>;
}
export const ServiceExplainer = Symbol.for('edgecore.ServiceExplainer');

/**
 * The path rule, in one place: a backend on a node whose published site differs from this node's
 * goes through the tunnel; one of the same site, of an unknown node, or of a node that published
 * no site is dialled directly (one site, as before). No tunnel or no site of our own: all direct.
 */
export class SitePaths implements Paths {
  constructor(
    private readonly catalog: ServiceCatalog,
    private readonly tunnel: MeshTunnel | undefined,
  ) {}

  tunneled(node: string | undefined): boolean {
    const t = this.tunnel;
    if (!t?.site || !node || node === t.node) return false;
    const peer = this.catalog.nodes.get(node)?.site;
    return !!peer && peer !== t.site;
  }

  /** How to reach `node` through the tunnel, from its last published status. */
  route(node: string): TunnelRoute {
    const s = this.catalog.nodes.get(node);
    return { node, relays: s?.tunnel?.relays, address: s?.tunnel?.address };
  }
}

/**
 * Connections to backends for every engine: a routed TCP connection, or a tunnel stream for a
 * backend on another site. A failure is a ConnectError either way (the rulebook's connect failure:
 * passive health and the next backend), its reason the tunnel's code (TUNNEL_REFUSED, …).
 */
export class BackendDialer {
  constructor(
    readonly paths: SitePaths,
    private readonly tunnel: MeshTunnel | undefined,
  ) {}

  /**
   * A connected socket to `b`. A tunnel stream is an HTTP/2 stream, not a `net.Socket`: it has
   * every member the engines use on an upstream connection (write/end, pause/resume/isPaused,
   * setTimeout, destroy/destroyed, the data/end/close/error events) and no file descriptor, so
   * the splice engine and the native L7 engine leave it to JavaScript. With `join`, a tunnel
   * stream may take the client's connection itself (MeshTunnel.open): then `join.client` is what
   * resolves.
   */
  async connect(b: Backend, timeoutMs: number, join?: StreamJoin): Promise<Socket> {
    // a stream that originates TLS to its backend is not the client's to take
    const carry = b.tls ? undefined : join;
    const raw = b.tunnel
      ? ((await this.viaTunnel(b, (t, r) => t.open(r, b.host, b.port, carry))) as unknown as Socket)
      : await connectTo(b, timeoutMs);
    // TLS origination (`appProtocol: https`): verified TLS on the connection, routed or tunneled
    return b.tls ? startTls(raw, b, b.tls, timeoutMs) : raw;
  }

  datagram(b: Backend): Promise<TunnelDatagram> {
    return this.viaTunnel(b, (t, r) => t.datagram(r, b.host, b.port));
  }

  private async viaTunnel<T>(b: Backend, f: (t: MeshTunnel, r: TunnelRoute) => Promise<T>): Promise<T> {
    if (!this.tunnel) throw new ConnectError(b.key, 'no tunnel to another site');
    try {
      return await f(this.tunnel, this.paths.route(b.node!));
    } catch (e) {
      const err = e as { code?: string; message?: string };
      // no socket for the stream on this node: its errno name alone, as a routed connect's
      if (isLocalFailure(e)) throw new ConnectError(b.key, err.code!, { cause: e });
      throw new ConnectError(b.key, `${err.code ?? 'TUNNEL'}: ${err.message ?? e}`, { cause: e });
    }
  }
}
