import type { Logger } from '@edgecore/beehive';
import { isIP, Socket } from 'node:net';
import type { Backend } from '../lb/backends';
import type { LoadBalancer } from '../lb/load-balancer';
import { loadNative } from '../native';
import { fdOf } from './splice';

/**
 * The L7 engine of the native addon (native/http_engine.c): client and upstream sockets of portal
 * connections are driven in C on Node's event loop; JavaScript picks each request's backend (the
 * LB strategy, passive health, one retry), counts, and serves what the engine hands back.
 */
interface HttpEngineBinding {
  create(
    opts: Uint32Array,
    onPick: PickFn,
    onDone: (ended: number) => void,
    onHandback: (id: number, fd: number, bytes: Buffer) => void,
    onClosed: (id: number) => void,
    doneBuf: Int32Array,
  ): unknown;
  backend(engine: unknown, id: number, ip: string, port: number): boolean;
  adopt(
    engine: unknown,
    fd: number,
    clientIp: string,
    hashHeader: string | undefined,
    forward: boolean,
  ): number;
  closeAll(engine: unknown): void;
  close(engine: unknown): void;
  stats(engine: unknown): [clients: number, upstreams: number, pooled: number, coalescedWakeups: number];
}

/** A backend id, -1 (hand the connection back to JavaScript), or [status, message, close]. */
type PickResult = number | [number, string, boolean];
type PickFn = (
  id: number,
  idempotent: boolean,
  hashValue: string | undefined,
  failed: number,
  reason: string | undefined,
  stale: boolean,
  ended: number,
  authority: string | undefined,
) => PickResult;

/** Where a request goes: the route of its portal, or of the service its authority names. */
export interface NativeRoute {
  backends: readonly Backend[];
  scope: string;
  hashHeader?: string;
}

/**
 * A connection's router: called once per request. Portals ignore the argument; an explicit
 * forward proxy gets each request's `host[:port]` (from `http://host:port/path`) and may refuse.
 */
export type NativeRouter = (authority?: string) => NativeRoute | { status: number; message: string };

export interface AdoptOptions {
  /** Header whose value a ConsistentHash strategy hashes. */
  hashHeader?: string;
  /** Explicit forward proxy: the engine takes absolute-form `http://` requests and rewrites them
   * to origin-form; every other request (CONNECT, origin-form) is handed back. */
  forward?: boolean;
  /** Serves a handed-back connection instead of the hooks' fallback. */
  fallback?: (sock: Socket, bytes: Buffer) => void;
}

export interface NativeHttpOptions {
  maxHeadBytes: number;
  keepAliveTimeoutMs: number;
  headTimeoutMs: number;
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  poolIdleMs: number;
  poolMaxIdle: number;
  coalesceUs: number;
}

export interface NativeHttpHooks {
  lb: LoadBalancer;
  log: Logger;
  /** A request was counted (its first pick). */
  request(): void;
  retry(): void;
  count(status: number, backend?: Backend): void;
  /** A client connection was adopted (+1) or left the engine (-1). */
  connections(delta: number): void;
  /** Serve a handed-back connection in JavaScript, `bytes` already read from it. */
  fallback(sock: Socket, route: NativeRouter, bytes: Buffer): void;
}

interface Conn {
  route: NativeRouter;
  fallback?: (sock: Socket, bytes: Buffer) => void;
  current?: NativeRoute;
  ip: string;
  tried: Set<string>;
  retried: boolean;
  idempotent: boolean;
  lastFailure: string;
}

/** Distinct backends the engine knows (ids are never reused; past this, JavaScript serves). */
const MAX_BACKENDS = 65536;

export class NativeHttp {
  private readonly conns = new Map<number, Conn>();
  private readonly ids = new Map<string, number>();
  private readonly byId: Backend[] = [];
  private readonly engine: unknown;
  /** Ended requests, written by the engine: (connection id, backend id or -1, status) each. */
  private readonly ended = new Int32Array(3 * 256);
  /** Connections adopted so far. */
  adopted = 0;

  private constructor(
    private readonly b: HttpEngineBinding,
    o: NativeHttpOptions,
    private readonly hooks: NativeHttpHooks,
  ) {
    this.engine = b.create(
      Uint32Array.of(
        o.maxHeadBytes,
        o.keepAliveTimeoutMs,
        o.headTimeoutMs,
        o.connectTimeoutMs,
        o.responseTimeoutMs,
        o.poolIdleMs,
        o.poolMaxIdle,
        o.coalesceUs,
      ),
      (id, idem, hash, failed, reason, stale, ended, authority) => {
        if (ended) this.done(ended);
        return this.pick(id, idem, hash, failed, reason, stale, authority);
      },
      (ended) => this.done(ended),
      (id, fd, bytes) => this.handback(id, fd, bytes),
      (id) => this.closed(id),
      this.ended,
    );
  }

