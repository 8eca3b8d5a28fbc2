import type { z } from 'zod';
import { resolveMeshOptions, udpProxyOptionsSchema } from '../../config';
import { Logger, silentLogger } from '@edgecore/beehive';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Backend } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';

/** A session ends after `idleTimeoutMs` without packets; the table holds `maxSessions` at most. */
export type UdpProxyOptions = z.input<typeof udpProxyOptionsSchema> & { log?: Logger };

interface Session {
  up: Socket;
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

  constructor(
    private readonly sock: Socket,
    private readonly lb: LoadBalancer,
    private readonly route: () => { backends: readonly Backend[]; scope: string },
    options: UdpProxyOptions = {},
  ) {
    this.opts = resolveMeshOptions(udpProxyOptionsSchema, options, 'udp');
    this.log = options.log ?? silentLogger;
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
      const up = createSocket('udp4');
      const timer = setTimeout(() => this.end(id, s!), this.opts.idleTimeoutMs);
      s = { up, backend: b, timer, queue: [] };
      this.sessions.set(id, s);
      this.stats.sessions++;
      this.lb.acquire(b);
      up.on('message', (reply) => this.sock.send(reply, r.port, r.address));
      up.on('error', (e) => {
        this.log.debug({ backend: b.key, err: e.message }, 'udp upstream error');
        this.lb.fail(b);
        this.end(id, s!);
      });
      const sess = s;
      up.connect(b.port, b.host, () => {
        for (const q of sess.queue ?? []) up.send(q);
        sess.queue = undefined;
      });
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
