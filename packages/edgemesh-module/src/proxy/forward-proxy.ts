import { hashHeaderFor } from '../lb/service-policy';
import type { z } from 'zod/v3';
import { forwardProxyOptionsSchema, resolveMeshOptions } from '../config';
import type { ConnectionBudget } from './connection-budget';
import { Logger, silentLogger } from '@edgecore/beehive';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Backend } from '../lb/backends';
import { errorResponse } from './http/error-response';
import { failures } from './http/policy';
import { ProxyListenError, type HttpParseError } from '../edgemesh-errors';
import { absoluteForm, header, headEnd, parseRequestHead, type Head } from './http/head';
import type { HttpProxy } from './http/http-proxy';
import type { HttpRoute, RouteRefusal } from './http/route';
import type { TcpProxy } from './l4/tcp-proxy';
import { h2RouteOf, type H2Proxy } from './h2/h2-proxy';
import type { PortalProtocol } from '../portal-table';

/** A service port addressed by name or VIP: what the forward proxy needs to route. */
export interface ResolvedTarget {
  scope: string;
  backends: readonly Backend[];
  /** The service port's protocol (an HTTP/2 port: a CONNECT to it is served as HTTP/2). */
  protocol?: PortalProtocol;
}

/** Head limits as the portals', and the header a ConsistentHash strategy hashes (as on portals). */
export type ForwardProxyOptions = z.input<typeof forwardProxyOptionsSchema> & {
  log?: Logger;
  /** The node's count of client connections (shared with the portals): past it one is reset at accept. */
  budget?: ConnectionBudget;
};

/** host (service name or VIP) + port → target, or undefined when it is not a known service. */
export type TargetResolver = (host: string, port: number) => ResolvedTarget | undefined;

/**
 * Unprivileged mode's explicit HTTP proxy on `listenPort`:
 * `curl -x http://127.0.0.1:40001 http://nginx-svc.default.svc.cluster.local:12345` is balanced
 * like a portal request; `CONNECT svc:port` tunnels L4 — to an HTTP/2 port (gRPC, h2c) the tunnel's
 * bytes are HTTP/2 served as on its portal, each stream balanced (a gRPC client with `grpc_proxy`,
 * `curl -p -x … --http2-prior-knowledge`); unknown hosts → 502 with a clear body.
 */
export class ForwardProxy {
  private server?: Server;
  private readonly log: Logger;
  private readonly opts: z.output<typeof forwardProxyOptionsSchema>;
  private readonly budget?: ConnectionBudget;

