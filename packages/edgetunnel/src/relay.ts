import { Logger, silentLogger } from '@edgecore/beehive';
import {
  connect as h2connect,
  constants,
  createServer as h2server,
  type ClientHttp2Session,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Server, TLSSocket } from 'node:tls';
import { peerOf, type Identity } from './certs';
import { DenyList } from './deny-list';
import { pingAll } from './liveness';
import { listenMtls } from './mtls';
import { join } from './pipe';
import {
  ALPN_FORWARD,
  ALPN_REVERSE,
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
} from './protocol';
import { SpliceRendezvous, type KernelJoiner } from './splice';

export interface RelayOptions {
  identity: Identity;
  /** `host`/`port` to listen on (port 0: any). */
  host: string;
  port: number;
  /** The deny list file (`edgectl certs revoke`), read again when it changes. */
  revokedFile?: string;
  revokedPollMs?: number;
  /** Ping every link this often; a link that leaves a ping unanswered for two intervals is closed. */
  pingIntervalMs?: number;
  /**
   * The splice port (spliced streams, README "Spliced streams"), on `host`: default `port` + 1
   * (any port when `port` is 0); `false`: streams are only relayed over the links.
   */
  splicePort?: number | false;
  /** A token not used by both nodes in this time is forgotten. Default 10 s. */
  spliceTtlMs?: number;
  /** Move spliced pairs' bytes in the kernel (default: JavaScript pipes). */
  kernelJoiner?: KernelJoiner;
  log?: Logger;
}

export interface RelayStats {
  links: number;
  streams: number;
  active: number;
  /** Streams for a node with no reverse link here (503). */
  noLink: number;
  /** Connections refused: revoked, not a node, or failed the handshake. */
  refusedPeers: number;
  /** Bytes moved (relayed and spliced streams), both ways. */
  bytes: number;
  /** Streams spliced: two nodes' connections to the splice port joined (`active` counts them too). */
  spliced: number;
  /** Connections to the splice port closed: no hello, an unknown or a used token. */
  spliceRefused: number;
  /** Spliced streams asked for whose connections did not both come in time. */
  spliceExpired: number;
}

/**
 * The relay (`edgerelay`): accepts mutually authenticated TLS from nodes of the fleet — ALPN `h2`
 * links on which a node opens CONNECT streams, ALPN `edgetunnel-rev` links on which this relay is
 * the HTTP/2 client toward the node — and joins a stream from node X for node Y to a stream it
 * opens on Y's reverse link. It dials nobody, forwards only between authenticated nodes, keeps no
 * state another relay needs (a stream lives on the links it joins), and logs node names, never
 * payloads.
 */
export class Relay {
  readonly stats: RelayStats = {
    links: 0,
    streams: 0,
    active: 0,
    noLink: 0,
    refusedPeers: 0,
    bytes: 0,
    spliced: 0,
    spliceRefused: 0,
    spliceExpired: 0,
  };
  private readonly log: Logger;
  private server?: Server;
  private readonly forward = h2server({ settings: H2_SETTINGS });
  /** Reverse links by node name, newest last. */
  private readonly reverse = new Map<string, ClientHttp2Session[]>();
  private readonly sessions = new Set<Http2Session>();
  private readonly nodeOf = new WeakMap<Http2Session, string>();
  readonly denied: DenyList;
  private pinger?: NodeJS.Timeout;
  private readonly splice?: SpliceRendezvous;
  /** The splice port, once listening. */
  splicePort?: number;

  constructor(private readonly o: RelayOptions) {
    this.log = o.log ?? silentLogger;
    if (o.splicePort !== false)
      this.splice = new SpliceRendezvous(this.stats, o.spliceTtlMs ?? 10_000, this.log, o.kernelJoiner);
    this.denied = new DenyList(o.revokedFile, () => this.cutRevoked());
    this.forward.on('session', (s: ServerHttp2Session) => this.track(s, s.socket as TLSSocket));
    this.forward.on('stream', (stream, headers) => this.onStream(stream, headers));
  }

  /** Reverse links held, by node (what a node's status would list for this relay). */
  get nodes(): string[] {
    return [...this.reverse.keys()];
  }

  async listen(): Promise<AddressInfo> {
    const id = this.o.identity;
    this.denied.watch(this.o.revokedPollMs ?? 1000);
    const every = this.o.pingIntervalMs ?? 2000;
    this.pinger = setInterval(() => pingAll(this.sessions, 2 * every), every);
    this.pinger.unref();
    const { server, address: a } = await listenMtls(
      id,
      [ALPN_FORWARD, ALPN_REVERSE],
      { host: this.o.host, port: this.o.port, what: 'relay' },
      (sock) => this.accept(sock),
      (e, sock) => {
        this.stats.refusedPeers++;
        this.log.warn({ peer: sock.remoteAddress, err: e.message }, 'relay: TLS handshake refused');
      },
    );
    this.server = server;
    if (this.splice) {
      const port = typeof this.o.splicePort === 'number' ? this.o.splicePort : this.o.port && this.o.port + 1;
      try {
        this.splicePort = (await this.splice.listen(this.o.host, port)).port;
      } catch (e) {
        await new Promise<void>((r) => server.close(() => r()));
        throw e;
      }
    }
    this.log.info(
      { relay: id.name, address: `${a.address}:${a.port}`, splicePort: this.splicePort },
      'relay listening',
    );
    return a;
  }

