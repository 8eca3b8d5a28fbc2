import type { Logger } from '@edgecore/beehive';
import { isIP, Socket } from 'node:net';
import type { Backend } from '../../lb/backends';
import { policyOf } from '../../lb/service-policy';
import { loadNative } from '../../native';
import { fdOf } from '../l4/splice';
import { giveCounted, takeCounted } from '../connection-budget';
import {
  failures,
  FRESH,
  isReply,
  type Decision,
  type Reply,
  type RequestPolicy,
  type StaleReason,
} from '../http/policy';

/**
 * The HTTP/2 engine of the native addon (native/h2/engine.c): a portal's client connections and
 * the HTTP/2 connections to its backends driven by nghttp2 on Node's event loop. Per stream it
 * asks the rulebook (`RequestPolicy`, one per stream as in JavaScript's portal) what each event
 * leads to; the words of its answers, gRPC's status mapping and the deadlines are made here (the
 * same functions as JavaScript's portal: `h2-proxy.ts`), the engine frames them.
 */
interface H2EngineBinding {
  create(
    opts: Uint32Array,
    onDecide: DecideFn,
    onDone: (ended: number) => void,
    onHandback: (conn: number, fd: number, bytes: Buffer) => void,
    onClosed: (conn: number) => void,
    doneBuf: Int32Array,
    io: Int32Array,
  ): unknown;
  backend(engine: unknown, id: number, ip: string, port: number): boolean;
  adopt(engine: unknown, fd: number, clientIp: string, hashHeader: string | undefined): number;
  drain(engine: unknown, backend: number): void;
  hashHeader(engine: unknown, conn: number, name: string | undefined): void;
  closeAll(engine: unknown): void;
  close(engine: unknown): void;
  stats(
    engine: unknown,
  ): [clients: number, upstreams: number, streams: number, resetFloods: number, protocolErrors: number];
}

/** Events of a stream the engine asks about (`E_*` in native/h2/engine.c). */
const enum H2Event {
  Pick = 0,
  ConnectFailed = 1,
  Refused = 2,
  Stale = 3,
  Failed = 4,
  Timeout = 5,
  AnsweredBadly = 6,
}

/** Flags of the stream an event is about (`F_*`). */
const enum H2Flag {
  Idempotent = 1,
  Replayable = 2,
  Grpc = 4,
  Unavailable = 8,
}

const FRESH_CONNECTION = -2;
const RELAY = -3;
/** The stream refused and the client connection drained: its next connection is JavaScript's. */
const GOAWAY = -4;
/** The connection's ConsistentHash header was changed: the engine asks again with its value. */
const REHASH = -5;

/** A backend id, FRESH_CONNECTION, RELAY, GOAWAY, or [HTTP status, gRPC status or -1, message]. */
type DecideResult = number | [number, number, string];
type DecideFn = (
  conn: number,
  token: number,
  event: H2Event,
  backend: number,
  arg: number,
  reason: string | undefined,
  flags: number,
  hashValue: string | undefined,
  grpcTimeout: string | undefined,
  ended: number,
) => DecideResult;

/** What a route of the native engine gives it (the portal's `H2Route`). */
export interface NativeH2Route {
  backends: readonly Backend[];
  scope: string;
  hashHeader?: string;
}

export interface NativeH2Options {
  maxStreams: number;
  maxHeaderListBytes: number;
  replayBytes: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  maxResetsPerSecond: number;
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  /** Under load, µs a wake-up first waits for more events (0: off; the node's httpCoalesceUs). */
  coalesceUs: number;
}

/** The rulebook's words as the portal says them (gRPC's status and message, counted). */
export interface H2Words {
  /** An answer to a gRPC call: its grpc-status and percent-encoded grpc-message. */
  grpc(r: Reply, deadline: boolean): [code: number, message: string];
  /** The deadline of a stream (ms), from the service's timeout and the call's grpc-timeout. */
  deadline(route: NativeH2Route, grpc: boolean, grpcTimeout: string | undefined): number | undefined;
}

export interface NativeH2Hooks extends H2Words {
  log: Logger;
  /** A fresh rulebook for a stream. */
  policy(): RequestPolicy;
  /** A client connection was adopted (+1) or left the engine (-1). */
  sessions(delta: number): void;
  /** Not HTTP/2: serve it in JavaScript, `bytes` already read from it. */
  notHttp2(sock: Socket, bytes: Buffer): void;
}

interface Conn {
  route: () => NativeH2Route;
  ip: string;
  /** The header the engine extracts for ConsistentHash on this connection. */
  hashHeader?: string;
  /** Its place in the node's connection count (ConnectionBudget), released when it ends. */
  release?: () => void;
}

interface Stream {
  policy: RequestPolicy;
  route: NativeH2Route;
  grpc: boolean;
}

