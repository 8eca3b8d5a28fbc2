import type { Logger } from '@edgecore/beehive';
import type { Socket } from 'node:net';
import { ConnectError, HttpParseError, UpstreamTimeoutError } from '../../edgemesh-errors';
import type { Backend } from '../../lb/backends';
import { policyOf } from '../../lb/service-policy';
import { SocketReader, writeAll } from '../socket-reader';
import { pumpBody, pumpUntilEnd, stallGuard, waitFor, type Progress } from './body-pump';
import { ChunkedParser } from './chunked';
import { errorResponse, http2Refusal } from './error-response';
import {
  absoluteForm,
  header,
  headEnd,
  parseRequestHead,
  parseResponseHead,
  type Head,
  wantsKeepAlive,
} from './head';
import { failures, FRESH, idempotent, isReply, type Decision, type RequestPolicy } from './policy';
import { LIMITS } from './protocol';
import type { UpgradeTunnels } from './tunnel';
import type { UpstreamConn, UpstreamPool } from './upstream-pool';
import type { HttpRoute, RouteResolver } from './route';
import { rawHead, requestHead, responseLines, upgradeTo } from './rewrite';

/** Timeouts and limits of the JavaScript engine (HttpProxy's options, defaulted). */
export interface ExchangeOptions {
  maxHeadBytes: number;
  headTimeoutMs: number;
  keepAliveTimeoutMs: number;
  responseTimeoutMs: number;
  connectTimeoutMs: number;
  /** Forward field names with an underscore (nginx's `underscores_in_headers`); dropped when false. */
  underscoresInHeaders: boolean;
}

/** How long a request waits for its answer to start: per try, and a deadline over all of them. */
interface AnswerWait {
  ms: number;
  deadline?: number;
}

/** How one attempt at a backend ended. */
type Attempt =
  | 'stale' // no answer: the upstream closed first
  | 'malformed' // its response head was not HTTP we forward
  | 'timeout' // no response head in time
  | { badBody: string } // the request's chunked body was malformed (the upstream connection was closed)
  | { again: Decision } // an answer the service retries on (nothing of it relayed): where to now
  | { next: 'keep' | 'close' | 'upgraded'; status: number };

/**
 * The JavaScript L7 engine: HTTP/1.x on raw sockets. Heads are parsed here; bodies are forwarded
 * as raw bytes with back-pressure; each request goes where the rulebook (`RequestPolicy`) says,
 * over keep-alive upstream connections.
 */
export class JsExchange {
  constructor(
    private readonly o: ExchangeOptions,
    private readonly pool: UpstreamPool,
    private readonly tunnels: UpgradeTunnels,
    private readonly policyFor: () => RequestPolicy,
    private readonly log: Logger,
  ) {}

