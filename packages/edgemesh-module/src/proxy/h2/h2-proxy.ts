import { Logger, silentLogger } from '@edgecore/beehive';
import {
  constants,
  createServer,
  type ClientHttp2Stream,
  type Http2Server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { z } from 'zod/v3';
import { h2ProxyOptionsSchema, resolveMeshOptions } from '../../config';
import type { Backend } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';
import { hashHeaderFor } from '../../lb/service-policy';
import { originating } from '../tls/backend-tls';
import type { BackendDialer } from '../../tunnel';
import {
  failures,
  FRESH,
  idempotent,
  isReply,
  RequestPolicy,
  ServiceStats,
  type Decision,
  type L7Route,
  type PolicyCounters,
  type Reply,
} from '../http/policy';
import { NativeUnavailableError } from '../../edgemesh-errors';
import { nativeUnavailable } from '../../native';
import { NativeH2, nativeReachable, streamDeadline } from './native-h2';
import { H2Upstreams, type H2Upstream } from './upstreams';

const {
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_CANCEL,
  NGHTTP2_NO_ERROR,
  NGHTTP2_INTERNAL_ERROR,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_FLAG_END_STREAM,
} = constants;

export type H2ProxyOptions = z.input<typeof h2ProxyOptionsSchema> & { log?: Logger };

/** Where an HTTP/2 portal's streams go: its service port's backends, and the ConsistentHash header. */
export interface H2Route extends L7Route {
  hashHeader?: string;
}

/**
 * The route of an HTTP/2 stream to a service port's backends (a portal's, or a CONNECT tunnel's of
 * the explicit proxy): over TLS with ALPN h2 when the service says its backends speak TLS
 * (`edgecore.io/backend-tls`), with the service's ConsistentHash header, else the node's.
 */
export function h2RouteOf(backends: readonly Backend[], scope: string, nodeHashHeader?: string): H2Route {
  const b = originating(backends, 'h2');
  return { backends: b, scope, hashHeader: hashHeaderFor(b, nodeHashHeader) };
}

export interface H2ProxyStats extends PolicyCounters {
  /** Client connections open now. */
  sessions: number;
  /** Streams answered with gRPC status UNAVAILABLE (or another) by the proxy itself. */
  grpcAnswers: Map<number, number>;
  /** Client connections ended for resetting too many streams (rapid reset). */
  readonly resetFloods: number;
  /** Connections that did not start with the HTTP/2 preface (an HTTP/1 client on an HTTP/2 port). */
  notHttp2: number;
  services: ServiceStats;
}

/** The client connection preface (RFC 9113 §3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** Fields that describe a connection, not a message (RFC 9113 §8.2.2): never forwarded. */
const CONNECTION_FIELDS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/** gRPC status codes we answer with (grpc/doc/statuscodes.md). */
export const GrpcStatus = { DEADLINE_EXCEEDED: 4, UNAVAILABLE: 14, INTERNAL: 13, UNKNOWN: 2 } as const;

/** The gRPC status of an HTTP status of ours (grpc/doc/http-grpc-status-mapping.md). */
export function grpcStatusOf(http: number): number {
  if (http === 502 || http === 503 || http === 504 || http === 429) return GrpcStatus.UNAVAILABLE;
  if (http === 400) return GrpcStatus.INTERNAL;
  return GrpcStatus.UNKNOWN;
}

/** `grpc-timeout` (gRPC over HTTP/2: 1-8 digits and a unit H M S m u n) in ms, or undefined. */
export function grpcTimeoutMs(v: string | undefined): number | undefined {
  const m = v === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as 'H'];
  return Math.max(0, n * unit);
}

const isGrpc = (ct: string | undefined): boolean => !!ct && /^application\/grpc(\+|;|$)/.test(ct);

/** gRPC's percent-encoding of grpc-message. */
const grpcMessage = (s: string): string => s.replace(/[^ -$&-~]/g, (c) => encodeURIComponent(c));