  async close(): Promise<void> {
    clearInterval(this.pinger);
    this.denied.close();
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
    this.reverse.clear();
    await this.splice?.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private accept(sock: TLSSocket): void {
    const { role, name, fingerprint256 } = peerOf(sock.getPeerCertificate());
    if (role !== ROLE_NODE || !name) {
      this.stats.refusedPeers++;
      this.log.warn({ peer: name, role }, 'relay: not a node certificate; closed');
      sock.destroy();
      return;
    }
    if (this.denied.isRevoked(name, fingerprint256)) {
      this.stats.refusedPeers++;
      this.log.warn({ node: name }, 'relay: revoked node refused');
      sock.destroy();
      return;
    }
    sock.setNoDelay(true);
    if (sock.alpnProtocol === ALPN_REVERSE) {
      const s = h2connect(`https://${name}`, { createConnection: () => sock, settings: H2_SETTINGS });
      s.once('connect', () => s.setLocalWindowSize(H2_CONNECTION_WINDOW));
      this.nodeOf.set(s, name);
      this.track(s, sock);
      let list = this.reverse.get(name);
      if (!list) this.reverse.set(name, (list = []));
      list.push(s);
      this.log.info({ node: name }, 'relay: node linked (reverse)');
      s.on('close', () => {
        const l = this.reverse.get(name);
        if (!l) return;
        const i = l.indexOf(s);
        if (i >= 0) l.splice(i, 1);
        if (!l.length) this.reverse.delete(name);
        this.log.info({ node: name }, 'relay: reverse link closed');
      });
      s.on('error', () => undefined);
      return;
    }
    this.forward.emit('connection', sock);
  }

  private track(s: Http2Session, sock: TLSSocket): void {
    if (this.sessions.has(s)) return;
    if (!this.nodeOf.has(s)) this.nodeOf.set(s, peerOf(sock.getPeerCertificate()).name);
    this.sessions.add(s);
    this.stats.links++;
    s.on('close', () => {
      this.sessions.delete(s);
      this.stats.links--;
    });
    s.on('error', () => undefined);
    if (s.type === constants.NGHTTP2_SESSION_SERVER)
      s.once('remoteSettings', () => s.setLocalWindowSize(H2_CONNECTION_WINDOW));
  }

  private onStream(stream: ServerHttp2Stream, h: IncomingHttpHeaders): void {
    const from = this.nodeOf.get(stream.session!) ?? '';
    const to = String(h[H_NODE] ?? '');
    const authority = String(h[':authority'] ?? '');
    stream.on('error', () => undefined);
    if (h[':method'] !== 'CONNECT' || !to || !authority) {
      stream.respond({ ':status': STATUS.bad }, { endStream: true });
      return;
    }
    const links = this.reverse.get(to);
    const link = links?.[links.length - 1];
    if (!link || link.closed || link.destroyed) {
      this.stats.noLink++;
      stream.respond({ ':status': STATUS.noLink, [H_ERROR]: 'no link to node' }, { endStream: true });
      return;
    }
    this.stats.streams++;
    // a spliced stream: both nodes dial the splice port with this token once the target agreed
    const token =
      h[H_SPLICE] === '1' && this.splice && this.splicePort ? this.splice.issue(from, to) : undefined;
    let up;
    try {
      up = link.request(
        {
          ':method': 'CONNECT',
          ':authority': authority,
          [H_FROM]: from,
          [H_PROTO]: String(h[H_PROTO] ?? 'tcp'),
          ...(token ? { [H_SPLICE]: token, [H_SPLICE_PORT]: String(this.splicePort) } : {}),
        },
        { endStream: false },
      );
    } catch {
      if (token) this.splice!.forget(token);
      stream.respond({ ':status': STATUS.noLink, [H_ERROR]: 'link closing' }, { endStream: true });
      return;
    }
    up.on('error', () => undefined);
    up.once('response', (rh) => {
      const status = Number(rh[':status']);
      if (token && rh[H_SPLICE] !== token) this.splice!.forget(token);
      if (status !== STATUS.ok) {
        if (!stream.destroyed)
          stream.respond({ ':status': status, [H_ERROR]: String(rh[H_ERROR] ?? '') }, { endStream: true });
        up.close();
        return;
      }
      if (stream.destroyed) {
        if (token) this.splice!.forget(token);
        return void up.close(constants.NGHTTP2_CANCEL);
      }
      if (token && rh[H_SPLICE] === token) {
        // the target dialled the splice port: the source does too; these streams are done
        stream.respond(
          { ':status': STATUS.ok, [H_SPLICE]: token, [H_SPLICE_PORT]: String(this.splicePort) },
          { endStream: true },
        );
        up.close();
        return;
      }
      stream.respond({ ':status': STATUS.ok });
      this.stats.active++;
      up.once('close', () => this.stats.active--);
      join(stream, up, (a, b) => (this.stats.bytes += a + b));
    });
    up.once('close', () => {
      if (token && !stream.headersSent) this.splice!.forget(token);
      if (!stream.headersSent && !stream.destroyed)
        stream.respond({ ':status': STATUS.noLink, [H_ERROR]: 'link to node closed' }, { endStream: true });
    });
    stream.once('close', () => {
      if (!up.closed && !stream.headersSent) up.close(constants.NGHTTP2_CANCEL);
    });
  }

  /** Close every link of an identity that became revoked. */
  private cutRevoked(): void {
    for (const s of this.sessions) {
      const sock = s.socket as TLSSocket | undefined;
      const p =
        sock && typeof sock.getPeerCertificate === 'function' ? peerOf(sock.getPeerCertificate()) : undefined;
      if (p && this.denied.isRevoked(p.name, p.fingerprint256)) {
        this.log.warn({ node: this.nodeOf.get(s) }, 'relay: node revoked; links closed');
        s.destroy();
        if (p.name) this.splice?.cut(p.name);
      }
    }
  }
}
