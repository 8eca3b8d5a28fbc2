import { Logger, silentLogger } from '@edgecore/beehive';
import type { Socket } from 'node:net';
import { InvalidOptionError, NativeUnavailableError } from '../edgemesh-errors';
import type { Backend } from '../lb/backends';
import type { LoadBalancer } from '../lb/load-balancer';
import { nativeUnavailable } from '../native';
import {
  absoluteForm,
  ChunkedTracker,
  endToEnd,
  header,
  headEnd,
  HttpParseError,
  parseRequestHead,
  parseResponseHead,
  reasonPhrase,
  type Head,
  wantsKeepAlive,
} from './http-head';
import { NativeHttp, type NativeRoute, type NativeRouter } from './http-native';
import { SocketReader, writeAll } from './socket-reader';
import { SpliceEngine } from './splice';
import { ConnectError, connectTo, type UpstreamConn, type UpstreamPool } from './upstream-pool';

export interface HttpRoute {
  backends: readonly Backend[];
  /** Identity of the service port (LB state is kept per scope). */
  scope: string;
  /** Header whose value keys ConsistentHash (default: the client IP). */
  hashHeader?: string;
  /** Rewrite of the request target sent upstream (forward proxy: absolute-form → origin-form). */
  target?: string;
  /** Replaces the client's Host field (forward proxy, RFC 9112 §3.2.2: the target's authority). */
  host?: string;
}

/** Resolves a request to its route, or to an error status (e.g. 502 unknown host). */
export type RouteResolver = (head: Head, clientIp: string) => HttpRoute | { status: number; message: string };

export interface HttpProxyOptions {
  /** Max request head (default 16 KiB) → 431 beyond. */
  maxHeadBytes?: number;
  /** A started head must complete within this (default 10 s) → 408. */
  headTimeoutMs?: number;
  /** Idle keep-alive client connections are closed after this (default 60 s). */
  keepAliveTimeoutMs?: number;
  /** No response head from upstream within this → 504 (default 60 s). */
  responseTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Upgraded (WebSocket) connections are closed after this long without traffic (default 1 h). */
  tunnelIdleMs?: number;
  /** Upgraded connections go through the native splice engine when it is built (default true). */
  splice?: boolean;
  /**
   * Portal connections (`handleRoute`): `auto` (default) serves them with the native L7 engine when
   * the addon is built, `native` requires it, `js` never uses it.
   */
  engine?: 'auto' | 'native' | 'js';
  /**
   * Native engine, under load (16 or more requests in flight, and more than one event at the last
   * wake-up): a wake-up first waits this many µs (plus the kernel's timer slack, 50 µs by default)
   * so that it serves a batch of events. Default 15; 0: off; at most 1000. See the README.
   */
  coalesceUs?: number;
  log?: Logger;
}

export interface HttpProxyStats {
  requests: number;
  retries: number;
  activeConnections: number;
  /** Upgraded connections handed to the splice engine. */
  splicedTunnels: number;
  /** Client connections served by the native L7 engine (some are handed back to JavaScript later). */
  nativeConnections: number;
  byStatus: Map<number, number>;
  byBackend: Map<string, number>;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
class UpstreamTimeout extends Error {}

/**
 * The L7 proxy of a portal (and of the explicit forward proxy): HTTP/1.x on raw sockets. Heads are
 * parsed here; bodies are forwarded as raw bytes with back-pressure; each request is balanced on
 * its own over keep-alive upstream connections.
 */
export class HttpProxy {
  readonly stats: HttpProxyStats = {
    requests: 0,
    retries: 0,
    activeConnections: 0,
    splicedTunnels: 0,
    nativeConnections: 0,
    byStatus: new Map(),
    byBackend: new Map(),
  };
  private readonly o: Required<Omit<HttpProxyOptions, 'log' | 'engine'>>;
  /** The native L7 engine (portal connections), when built and not turned off. */
  readonly native?: NativeHttp;
  private readonly log: Logger;
  private readonly clients = new Set<Socket>();
  private readonly engine?: SpliceEngine;
  /** Upgraded connections of ours in the splice engine. */
  private readonly tunnels = new Set<number>();

