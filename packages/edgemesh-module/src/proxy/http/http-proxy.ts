import { Logger, silentLogger } from '@edgecore/beehive';
import type { Socket } from 'node:net';
import type { z } from 'zod/v3';
import { httpProxyOptionsSchema, resolveMeshOptions } from '../../config';
import { NativeUnavailableError, type RejectReason } from '../../edgemesh-errors';
import { hasTunneled } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';
import { nativeUnavailable } from '../../native';
import { SpliceEngine } from '../l4/splice';
import { JsExchange } from './exchange';
import { NativeHttp } from './native-engine';
import { RequestPolicy, ServiceStats } from './policy';
import type { NativeRoute, NativeRouter, RouteRefusal, RouteResolver } from './route';
import { UpgradeTunnels } from './tunnel';
import type { UpstreamPool } from './upstream-pool';

/**
 * Head limits and timeouts (431, 408, idle keep-alive, 504, connect), upgraded connections' idle
 * timeout and splice engine, the engine of portal connections (`auto`: the native one when the
 * addon is built, `native` requires it, `js` never uses it) and its event coalescing under load.
 */
export type HttpProxyOptions = z.input<typeof httpProxyOptionsSchema> & { log?: Logger };

export interface HttpProxyStats {
  requests: number;
  retries: number;
  activeConnections: number;
  /** Upgraded connections handed to the splice engine. */
  readonly splicedTunnels: number;
  /** Client connections served by the native L7 engine (some are handed back to JavaScript later). */
  nativeConnections: number;
  byStatus: Map<number, number>;
  byBackend: Map<string, number>;
  /** Requests refused before any backend, by reason. */
  rejected: Map<RejectReason, number>;
  /** Per service port: answers by class, latency. */
  services: ServiceStats;
}

/**
 * The L7 proxy of a portal (and of the explicit forward proxy): picks the engine of each
 * connection — the native one when built, else JavaScript — and holds what both share: the
 * rulebook's counters, the upstream pool, the upgrade tunnels.
 */
export class HttpProxy {
  readonly stats: HttpProxyStats;
  /** The native L7 engine (portal connections), when built and not turned off. */
  readonly native?: NativeHttp;
  private readonly log: Logger;
  private readonly clients = new Set<Socket>();
  private readonly tunnels: UpgradeTunnels;
  private readonly js: JsExchange;

  constructor(
    private readonly lb: LoadBalancer,
    pool: UpstreamPool,
    opts: HttpProxyOptions = {},
  ) {
    const o = resolveMeshOptions(httpProxyOptionsSchema, opts, 'http');
    this.log = opts.log ?? silentLogger;
    const tunnels = new UpgradeTunnels(o.splice ? SpliceEngine.get() : undefined, o.tunnelIdleMs);
    this.tunnels = tunnels;
    this.stats = {
      requests: 0,
      retries: 0,
      activeConnections: 0,
      get splicedTunnels() {
        return tunnels.spliced;
      },
      nativeConnections: 0,
      byStatus: new Map(),
      byBackend: new Map(),
      rejected: new Map(),
      services: new ServiceStats(),
    };
    const policy = (): RequestPolicy => new RequestPolicy(this.lb, this.stats, this.log);
    this.js = new JsExchange(o, pool, tunnels, policy, this.log);
    const mode = o.engine;
    if (mode !== 'js') {
      this.native = NativeHttp.create(
        {
          ...o,
          poolIdleMs: pool.options.idleMs,
          poolMaxIdle: pool.options.maxIdle,
        },
        {
          log: this.log,
          policy,
          connections: (d) => void (this.stats.activeConnections += d),
          fallback: (sock, route, bytes) => this.handle(sock, () => route(), bytes),
        },
      );
      if (!this.native && mode === 'native')
        throw new NativeUnavailableError('proxy httpEngine native', nativeUnavailable() ?? 'unknown');
    }
  }

  /** A request refused before any backend (by a parser outside the engines): counted. */
  reject(e: { status: number; reason: RejectReason }): void {
    this.stats.byStatus.set(e.status, (this.stats.byStatus.get(e.status) ?? 0) + 1);
    this.stats.rejected.set(e.reason, (this.stats.rejected.get(e.reason) ?? 0) + 1);
  }

  /**
   * Serve a portal connection: its route does not depend on the request (a service port). The
   * native engine takes it when built; JavaScript otherwise.
   */
  handleRoute(client: Socket, route: () => NativeRoute): void {
    const r = route();
    // a service with a backend on another site is served in JavaScript (tunnel streams have no fd)
    if (!hasTunneled(r.backends) && this.native?.adopt(client, route, { hashHeader: r.hashHeader })) {
      this.stats.nativeConnections++;
      return;
    }
    this.handle(client, () => route());
  }

  /**
   * An explicit forward proxy's connection, to the native engine when it is built: absolute-form
   * `http://` requests are routed per request by `route(authority)`; the engine hands anything
   * else (CONNECT, origin-form) to `fallback` with the bytes read. False: not taken.
   */
  adoptForward(
    client: Socket,
    route: (authority: string) => NativeRoute | RouteRefusal,
    fallback: (sock: Socket, bytes: Buffer) => void,
    hashHeader?: string,
  ): boolean {
    const router: NativeRouter = (a) =>
      a === undefined ? { status: 400, message: 'no authority' } : route(a);
    if (!this.native?.adopt(client, router, { forward: true, fallback, hashHeader })) return false;
    this.stats.nativeConnections++;
    return true;
  }

  /** Serve one client connection in JavaScript until it closes. */
  handle(client: Socket, resolve: RouteResolver, initial?: Buffer): void {
    client.setNoDelay(true);
    this.clients.add(client);
    this.stats.activeConnections++;
    client.once('close', () => {
      this.clients.delete(client);
      this.stats.activeConnections--;
    });
    client.on('error', () => client.destroy());
    void this.js.serve(client, resolve, initial).catch((e) => {
      this.log.debug({ err: (e as Error).message }, 'client connection ended with an error');
      client.destroy();
    });
  }

  /** closeAll, and the native engine's descriptors and handles released (module stop). */
  close(): void {
    this.closeAll();
    this.native?.close();
  }

  /** Destroy every client connection (portal removed or shutdown). */
  closeAll(): void {
    this.native?.closeAll();
    this.tunnels.abortAll();
    for (const c of this.clients) c.destroy();
  }
}