/** Distinct backends the engine knows (ids are never reused; past this, JavaScript serves). */
const MAX_BACKENDS = 65536;

/** Whether the engine can reach every backend itself (addresses, no tunnel, no TLS to originate). */
export function nativeReachable(backends: readonly Backend[]): boolean {
  for (const b of backends) if (b.tunnel || b.tls || !isIP(b.host)) return false;
  return true;
}

export class NativeH2 {
  private readonly conns = new Map<number, Conn>();
  private readonly streams = new Map<number, Stream>();
  private readonly ids = new Map<string, number>();
  private readonly byId: Backend[] = [];
  private readonly engine: unknown;
  private readonly ended = new Int32Array(3 * 256);
  private readonly io = new Int32Array(1);
  /** Rulebooks of ended streams, for the next ones (each `begin` starts afresh). */
  private readonly spare: RequestPolicy[] = [];
  /** Client connections adopted so far. */
  adopted = 0;

  private constructor(
    private readonly b: H2EngineBinding,
    private readonly o: NativeH2Options,
    private readonly hooks: NativeH2Hooks,
  ) {
    this.engine = b.create(
      Uint32Array.of(
        o.maxStreams,
        o.maxHeaderListBytes,
        o.replayBytes,
        o.pingIntervalMs,
        o.idleTimeoutMs,
        o.maxResetsPerSecond,
        o.connectTimeoutMs,
        o.coalesceUs,
      ),
      (conn, token, event, backend, arg, reason, flags, hash, grpcTimeout, ended) => {
        if (ended) this.done(ended);
        return this.decide(conn, token, event, backend, arg, reason, flags, hash, grpcTimeout);
      },
      (ended) => this.done(ended),
      (conn, fd, bytes) => this.handback(conn, fd, bytes),
      (conn) => this.closed(conn),
      this.ended,
      this.io,
    );
  }

  /** The engine, or undefined when the addon was built without it (no nghttp2 header). */
  static create(o: NativeH2Options, hooks: NativeH2Hooks): NativeH2 | undefined {
    const b = loadNative<{ h2?: H2EngineBinding }>()?.h2;
    return b ? new NativeH2(b, o, hooks) : undefined;
  }

  /**
   * Take a freshly accepted portal connection (nothing read from it yet): the engine works on a
   * duplicate of its descriptor and Node's socket is destroyed. False: serve it in JavaScript.
   */
  adopt(sock: Socket, route: () => NativeH2Route): boolean {
    const fd = fdOf(sock);
    if (fd === undefined) return false;
    const ip = (sock.remoteAddress ?? '').replace(/^::ffff:/, '');
    const hashHeader = route().hashHeader;
    let id: number;
    try {
      id = this.b.adopt(this.engine, fd, ip, hashHeader);
    } catch (e) {
      this.hooks.log.debug({ err: (e as Error).message }, 'native HTTP/2 engine refused a connection');
      return false;
    }
    this.conns.set(id, { route, ip, hashHeader, release: takeCounted(sock) });
    this.adopted++;
    this.hooks.sessions(1);
    sock.destroy();
    return true;
  }

  /** Drain (GOAWAY, open streams finish) the connections of backends `live` does not hold. */
  retain(live: (key: string) => boolean): void {
    for (const [key, id] of this.ids) if (!live(key)) this.b.drain(this.engine, id);
  }

  get counts(): {
    clients: number;
    upstreams: number;
    streams: number;
    resetFloods: number;
    protocolErrors: number;
  } {
    const [clients, upstreams, streams, resetFloods, protocolErrors] = this.b.stats(this.engine);
    return { clients, upstreams, streams, resetFloods, protocolErrors };
  }

  closeAll(): void {
    this.b.closeAll(this.engine);
  }

  close(): void {
    this.b.close(this.engine);
  }