  constructor(
    private readonly lb: LoadBalancer,
    private readonly pool: UpstreamPool,
    opts: HttpProxyOptions = {},
  ) {
    const coalesceUs = opts.coalesceUs ?? 15;
    if (!Number.isInteger(coalesceUs) || coalesceUs < 0 || coalesceUs > 1000)
      throw new InvalidOptionError('coalesceUs', opts.coalesceUs, 'an integer of 0 to 1000 (µs)');
    this.o = {
      maxHeadBytes: opts.maxHeadBytes ?? 16 * 1024,
      headTimeoutMs: opts.headTimeoutMs ?? 10_000,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 60_000,
      responseTimeoutMs: opts.responseTimeoutMs ?? 60_000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      tunnelIdleMs: opts.tunnelIdleMs ?? 3_600_000,
      splice: opts.splice ?? true,
      coalesceUs,
    };
    this.log = opts.log ?? silentLogger;
    this.engine = this.o.splice ? SpliceEngine.get() : undefined;
    const mode = opts.engine ?? 'auto';
    if (mode !== 'js') {
      this.native = NativeHttp.create(
        {
          maxHeadBytes: this.o.maxHeadBytes,
          keepAliveTimeoutMs: this.o.keepAliveTimeoutMs,
          headTimeoutMs: this.o.headTimeoutMs,
          connectTimeoutMs: this.o.connectTimeoutMs,
          responseTimeoutMs: this.o.responseTimeoutMs,
          poolIdleMs: pool.options.idleMs ?? 30_000,
          poolMaxIdle: pool.options.maxIdle ?? 64,
          coalesceUs: this.o.coalesceUs,
        },
        {
          lb,
          log: this.log,
          request: () => void this.stats.requests++,
          retry: () => void this.stats.retries++,
          count: (status, b) => this.count(status, b),
          connections: (d) => void (this.stats.activeConnections += d),
          fallback: (sock, route, bytes) => this.handle(sock, () => route(), bytes),
        },
      );
      if (!this.native && mode === 'native')
        throw new NativeUnavailableError('proxy httpEngine native', nativeUnavailable() ?? '');
    }
  }

