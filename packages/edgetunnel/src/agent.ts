import { Logger, silentLogger } from '@edgecore/beehive';
import { createSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import {
  connect as h2connect,
  constants,
  createServer as h2server,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { connect as netConnect, isIP, isIPv4, Socket, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  connect as tlsConnect,
  createSecureContext,
  createServer as tlsServer,
  type SecureContext,
  type PeerCertificate,
  type Server,
  type TLSSocket,
} from 'node:tls';
import { peerOf, peerOfDer, type Identity } from './certs';
import { DenyList } from './deny-list';
import { DatagramChannel, UdpStream } from './framing';
import { pingAll } from './liveness';
import { listenMtls, mtlsOptions, serveH2 } from './mtls';
import { endsBy, join, kill, runsOver } from './pipe';
import { RelayLink } from './relay-link';
import {
  ALPN_FORWARD,
  ALPN_SPLICED,
  H2_CONNECTION_WINDOW,
  H2_SETTINGS,
  H_ERROR,
  H_FROM,
  H_NODE,
  H_PROTO,
  H_SPLICE,
  H_SPLICE_PORT,
  ROLE_NODE,
  STATUS,
  TLS_CIPHERS,
  type TunnelProto,
} from './protocol';
import { dialSplice, spliceServerName, tokenOfServerName, type TlsEngine } from './splice';
import { StreamOpenError, TunnelCode, TunnelError } from './tunnel-errors';

/** What a node lets tunnel streams reach: the backends it publishes itself, nothing else. */
export interface TunnelTargets {
  allows(host: string, port: number, proto: TunnelProto): boolean;
}

/** How to reach a node: the relays its status says reach it, and its direct address if it has one. */
export interface PeerRoute {
  node: string;
  relays?: readonly string[];
  /** `host:port` of the node's own tunnel listener (a node with a reachable address). */
  address?: string;
}

export interface TunnelAgentOptions {
  identity: Identity;
  /** `host:port` of every relay; the node links to all of them. */
  relays: readonly string[];
  /** Accept direct dials from peers here (a node with a reachable address). */
  listen?: { host: string; port: number };
  revokedFile?: string;
  revokedPollMs?: number;
  /** A stream that is not answered in time fails (and the next relay is tried). */
  openTimeoutMs?: number;
  /** Streams this node serves close after this long without a byte either way (0: never). */
  idleTimeoutMs?: number;
  /** UDP streams close after this long without a datagram. */
  udpIdleTimeoutMs?: number;
  /** Ping every link this often; a link that leaves a ping unanswered for two intervals is closed and dialled again. */
  pingIntervalMs?: number;
  /**
   * Ask relays to splice TCP streams (README "Spliced streams": TLS end to end between the nodes,
   * the relay joins two plain connections); a relay that does not splice relays the stream over
   * the links as before. Default true.
   */
  splice?: boolean;
  /**
   * Runs the end-to-end TLS of spliced streams outside JavaScript (EdgeMesh's native TLS pump,
   * `loadTlsEngine()`); without it, or for a stream it cannot take, Node's TLS runs it.
   */
  tlsEngine?: TlsEngine;
  /** Redial backoff: first delay and cap. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  targets: TunnelTargets;
  log?: Logger;
}

/**
 * A plain TCP connection for a stream to carry (EdgeMesh's L4 proxy), and bytes already read from
 * it: a stream whose TLS runs in the TLS engine takes it as its plaintext side (see `open`).
 */
export interface StreamJoin {
  client: Socket;
  first?: Buffer;
}

export interface TunnelAgentStats {
  /** Streams this node opened, by how: through a relay (spliced or not) or straight to a peer. */
  openedViaRelay: number;
  /** Of those through a relay, spliced (end-to-end TLS over the relay's splice port). */
  openedSpliced: number;
  /** Of those, streams whose TLS resumed an earlier session with the peer (no certificates exchanged). */
  resumedSpliced: number;
  /** Spliced streams, either end, whose TLS ran in the TLS engine (`tlsEngine`). */
  nativeTls: number;
  openedDirect: number;
  openFailures: number;
  /** Streams other nodes opened to this node's backends. */
  served: number;
  /** Streams refused: no backend of this node at that address, or a revoked source. */
  refused: number;
  /**
   * Bytes of the streams this node served (both ways). Streams it opens are not counted here: a
   * `data` listener would set them flowing before their reader is attached, and a backend that
   * speaks first would lose its greeting.
   */
  bytesServed: number;
}

function authority(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

function parseAuthority(a: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(a);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2], port };
}

/**
 * A node's end of EdgeTunnel. It links out to every relay (never accepts a relay's dial), opens
 * CONNECT streams to other nodes' backends through a relay that reaches them (or straight to a
 * node that takes direct dials), and serves the streams other nodes open to it — only to the
 * backends `targets` says it publishes. Emits `change` when the set of relays that reach it does
 * (what its status publishes).
 */
export class TunnelAgent extends EventEmitter {
  readonly stats: TunnelAgentStats = {
    openedViaRelay: 0,
    openedSpliced: 0,
    resumedSpliced: 0,
    nativeTls: 0,
    openedDirect: 0,
    openFailures: 0,
    served: 0,
    refused: 0,
    bytesServed: 0,
  };
  readonly log: Logger;
  readonly denied: DenyList;
  private readonly links: RelayLink[];
  private readonly reverseServer = h2server({ settings: H2_SETTINGS });
  private readonly directServer = h2server({ settings: H2_SETTINGS });
  private listener?: Server;
  /** Sessions to peers that take direct dials, by node. */
  private readonly peers = new Map<string, ClientHttp2Session>();
  private readonly sessions = new Set<Http2Session>();
  private readonly fromOf = new WeakMap<Http2Session, string>();
  /** End-to-end TLS of the spliced streams this node serves: verifies the source node's certificate. */
  private readonly splicedServer: Server;
  /** This node's TLS context for the spliced streams it opens (made once: a context per stream costs milliseconds). */
  private readonly splicedContext: SecureContext;
  /** The last TLS session ticket each node gave us on a spliced stream: the next one resumes. */
  private readonly tickets = new Map<string, { ticket: Buffer; peer: ReturnType<typeof peerOf> }>();
  /** Spliced streams this node accepted, by token, until their TLS handshake. */
  private readonly splicing = new Map<
    string,
    { from: string; backend: Duplex; raw: Socket; timer: NodeJS.Timeout }
  >();
  /**
   * Spliced streams up (either end), by the peer node's certificate: cut when it is revoked. Keyed
   * by their TLS socket, or by the plaintext end of one in the TLS engine.
   */
  private readonly spliced = new Map<Duplex, { name: string; fingerprint256: string }>();
  /** The TLS engine and this node's context in it, when one was given and takes the identity. */
  private readonly engine?: { e: TlsEngine; ctx: object };
  private pinger?: NodeJS.Timeout;
  private readonly o: Required<
    Pick<TunnelAgentOptions, 'openTimeoutMs' | 'idleTimeoutMs' | 'udpIdleTimeoutMs' | 'pingIntervalMs'>
  >;

  constructor(private readonly opts: TunnelAgentOptions) {
    super();
    this.log = opts.log ?? silentLogger;
    this.o = {
      openTimeoutMs: opts.openTimeoutMs ?? 5000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 3_600_000,
      udpIdleTimeoutMs: opts.udpIdleTimeoutMs ?? 60_000,
      pingIntervalMs: opts.pingIntervalMs ?? 2000,
    };
    this.denied = new DenyList(opts.revokedFile, () => this.cutRevoked());
    this.links = opts.relays.map(
      (a) => new RelayLink(a, this, opts.reconnectInitialMs ?? 200, opts.reconnectMaxMs ?? 5000),
    );
    this.reverseServer.on('session', (s: ServerHttp2Session) => this.track(s));
    this.reverseServer.on('stream', (st, h) => this.serve(st, h, String(h[H_FROM] ?? '?'), true));
    this.directServer.on('session', (s: ServerHttp2Session) => this.track(s));
    this.directServer.on('stream', (st, h) => this.serve(st, h, this.fromOf.get(st.session!) ?? '?', false));
    this.splicedContext = createSecureContext(mtlsOptions(opts.identity));
    if (opts.tlsEngine)
      try {
        const ctx = opts.tlsEngine.context(opts.identity, ALPN_SPLICED, TLS_CIPHERS);
        this.engine = { e: opts.tlsEngine, ctx };
      } catch (e) {
        this.log.warn(
          { err: (e as Error).message },
          'tunnel: TLS engine refused the identity; TLS runs in Node',
        );
      }
    this.splicedServer = tlsServer({
      ...mtlsOptions(opts.identity),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: [ALPN_SPLICED],
      allowHalfOpen: true,
    });
    this.splicedServer.on('secureConnection', (t: TLSSocket) => this.splicedIn(t));
    this.splicedServer.on('tlsClientError', (e: Error, t: TLSSocket) => {
      const token = tokenOfServerName(t.servername);
      const p = token ? this.splicing.get(token) : undefined;
      this.log.warn({ from: p?.from, err: e.message }, 'tunnel: spliced stream handshake refused');
      if (p) this.unsplice(token!)?.backend.destroy();
    });
  }

  get name(): string {
    return this.opts.identity.name;
  }

  /** Names of the relays this node has a live reverse link to: the relays that reach it. */
  reachedBy(): string[] {
    return this.links.filter((l) => l.reachable && l.name).map((l) => l.name!);
  }

  /** Relays this node can open streams through now. */
  relaysUp(): string[] {
    return this.links.filter((l) => l.up && l.name).map((l) => l.name!);
  }

  async start(): Promise<AddressInfo | undefined> {
    this.denied.watch(this.opts.revokedPollMs ?? 1000);
    for (const l of this.links) l.start();
    this.pinger = setInterval(() => this.pingAll(), this.o.pingIntervalMs);
    this.pinger.unref();
    if (!this.opts.listen) return undefined;
    return this.listenDirect(this.opts.listen.host, this.opts.listen.port);
  }

  async stop(): Promise<void> {
    clearInterval(this.pinger);
    this.denied.close();
    for (const l of this.links) l.stop();
    for (const s of this.peers.values()) s.destroy();
    for (const s of this.sessions) s.destroy();
    for (const t of [...this.spliced.keys()]) kill(t);
    for (const token of [...this.splicing.keys()]) this.unsplice(token)?.backend.destroy();
    this.peers.clear();
    await new Promise<void>((r) => (this.listener ? this.listener.close(() => r()) : r()));
  }

  /** Resolves once a forward link to at least `n` relays is up (or after `timeoutMs`). */
  async ready(n = 1, timeoutMs = 10_000): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.relaysUp().length < n || this.reachedBy().length < n) {
      if (Date.now() > until) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /** @internal a link's state changed */
  changed(): void {
    this.emit('change', this.reachedBy());
  }

  /** @internal TLS to `address` with this node's identity. */
  dial(
    address: string,
    alpn: string,
    check: (host: string, cert: PeerCertificate) => Error | undefined,
  ): TLSSocket {
    const a = parseAuthority(address);
    if (!a) throw new TunnelError(TunnelCode.InvalidOption, `"${address}" is not host:port`);
    const sock = tlsConnect({
      ...mtlsOptions(this.opts.identity),
      host: a.host,
      port: a.port,
      servername: isIP(a.host) ? undefined : a.host,
      ALPNProtocols: [alpn],
      checkServerIdentity: check,
    });
    sock.setNoDelay(true);
    const t = setTimeout(() => sock.destroy(new Error('TLS handshake timeout')), this.o.openTimeoutMs);
    sock.once('secureConnect', () => clearTimeout(t));
    sock.once('close', () => clearTimeout(t));
    return sock;
  }

  /** @internal serve HTTP/2 on a reverse link (the relay opens streams on it). */
  serveReverse(sock: TLSSocket): ServerHttp2Session {
    return serveH2(this.reverseServer, sock);
  }

  /**
   * A TCP stream to `host:port` on `route.node`: straight to the node when it takes direct dials,
   * else through the relays that reach it (then any other live relay), the next one tried when a
   * relay has no link to the node or does not answer. Rejects with StreamOpenError: NO_PATH (no
   * relay or peer link: fails at once), REFUSED (the node publishes no such backend), UNREACHABLE
   * (the node could not connect to it), TIMEOUT.
   *
   * With `join`, a spliced stream whose TLS the engine runs takes `join.client` as its plaintext
   * side (no byte of it through JavaScript): the promise then resolves to `join.client` itself,
   * which the stream owns from there (destroyed when the stream ends; destroying it aborts the
   * stream). Otherwise it resolves to the stream, for the caller to join; a failure leaves
   * `join.client` as it was.
   */
  async open(
    route: PeerRoute,
    host: string,
    port: number,
    proto: TunnelProto = 'tcp',
    join?: StreamJoin,
  ): Promise<Duplex> {
    const target = authority(host, port);
    let last: StreamOpenError | undefined;
    if (route.address) {
      try {
        const s = await this.peerSession(route);
        const st = await this.request(s, route.node, target, proto);
        this.stats.openedDirect++;
        return st;
      } catch (e) {
        if (isFinal(e)) throw this.failed(e as StreamOpenError);
        last = e instanceof StreamOpenError ? e : undefined;
      }
    }
    const preferred = new Set(route.relays ?? []);
    const links = this.links
      .filter((l) => l.up)
      .sort((a, b) => Number(preferred.has(b.name ?? '')) - Number(preferred.has(a.name ?? '')));
    for (const l of links) {
      try {
        const st = await this.request(
          l.forward!,
          route.node,
          target,
          proto,
          parseAuthority(l.address)?.host,
          join,
        );
        this.stats.openedViaRelay++;
        return st;
      } catch (e) {
        if (isFinal(e)) throw this.failed(e as StreamOpenError);
        last = e as StreamOpenError;
      }
    }
    throw this.failed(
      last ?? new StreamOpenError(TunnelCode.NoPath, route.node, target, 'no relay or peer link is up'),
    );
  }

  /**
   * A UDP flow to `host:port` on `route.node`: datagrams framed on one stream — spliced through a
   * relay as a TCP stream is (TLS end to end: the relay never sees a datagram), else on the links.
   */
  async datagram(route: PeerRoute, host: string, port: number): Promise<DatagramChannel> {
    return new DatagramChannel(await this.open(route, host, port, 'udp'), this.o.udpIdleTimeoutMs);
  }

  private failed(e: StreamOpenError): StreamOpenError {
    this.stats.openFailures++;
    return e;
  }

  /**
   * A CONNECT on `s`. Through a relay (`relayHost`, the address this node dials it at) a stream
   * (TCP, or a UDP flow's framed datagrams) is asked spliced; a relay and a node that agree answer
   * with a token, and the stream is then TLS end to end to the node over the relay's splice port
   * (`spliceOut`). A node that splices no UDP answers without one: the flow rides the links.
   */
  private request(
    s: ClientHttp2Session,
    node: string,
    target: string,
    proto: TunnelProto,
    relayHost?: string,
    join?: StreamJoin,
  ): Promise<Duplex> {
    const askSplice = relayHost !== undefined && this.opts.splice !== false;
    return new Promise((resolve, reject) => {
      let st: ClientHttp2Stream;
      let handedOver = false;
      try {
        st = s.request(
          {
            ':method': 'CONNECT',
            ':authority': target,
            [H_NODE]: node,
            [H_PROTO]: proto,
            ...(askSplice ? { [H_SPLICE]: '1' } : {}),
          },
          { endStream: false },
        );
      } catch (e) {
        return reject(new StreamOpenError(TunnelCode.NoPath, node, target, (e as Error).message));
      }
      const t = setTimeout(() => {
        st.close(constants.NGHTTP2_CANCEL);
        reject(
          new StreamOpenError(TunnelCode.Timeout, node, target, `no answer in ${this.o.openTimeoutMs} ms`),
        );
      }, this.o.openTimeoutMs);
      st.once('response', (h) => {
        clearTimeout(t);
        const status = Number(h[':status']);
        const why = String(h[H_ERROR] ?? '');
        const token = askSplice ? h[H_SPLICE] : undefined;
        if (status === STATUS.ok && typeof token === 'string') {
          handedOver = true;
          st.close();
          return void this.spliceOut(relayHost!, Number(h[H_SPLICE_PORT]), token, node, target, join).then(
            resolve,
            reject,
          );
        }
        if (status === STATUS.ok) return resolve(st);
        st.close();
        if (status === STATUS.forbidden)
          reject(
            new StreamOpenError(
              TunnelCode.Refused,
              node,
              target,
              `refused by the node${why ? ` (${why})` : ''}`,
            ),
          );
        else if (status === STATUS.badGateway)
          reject(new StreamOpenError(TunnelCode.Unreachable, node, target, why || 'backend unreachable'));
        else reject(new StreamOpenError(TunnelCode.NoPath, node, target, `status ${status} ${why}`.trim()));
      });
      st.once('error', (e) => {
        clearTimeout(t);
        if (!handedOver) reject(new StreamOpenError(TunnelCode.NoPath, node, target, e.message));
      });
      st.once('close', () => {
        clearTimeout(t);
        if (!handedOver) reject(new StreamOpenError(TunnelCode.NoPath, node, target, 'link closed'));
      });
    });
  }

  /** Undefined when a peer (its certificate of the fleet CA: TLS checked that) is node `name` and not revoked. */
  private isNodePeer(p: ReturnType<typeof peerOf>, name: string): Error | undefined {
    if (p.role !== ROLE_NODE || p.name !== name)
      return new Error(`certificate is not node ${name}'s (${p.role} ${p.name})`);
    return this.denied.isRevoked(p.name, p.fingerprint256)
      ? new Error(`node ${p.name} is revoked`)
      : undefined;
  }

  /**
   * The source's end of a spliced stream: a plain connection to the relay's splice port with the
   * token, then TLS to node `node` over it (its certificate checked as for a direct dial).
   */
  private async spliceOut(
    host: string,
    port: number,
    token: string,
    node: string,
    target: string,
    join?: StreamJoin,
  ): Promise<Duplex> {
    const fail = (why: string): StreamOpenError =>
      new StreamOpenError(TunnelCode.NoPath, node, target, `spliced stream: ${why}`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw fail('the relay named no splice port');
    let raw: Socket;
    try {
      raw = await dialSplice(host, port, token, this.o.openTimeoutMs);
    } catch (e) {
      throw fail((e as Error).message);
    }
    const inEngine = this.spliceOutInEngine(raw, token, node, fail, join);
    if (inEngine) return inEngine;
    return new Promise((resolve, reject) => {
      let peer: ReturnType<typeof peerOf> | undefined;
      const t = tlsConnect({
        secureContext: this.splicedContext,
        socket: raw,
        servername: spliceServerName(token),
        ALPNProtocols: [ALPN_SPLICED],
        session: this.tickets.get(node)?.ticket,
        checkServerIdentity: (_h, cert) => this.isNodePeer((peer = peerOf(cert)), node),
      });
      t.on('session', (ticket: Buffer) => peer && this.tickets.set(node, { ticket, peer }));
      const timer = setTimeout(
        () => t.destroy(new Error(`no TLS handshake in ${this.o.openTimeoutMs} ms`)),
        this.o.openTimeoutMs,
      );
      const failed = (e: Error): void => {
        clearTimeout(timer);
        raw.destroy();
        reject(fail(e.message));
      };
      t.once('error', failed);
      t.once('secureConnect', () => {
        clearTimeout(timer);
        // a resumed session skips checkServerIdentity and shows no certificate: only the node
        // whose ticket it was could resume it — its certificate, checked then, may be revoked since
        const p = peer ?? this.tickets.get(node)?.peer;
        const bad = p ? this.isNodePeer(p, node) : new Error('resumed a session of no node');
        if (bad || !p) return void t.destroy(bad);
        peer = p;
        t.off('error', failed);
        this.splicedUp(t, raw, p);
        this.stats.openedSpliced++;
        if (t.isSessionReused()) this.stats.resumedSpliced++;
        resolve(t);
      });
    });
  }

  /**
   * The source's end of a spliced stream in the TLS engine: its plaintext side is `join.client`
   * (resolved as the stream) or, without one or when the engine cannot take it, a socket of the
   * engine's that is the stream. Undefined when there is no engine or it cannot take the
   * connection.
   */
  private spliceOutInEngine(
    raw: Socket,
    token: string,
    node: string,
    fail: (why: string) => StreamOpenError,
    join?: StreamJoin,
  ): Promise<Duplex> | undefined {
    if (!this.engine) return undefined;
    let settle: { resolve(d: Duplex): void; reject(e: Error): void } | undefined;
    let plain: Socket | undefined;
    let timer: NodeJS.Timeout | undefined;
    // the last session with `node` is resumed (of a stream in either TLS: the same DER); the
    // certificate it began with is checked again, as a full handshake's is
    const o = {
      server: false,
      servername: spliceServerName(token),
      idleMs: 0,
      session: this.tickets.get(node)?.ticket,
    };
    let peer: ReturnType<typeof peerOfDer> | undefined;
    const events = {
      peer: (der: Buffer, resumed: boolean) => {
        clearTimeout(timer);
        const p = peerOfDer(der);
        const bad = this.isNodePeer(p, node);
        if (bad) {
          settle?.reject(fail(bad.message));
          return false;
        }
        peer = p;
        this.splicedInEngine(plain!, p, st!);
        this.stats.openedSpliced++;
        if (resumed) this.stats.resumedSpliced++;
        settle?.resolve(plain!);
        return true;
      },
      session: (ticket: Buffer) => peer && this.tickets.set(node, { ticket, peer }),
      done: (_reason: string, _up: number, _down: number, error: string) => {
        clearTimeout(timer);
        if (plain) this.spliced.delete(plain);
        settle?.reject(fail(error || 'closed'));
        settle = undefined;
      },
    };
    let st =
      join && !join.client.destroyed
        ? this.engine.e.start(this.engine.ctx, raw, join.client, { ...o, first: join.first }, events)
        : undefined;
    if (st) plain = join!.client;
    else {
      st = this.engine.e.start(this.engine.ctx, raw, undefined, o, events);
      plain = st?.plain;
    }
    if (!st || !plain) return undefined;
    return new Promise<Duplex>((resolve, reject) => {
      settle = {
        resolve: (d) => {
          settle = undefined;
          resolve(d);
        },
        reject: (e) => {
          settle = undefined;
          reject(e);
        },
      };
      timer = setTimeout(() => {
        settle?.reject(fail(`no TLS handshake in ${this.o.openTimeoutMs} ms`));
        st.abort();
      }, this.o.openTimeoutMs);
    });
  }

  /**
   * A stream in the TLS engine, up: `end` is its plaintext end here (the source's socket, the
   * target's backend). Killing `end` aborts it; revocation cuts it; `end` closing before both
   * directions ended resets the connection, as for a TLS socket (splicedUp).
   */
  private splicedInEngine(
    end: Socket,
    peer: { name: string; fingerprint256: string },
    st: { abort(): void },
  ): void {
    this.stats.nativeTls++;
    end.on('error', () => undefined); // a reset after its reader left must not end the process
    endsBy(end, () => st.abort());
    this.spliced.set(end, peer);
    end.once('close', () => {
      if (!end.readableEnded || !end.writableFinished) st.abort();
    });
  }

  /**
   * The target's end of a spliced stream, its backend connected (a TCP connection, or a UDP
   * flow's UdpStream): a plain connection to the relay's splice port with the token (the address
   * this node dialled the relay at — the stream came on that link), TLS served over it once the
   * source's handshake comes; then 200.
   */
  private spliceIn(
    stream: ServerHttp2Stream,
    backend: Duplex,
    token: string,
    port: number,
    from: string,
  ): void {
    const host = (stream.session?.socket as Socket | undefined)?.remoteAddress;
    const refuse = (why: string): void => {
      backend.destroy();
      if (!stream.headersSent && !stream.destroyed)
        stream.respond({ ':status': STATUS.noLink, [H_ERROR]: why }, { endStream: true });
    };
    if (!host || !Number.isInteger(port) || port < 1 || port > 65535)
      return refuse('no splice port named by the relay');
    backend.on('error', () => undefined); // until joined
    dialSplice(host, port, token, this.o.openTimeoutMs).then(
      (raw) => {
        if (stream.destroyed) {
          raw.destroy();
          backend.destroy();
          return;
        }
        if (!this.spliceInEngine(raw, backend, from)) {
          const timer = setTimeout(() => {
            this.unsplice(token);
            raw.destroy();
            backend.destroy();
          }, this.o.openTimeoutMs);
          this.splicing.set(token, { from, backend, raw, timer });
          this.splicedServer.emit('connection', raw);
        }
        stream.respond({ ':status': STATUS.ok, [H_SPLICE]: token }, { endStream: true });
      },
      (e: Error) => refuse(e.message),
    );
  }

  /**
   * The target's end of a spliced stream in the TLS engine, between the raw connection and the
   * backend — a TCP connection is the engine's plaintext side itself; another backend (a UDP
   * flow's) is joined to the end of a socket pair the engine returns. The source's certificate
   * checked as in splicedIn. False when there is no engine or it cannot take them (then Node's
   * TLS serves the handshake).
   */
  private spliceInEngine(raw: Socket, backend: Duplex, from: string): boolean {
    if (!this.engine) return false;
    const direct = backend instanceof Socket ? backend : undefined;
    let up = false;
    let end: Socket | undefined = direct;
    const st = this.engine.e.start(
      this.engine.ctx,
      raw,
      direct,
      // a UDP flow ends by its own idle timeout (UdpStream)
      { server: true, idleMs: direct ? this.o.idleTimeoutMs : 0 },
      {
        peer: (der) => {
          clearTimeout(timer);
          const p = peerOfDer(der);
          const bad = this.isNodePeer(p, from);
          if (bad) {
            this.stats.refused++;
            this.log.warn({ from, err: bad.message }, 'tunnel: spliced stream refused');
            return false;
          }
          this.stats.served++;
          up = true;
          this.splicedInEngine(end!, p, st!);
          if (!direct) join(end!, backend);
          return true;
        },
        done: (_reason, upBytes, down, error) => {
          clearTimeout(timer);
          this.spliced.delete(end!);
          if (up) return void (this.stats.bytesServed += upBytes + down);
          // never came up (a failed or refused handshake, its timeout): the engine gave the
          // backend's connection back, and it is nobody's — as for Node's TLS (splicedIn)
          kill(backend);
          if (error && error !== 'refused')
            this.log.warn({ from, err: error }, 'tunnel: spliced stream handshake refused');
        },
      },
    );
    if (!st) return false;
    if (!direct) end = st.plain;
    const timer = setTimeout(() => st.abort(), this.o.openTimeoutMs);
    return true;
  }

  /** A spliced stream's handshake from its source is done: check it is the node the relay named. */
  private splicedIn(t: TLSSocket): void {
    const token = tokenOfServerName(t.servername);
    const p = token ? this.unsplice(token) : undefined;
    if (!p) return void t.destroy(); // too late, or no stream of ours
    const peer = peerOf(t.getPeerCertificate());
    const bad = this.isNodePeer(peer, p.from);
    if (bad) {
      this.stats.refused++;
      this.log.warn({ from: p.from, err: bad.message }, 'tunnel: spliced stream refused');
      t.destroy();
      kill(p.backend);
      return;
    }
    this.stats.served++;
    this.splicedUp(t, p.raw, peer);
    if (this.o.idleTimeoutMs > 0) t.setTimeout(this.o.idleTimeoutMs, () => kill(t));
    join(t, p.backend, (x, y) => (this.stats.bytesServed += x + y));
  }

  private unsplice(token: string): { from: string; backend: Duplex; raw: Socket } | undefined {
    const p = this.splicing.get(token);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.splicing.delete(token);
    return p;
  }

  /** Either end of a spliced stream, up: an abrupt end resets its connection; revocation cuts it. */
  private splicedUp(t: TLSSocket, raw: Socket, peer: { name: string; fingerprint256: string }): void {
    runsOver(t, raw);
    t.on('error', () => undefined); // a reset after its reader left must not end the process
    this.spliced.set(t, peer);
    t.once('close', () => {
      this.spliced.delete(t);
      if (!t.readableEnded || !t.writableFinished) kill(t);
      else raw.destroy();
    });
  }

  /** A link straight to a peer that takes direct dials (its certificate must name it). */
  private peerSession(route: PeerRoute): Promise<ClientHttp2Session> {
    let s = this.peers.get(route.node);
    if (!s || s.closed || s.destroyed) {
      const sock = this.dial(route.address!, ALPN_FORWARD, (_h, cert) =>
        this.isNodePeer(peerOf(cert), route.node),
      );
      s = h2connect(`https://${route.address}`, { createConnection: () => sock, settings: H2_SETTINGS });
      s.on('error', () => undefined);
      this.peers.set(route.node, s);
      this.track(s);
      const me = s;
      s.once('close', () => this.peers.get(route.node) === me && this.peers.delete(route.node));
    }
    if (!s.connecting) return Promise.resolve(s);
    const session = s;
    return new Promise((resolve, reject) => {
      session.once('connect', () => resolve(session));
      session.once('close', () =>
        reject(new StreamOpenError(TunnelCode.NoPath, route.node, route.address!, 'direct link failed')),
      );
    });
  }

  private async listenDirect(host: string, port: number): Promise<AddressInfo> {
    const { server, address } = await listenMtls(
      this.opts.identity,
      [ALPN_FORWARD],
      { host, port, what: 'tunnel' },
      (sock) => {
        const p = peerOf(sock.getPeerCertificate());
        if (p.role !== ROLE_NODE || this.denied.isRevoked(p.name, p.fingerprint256)) {
          this.stats.refused++;
          this.log.warn({ node: p.name }, 'tunnel: direct dial refused (revoked or not a node)');
          sock.destroy();
          return;
        }
        this.fromOf.set(serveH2(this.directServer, sock), p.name);
      },
      (e, sock) =>
        this.log.warn({ peer: sock.remoteAddress, err: e.message }, 'tunnel: direct dial handshake refused'),
    );
    this.listener = server;
    return address;
  }

  private track(s: Http2Session): void {
    this.sessions.add(s);
    s.on('close', () => this.sessions.delete(s));
    s.on('error', () => undefined);
    const widen = (): void => s.setLocalWindowSize(H2_CONNECTION_WINDOW);
    if (s.type === constants.NGHTTP2_SESSION_SERVER) s.once('remoteSettings', widen);
    else s.once('connect', widen);
  }

  /**
   * A stream another node opened: only to a backend this node publishes. Spliced only when a
   * relay asks (`viaRelay`: it came on a reverse link) — a peer that dialled directly never
   * makes this node dial anywhere.
   */
  private serve(stream: ServerHttp2Stream, h: IncomingHttpHeaders, from: string, viaRelay: boolean): void {
    stream.on('error', () => undefined);
    const a = parseAuthority(String(h[':authority'] ?? ''));
    const proto = h[H_PROTO] === 'udp' ? 'udp' : 'tcp';
    if (h[':method'] !== 'CONNECT' || !a || !isIPv4(a.host)) {
      stream.respond({ ':status': STATUS.bad }, { endStream: true });
      return;
    }
    if (!this.opts.targets.allows(a.host, a.port, proto)) {
      this.stats.refused++;
      this.log.warn(
        { from, target: `${a.host}:${a.port}`, proto },
        'tunnel: stream refused: no such backend here',
      );
      stream.respond(
        { ':status': STATUS.forbidden, [H_ERROR]: 'not a backend of this node' },
        { endStream: true },
      );
      return;
    }
    if (this.o.idleTimeoutMs > 0 && proto === 'tcp')
      stream.setTimeout(this.o.idleTimeoutMs, () => stream.close(constants.NGHTTP2_CANCEL));
    const token = viaRelay ? h[H_SPLICE] : undefined;
    const splice = typeof token === 'string' && /^[0-9a-f]{32}$/.test(token) ? token : undefined;
    if (proto === 'udp') return this.serveUdp(stream, a.host, a.port, splice, Number(h[H_SPLICE_PORT]), from);
    const sock = netConnect({ host: a.host, port: a.port, allowHalfOpen: true, noDelay: true });
    const t = setTimeout(() => sock.destroy(new Error('ETIMEDOUT')), this.o.openTimeoutMs);
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      if (!stream.headersSent && !stream.destroyed)
        stream.respond({ ':status': STATUS.badGateway, [H_ERROR]: e.code ?? e.message }, { endStream: true });
    });
    stream.once('close', () => {
      if (sock.connecting) sock.destroy();
    });
    sock.once('connect', () => {
      clearTimeout(t);
      if (stream.destroyed) return void sock.destroy();
      sock.removeAllListeners('error');
      if (splice) return this.spliceIn(stream, sock, splice, Number(h[H_SPLICE_PORT]), from);
      stream.respond({ ':status': STATUS.ok });
      this.stats.served++;
      join(stream, sock, (x, y) => (this.stats.bytesServed += x + y));
    });
  }

  /**
   * A UDP flow to a backend of this node: its datagrams framed on the stream, or — spliced
   * (`token`) — on the end-to-end TLS of a spliced stream, as a TCP backend's bytes are.
   */
  private serveUdp(
    stream: ServerHttp2Stream,
    host: string,
    port: number,
    token: string | undefined,
    splicePort: number,
    from: string,
  ): void {
    const sock = createSocket('udp4');
    const failed = (): void => {
      try {
        sock.close();
      } catch {
        /* closed */
      }
      if (!stream.destroyed) stream.close();
    };
    sock.once('error', failed);
    sock.connect(port, host, () => {
      sock.off('error', failed);
      const flow = new UdpStream(sock, this.o.udpIdleTimeoutMs);
      if (stream.destroyed) return void flow.destroy();
      if (token) return this.spliceIn(stream, flow, token, splicePort, from);
      stream.respond({ ':status': STATUS.ok });
      this.stats.served++;
      join(stream, flow, (x, y) => (this.stats.bytesServed += x + y));
    });
  }

  private cutRevoked(): void {
    for (const [t, p] of this.spliced)
      if (this.denied.isRevoked(p.name, p.fingerprint256)) {
        this.log.warn({ node: p.name }, 'tunnel: peer revoked; spliced stream cut');
        kill(t);
      }
    for (const s of this.sessions) {
      const sock = s.socket as TLSSocket | undefined;
      if (!sock || typeof sock.getPeerCertificate !== 'function') continue;
      const p = peerOf(sock.getPeerCertificate());
      if (p.role === ROLE_NODE && this.denied.isRevoked(p.name, p.fingerprint256)) {
        this.log.warn({ node: p.name }, 'tunnel: peer revoked; link closed');
        s.destroy();
      }
    }
  }

  private pingAll(): void {
    const all = [...this.sessions];
    for (const l of this.links) if (l.forward) all.push(l.forward);
    pingAll(all, 2 * this.o.pingIntervalMs);
  }
}

function isFinal(e: unknown): boolean {
  const c = (e as { code?: string }).code;
  return c === TunnelCode.Refused || c === TunnelCode.Unreachable;
}
