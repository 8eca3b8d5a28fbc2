import {
  connect as h2connect,
  type ClientHttp2Session,
  type Http2Session,
  type ServerHttp2Session,
} from 'node:http2';
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { Logger } from '@edgecore/beehive';
import { peerOf } from './certs';
import { ALPN_FORWARD, ALPN_REVERSE, H2_CONNECTION_WINDOW, H2_SETTINGS, ROLE_RELAY } from './protocol';

/** Sessions whose relay accepted us (its SETTINGS arrived). */
const accepted = new WeakSet<Http2Session>();

/** What a relay link needs of the agent that holds it. */
export interface LinkOwner {
  readonly log: Logger;
  dial(
    address: string,
    alpn: string,
    check: (host: string, cert: PeerCertificate) => Error | undefined,
  ): TLSSocket;
  serveReverse(sock: TLSSocket): ServerHttp2Session;
  changed(): void;
}

/** One configured relay: an outbound `h2` link (this node opens streams) and a reverse link. */
export class RelayLink {
  name?: string;
  forward?: ClientHttp2Session;
  reverse?: ServerHttp2Session;
  private backoff: number;
  private timer?: NodeJS.Timeout;
  stopped = false;

  constructor(
    readonly address: string,
    private readonly agent: LinkOwner,
    private readonly initialMs: number,
    private readonly maxMs: number,
  ) {
    this.backoff = initialMs;
  }

  /**
   * Up once the relay's HTTP/2 SETTINGS arrived: in TLS 1.3 the client's handshake ends before
   * the server has checked the client's certificate, and a relay sends its SETTINGS only after
   * it accepted the node (not revoked, a node certificate) — so a refused link is never "up".
   */
  get up(): boolean {
    const f = this.forward;
    return !!f && !f.closed && !f.destroyed && accepted.has(f);
  }

  get reachable(): boolean {
    const r = this.reverse;
    return !!r && !r.closed && !r.destroyed && accepted.has(r);
  }

  start(): void {
    this.dialForward();
    this.dialReverse();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.forward?.destroy();
    this.reverse?.destroy();
  }

  private again(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.up) this.dialForward();
      if (!this.reachable) this.dialReverse();
    }, this.backoff);
    this.timer.unref();
    this.backoff = Math.min(this.backoff * 2, this.maxMs);
  }

  private dialForward(): void {
    if (this.stopped) return;
    this.forward?.destroy();
    const sock = this.agent.dial(this.address, ALPN_FORWARD, relayIdentity);
    const s = h2connect(`https://${this.address}`, { createConnection: () => sock, settings: H2_SETTINGS });
    this.forward = s;
    s.on('error', (e) =>
      this.agent.log.debug({ relay: this.address, err: e.message }, 'tunnel: relay link error'),
    );
    s.once('connect', () => s.setLocalWindowSize(H2_CONNECTION_WINDOW));
    s.once('remoteSettings', () => {
      accepted.add(s);
      this.name = peerOf(sock.getPeerCertificate()).name;
      this.backoff = this.initialMs;
      this.agent.log.info({ relay: this.name, address: this.address }, 'tunnel: linked to relay');
      this.agent.changed();
    });
    s.once('close', () => {
      if (this.forward === s) this.forward = undefined;
      this.agent.changed();
      this.again();
    });
  }

  private dialReverse(): void {
    if (this.stopped) return;
    this.reverse?.destroy();
    const sock = this.agent.dial(this.address, ALPN_REVERSE, relayIdentity);
    sock.on('error', (e) =>
      this.agent.log.debug({ relay: this.address, err: e.message }, 'tunnel: reverse link error'),
    );
    sock.once('close', () => {
      this.reverse = undefined;
      this.agent.changed();
      this.again();
    });
    sock.once('secureConnect', () => {
      this.name = peerOf(sock.getPeerCertificate()).name;
      const r = this.agent.serveReverse(sock);
      this.reverse = r;
      r.once('remoteSettings', () => {
        accepted.add(r);
        this.agent.changed();
      });
    });
  }
}

/** A relay's certificate: fleet CA (checked by TLS), role `relay`, and the address dialled. */
function relayIdentity(host: string, cert: PeerCertificate): Error | undefined {
  const p = peerOf(cert);
  if (p.role !== ROLE_RELAY) return new Error(`not a relay certificate (${p.role})`);
  return checkServerIdentity(host, cert);
}
