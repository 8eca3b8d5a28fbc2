import type { Logger } from '@edgecore/beehive';
import { isIP, Socket } from 'node:net';
import type { Backend } from '../../lb/backends';
import { loadNative } from '../../native';
import { fdOf } from '../l4/splice';
import { failures, FRESH, isReply, type Decision, type RequestPolicy } from './policy';
import type { NativeRouter } from './route';

/**
 * The L7 engine of the native addon (native/http_engine.c): client and upstream sockets of portal
 * connections are driven in C on Node's event loop; its per-request callback asks the rulebook
 * (`RequestPolicy`: the LB strategy, passive health, one retry) for each request's backend, and
 * JavaScript serves what the engine hands back.
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
  log: Logger;
  /** A fresh rulebook for a connection's requests. */
  policy(): RequestPolicy;
  /** A client connection was adopted (+1) or left the engine (-1). */
  connections(delta: number): void;
  /** Serve a handed-back connection in JavaScript, `bytes` already read from it. */
  fallback(sock: Socket, route: NativeRouter, bytes: Buffer): void;
}

interface Conn {
  route: NativeRouter;
  fallback?: (sock: Socket, bytes: Buffer) => void;
  ip: string;
  policy: RequestPolicy;
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
  /** Ended requests are accounted by a rulebook of no connection (a connection may be gone). */
  private readonly accounts: RequestPolicy;
  /** Connections adopted so far. */
  adopted = 0;

  private constructor(
    private readonly b: HttpEngineBinding,
    o: NativeHttpOptions,
    private readonly hooks: NativeHttpHooks,
  ) {
    this.accounts = hooks.policy();
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
    this.conns.set(id, { route, fallback: o.fallback, ip, policy: this.hooks.policy() });
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
    let d: Decision;
    if (failed < 0) {
      const r = c.route(authority);
      d = c.policy.begin('status' in r ? { ...r, close: false } : r, c.ip, hash, idempotent);
    } else {
      const fb = this.byId[failed];
      // the engine retried a stale pooled connection on a fresh one already: this is a failure
      d = stale ? c.policy.stale(fb, false, true, reason) : c.policy.connectFailed(fb, reason ?? 'EIO');
    }
    if (d === FRESH) return failed; // (not asked for: the engine makes its fresh retry itself)
    if (isReply(d)) return [d.status, d.message, d.close];
    return this.idOf(d, c.policy, failed < 0);
  }

  /** The engine's id of backend `b` (registered on first use); -1: JavaScript serves it. */
  private idOf(b: Backend, policy: RequestPolicy, first: boolean): PickResult {
    let bid = this.ids.get(b.key);
    if (bid !== undefined) return bid;
    if (
      this.byId.length >= MAX_BACKENDS ||
      !isIP(b.host) ||
      !this.b.backend(this.engine, this.byId.length, b.host, b.port)
    ) {
      // JavaScript serves this connection from here (a host name, or too many backends)
      policy.release(b, false);
      if (first) return -1;
      const r = policy.reply(failures.notAnIp(b));
      return [r.status, r.message, r.close];
    }
    bid = this.byId.length;
    this.byId.push(b);
    this.ids.set(b.key, bid);
    return bid;
  }

  /** `n` ended requests in `this.ended`: connection accounting and status counts. */
  private done(n: number): void {
    const r = this.ended;
    for (let i = 0; i < 3 * n; i += 3) {
      const backend = r[i + 1];
      const status = r[i + 2];
      this.accounts.done(backend >= 0 ? this.byId[backend] : undefined, status);
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