  /** The engine, or undefined when the addon is not built (`nativeUnavailable()` says why). */
  static create(o: NativeHttpOptions, hooks: NativeHttpHooks): NativeHttp | undefined {
    const b = loadNative<{ http?: HttpEngineBinding }>()?.http;
    return b ? new NativeHttp(b, o, hooks) : undefined;
  }

  /**
   * Take a freshly accepted connection (nothing read from it yet). The engine works on a duplicate
   * of its descriptor; Node's socket is destroyed here. False: not taken, serve it in JavaScript.
   */
  adopt(sock: Socket, route: NativeRouter, o: AdoptOptions = {}): boolean {
    const fd = fdOf(sock);
    if (fd === undefined) return false;
    const ip = (sock.remoteAddress ?? '').replace(/^::ffff:/, '');
    let id: number;
    try {
      id = this.b.adopt(this.engine, fd, ip, o.hashHeader, o.forward === true);
    } catch (e) {
      this.hooks.log.debug({ err: (e as Error).message }, 'native L7 engine refused a connection');
      return false;
    }
    this.conns.set(id, {
      route,
      fallback: o.fallback,
      ip,
      tried: new Set(),
      retried: false,
      idempotent: false,
      lastFailure: '',
    });
    this.adopted++;
    this.hooks.connections(1);
    sock.destroy();
    return true;
  }

  /** Client connections, upstream connections, idle pooled upstream connections. */
  get counts(): { clients: number; upstreams: number; pooled: number } {
    const [clients, upstreams, pooled] = this.b.stats(this.engine);
    return { clients, upstreams, pooled };
  }

  /** Wake-ups that waited for more events (`coalesceUs`, under load). */
  get coalescedWakeups(): number {
    return this.b.stats(this.engine)[3];
  }

  closeAll(): void {
    this.b.closeAll(this.engine);
  }

  close(): void {
    this.b.close(this.engine);
  }

  private pick(
    id: number,
    idempotent: boolean,
    hash: string | undefined,
    failed: number,
    reason: string | undefined,
    stale: boolean,
    authority: string | undefined,
  ): PickResult {
    const c = this.conns.get(id);
    if (!c) return -1;
    const { lb } = this.hooks;
    if (failed < 0) {
      if (c.tried.size) c.tried.clear();
      c.retried = false;
      c.idempotent = idempotent;
      this.hooks.request();
      const r = c.route(authority);
      if ('status' in r) {
        this.hooks.count(r.status);
        return [r.status, r.message, false];
      }
      c.current = r;
    } else {
      // the same rules as HttpProxy.exchange: eject, then one retry for idempotent requests
      const fb = this.byId[failed];
      lb.release(fb);
      lb.fail(fb);
      c.tried.add(fb.key);
      c.lastFailure = `${fb.key} ${reason}`;
      this.hooks.log.debug({ backend: fb.key, reason }, 'backend connect failed');
      if (!c.idempotent || c.retried) {
        this.hooks.count(502);
        return stale
          ? [502, `upstream ${fb.key} ${reason}`, true]
          : [502, `upstream ${fb.key}: ${reason}`, false];
      }
      c.retried = true;
      this.hooks.retry();
    }
    const route = c.current!;
    const b = lb.pick(route.backends, route.scope, c.ip, hash, c.tried);
    if (!b) {
      const status = route.backends.length === 0 ? 503 : 502;
      this.hooks.count(status);
      return [
        status,
        status === 503
          ? `no backend for ${route.scope}`
          : `every backend of ${route.scope} failed (last: ${c.lastFailure})`,
        false,
      ];
    }
    let bid = this.ids.get(b.key);
    if (bid === undefined) {
      if (
        this.byId.length >= MAX_BACKENDS ||
        !isIP(b.host) ||
        !this.b.backend(this.engine, this.byId.length, b.host, b.port)
      ) {
        // JavaScript serves this connection from here (a host name, or too many backends)
        if (failed < 0) return -1;
        this.hooks.count(502);
        return [502, `upstream ${b.key}: not an IP address`, false];
      }
      bid = this.byId.length;
      this.byId.push(b);
      this.ids.set(b.key, bid);
    }
    lb.acquire(b);
    return bid;
  }

  /** `n` ended requests in `this.ended`: connection accounting and status counts. */
  private done(n: number): void {
    const r = this.ended;
    for (let i = 0; i < 3 * n; i += 3) {
      const backend = r[i + 1];
      const status = r[i + 2];
      const b = backend >= 0 ? this.byId[backend] : undefined;
      if (b) {
        this.hooks.lb.release(b);
        if (status > 0) this.hooks.lb.succeed(b);
      }
      if (status > 0) this.hooks.count(status, b);
    }
  }

  private handback(id: number, fd: number, bytes: Buffer): void {
    const c = this.conns.get(id);
    this.conns.delete(id);
    this.hooks.connections(-1);
    const sock = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    if (!c) return void sock.destroy();
    if (c.fallback) c.fallback(sock, bytes);
    else this.hooks.fallback(sock, c.route, bytes);
  }

  private closed(id: number): void {
    if (this.conns.delete(id)) this.hooks.connections(-1);
  }
}
