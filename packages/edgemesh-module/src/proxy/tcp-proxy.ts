import { Logger, silentLogger } from '@edgecore/beehive';
import { connect, type Socket } from 'node:net';
import type { Backend } from '../lb/backends';
import type { LoadBalancer } from '../lb/load-balancer';

export interface TcpProxyOptions {
  connectTimeoutMs?: number;
  /** Both sockets are closed after this long without traffic (default 1 h; 0 = never). */
  idleTimeoutMs?: number;
  log?: Logger;
}

export interface TcpProxyStats {
  connections: number;
  active: number;
  connectFailures: number;
  noBackend: number;
}

/**
 * L4 TCP (HTTPS, gRPC, databases pass through): per-connection load balancing; on a refused or
 * timed-out connect the next backend is tried; half-close propagated (allowHalfOpen); an error on
 * either side closes both.
 */
export class TcpProxy {
  readonly stats: TcpProxyStats = { connections: 0, active: 0, connectFailures: 0, noBackend: 0 };
  private readonly log: Logger;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly lb: LoadBalancer,
    private readonly opts: TcpProxyOptions = {},
  ) {
    this.log = opts.log ?? silentLogger;
  }

  /** `client` must come from a server created with allowHalfOpen: true. `initial` = bytes already read. */
  handle(client: Socket, backends: readonly Backend[], scope: string, initial?: Buffer): void {
    this.stats.connections++;
    client.pause();
    client.on('error', () => client.destroy());
    const ip = (client.remoteAddress ?? '').replace(/^::ffff:/, '');
    const tried = new Set<string>();
    const attempt = (): void => {
      const b = this.lb.pick(backends, scope, ip, undefined, tried);
      if (!b) {
        this.stats.noBackend++;
        client.destroy();
        return;
      }
      const up = connect({ host: b.host, port: b.port, allowHalfOpen: true, noDelay: true });
      const t = setTimeout(
        () => up.destroy(new Error('connect timeout')),
        this.opts.connectTimeoutMs ?? 5000,
      );
      up.once('error', (e) => {
        clearTimeout(t);
        this.stats.connectFailures++;
        this.lb.fail(b);
        tried.add(b.key);
        this.log.debug({ backend: b.key, err: e.message }, 'l4 connect failed, trying the next backend');
        if (!client.destroyed) attempt();
      });
      up.once('connect', () => {
        clearTimeout(t);
        up.removeAllListeners('error');
        this.lb.succeed(b);
        this.splice(client, up, b, initial);
      });
    };
    attempt();
  }

  private splice(client: Socket, up: Socket, b: Backend, initial?: Buffer): void {
    this.lb.acquire(b);
    this.stats.active++;
    this.sockets.add(client);
    this.sockets.add(up);
    let closed = 0;
    const onClose = (): void => {
      if (++closed === 1) {
        // one side is gone for good: the other goes too (after flushing what it has)
        client.destroySoon?.();
        up.destroySoon?.();
      }
      if (closed === 2) {
        this.lb.release(b);
        this.stats.active--;
        this.sockets.delete(client);
        this.sockets.delete(up);
      }
    };
    client.once('close', onClose);
    up.once('close', onClose);
    const kill = (): void => {
      client.destroy();
      up.destroy();
    };
    client.on('error', kill);
    up.on('error', kill);
    const idle = this.opts.idleTimeoutMs ?? 3_600_000;
    if (idle > 0) {
      client.setTimeout(idle, kill);
      up.setTimeout(idle, kill);
    }
    if (initial?.length) up.write(initial);
    // pipe() ends the destination when the source ends: that is the half-close, one direction
    client.pipe(up);
    up.pipe(client);
    client.resume();
  }

  closeAll(): void {
    for (const s of this.sockets) s.destroy();
  }
}