/**
 * HTTP/2 portals (`appProtocol: kubernetes.io/h2c` or `grpc`, or a port named `grpc`, `grpc-<n>`,
 * `h2c`, `http2`): cleartext HTTP/2 with prior knowledge, and every **stream** balanced on its own
 * — the L7 rulebook (`RequestPolicy`: the service's LB policy, passive health, retries) per stream,
 * over shared upstream HTTP/2 connections (`H2Upstreams`). Flow control is HTTP/2's both ways: a
 * stream's data is written only as fast as the other side's window lets it (back-pressure end to
 * end). gRPC: trailers relayed; the proxy's own answers are trailers-only with a grpc-status
 * (UNAVAILABLE when no backend); `grpc-timeout` bounds the wait; a refused stream goes to another
 * backend; a reset is passed on as a reset.
 */
export class H2Proxy {
  readonly stats: H2ProxyStats;
  readonly upstreams: H2Upstreams;
  /** The native engine (native/h2/), when built and not turned off (`engine`). */
  readonly native?: NativeH2;
  private readonly server: Http2Server;
  private readonly o: z.output<typeof h2ProxyOptionsSchema>;
  private readonly log: Logger;
  /** The route of the connection being handed to the server (its 'session' event is synchronous). */
  private pending?: { route: () => H2Route; ip: string };
  private readonly routes = new WeakMap<ServerHttp2Session, { route: () => H2Route; ip: string }>();
  private readonly sessions = new Set<ServerHttp2Session>();
  /**
   * The route of every service port a connection was served for (the latest getter per scope: a
   * caller may make one per connection), to tell which upstream backends are still wanted.
   */
  private readonly routeGetters = new Map<string, () => H2Route>();
  private readonly sweeper: NodeJS.Timeout;
  /** Client connections JavaScript's portal ended for a rapid-reset flood. */
  private jsResetFloods = 0;

  constructor(
    private readonly lb: LoadBalancer,
    dialer: Pick<BackendDialer, 'connect'>,
    opts: H2ProxyOptions = {},
  ) {
    this.o = resolveMeshOptions(h2ProxyOptionsSchema, opts, 'h2');
    this.log = opts.log ?? silentLogger;
    this.upstreams = new H2Upstreams(dialer, {
      maxStreams: this.o.maxStreams,
      connectTimeoutMs: this.o.connectTimeoutMs,
      pingIntervalMs: this.o.pingIntervalMs,
      idleTimeoutMs: this.o.idleTimeoutMs,
      log: this.log,
    });
    const native = (this.native = this.o.engine === 'js' ? undefined : this.createNative());
    if (!native && this.o.engine === 'native')
      throw new NativeUnavailableError(
        'proxy h2Engine native',
        nativeUnavailable() ?? 'the addon was built without nghttp2 (Debian: libnghttp2-dev)',
      );
    const floods = (): number => this.jsResetFloods + (native?.counts.resetFloods ?? 0);
    this.stats = {
      requests: 0,
      retries: 0,
      byStatus: new Map(),
      byBackend: new Map(),
      rejected: new Map(),
      sessions: 0,
      grpcAnswers: new Map(),
      get resetFloods() {
        return floods();
      },
      notHttp2: 0,
      services: new ServiceStats(),
    };
    this.server = createServer({
      settings: {
        maxConcurrentStreams: this.o.maxStreams,
        maxHeaderListSize: this.o.maxHeaderListBytes,
        initialWindowSize: 1024 * 1024,
        enablePush: false,
      },
      maxSessionMemory: 64,
      maxOutstandingPings: 10,
    });
    this.server.on('session', (s) => this.onSession(s));
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    // a backend that left every route: its connections are drained (GOAWAY, open streams finish)
    this.sweeper = setInterval(() => this.sweep(), 5000);
    this.sweeper.unref();
  }