  constructor(
    private readonly http: HttpProxy,
    private readonly tcp: TcpProxy,
    private readonly resolve: TargetResolver,
    options: ForwardProxyOptions = {},
    /** Serves CONNECT tunnels to HTTP/2 ports (absent: they are L4 tunnels to one backend). */
    private readonly h2?: Pick<H2Proxy, 'handle'>,
  ) {
    this.opts = resolveMeshOptions(forwardProxyOptionsSchema, options, 'forwardProxy');
    this.log = options.log ?? silentLogger;
    this.budget = options.budget;
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      if (this.budget?.admit(s) !== false) this.onConnection(s);
    });
    this.server = server;
    server.listen(port, host);
    try {
      await once(server, 'listening'); // rejects on 'error'
    } catch (e) {
      this.server = undefined;
      throw new ProxyListenError(`${host}:${port}`, e as Error);
    }
    return server.address() as AddressInfo;
  }

  close(): void {
    this.server?.close();
    this.server = undefined;
  }

  /**
   * The native L7 engine takes the connection when it is built: it serves `http://` requests and
   * hands back, at a request boundary, anything else with the bytes it read (`initial`). Here, in
   * JavaScript: peek at the first head: CONNECT → tunnel, anything else → the L7 proxy.
   */
  private onConnection(sock: Socket, initial?: Buffer): void {
    if (
      !initial &&
      this.http.adoptForward(
        sock,
        (a) => this.routeAuthority(a),
        (s, bytes) => this.onConnection(s, bytes),
        this.opts.hashHeader,
      )
    )
      return;
    let buf: Buffer = initial ?? Buffer.alloc(0);
    let done = false;
    const max = this.opts.maxHeadBytes;
    const timer = setTimeout(() => sock.destroy(), this.opts.headTimeoutMs);
    sock.on('error', () => sock.destroy());
    sock.once('end', () => {
      if (!done) {
        this.http.reject({ status: 400, reason: 'closed-in-head' });
        this.fail(sock, 400, 'connection closed inside the request head', timer, onData);
      }
    });
    const onData = (d: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      let end: number;
      try {
        end = headEnd(buf, max);
      } catch (e) {
        this.http.reject(e as HttpParseError);
        return this.fail(sock, (e as HttpParseError).status, (e as Error).message, timer, onData);
      }
      if (end < 0) return;
      done = true;
      sock.off('data', onData);
      clearTimeout(timer);
      sock.pause();
      let head: Head;
      try {
        head = parseRequestHead(buf, end);
      } catch (e) {
        this.http.reject(e as HttpParseError);
        return this.fail(sock, (e as HttpParseError).status, (e as Error).message, timer, onData);
      }
      if (head.method === 'CONNECT') return this.connect(sock, head, buf.subarray(end));
      this.http.handle(sock, (h) => this.route(h), buf);
      sock.resume();
    };
    sock.on('data', onData);
    if (buf.length) onData(Buffer.alloc(0));
  }

  private connect(sock: Socket, head: Head, rest: Buffer): void {
    const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(head.target ?? '');
    const t = m ? this.resolve(m[1].toLowerCase(), Number(m[2])) : undefined;
    if (!t) return this.fail(sock, 502, `unknown service ${head.target}`);
    if (t.protocol === 'h2' && this.h2) {
      // the client speaks HTTP/2 in the tunnel: each of its streams is balanced (no backend: the
      // HTTP/2 engine answers each stream, gRPC's UNAVAILABLE included)
      const [host, port] = [m![1].toLowerCase(), Number(m![2])];
      sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (rest.length) sock.unshift(rest);
      this.h2.handle(sock, () => {
        const now = this.resolve(host, port) ?? { scope: t.scope, backends: [] };
        return h2RouteOf(now.backends, now.scope, this.opts.hashHeader);
      });
      sock.resume(); // paused while the CONNECT head was read
      return;
    }
    if (t.backends.length === 0) return this.fail(sock, 503, failures.noBackend(t.scope).message);
    sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    this.tcp.handle(sock, t.backends, t.scope, rest.length ? rest : undefined);
  }

  /** absolute-form (`GET http://host:port/path`, sent upstream as `/path`) or Host header. */
  private route(h: Head): HttpRoute | RouteRefusal {
    // a CONNECT after other requests on a connection the JavaScript engine serves (the native
    // engine hands such a connection back, and it is tunnelled)
    if (h.method === 'CONNECT')
      return { status: 400, message: 'CONNECT must open its own connection', reason: 'bad-target' };
    const abs = absoluteForm(h.target);
    // we cannot originate TLS for the client: an https:// target goes through CONNECT
    if (abs?.scheme === 'https')
      return {
        status: 400,
        message: 'an https:// target on a plaintext proxy (use CONNECT)',
        reason: 'bad-target',
      };
    // an HTTP proxy speaks http:// (or origin-form with a Host); nothing else is passed on raw
    if (abs ? abs.scheme !== 'http' : h.target?.[0] !== '/')
      return {
        status: 400,
        message: 'the proxy takes an http:// or origin-form target (https:// through CONNECT)',
        reason: 'bad-target',
      };
    const authority = abs ? abs.authority : header(h, 'host');
    if (!authority) return { status: 400, message: 'no host in the request', reason: 'bad-host' };
    const r = this.routeAuthority(authority);
    if ('status' in r) return r;
    // absolute-form: the Host sent upstream is the target's authority (RFC 9112 §3.2.2)
    return abs ? { ...r, target: abs.path, host: abs.host } : { ...r, target: h.target ?? '/' };
  }

  /** `host[:port]` (a service name or VIP; userinfo ignored) → the service port, or why not. */
  private routeAuthority(authority: string): HttpRoute | RouteRefusal {
    const a = /^\[?([^\]]+?)\]?(?::(\d{1,5}))?$/.exec(authority.replace(/^.*@/, ''));
    if (!a) return { status: 400, message: 'no host in the request', reason: 'bad-host' };
    const host = a[1].toLowerCase();
    const port = a[2] ? Number(a[2]) : 80;
    const t = this.resolve(host, port);
    if (!t)
      return {
        status: 502,
        message: `unknown service ${host}:${port} (not a service name or VIP known to EdgeMesh)`,
      };
    return {
      backends: t.backends,
      scope: t.scope,
      hashHeader: hashHeaderFor(t.backends, this.opts.hashHeader),
    };
  }

  private fail(
    sock: Socket,
    status: number,
    message: string,
    timer?: NodeJS.Timeout,
    onData?: (d: Buffer) => void,
  ): void {
    if (timer) clearTimeout(timer);
    if (onData) sock.off('data', onData);
    sock.end(errorResponse(status, message, false));
    this.log.debug({ status, message }, 'forward proxy refused a request');
  }
}
