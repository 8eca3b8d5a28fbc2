import type { Logger } from '@edgecore/beehive';
import { isIP, Socket } from 'node:net';
import type { Backend } from '../../lb/backends';
import { needsHeldAnswer } from '../../lb/service-policy';
import { loadNative } from '../../native';
import { fdOf } from '../l4/splice';
import { giveCounted, takeCounted } from '../connection-budget';
import { errorResponse } from './error-response';
import {
  failures,
  FRESH,
  isReply,
  type Decision,
  type Reply,
  type RequestPolicy,
  type StaleReason,
} from './policy';
import { FORBIDDEN_TRAILERS, HOP_BY_HOP, IDEMPOTENT_METHODS, LIMITS } from './protocol';
import type { NativeRouter } from './route';

/**
 * The L7 engine of the native addon (native/http/): client and upstream sockets of portal
 * connections are driven in C on Node's event loop; its per-request callback asks the rulebook
 * (`RequestPolicy`: the LB strategy, passive health, one retry, the words of every answer) what
 * each event of a request leads to, and JavaScript serves what the engine hands back. The protocol
 * tables and limits are handed to the engine at create; it states none of its own.
 */
interface HttpEngineBinding {
  create(
    opts: Uint32Array,
    hopByHop: readonly string[],
    idempotentMethods: readonly string[],
    forbiddenTrailers: readonly string[],
    onDecide: DecideFn,
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

/** Events of a request the engine asks about (`D_*` in native/http/engine.h). */
const enum EngineEvent {
  Pick = 0,
  ConnectFailed = 1,
  Stale = 2,
  Timeout = 3,
  Malformed = 4,
  BadBody = 5,
  HeadTimeout = 6,
}

/** Flags of the request an event is about (`F_*`). */
const enum EventFlag {
  Idempotent = 1,
  CanKeep = 2,
  Reused = 4,
  Replayable = 8,
}

/** A backend id, HANDBACK, FRESH_CONNECTION (the same backend afresh), or [answer bytes, keep]. */
type DecideResult = number | [Buffer, boolean];
const HANDBACK = -1;
const FRESH_CONNECTION = -2;
type DecideFn = (
  id: number,
  event: EngineEvent,
  backend: number,
  reason: string | undefined,
  flags: number,
  hashValue: string | undefined,
  ended: number,
  authority: string | undefined,
) => DecideResult;

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
  underscoresInHeaders: boolean;
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
  /** The header the engine extracts for ConsistentHash on this connection. */
  hashHeader?: string;
  /** Its place in the node's connection count (ConnectionBudget), released when it ends. */
  release?: () => void;
  /** The route and pick time of its request in flight (one at a time on HTTP/1.1). */
  current?: import('./policy').L7Route;
  pickedAt?: number;
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
    private readonly o: NativeHttpOptions,
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
        LIMITS.chunkLineBytes,
        LIMITS.trailerBytes,
        LIMITS.chunkSizeDigits,
        LIMITS.contentLengthDigits,
        LIMITS.responseHeadBytes,
        o.underscoresInHeaders ? 1 : 0,
      ),
      HOP_BY_HOP,
      IDEMPOTENT_METHODS,
      FORBIDDEN_TRAILERS,
      (id, event, backend, reason, flags, hash, ended, authority) => {
        if (ended) this.done(ended);
        return this.decide(id, event, backend, reason, flags, hash, authority);
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
      policy: this.hooks.policy(),
      hashHeader: o.hashHeader,
      release: takeCounted(sock),
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

  private decide(
    id: number,
    event: EngineEvent,
    backend: number,
    reason: string | undefined,
    flags: number,
    hash: string | undefined,
    authority: string | undefined,
  ): DecideResult {
    const c = this.conns.get(id);
    const policy = c?.policy ?? this.accounts;
    const b = backend >= 0 ? this.byId[backend] : undefined;
    let d: Decision;
    switch (event) {
      case EngineEvent.Pick: {
        if (!c) return HANDBACK;
        const r = c.route(authority);
        // a service keyed by another header than the one the engine reads (the explicit proxy
        // serves every service on one connection): JavaScript serves from this request on
        if ('backends' in r && r.hashHeader !== c.hashHeader) return HANDBACK;
        // a service that retries on answers or has its own timeout: JavaScript holds the answer
        if ('backends' in r && needsHeldAnswer(r.backends)) return HANDBACK;
        if ('backends' in r) c.current = r;
        c.pickedAt = performance.now();
        d = policy.begin(r, c.ip, hash, (flags & EventFlag.Idempotent) !== 0);
        break;
      }
      case EngineEvent.ConnectFailed:
        d = policy.connectFailed(b!, reason ?? 'EIO');
        break;
      case EngineEvent.Stale:
        d = policy.stale(
          b!,
          (flags & EventFlag.Reused) !== 0,
          (flags & EventFlag.Replayable) !== 0,
          reason as StaleReason,
        );
        break;
      default:
        if (event === EngineEvent.BadBody) policy.noteRejected('bad-chunk');
        else if (event === EngineEvent.HeadTimeout) policy.noteRejected('head-timeout');
        d = policy.fail(b, this.answer(event, b));
    }
    if (d === FRESH) return FRESH_CONNECTION;
    if (isReply(d))
      return [errorResponse(d.status, d.message, (flags & EventFlag.CanKeep) !== 0 && !d.close), !d.close];
    return this.idOf(d, policy, event === EngineEvent.Pick);
  }

  /** The rulebook's words for an exchange that failed in the engine's hands. */
  private answer(event: EngineEvent, b: Backend | undefined): Reply {
    switch (event) {
      case EngineEvent.Timeout:
        return failures.timeout(b!, this.o.responseTimeoutMs);
      case EngineEvent.Malformed:
        return failures.malformed(b!);
      case EngineEvent.BadBody:
        return failures.badBody();
      default:
        return failures.headTimeout(this.o.headTimeoutMs);
    }
  }

  /** The engine's id of backend `b` (registered on first use); -1: JavaScript serves it. */
  private idOf(b: Backend, policy: RequestPolicy, first: boolean): DecideResult {
    let bid = this.ids.get(b.key);
    if (bid !== undefined) return bid;
    if (
      this.byId.length >= MAX_BACKENDS ||
      !isIP(b.host) ||
      b.tunnel ||
      b.tls ||
      !this.b.backend(this.engine, this.byId.length, b.host, b.port)
    ) {
      // JavaScript serves this connection from here (a host name, a tunnel, TLS, or too many backends)
      policy.release(b, false);
      if (first) return HANDBACK;
      const r = policy.reply(failures.notAnIp(b));
      return [errorResponse(r.status, r.message, false), false];
    }
    bid = this.byId.length;
    this.byId.push(b);
    this.ids.set(b.key, bid);
    return bid;
  }

  /** `n` ended requests in `this.ended`: connection accounting and status counts. */
  private done(n: number): void {
    const r = this.ended;
    const now = performance.now();
    for (let i = 0; i < 3 * n; i += 3) {
      const backend = r[i + 1];
      const status = r[i + 2];
      const c = this.conns.get(r[i]);
      const ms = c?.pickedAt ? now - c.pickedAt : undefined;
      this.accounts.done(backend >= 0 ? this.byId[backend] : undefined, status, ms, c?.current);
    }
  }

  private handback(id: number, fd: number, bytes: Buffer): void {
    const c = this.conns.get(id);
    this.conns.delete(id);
    this.hooks.connections(-1);
    const sock = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    if (!c) return void sock.destroy();
    giveCounted(sock, c.release);
    if (c.fallback) c.fallback(sock, bytes);
    else this.hooks.fallback(sock, c.route, bytes);
  }

  private closed(id: number): void {
    const c = this.conns.get(id);
    if (!c) return;
    this.conns.delete(id);
    c.release?.();
    this.hooks.connections(-1);
  }
}