  /** Serve one client connection until it closes. */
  async serve(client: Socket, resolve: RouteResolver, initial?: Buffer): Promise<void> {
    // A client that half-closes after its request (shutdown(SHUT_WR), as `nc -N` does) still gets
    // the answer, as from nginx: Node must not end our side when its side ends (whatever the
    // server was created with); the loop below closes once nothing more can come.
    client.allowHalfOpen = true;
    const reader = new SocketReader(client);
    if (initial) reader.unshift(initial);
    const ip = (client.remoteAddress ?? '').replace(/^::ffff:/, '');
    const policy = this.policyFor();
    for (;;) {
      // Idle keep-alive: wait quietly for the first byte of the next request.
      if (!(await waitFor(reader, this.o.keepAliveTimeoutMs))) return void client.destroy();
      if (reader.buffered === 0 && reader.ended) return void client.end();
      let head: Head;
      try {
        head = await this.readHead(reader);
      } catch (e) {
        if (e instanceof HttpParseError) {
          policy.reject(e);
          if (e.reason === 'http2-preface') {
            // what the client sends is read and dropped (unread bytes at close would reset the
            // connection before it reads our GOAWAY); closed after a second at most
            client.on('data', () => undefined).resume();
            await writeAll(client, http2Refusal(e.message)).catch(() => undefined);
            client.end();
            setTimeout(() => client.destroy(), 1000).unref();
          } else await respond(client, e.status, e.message, false);
        } else client.destroy();
        return;
      }
      const keep = await this.exchange(client, reader, head, ip, resolve, policy);
      if (keep === 'upgraded') return; // the socket is an L4 tunnel now
      if (!keep || !wantsKeepAlive(head)) {
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
      if (reader.ended)
        throw new HttpParseError(400, 'connection closed inside the request head', 'closed-in-head');
      const left = deadline - Date.now();
      if (left <= 0 || !(await waitFor(reader, left))) {
        throw new HttpParseError(408, failures.headTimeout(this.o.headTimeoutMs).message, 'head-timeout');
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
    policy: RequestPolicy,
  ): Promise<boolean | 'upgraded'> {
    let route = resolve(head, ip);
    // CONNECT is the explicit proxy's to tunnel (its route refuses one it does not take): on a
    // portal it is refused and the connection closed, as nginx does — a backend would take the
    // bytes after the head for tunnel data
    if (head.method === 'CONNECT' && !('status' in route))
      route = {
        status: 400,
        message: 'CONNECT is not forwarded to a service',
        reason: 'bad-target',
      };
    else if (
      !('status' in route) &&
      route.target === undefined &&
      head.target![0] !== '/' &&
      head.target !== '*'
    ) {
      // absolute-form on a portal (servers must accept it, RFC 9112 §3.2.2): upstream in
      // origin-form, with the target's authority as Host — as nginx does (for any scheme, as
      // nginx and haproxy); a target without an authority (`https:/x`, `a:b`) is refused, as
      // both of them and strict llhttp do
      const abs = absoluteForm(head.target);
      route = abs
        ? { ...route, target: abs.path, host: abs.host }
        : {
            status: 400,
            message: 'a request-target without an authority',
            reason: 'bad-target',
          };
    }
    const hasBody = head.chunked || (head.contentLength ?? 0) > 0;
    // after an error answer the connection goes on only if no body is left unread and the client
    // wants it (its own `Connection: close` is honoured and said so)
    const keepAfterError = !hasBody && wantsKeepAlive(head);
    let d: Decision;
    if ('status' in route) d = policy.begin(route, ip, undefined, false);
    else {
      const hashKey = route.hashHeader ? header(head, route.hashHeader) : undefined;
      d = policy.begin(route, ip, hashKey, idempotent(head.method!));
    }
    const upgrade = upgradeTo(head);
    // the service's own timeout (edgecore.io/request-timeout-seconds): the longest this request
    // waits for its answer to start, over every try; else the node's per try
    const ownMs = 'backends' in route ? policyOf(route.backends)?.timeoutMs : undefined;
    const wait: AnswerWait = {
      ms: ownMs ?? this.o.responseTimeoutMs,
      deadline: ownMs === undefined ? undefined : Date.now() + ownMs,
    };
    let b: Backend | undefined;
    for (;;) {
      if (isReply(d)) {
        const keep = keepAfterError && !d.close;
        await respond(client, d.status, d.message, keep);
        return keep;
      }
      const fresh = d === FRESH;
      if (d !== FRESH) b = d;
      const backend = b!;
      let up: UpstreamConn & { reused: boolean };
      try {
        if (upgrade || fresh) {
          const sock = await this.pool.connect(backend);
          up = { sock, reader: new SocketReader(sock), reused: false };
        } else up = await this.pool.get(backend);
      } catch (e) {
        if (!(e instanceof ConnectError)) throw e;
        d = policy.connectFailed(backend, e.reason);
        continue;
      }
      const r = await this.forward(
        client,
        reader,
        head,
        route as HttpRoute,
        ip,
        backend,
        up,
        upgrade,
        policy,
        wait,
      );
      if (typeof r === 'object' && 'again' in r) {
        d = r.again;
        continue;
      }
      if (r === 'stale') {
        // a body already (partly) sent upstream cannot be sent again: no retry then
        d = policy.stale(backend, up.reused, !hasBody);
        continue;
      }
      if (typeof r === 'object' && 'badBody' in r) {
        const reply = policy.fail(backend, failures.badBody(r.badBody));
        policy.noteRejected('bad-chunk');
        await respond(client, reply.status, reply.message, false);
        return false;
      }
      if (r === 'malformed' || r === 'timeout') {
        const f = r === 'malformed' ? failures.malformed(backend) : failures.timeout(backend, wait.ms);
        const reply = policy.fail(backend, f);
        await respond(client, reply.status, reply.message, false);
        return false;
      }
      policy.release(backend, r.status > 0);
      return r.next === 'upgraded' ? r.next : r.next === 'keep';
    }
  }

  /** Send the request to `conn`, stream both bodies, relay the response. */
  private async forward(
    client: Socket,
    reader: SocketReader,
    head: Head,
    route: HttpRoute,
    ip: string,
    b: Backend,
    conn: UpstreamConn,
    upgrade: string | undefined,
    policy: RequestPolicy,
    wait: AnswerWait,
  ): Promise<Attempt> {
    const up = conn.sock;
    const upReader = conn.reader;
    // latin1 both ways: header bytes pass unchanged
    const headText = requestHead(head, route, ip, upgrade, this.o.underscoresInHeaders);
    // a chunked body that came with the head is read before the head goes: a malformed one then
    // sends nothing at all upstream (one that comes later leaves the upstream an unfinished message)
    const withBody = head.chunked && reader.buffered > 0;
    if (!withBody) up.write(headText, 'latin1');

    // Request body upstream, concurrently with reading the response (100-continue, early replies).
    // The response timeout counts from the last request bytes the upstream took, as nginx's
    // proxy_read_timeout starts once the request is sent: an upload longer than the timeout is
    // not cut off while it flows.
    let bodyDone = !head.chunked && !(head.contentLength ?? 0);
    let bodyFailed = false;
    let badBody: HttpParseError | undefined;
    const progress: Progress = { at: Date.now() };
    // a chunked body is re-framed on its way (ChunkedParser): nothing ambiguous reaches the upstream
    const pump = bodyDone
      ? Promise.resolve()
      : pumpBody(
          reader,
          up,
          head.chunked ? new ChunkedParser() : undefined,
          head.contentLength ?? 0,
          withBody ? headText : undefined,
          progress,
          true,
        ).then(
          () => void (bodyDone = true),
          (e) => {
            bodyFailed = true;
            // a malformed body: the upstream has an unfinished message, never a smuggled one — it
            // is closed now, and the client answered 400 (not left waiting for a response)
            if (e instanceof HttpParseError) {
              badBody = e;
              up.destroy();
            }
          },
        );

    let sentAny = false;
    let resHead: Head;
    for (;;) {
      let got: Head | undefined;
      let failure: unknown;
      try {
        got = await this.readResponseHead(upReader, progress, b.key, wait);
      } catch (e) {
        failure = e;
      }
      if (!got) {
        // no response head (the upstream failed, timed out or closed). Not `await pump`: the
        // request body may be stalled on the client; the pump ends when the client does (its
        // writes to the destroyed upstream fail)
        up.destroy();
        if (badBody && !sentAny) return { badBody: badBody.message };
        if (failure instanceof UpstreamTimeoutError) return 'timeout';
        if (!sentAny) return failure instanceof HttpParseError ? 'malformed' : 'stale';
        client.destroy();
        return { next: 'close', status: 0 };
      }
      resHead = got;
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
    if (status >= 500 && !sentAny && upgrade === undefined) {
      // an answer the service retries on (the rulebook decides which) goes nowhere: another
      // backend gets the request, which is held whole only when it has no body (one being
      // streamed cannot be sent again)
      const replayable = !head.chunked && !(head.contentLength ?? 0);
      const again = policy.answeredBadly(b, status, false, replayable);
      if (again !== undefined) {
        up.destroy();
        return { again };
      }
    }
    policy.count(status, b);
    if (status === 101 && upgrade !== undefined) {
      await writeAll(client, rawHead(resHead));
      this.tunnels.open(client, reader, up, upReader);
      return { next: 'upgraded', status };
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
    // connections close. (Nothing to watch for a head alone once the request body is in.)
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
          if (resHead.chunked) await pumpBody(upReader, client, new ChunkedParser(), 0, res, progress);
          else if (resHead.contentLength !== undefined)
            await pumpBody(upReader, client, undefined, resHead.contentLength, res, progress);
          else {
            await writeAll(client, res);
            await pumpUntilEnd(upReader, client, progress);
            upstreamClean = false;
          }
        } catch {
          up.destroy();
          client.destroy();
          return { next: 'close', status };
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
    return { next: clientKeep && bodyDone && !bodyFailed ? 'keep' : 'close', status };
  }

  /**
   * The next response head; times out `wait.ms` after the call or `progress.at`, the later — or
   * at the request's own deadline (its service's timeout), whichever comes first.
   */
  private async readResponseHead(
    r: SocketReader,
    progress: Progress,
    backend: string,
    wait: AnswerWait,
  ): Promise<Head | undefined> {
    const since = Date.now();
    let buf: Buffer = Buffer.alloc(0);
    for (;;) {
      const more = r.take();
      if (more.length) buf = buf.length ? Buffer.concat([buf, more]) : more;
      const end = buf.length ? headEnd(buf, LIMITS.responseHeadBytes, true) : -1;
      if (end > 0) {
        r.unshift(buf.subarray(end));
        return parseResponseHead(buf, end);
      }
      if (r.ended) {
        if (buf.length) throw new Error('upstream closed inside the response head');
        return undefined;
      }
      const until = Math.min(Math.max(since, progress.at) + wait.ms, wait.deadline ?? Infinity);
      const left = until - Date.now();
      if (left <= 0) throw new UpstreamTimeoutError(backend, wait.ms);
      await waitFor(r, left); // data, the end, or time to look at the deadline again
    }
  }
}

/** An answer of ours; the client's side closes after it unless `keep`. */
export async function respond(client: Socket, status: number, message: string, keep: boolean): Promise<void> {
  if (client.destroyed) return;
  await writeAll(client, errorResponse(status, message, keep)).catch(() => undefined);
  if (!keep) client.end();
}