  private createNative(): NativeH2 | undefined {
    return NativeH2.create(this.o, {
      log: this.log,
      policy: () => this.policy(),
      sessions: (d) => void (this.stats.sessions += d),
      notHttp2: (sock, bytes) => {
        this.stats.notHttp2++;
        sock.on('error', () => sock.destroy());
        this.notHttp2(sock, bytes);
      },
      grpc: (r, deadline) =>
        this.grpcWords(deadline ? GrpcStatus.DEADLINE_EXCEEDED : grpcStatusOf(r.status), r.message),
      deadline: (route, grpc, t) =>
        streamDeadline(route, grpc, grpc ? grpcTimeoutMs(t) : undefined, this.o.responseTimeoutMs),
    });
  }

  /**
   * A portal's freshly accepted connection: the native engine takes it when built and every
   * backend of the service is one it reaches itself (an address, no tunnel, no TLS to originate);
   * JavaScript serves it otherwise (`handle`).
   */
  handlePortal(sock: Socket, route: () => H2Route): void {
    if (this.native && nativeReachable(route().backends)) {
      this.routeGetters.set(route().scope, route);
      if (this.native.adopt(sock, route)) return;
    }
    this.handle(sock, route);
  }

  /** Client connections open, upstream connections open (both engines). */
  get connections(): { clients: number; upstreams: number } {
    const n = this.native?.counts;
    return { clients: this.stats.sessions, upstreams: this.upstreams.size + (n?.upstreams ?? 0) };
  }

  /** A gRPC answer of ours, counted: its status and its message percent-encoded. */
  grpcWords(code: number, message: string): [number, string] {
    const st = this.stats;
    st.grpcAnswers.set(code, (st.grpcAnswers.get(code) ?? 0) + 1);
    return [code, grpcMessage(message)];
  }

  /**
   * Serve a portal connection. It must open with the HTTP/2 preface: an HTTP/1 request gets a 505
   * that says so (not a silent close), anything else is closed.
   */
  handle(sock: Socket, route: () => H2Route): void {
    sock.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    const onError = (): void => void sock.destroy();
    sock.on('error', onError);
    const timer = setTimeout(() => sock.destroy(), 10_000);
    const onData = (d: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      const n = Math.min(buf.length, PREFACE.length);
      if (!buf.subarray(0, n).equals(PREFACE.subarray(0, n))) {
        sock.off('data', onData);
        clearTimeout(timer);
        this.stats.notHttp2++;
        return this.notHttp2(sock, buf);
      }
      if (buf.length < PREFACE.length) return;
      sock.off('data', onData);
      sock.off('error', onError);
      clearTimeout(timer);
      // the HTTP/2 session reads the socket from here on, the preface given back first
      sock.pause();
      sock.unshift(buf);
      this.routeGetters.set(route().scope, route);
      this.pending = { route, ip: (sock.remoteAddress ?? '').replace(/^::ffff:/, '') };
      try {
        this.server.emit('connection', sock);
      } finally {
        this.pending = undefined;
      }
    };
    sock.on('data', onData);
  }

  /** Close every client and upstream connection. */
  close(): void {
    clearInterval(this.sweeper);
    for (const s of this.sessions) s.destroy();
    this.upstreams.closeAll();
    this.native?.close();
  }