  /**
   * Serve a portal connection: its route does not depend on the request (a service port). The
   * native engine takes it when built; JavaScript otherwise.
   */
  handleRoute(client: Socket, route: () => NativeRoute): void {
    if (this.native?.adopt(client, route, { hashHeader: route().hashHeader })) {
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
    route: (authority: string) => NativeRoute | { status: number; message: string },
    fallback: (sock: Socket, bytes: Buffer) => void,
    hashHeader?: string,
  ): boolean {
    const router: NativeRouter = (a) =>
      a === undefined ? { status: 400, message: 'no authority' } : route(a);
    if (!this.native?.adopt(client, router, { forward: true, fallback, hashHeader })) return false;
    this.stats.nativeConnections++;
    return true;
  }

  /** Serve one client connection until it closes. */
  handle(client: Socket, resolve: RouteResolver, initial?: Buffer): void {
    client.setNoDelay(true);
    this.clients.add(client);
    this.stats.activeConnections++;
    client.once('close', () => {
      this.clients.delete(client);
      this.stats.activeConnections--;
    });
    client.on('error', () => client.destroy());
    void this.serve(client, resolve, initial).catch((e) => {
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
    for (const id of this.tunnels) this.engine?.abort(id);
    for (const c of this.clients) c.destroy();
  }

  private count(status: number, backend?: Backend): void {
    this.stats.byStatus.set(status, (this.stats.byStatus.get(status) ?? 0) + 1);
    if (backend) this.stats.byBackend.set(backend.key, (this.stats.byBackend.get(backend.key) ?? 0) + 1);
  }

  private async serve(client: Socket, resolve: RouteResolver, initial?: Buffer): Promise<void> {
    // A client that half-closes after its request (shutdown(SHUT_WR), as `nc -N` does) still gets
    // the answer, as from nginx: Node must not end our side when its side ends (whatever the
    // server was created with); the loop below closes once nothing more can come.
    client.allowHalfOpen = true;
    const reader = new SocketReader(client);
    if (initial) reader.unshift(initial);
    const ip = (client.remoteAddress ?? '').replace(/^::ffff:/, '');
    for (;;) {
      // Idle keep-alive: wait quietly for the first byte of the next request.
      if (!(await waitFor(reader, this.o.keepAliveTimeoutMs))) return void client.destroy();
      if (reader.buffered === 0 && reader.ended) return void client.end();
      let head: Head;
      try {
        head = await this.readHead(reader);
      } catch (e) {
        if (e instanceof HttpParseError) {
          this.count(e.status);
          await this.respondError(client, e.status, e.message, false);
        } else client.destroy();
        return;
      }
      this.stats.requests++;
      const keep = await this.exchange(client, reader, head, ip, resolve);
      if (keep === 'upgraded') return; // the socket is an L4 tunnel now
      const clientKeepAlive = wantsKeepAlive(head);
      if (!keep || !clientKeepAlive) {
        client.end();
        return;
      }
    }
  }

  private async readHead(reader: SocketReader): Promise<Head> {
    const deadline = Date.now() + this.o.headTimeoutMs;
    let buf = reader.take();
    for (;;) {
      const end = headEnd(buf, this.o.maxHeadBytes);
      if (end > 0) {
        reader.unshift(buf.subarray(end));
        return parseRequestHead(buf, end);
      }
      if (reader.ended) throw new HttpParseError(400, 'connection closed inside the request head');
      const left = deadline - Date.now();
      if (left <= 0 || !(await waitFor(reader, left))) {
        throw new HttpParseError(408, `request head not complete in ${this.o.headTimeoutMs} ms`);
      }
      const more = reader.take();
      buf = buf.length ? Buffer.concat([buf, more]) : more;
    }
  }

  /** One request/response. Returns whether the client connection can carry another request. */
  private async exchange(
    client: Socket,
    reader: SocketReader,
    head: Head,
    ip: string,
    resolve: RouteResolver,
  ): Promise<boolean | 'upgraded'> {
    let route = resolve(head, ip);
    const hasBody = head.chunked || (head.contentLength ?? 0) > 0;
    // after an error answer the connection goes on only if no body is left unread and the client
    // wants it (its own `Connection: close` is honoured and said so)
    const keepAfterError = !hasBody && wantsKeepAlive(head);
    if ('status' in route) {
      this.count(route.status);
      await this.respondError(client, route.status, route.message, keepAfterError);
      return keepAfterError;
    }
    if (route.target === undefined) {
      // absolute-form on a portal (servers must accept it, RFC 9112 §3.2.2): upstream in
      // origin-form, with the target's authority as Host — as nginx does
      const abs = absoluteForm(head.target);
      if (abs) route = { ...route, target: abs.path, host: abs.host };
    }
    const upgrade = head.connection.has('upgrade') && header(head, 'upgrade') !== undefined;
    const idempotent = IDEMPOTENT.has(head.method!);
    const hashKey = route.hashHeader ? header(head, route.hashHeader) : undefined;
    const tried = new Set<string>();
    let retried = false;
    let lastFailure = '';
    for (;;) {
      const b = this.lb.pick(route.backends, route.scope, ip, hashKey, tried);
      if (!b) {
        const status = route.backends.length === 0 ? 503 : 502;
        this.count(status);
        await this.respondError(
          client,
          status,
          status === 503
            ? `no backend for ${route.scope}`
            : `every backend of ${route.scope} failed (last: ${lastFailure})`,
          keepAfterError,
        );
        return keepAfterError;
      }
      let up: UpstreamConn & { reused: boolean };
      try {
        if (upgrade) {
          const sock = await connectTo(b, this.o.connectTimeoutMs);
          up = { sock, reader: new SocketReader(sock), reused: false };
        } else up = await this.pool.get(b);
      } catch (e) {
        if (!(e instanceof ConnectError)) throw e;
        this.lb.fail(b);
        tried.add(b.key);
        lastFailure = `${b.key} ${e.reason}`;
        this.log.debug({ backend: b.key, reason: e.reason }, 'backend connect failed');
        if (idempotent && !retried) {
          retried = true;
          this.stats.retries++;
          continue;
        }
        this.count(502);
        await this.respondError(client, 502, `upstream ${b.key}: ${e.reason}`, keepAfterError);
        return keepAfterError;
      }
      this.lb.succeed(b);
      this.lb.acquire(b);
      try {
        const r = await this.forward(client, reader, head, route, ip, b, up, upgrade);
        if (r === 'malformed') {
          // 502 at once, as nginx: no retry, no ejection (the connect worked)
          this.count(502, b);
          await this.respondError(client, 502, `upstream ${b.key} sent a malformed response head`, false);
          return false;
        }
        if (r === 'stale') {
          // a body already (partly) sent upstream cannot be sent again: no retry then
          if (!hasBody) {
            // A pooled connection the upstream had closed: nothing was answered, try a fresh one.
            if (up.reused) continue;
            this.lb.fail(b);
            tried.add(b.key);
            lastFailure = `${b.key} closed the connection`;
            if (idempotent && !retried) {
              retried = true;
              this.stats.retries++;
              continue;
            }
          }
          this.count(502);
          await this.respondError(client, 502, `upstream ${b.key} closed the connection`, false);
          return false;
        }
        return r === 'upgraded' ? r : r === 'keep';
      } finally {
        this.lb.release(b);
      }
    }
  }

  /**
   * Send the request to `up`, stream both bodies, relay the response.
   * 'keep': done, client reusable; 'close': done, close the client; 'stale': upstream gave no answer;
   * 'malformed': its response head was not HTTP we forward.
   */
  private async forward(
    client: Socket,
    reader: SocketReader,
    head: Head,
    route: HttpRoute,
    ip: string,
    b: Backend,
    conn: UpstreamConn,
    upgrade: boolean,
  ): Promise<'keep' | 'close' | 'stale' | 'malformed' | 'upgraded'> {
    const up = conn.sock;
    const upReader = conn.reader;
    // the client's version: an HTTP/1.0 client must never get a chunked answer (RFC 9112 §7.1),
    // and an upstream asked in HTTP/1.0 does not send one
    let out = `${head.method} ${route.target ?? head.target} HTTP/${head.version}\r\n`;
    if (route.host !== undefined) out += `Host: ${route.host}\r\n`;
    let xff: string | undefined;
    for (const [k, v] of endToEnd(head)) {
      const lk = k.toLowerCase();
      if (lk === 'x-forwarded-for') xff = xff ? `${xff}, ${v}` : v;
      else if (lk !== 'host' || route.host === undefined) out += `${k}: ${v}\r\n`;
    }
    out += `X-Forwarded-For: ${xff ? `${xff}, ${ip}` : ip}\r\n`;
    if (head.chunked) out += 'Transfer-Encoding: chunked\r\n';
    out += upgrade
      ? `Connection: Upgrade\r\nUpgrade: ${header(head, 'upgrade')}\r\n\r\n`
      : 'Connection: keep-alive\r\n\r\n';
    up.write(out, 'latin1'); // head text is latin1 both ways: header bytes pass unchanged

    // Request body upstream, concurrently with reading the response (100-continue, early replies).
    // The response timeout counts from the last request bytes the upstream took, as nginx's
    // proxy_read_timeout starts once the request is sent: an upload longer than the timeout is
    // not cut off while it flows.
    let bodyDone = !head.chunked && !(head.contentLength ?? 0);
    let bodyFailed = false;
    const progress = { at: Date.now() };
    const pump = bodyDone
      ? Promise.resolve()
      : this.pumpBody(
          reader,
          up,
          head.chunked ? new ChunkedTracker() : undefined,
          head.contentLength ?? 0,
          undefined,
          progress,
        ).then(
          () => void (bodyDone = true),
          () => void (bodyFailed = true),
        );

    let sentAny = false;
    let resHead: Head;
    for (;;) {
      let got: { head: Head } | undefined;
      try {
        got = await this.readResponseHead(upReader, progress);
      } catch (e) {
        // not `await pump`: the request body may be stalled on the client; the pump ends when the
        // client does (its writes to the destroyed upstream fail)
        up.destroy();
        if (e instanceof UpstreamTimeout) {
          this.count(504, b);
          await this.respondError(
            client,
            504,
            `upstream ${b.key} did not answer in ${this.o.responseTimeoutMs} ms`,
            false,
          );
          return 'close';
        }
        if (!sentAny) return e instanceof HttpParseError ? 'malformed' : 'stale';
        client.destroy();
        return 'close';
      }
      if (!got) {
        up.destroy();
        if (!sentAny) return 'stale';
        client.destroy();
        return 'close';
      }
      resHead = got.head;
      const st = resHead.status!;
      if (st >= 100 && st < 200 && st !== 101) {
        // Interim response (e.g. 100 Continue): relayed with our status line and its end-to-end
        // fields, then the next head — but never to an HTTP/1.0 client, which has no 1xx (RFC
        // 9110 §15.2).
        if (head.version === '1.1') {
          await writeAll(client, responseLines(resHead) + '\r\n');
          sentAny = true;
        }
        continue;
      }
      break;
    }
    const status = resHead.status!;
    this.count(status, b);
    if (status === 101 && upgrade) {
      await writeAll(client, rawHead(resHead));
      this.tunnel(client, reader, up, upReader);
      return 'upgraded';
    }
    const noBody = head.method === 'HEAD' || status === 204 || status === 304;
    const delimited = noBody || resHead.chunked || resHead.contentLength !== undefined;
    const clientKeep = wantsKeepAlive(head) && delimited;
    let res = responseLines(resHead);
    if (resHead.chunked && !noBody) res += 'Transfer-Encoding: chunked\r\n';
    res += clientKeep
      ? head.version === '1.0'
        ? 'Connection: keep-alive\r\n\r\n'
        : '\r\n'
      : 'Connection: close\r\n\r\n';
    let upstreamClean = true;
    // From here the exchange may not stall — no byte to or from the upstream, none to the client —
    // longer than the response timeout (nginx's proxy_read_timeout and send_timeout): then both
    // connections close.
    // (Nothing to watch for a head alone once the request body is in: no timer then.)
    progress.at = Date.now();
    const streams = !(noBody || resHead.contentLength === 0) || !bodyDone;
    const unwatch = streams
      ? stallGuard(progress, this.o.responseTimeoutMs, () => {
          up.destroy();
          client.destroy();
        })
      : undefined;
    try {
      if (noBody || resHead.contentLength === 0) await writeAll(client, res);
      else {
        try {
          // the head goes out with the first body bytes: one write, one segment for small replies
          if (resHead.chunked) await this.pumpBody(upReader, client, new ChunkedTracker(), 0, res, progress);
          else if (resHead.contentLength !== undefined)
            await this.pumpBody(upReader, client, undefined, resHead.contentLength, res, progress);
          else {
            await writeAll(client, res);
            await this.pumpUntilEnd(upReader, client, progress);
            upstreamClean = false;
          }
        } catch {
          up.destroy();
          client.destroy();
          return 'close';
        }
      }
      await pump;
    } finally {
      unwatch?.();
    }
    const reusable =
      upstreamClean &&
      bodyDone &&
      !bodyFailed &&
      resHead.version === '1.1' &&
      !resHead.connection.has('close') &&
      upReader.buffered === 0 &&
      !upReader.ended;
    if (reusable) this.pool.put(b, conn);
    else up.destroy();
    return clientKeep && bodyDone && !bodyFailed ? 'keep' : 'close';
  }

  /** The next response head; times out `responseTimeoutMs` after the call or `progress.at`, the later. */
  private async readResponseHead(
    r: SocketReader,
    progress: { at: number },
  ): Promise<{ head: Head } | undefined> {
    const since = Date.now();
    let buf: Buffer = Buffer.alloc(0);
    for (;;) {
      const more = r.take();
      if (more.length) buf = buf.length ? Buffer.concat([buf, more]) : more;
      const end = buf.length ? headEnd(buf, 64 * 1024) : -1;
      if (end > 0) {
        r.unshift(buf.subarray(end));
        return { head: parseResponseHead(buf, end) };
      }
      if (r.ended) {
        if (buf.length) throw new Error('upstream closed inside the response head');
        return undefined;
      }
      const left = Math.max(since, progress.at) + this.o.responseTimeoutMs - Date.now();
      if (left <= 0) throw new UpstreamTimeout();
      await waitFor(r, left); // data, the end, or time to look at the deadline again
    }
  }

  /** Forward exactly one body (Content-Length `n`, or chunked when `tracker`); leftovers go back. */
  private async pumpBody(
    from: SocketReader,
    to: Socket,
    tracker: ChunkedTracker | undefined,
    n: number,
    prefix?: string,
    progress?: { at: number },
  ): Promise<void> {
    let remaining = n;
    for (;;) {
      if (!tracker && remaining === 0) return;
      await from.wait();
      const chunk = from.take();
      if (chunk.length === 0) throw new Error('peer closed inside a body');
      let use = chunk;
      if (tracker) {
        const end = tracker.feed(chunk);
        if (end >= 0) {
          use = chunk.subarray(0, end);
          from.unshift(chunk.subarray(end));
        }
      } else if (chunk.length > remaining) {
        use = chunk.subarray(0, remaining);
        from.unshift(chunk.subarray(remaining));
      }
      if (!tracker) remaining -= use.length;
      if (prefix !== undefined) {
        await writeAll(to, Buffer.concat([Buffer.from(prefix, 'latin1'), use]));
        prefix = undefined;
      } else await writeAll(to, use);
      if (progress) progress.at = Date.now();
      if (tracker?.done) return;
    }
  }

  private async pumpUntilEnd(from: SocketReader, to: Socket, progress: { at: number }): Promise<void> {
    for (;;) {
      await from.wait();
      const chunk = from.take();
      if (chunk.length === 0) return;
      await writeAll(to, chunk);
      progress.at = Date.now();
    }
  }

  /**
   * WebSocket and other upgrades: from here on an L4 connection between the two sockets — through
   * the splice engine when it is built, else JavaScript pipes.
   */
  private tunnel(client: Socket, cr: SocketReader, up: Socket, ur: SocketReader): void {
    cr.detach();
    ur.detach();
    const c = cr.take(false);
    const u = ur.take(false);
    const engine = this.engine;
    if (!engine) {
      if (c.length) up.write(c);
      if (u.length) client.write(u);
      pipeBoth(client, up);
      return;
    }
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    up.on('error', end);
    let id: number | undefined;
    engine.handOver(
      client,
      up,
      { toB: c, toA: u, idleMs: this.o.tunnelIdleMs },
      {
        started: (n) => {
          id = n;
          this.tunnels.add(n);
          this.stats.splicedTunnels++;
        },
        fallback: () => pipeBoth(client, up),
        failed: () => undefined,
        done: () => {
          if (id !== undefined) this.tunnels.delete(id);
        },
      },
    );
  }

  private async respondError(client: Socket, status: number, message: string, keep: boolean): Promise<void> {
    if (client.destroyed) return;
    const body = `${status} ${reasonPhrase(status)}: ${message}\n`;
    const head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${keep ? '' : 'Connection: close\r\n'}\r\n`;
    await writeAll(client, Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(body)])).catch(
      () => undefined,
    );
    if (!keep) client.end();
  }
}

/** A response head's status line, as ours, and its end-to-end fields (no blank line). */
function responseLines(h: Head): string {
  let s = `HTTP/1.1 ${h.status} ${h.reason}\r\n`;
  for (const [k, v] of endToEnd(h)) s += `${k}: ${v}\r\n`;
  return s;
}

function rawHead(h: Head): string {
  let s = `HTTP/1.1 ${h.status} ${h.reason}\r\n`;
  for (const [k, v] of h.headers) s += `${k}: ${v}\r\n`;
  return s + '\r\n';
}

/** An L4 pipe between two sockets in JavaScript, both closed when either closes. */
function pipeBoth(client: Socket, up: Socket): void {
  client.pipe(up);
  up.pipe(client);
  const end = (): void => {
    client.destroy();
    up.destroy();
  };
  client.on('close', end);
  up.on('close', end);
  up.on('error', end);
}

/** Calls `expire` once `progress.at` is `ms` old; the function returned stops watching. */
function stallGuard(progress: { at: number }, ms: number, expire: () => void): () => void {
  let t: NodeJS.Timeout;
  const check = (): void => {
    const left = progress.at + ms - Date.now();
    if (left <= 0) expire();
    else t = setTimeout(check, left);
  };
  t = setTimeout(check, ms);
  return () => clearTimeout(t);
}

function waitFor(r: SocketReader, ms: number): Promise<boolean> {
  if (r.buffered > 0 || r.ended) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    void r.wait().then(() => {
      clearTimeout(t);
      resolve(true);
    });
  });
}
