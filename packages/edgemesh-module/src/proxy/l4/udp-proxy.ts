import type { z } from 'zod/v3';
import { resolveMeshOptions, udpProxyOptionsSchema } from '../../config';
import { Logger, silentLogger } from '@edgecore/beehive';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Backend } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';
import type { BackendDialer } from '../../tunnel';
import { isLocalFailure } from '../../open-files';
import type { ConnectionBudget } from '../connection-budget';

/** A session ends after `idleTimeoutMs` without packets; the table holds `maxSessions` at most. */
export type UdpProxyOptions = z.input<typeof udpProxyOptionsSchema> & {
  log?: Logger;
  /** Flows to backends on other sites (datagrams framed on a tunnel stream). */
  dialer?: Pick<BackendDialer, 'datagram'>;
  /**
   * The node's connection count: every session takes a place — a socket to its backend, or a
   * tunnel flow (spliced through a relay: a connection of its own); at the limit it takes this
   * portal's oldest session's, or its datagram is dropped.
   */
  budget?: Pick<ConnectionBudget, 'acquire' | 'release' | 'refuse'>;
};

/** A session's upstream: a connected UDP socket, or a datagram flow through the tunnel. */
interface Upstream {
  send(d: Buffer): void;
  close(): void;
}

interface Session {
  up: Upstream;
  backend: Backend;
  timer: NodeJS.Timeout;
  /** Packets that arrived before the upstream socket was connected. */
  queue?: Buffer[];
  /** Holds a place in the node's connection count. */
  counted: boolean;
}

/**
 * UDP portal: a session per client address and port, each with its own connected upstream socket
 * so replies find their way back; idle sessions expire; the table is bounded.
 */
export class UdpProxy {
  private readonly sessions = new Map<string, Session>();
  readonly stats = { packets: 0, sessions: 0, evicted: 0, noBackend: 0, noRoom: 0 };
  private readonly log: Logger;
  private readonly opts: z.output<typeof udpProxyOptionsSchema>;
  private readonly dialer?: Pick<BackendDialer, 'datagram'>;
  private readonly budget?: Pick<ConnectionBudget, 'acquire' | 'release' | 'refuse'>;

  constructor(
    private readonly sock: Socket,
    private readonly lb: LoadBalancer,
    private readonly route: () => { backends: readonly Backend[]; scope: string },
    options: UdpProxyOptions = {},
  ) {
    this.opts = resolveMeshOptions(udpProxyOptionsSchema, options, 'udp');
    this.log = options.log ?? silentLogger;
    this.dialer = options.dialer;
    this.budget = options.budget;
    sock.on('message', (m, r) => this.onMessage(m, r));
  }

  get size(): number {
    return this.sessions.size;
  }

  private onMessage(msg: Buffer, r: RemoteInfo): void {
    this.stats.packets++;
    const id = `${r.address}:${r.port}`;
    let s = this.sessions.get(id);
    if (s) {
      // refresh LRU position and idle timer
      this.sessions.delete(id);
      this.sessions.set(id, s);
      s.timer.refresh();
    } else {
      const { backends, scope } = this.route();
      const b = this.lb.pick(backends, scope, r.address);
      if (!b) {
        this.stats.noBackend++;
        return;
      }
      if (this.sessions.size >= this.opts.maxSessions) this.evictOldest();
      const counted = !!this.budget;
      if (counted && !this.budget!.acquire()) {
        // the node's limit: this portal's oldest session gives its place, or the datagram waits
        // for the client's retry
        if (!this.sessions.size || (this.evictOldest(), !this.budget!.acquire())) {
          this.stats.noRoom++;
          this.budget!.refuse();
          return;
        }
      }
      const timer = setTimeout(() => this.end(id, s!), this.opts.idleTimeoutMs);
      const reply = (d: Buffer): void => this.sock.send(d, r.port, r.address);
      const failed = (e: Error): void => {
        this.log.debug({ backend: b.key, err: e.message }, 'udp upstream error');
        // no socket for it on this node (EMFILE…): the backend is not at fault
        if (!isLocalFailure(e)) this.lb.fail(b);
        this.end(id, s!);
      };
      const sess: Session = {
        up: { send: () => undefined, close: () => undefined },
        backend: b,
        timer,
        queue: [],
        counted,
      };
      s = sess;
      this.sessions.set(id, sess);
      this.stats.sessions++;
      this.lb.acquire(b);
      const flush = (): void => {
        for (const q of sess.queue ?? []) sess.up.send(q);
        sess.queue = undefined;
      };
      if (b.tunnel && this.dialer) {
        this.dialer.datagram(b).then(
          (ch) => {
            if (this.sessions.get(id) !== sess) return void ch.close();
            ch.on('message', reply);
            ch.on('close', () => this.end(id, sess));
            sess.up = { send: (d: Buffer) => ch.send(d), close: () => ch.close() };
            flush();
          },
          (e: Error) => failed(e),
        );
      } else {
        const up = createSocket('udp4');
        sess.up = up;
        up.on('message', reply);
        up.on('error', failed);
        up.connect(b.port, b.host, flush);
      }
    }
    if (s.queue) s.queue.push(msg);
    else s.up.send(msg);
  }

  /** The least recently active session ends (its place goes to a new one). */
  private evictOldest(): void {
    const [oldId, old] = this.sessions.entries().next().value as [string, Session];
    this.end(oldId, old);
    this.stats.evicted++;
  }

  private end(id: string, s: Session): void {
    if (this.sessions.get(id) !== s) return;
    this.sessions.delete(id);
    clearTimeout(s.timer);
    this.lb.release(s.backend);
    if (s.counted) this.budget?.release();
    try {
      s.up.close();
    } catch {
      /* already closed */
    }
  }

  close(): void {
    for (const [id, s] of [...this.sessions]) this.end(id, s);
  }
}