  private notHttp2(sock: Socket, head: Buffer): void {
    const line = head.subarray(0, Math.max(0, head.indexOf(10))).toString('latin1');
    if (/^[A-Z]+ \S+ HTTP\/1\.[01]\r?$/.test(line)) {
      const body = 'this service port speaks HTTP/2 (h2c with prior knowledge, or gRPC), not HTTP/1.x\n';
      sock.end(
        `HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    } else sock.destroy();
  }

  private onSession(s: ServerHttp2Session): void {
    const ctx = this.pending;
    if (!ctx) return void s.destroy();
    this.routes.set(s, ctx);
    this.sessions.add(s);
    this.stats.sessions++;
    s.on('error', (e) => this.log.debug({ err: e.message }, 'http2 client connection error'));
    s.once('close', () => {
      this.sessions.delete(s);
      this.stats.sessions--;
    });
    s.setTimeout(this.o.idleTimeoutMs, () => s.close());
    // rapid reset (CVE-2023-44487): streams the client resets, per second
    let window = Date.now();
    let resets = 0;
    s.on('stream', (st: ServerHttp2Stream) =>
      st.once('aborted', () => {
        const now = Date.now();
        if (now - window > 1000) {
          window = now;
          resets = 0;
        }
        if (++resets > this.o.maxResetsPerSecond && !s.closed) {
          this.jsResetFloods++;
          this.log.warn({ client: ctx.ip, resets }, 'http2 client resets streams too fast: GOAWAY');
          s.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
          s.destroy();
        }
      }),
    );
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const ctx = this.routes.get(stream.session as ServerHttp2Session);
    if (!ctx) return void stream.close(NGHTTP2_INTERNAL_ERROR);
    new StreamExchange(this, stream, headers, ctx.route(), ctx.ip).start();
  }

  /** Drain upstream connections whose backend no route holds any more. */
  private sweep(): void {
    const live = new Set<string>();
    for (const r of this.routeGetters.values()) for (const b of r().backends) live.add(b.key);
    this.upstreams.retain((k) => live.has(k));
    this.native?.retain((k) => live.has(k));
    // a route is kept while a connection of its portal is open
    if (!this.stats.sessions) this.routeGetters.clear();
  }

  /** @internal the rulebook of one stream. */
  policy(): RequestPolicy {
    return new RequestPolicy(this.lb, this.stats, this.log);
  }

  /** @internal */
  get options() {
    return this.o;
  }
}

/** One client stream's course: a backend, its upstream stream, the answer relayed or made. */
class StreamExchange {
  private readonly policy: RequestPolicy;
  private readonly grpc: boolean;
  /** The request body so far, while it may be sent again (≤ replayBytes, before any answer). */
  private kept: Buffer[] | undefined = [];
  private keptBytes = 0;
  private clientEnded: boolean;
  private up?: ClientHttp2Stream;
  private backend?: Backend;
  private responded = false;
  private finished = false;
  private trailers?: IncomingHttpHeaders;
  private timer?: NodeJS.Timeout;
  private status = 0;

  constructor(
    private readonly proxy: H2Proxy,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly route: H2Route,
    private readonly ip: string,
  ) {
    this.policy = proxy.policy();
    this.grpc = isGrpc(headers['content-type']);
    this.clientEnded = stream.endAfterHeaders;
  }

  start(): void {
    const s = this.stream;
    s.on('error', () => undefined);
    s.pause();
    s.on('data', (d: Buffer) => this.fromClient(d));
    s.on('end', () => {
      this.clientEnded = true;
      if (this.up && !this.up.destroyed) this.up.end();
    });
    // a client reset: passed on upstream as a reset
    s.once('close', () => {
      if (this.finished) return;
      this.finish();
      const code = s.rstCode && s.rstCode !== NGHTTP2_NO_ERROR ? s.rstCode : NGHTTP2_CANCEL;
      if (this.up && !this.up.destroyed) this.up.close(code);
    });
    // the service's request timeout (edgecore.io/request-timeout-seconds) bounds gRPC's deadline
    // too; a request that is not gRPC waits the node's responseTimeoutMs without one
    const grpcMs = this.grpc ? grpcTimeoutMs(headers(this.headers, 'grpc-timeout')) : undefined;
    const deadline = streamDeadline(this.route, this.grpc, grpcMs, this.proxy.options.responseTimeoutMs);
    if (deadline !== undefined) this.timer = setTimeout(() => this.onDeadline(deadline), deadline);
    const hashKey = this.route.hashHeader ? headers(this.headers, this.route.hashHeader) : undefined;
    const method = headers(this.headers, ':method') ?? 'GET';
    void this.attempt(this.policy.begin(this.route, this.ip, hashKey, idempotent(method)));
  }

  private fromClient(d: Buffer): void {
    if (this.kept) {
      this.keptBytes += d.length;
      if (this.keptBytes <= this.proxy.options.replayBytes) this.kept.push(d);
      else this.kept = undefined; // too large to send again
    }
    if (this.up && !this.up.destroyed && !this.up.write(d)) {
      this.stream.pause();
      this.up.once('drain', () => this.stream.resume());
    }
  }

  /** The whole request is still at hand (to send to another backend). */
  private get replayable(): boolean {
    return !!this.kept && !this.responded;
  }

  private async attempt(d: Decision): Promise<void> {
    if (isReply(d)) return this.answer(d);
    // FRESH: the same backend on another connection (its connection went away under the stream)
    const b = d === FRESH ? this.backend! : d;
    if (this.finished) return this.policy.release(b, false);
    let u: H2Upstream;
    try {
      u = await this.proxy.upstreams.acquire(b);
    } catch (e) {
      const err = e as { reason?: string; code?: string };
      if (this.finished) return this.policy.release(b, false);
      return this.attempt(this.policy.connectFailed(b, err.reason ?? err.code ?? 'EIO', this.replayable));
    }
    if (this.finished) {
      this.proxy.upstreams.release(u);
      return this.policy.release(b, false);
    }
    this.backend = b;
    let up: ClientHttp2Stream;
    try {
      up = u.session.request(this.forwardHeaders(), { endStream: this.clientEnded && !this.keptBytes });
    } catch {
      this.proxy.upstreams.release(u);
      return this.attempt(this.policy.refused(b, this.replayable));
    }
    this.up = up;
    /** This try's answer was not relayed: the request went to another backend. */
    let abandoned = false;
    up.on('error', () => undefined);
    up.on('response', (h, flags) => {
      if (this.retryAnswer(b, h, flags)) {
        abandoned = true;
        up.close(NGHTTP2_CANCEL);
      } else this.onResponse(h, flags);
    });
    up.on('trailers', (t) => abandoned || (this.trailers = t));
    up.on('data', (chunk: Buffer) => {
      if (abandoned) return;
      if (!this.stream.destroyed && !this.stream.write(chunk)) {
        up.pause();
        this.stream.once('drain', () => up.resume());
      }
    });
    // the answer ends when the upstream stream closes: with END_STREAM (the trailers follow), or
    // reset — passed on as a reset, never turned into a clean end
    up.once('close', () => {
      this.proxy.upstreams.release(u);
      if (abandoned) return;
      const code = up.rstCode ?? NGHTTP2_NO_ERROR;
      if (this.responded) {
        // the load balancer's account of this backend: answered, or cut short (not counted)
        this.policy.done(b, code === NGHTTP2_NO_ERROR ? this.status : 0);
        if (this.finished || this.stream.destroyed) return;
        if (code === NGHTTP2_NO_ERROR) this.stream.end();
        else {
          // Node's close(code) on a stream the client has ended sends END_STREAM first (a clean
          // end to the client); destroying it sends RST_STREAM (INTERNAL_ERROR) instead
          this.finish();
          this.stream.destroy(new Error(`upstream ${b.key} reset the stream (code ${code})`));
        }
        return;
      }
      if (this.finished) return this.policy.release(b, false); // the client left, or the deadline
      this.up = undefined;
      // the connection went away under it (a GOAWAY that did not cover it — Node closes those
      // streams REFUSED_STREAM —, a closed socket): the same backend on a fresh connection once,
      // then as a failure (the rulebook's stale pooled connection)
      if (u.closing || u.session.destroyed)
        return void this.attempt(this.policy.stale(b, true, this.replayable, 'closed'));
      // not processed: the backend refused the stream (at its limit): another backend
      if (code === NGHTTP2_REFUSED_STREAM) return void this.attempt(this.policy.refused(b, this.replayable));
      this.answer(this.policy.fail(b, failures.closed(b, code === NGHTTP2_NO_ERROR ? 'closed' : 'reset')));
    });
    // the request body: what was kept, then the rest as it comes
    for (const c of this.kept ?? []) up.write(c);
    if (this.clientEnded) {
      if (this.keptBytes) up.end();
    } else this.stream.resume();
  }

  /**
   * A 5xx answer (or a trailers-only gRPC UNAVAILABLE) the service retries on
   * (`edgecore.io/retry-on`), before anything of it reached the client: the request goes to another
   * backend (the rulebook decides: budget, tries, the request held whole). True: not relayed.
   */
  private retryAnswer(b: Backend, h: IncomingHttpHeaders, flags: number): boolean {
    const status = Number(h[':status'] ?? 0);
    const unavailable = this.grpc && (flags & NGHTTP2_FLAG_END_STREAM) !== 0 && h['grpc-status'] === '14';
    if (status < 500 && !unavailable) return false;
    const d = this.policy.answeredBadly(b, status, unavailable, this.replayable);
    if (!d) return false;
    this.up = undefined;
    void this.attempt(d);
    return true;
  }

  private onResponse(h: IncomingHttpHeaders, flags: number): void {
    if (this.finished || this.stream.destroyed) return;
    this.responded = true;
    this.kept = undefined;
    if (!this.grpc) clearTimeout(this.timer);
    this.status = Number(h[':status'] ?? 0);
    const out: OutgoingHttpHeaders = {};
    for (const k in h) if (!CONNECTION_FIELDS.has(k) && (k[0] !== ':' || k === ':status')) out[k] = h[k];
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const s = this.stream;
    if (endStream) {
      // a trailers-only answer (gRPC's errors): headers with END_STREAM
      s.respond(out, { endStream: true });
      return this.finish();
    }
    s.respond(out, { waitForTrailers: true });
    s.once('wantTrailers', () => {
      const t: OutgoingHttpHeaders = {};
      for (const k in this.trailers ?? {})
        if (k[0] !== ':' && !CONNECTION_FIELDS.has(k)) t[k] = this.trailers![k];
      s.sendTrailers(t);
      this.finish();
    });
  }

  private finish(): void {
    this.finished = true;
    clearTimeout(this.timer);
  }

  private onDeadline(ms: number): void {
    if (this.finished) return;
    const reset = (): void => {
      this.finish();
      this.stream.close(NGHTTP2_CANCEL);
    };
    if (this.responded) return reset(); // mid-answer: the client sees the call cancelled
    const words = this.grpc
      ? { status: 504, message: `deadline of ${ms} ms exceeded at the proxy`, close: false }
      : this.backend
        ? failures.timeout(this.backend, ms)
        : { status: 504, message: `no backend answered within ${ms} ms`, close: false };
    const r = this.policy.reply(words, this.backend);
    // the upstream stream's close (later: this exchange is finished by then) releases the backend
    if (this.up && !this.up.destroyed) this.up.close(NGHTTP2_CANCEL);
    if (this.grpc) this.grpcAnswer(GrpcStatus.DEADLINE_EXCEEDED, r.message);
    else this.answer(r);
  }

  /** An answer of ours (the rulebook's words, counted there): gRPC's trailers-only form for a gRPC call. */
  private answer(r: Reply): void {
    if (this.finished) return;
    if (this.grpc) return this.grpcAnswer(grpcStatusOf(r.status), r.message);
    this.finish();
    const s = this.stream;
    if (s.destroyed) return;
    if (s.headersSent) return void s.close(NGHTTP2_INTERNAL_ERROR);
    s.respond({ ':status': r.status, 'content-type': 'text/plain; charset=utf-8' });
    s.end(`${r.message}\n`);
  }

  private grpcAnswer(status: number, message: string): void {
    this.finish();
    const [code, words] = this.proxy.grpcWords(status, message);
    const s = this.stream;
    if (s.destroyed) return;
    if (s.headersSent) return void s.close(NGHTTP2_INTERNAL_ERROR);
    s.respond(
      {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(code),
        'grpc-message': words,
      },
      { endStream: true },
    );
  }

  private forwardHeaders(): OutgoingHttpHeaders {
    const h = this.headers;
    const out: OutgoingHttpHeaders = {};
    for (const k in h) if (!CONNECTION_FIELDS.has(k)) out[k] = h[k];
    const xff = headers(h, 'x-forwarded-for');
    out['x-forwarded-for'] = xff ? `${xff}, ${this.ip}` : this.ip;
    return out;
  }
}

/** One header's value (the first of a list). */
function headers(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}
