import type { z } from 'zod/v3';
import { resolveMeshOptions, udpProxyOptionsSchema } from '../../config';
import { Logger, silentLogger } from '@edgecore/beehive';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Backend } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';
import type { BackendDialer } from '../../tunnel';
import { isLocalFailure } from '../../open-files';

/** A session ends after `idleTimeoutMs` without packets; the table holds `maxSessions` at most. */
export type UdpProxyOptions = z.input<typeof udpProxyOptionsSchema> & {
  log?: Logger;
  /** Flows to backends on other sites (datagrams framed on a tunnel stream). */
  dialer?: Pick<BackendDialer, 'datagram'>;
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
}

/**
 * UDP portal: a session per client address and port, each with its own connected upstream socket
 * so replies find their way back; idle sessions expire; the table is bounded.
 */
export class UdpProxy {
  private readonly sessions = new Map<string, Session>();
  readonly stats = { packets: 0, sessions: 0, evicted: 0, noBackend: 0 };
  private readonly log: Logger;
  private readonly opts: z.output<typeof udpProxyOptionsSchema>;
  private readonly dialer?: Pick<BackendDialer, 'datagram'>;

  constructor(
    private readonly sock: Socket,
    private readonly lb: LoadBalancer,
    private readonly route: () => { backends: readonly Backend[]; scope: string },
    options: UdpProxyOptions = {},
  ) {
    this.opts = resolveMeshOptions(udpProxyOptionsSchema, options, 'udp');
    this.log = options.log ?? silentLogger;
    this.dialer = options.dialer;
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
      if (this.sessions.size >= this.opts.maxSessions) {
        const [oldId, old] = this.sessions.entries().next().value as [string, Session];
        this.end(oldId, old);
        this.stats.evicted++;
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

  private end(id: string, s: Session): void {
    if (this.sessions.get(id) !== s) return;
    this.sessions.delete(id);
    clearTimeout(s.timer);
    this.lb.release(s.backend);
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
