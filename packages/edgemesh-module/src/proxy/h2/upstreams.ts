import type { Logger } from '@edgecore/beehive';
import { connect, constants, type ClientHttp2Session } from 'node:http2';
import { ConnectError } from '../../edgemesh-errors';
import type { Backend } from '../../lb/backends';
import type { BackendDialer } from '../../tunnel';

/** One HTTP/2 connection to a backend, and the streams it carries. */
interface Upstream {
  session: ClientHttp2Session;
  key: string;
  active: number;
  /** GOAWAY received, or closing: no new stream on it. */
  closing: boolean;
  pinger?: NodeJS.Timeout;
}

export interface H2UpstreamOptions {
  maxStreams: number;
  connectTimeoutMs: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  log: Logger;
}

/**
 * HTTP/2 connections to backends, shared by every stream to the same backend: a stream goes on a
 * connection with room (fewer active streams than the backend's SETTINGS_MAX_CONCURRENT_STREAMS
 * and our own cap), else a new connection is dialled (a routed socket or a tunnel stream, through
 * the BackendDialer). A PING every interval (none answered within it: the connection is dropped),
 * closed after an idle time, drained with GOAWAY when its backend leaves (`retain`).
 */
export class H2Upstreams {
  private readonly byKey = new Map<string, Upstream[]>();
  /** Dials under way per backend: streams that arrive meanwhile wait for the same connection. */
  private readonly dialing = new Map<string, Promise<Upstream>>();
  private closed = false;

  constructor(
    private readonly dialer: Pick<BackendDialer, 'connect'>,
    private readonly o: H2UpstreamOptions,
  ) {}

  /** Connections open now (for metrics and tests). */
  get size(): number {
    let n = 0;
    for (const l of this.byKey.values()) n += l.length;
    return n;
  }

  /** A connection to `b` with room for one more stream (counted until `release`). */
  async acquire(b: Backend): Promise<Upstream> {
    const u = this.withRoom(b.key) ?? (await this.connectShared(b));
    u.active++;
    return u;
  }

  release(u: Upstream): void {
    u.active--;
  }

  /** Drain (GOAWAY, open streams finish) the connections of backends `live` does not hold. */
  retain(live: (key: string) => boolean): void {
    for (const [key, list] of this.byKey) if (!live(key)) for (const u of list) this.drain(u);
  }

  closeAll(): void {
    this.closed = true;
    for (const list of this.byKey.values()) for (const u of list) u.session.destroy();
    this.byKey.clear();
  }

  private withRoom(key: string): Upstream | undefined {
    for (const u of this.byKey.get(key) ?? []) {
      if (u.closing || u.session.destroyed || u.session.closed) continue;
      const remote = u.session.remoteSettings?.maxConcurrentStreams ?? this.o.maxStreams;
      if (u.active < Math.min(remote, this.o.maxStreams)) return u;
    }
    return undefined;
  }

  private connectShared(b: Backend): Promise<Upstream> {
    let p = this.dialing.get(b.key);
    if (!p) {
      p = this.connect(b).finally(() => this.dialing.delete(b.key));
      this.dialing.set(b.key, p);
      return p;
    }
    // a connection being dialled is shared until it is full; then another one
    return p.then((u) => (u.active < this.o.maxStreams && !u.closing ? u : this.connectShared(b)));
  }

  private async connect(b: Backend): Promise<Upstream> {
    if (this.closed) throw new ConnectError(b.key, 'proxy closed');
    const sock = await this.dialer.connect(b, this.o.connectTimeoutMs);
    const session = connect(`http://${b.host}:${b.port}`, {
      createConnection: () => sock,
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
    });
    const u: Upstream = { session, key: b.key, active: 0, closing: false };
    session.on('error', (e) => this.o.log.debug({ backend: b.key, err: e.message }, 'http2 upstream error'));
    session.on('goaway', () => (u.closing = true));
    session.once('connect', () => {
      // room for 16 MiB in flight towards us on the connection (streams keep 1 MiB each)
      if (!session.destroyed) session.setLocalWindowSize(16 * 1024 * 1024);
    });
    session.setTimeout(this.o.idleTimeoutMs, () => {
      if (u.active === 0) this.drain(u);
    });
    session.once('close', () => this.remove(u));
    u.pinger = setInterval(() => this.ping(u), this.o.pingIntervalMs);
    u.pinger.unref();
    let list = this.byKey.get(b.key);
    if (!list) this.byKey.set(b.key, (list = []));
    list.push(u);
    return u;
  }

  private ping(u: Upstream): void {
    if (u.session.destroyed) return;
    const t = setTimeout(() => {
      this.o.log.debug({ backend: u.key }, 'http2 upstream did not answer a PING: closing it');
      u.session.destroy(new ConnectError(u.key, 'PING not answered'));
    }, this.o.pingIntervalMs);
    t.unref();
    try {
      u.session.ping(() => clearTimeout(t));
    } catch {
      clearTimeout(t); // too many PINGs outstanding, or closing
    }
  }

  private drain(u: Upstream): void {
    if (u.closing && u.session.closed) return;
    u.closing = true;
    if (!u.session.closed) u.session.close(); // GOAWAY; open streams finish
  }

  private remove(u: Upstream): void {
    clearInterval(u.pinger);
    const list = this.byKey.get(u.key);
    if (!list) return;
    const i = list.indexOf(u);
    if (i >= 0) list.splice(i, 1);
    if (!list.length) this.byKey.delete(u.key);
  }
}

export type { Upstream as H2Upstream };
export const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR } = constants;