  private decide(
    conn: number,
    token: number,
    event: H2Event,
    backend: number,
    arg: number,
    reason: string | undefined,
    flags: number,
    hash: string | undefined,
    grpcTimeout: string | undefined,
  ): DecideResult {
    const replayable = (flags & H2Flag.Replayable) !== 0;
    const b = backend >= 0 ? this.byId[backend] : undefined;
    let s = this.streams.get(token);
    let d: Decision | undefined;
    if (event === H2Event.Pick) {
      const c = this.conns.get(conn);
      if (!c) return GOAWAY;
      const route = c.route();
      // the service's ConsistentHash header changed: the engine reads the new one, and asks again
      if (route.hashHeader !== c.hashHeader) {
        c.hashHeader = route.hashHeader;
        this.b.hashHeader(this.engine, conn, route.hashHeader);
        return REHASH;
      }
      const grpc = (flags & H2Flag.Grpc) !== 0;
      s = { policy: this.spare.pop() ?? this.hooks.policy(), route, grpc };
      this.streams.set(token, s);
      const deadline = this.hooks.deadline(route, grpc, grpcTimeout);
      this.io[0] = deadline === undefined ? 0 : Math.max(1, Math.min(2 ** 31 - 1, Math.ceil(deadline)));
      d = s.policy.begin(route, c.ip, hash, (flags & H2Flag.Idempotent) !== 0);
      return this.result(d, s, false, true);
    }
    if (!s) return [502, -1, 'stream unknown to the proxy'];
    const p = s.policy;
    switch (event) {
      case H2Event.ConnectFailed:
        d = p.connectFailed(b!, reason ?? 'EIO', replayable);
        break;
      case H2Event.Refused:
        d = p.refused(b!, replayable);
        break;
      case H2Event.Stale:
        d = p.stale(b!, true, replayable, (reason ?? 'closed') as StaleReason);
        break;
      case H2Event.Failed:
        d = p.fail(b, failures.closed(b!, (reason ?? 'closed') as StaleReason));
        break;
      case H2Event.Timeout: {
        const words = s.grpc
          ? { status: 504, message: `deadline of ${arg} ms exceeded at the proxy`, close: false }
          : b
            ? failures.timeout(b, arg)
            : { status: 504, message: `no backend answered within ${arg} ms`, close: false };
        return this.result(p.fail(b, words), s, true, false);
      }
      case H2Event.AnsweredBadly:
        d = p.answeredBadly(b!, arg, (flags & H2Flag.Unavailable) !== 0, replayable);
        if (!d) return RELAY;
        break;
      default:
        d = p.fail(b, { status: 502, message: `unknown engine event ${event}`, close: false });
    }
    return this.result(d, s, false, false);
  }

  private result(d: Decision, s: Stream, deadline: boolean, first: boolean): DecideResult {
    if (d === FRESH) return FRESH_CONNECTION;
    if (isReply(d)) {
      if (s.grpc) {
        const [code, message] = this.hooks.grpc(d, deadline);
        return [d.status, code, message];
      }
      return [d.status, -1, d.message];
    }
    return this.idOf(d, s.policy, first);
  }

  /**
   * The engine's id of backend `b` (registered on first use). A backend it cannot reach itself (on
   * another site, over TLS): this stream is refused (a client may send it again) and the
   * connection drained, so that the client's next connection is served by JavaScript's portal.
   */
  private idOf(b: Backend, policy: RequestPolicy, first: boolean): DecideResult {
    const bid = this.ids.get(b.key);
    if (bid !== undefined) return bid;
    if (
      this.byId.length >= MAX_BACKENDS ||
      !nativeReachable([b]) ||
      !this.b.backend(this.engine, this.byId.length, b.host, b.port)
    ) {
      policy.release(b, false);
      if (first) return GOAWAY;
      const r = policy.reply(failures.notAnIp(b));
      return [r.status, -1, r.message];
    }
    this.byId.push(b);
    this.ids.set(b.key, this.byId.length - 1);
    return this.byId.length - 1;
  }

  /** `n` ended streams in `this.ended`: the backend's account (answered, or aborted). */
  private done(n: number): void {
    const r = this.ended;
    for (let i = 0; i < 3 * n; i += 3) {
      const s = this.streams.get(r[i]);
      this.streams.delete(r[i]);
      const backend = r[i + 1];
      if (!s) continue;
      if (backend >= 0) s.policy.done(this.byId[backend], r[i + 2]);
      if (this.spare.length < 1024) this.spare.push(s.policy);
    }
  }

  private handback(conn: number, fd: number, bytes: Buffer): void {
    const c = this.conns.get(conn);
    this.conns.delete(conn);
    this.hooks.sessions(-1);
    const sock = new Socket({ fd, readable: true, writable: true });
    if (!c) return void sock.destroy();
    giveCounted(sock, c.release);
    this.hooks.notHttp2(sock, bytes);
  }

  private closed(conn: number): void {
    const c = this.conns.get(conn);
    if (!c) return;
    this.conns.delete(conn);
    c.release?.();
    this.hooks.sessions(-1);
  }
}

/** The deadline of an HTTP/2 stream (ms): a gRPC call's the smaller of its grpc-timeout and the
 * service's request timeout; another request's the service's, else the node's response timeout. */
export function streamDeadline(
  route: NativeH2Route,
  grpc: boolean,
  grpcMs: number | undefined,
  responseTimeoutMs: number,
): number | undefined {
  const own = policyOf(route.backends)?.timeoutMs;
  if (grpc) return grpcMs === undefined ? own : Math.min(grpcMs, own ?? Infinity);
  return own ?? responseTimeoutMs;
}
