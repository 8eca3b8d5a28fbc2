import type { z } from 'zod/v3';
import { resolveMeshOptions, tcpProxyOptionsSchema } from '../../config';
import { Logger, resetSocket, silentLogger } from '@edgecore/beehive';
import { connect, type Socket } from 'node:net';
import type { Backend } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';
import { SpliceEngine } from './splice';
import type { BackendDialer } from '../../tunnel';
import { isLocalFailure } from '../../open-files';

/**
 * Connect timeout; both sockets close after `idleTimeoutMs` without traffic (0: never); `splice`:
 * established connections' bytes move through the native splice engine (zero copy, off the
 * JavaScript thread) when the addon is built, else they are piped in JavaScript.
 */
export type TcpProxyOptions = z.input<typeof tcpProxyOptionsSchema> & {
  log?: Logger;
  /** Connections to backends on other sites (through the tunnel); routed ones are dialled here. */
  dialer?: Pick<BackendDialer, 'connect'>;
};

export interface TcpProxyStats {
  connections: number;
  active: number;
  connectFailures: number;
  noBackend: number;
  /** Connections whose bytes went through the splice engine. */
  spliced: number;
  /**
   * Connections to a backend on another site that the tunnel stream took as its own (their bytes
   * through the tunnel's native TLS engine, never through JavaScript).
   */
  tunnelJoined: number;
}

/**
 * L4 TCP (HTTPS, gRPC, databases pass through): per-connection load balancing; on a refused or
 * timed-out connect the next backend is tried; half-close propagated (allowHalfOpen); an error on
 * either side closes both.
 */
export class TcpProxy {
  readonly stats: TcpProxyStats = {
    connections: 0,
    active: 0,
    connectFailures: 0,
    noBackend: 0,
    spliced: 0,
    tunnelJoined: 0,
  };
  private readonly log: Logger;
  private readonly sockets = new Set<Socket>();
  private readonly engine?: SpliceEngine;
  /** Connections of ours in the splice engine. */
  private readonly spliceIds = new Set<number>();
  private readonly opts: z.output<typeof tcpProxyOptionsSchema>;
  private readonly dialer?: Pick<BackendDialer, 'connect'>;

  constructor(
    private readonly lb: LoadBalancer,
    options: TcpProxyOptions = {},
  ) {
    this.opts = resolveMeshOptions(tcpProxyOptionsSchema, options, 'tcp');
    this.log = options.log ?? silentLogger;
    this.engine = this.opts.splice ? SpliceEngine.get() : undefined;
    this.dialer = options.dialer;
  }

  /** Whether established connections go through the splice engine. */
  get splicing(): boolean {
    return this.engine !== undefined;
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
        // no backend could take it: a reset, as a refused connection looks to the client (a FIN
        // would read as a backend that answered nothing)
        this.stats.noBackend++;
        resetSocket(client);
        return;
      }
      if (b.tunnel) return this.attemptTunnel(client, b, tried, attempt, initial);
      const up = connect({ host: b.host, port: b.port, allowHalfOpen: true, noDelay: true });
      const t = setTimeout(() => up.destroy(new Error('connect timeout')), this.opts.connectTimeoutMs);
      up.once('error', (e) => {
        clearTimeout(t);
        this.stats.connectFailures++;
        if (isLocalFailure(e)) {
          // no socket for it on this node: the backend is not at fault, another would fare no better
          this.log.debug({ backend: b.key, err: e.message }, 'l4: no socket for the backend connect');
          resetSocket(client);
          return;
        }
        this.lb.fail(b);
        tried.add(b.key);
        this.log.debug({ backend: b.key, err: e.message }, 'l4 connect failed, trying the next backend');
        if (!client.destroyed) attempt();
      });
      up.once('connect', () => {
        if (this.engine) up.pause(); // before Node's first read: the engine will do the reading
        clearTimeout(t);
        up.removeAllListeners('error');
        this.lb.succeed(b);
        this.splice(client, up, b, initial);
      });
    };
    attempt();
  }

  /**
   * A backend on another site: a tunnel stream. With the native engines on (`splice`), the
   * stream may take the client's connection as its own (its TLS engine then moves the bytes);
   * otherwise it is piped in JavaScript (an HTTP/2 stream or a TLS socket has no descriptor).
   */
  private attemptTunnel(
    client: Socket,
    b: Backend,
    tried: Set<string>,
    next: () => void,
    initial?: Buffer,
  ): void {
    if (!this.dialer) {
      this.stats.connectFailures++;
      tried.add(b.key);
      return next();
    }
    const join = this.engine ? { client, first: initial } : undefined;
    this.dialer.connect(b, this.opts.connectTimeoutMs, join).then(
      (up) => {
        if (up === client) return this.joined(client, b);
        if (client.destroyed) return void up.destroy();
        this.lb.succeed(b);
        this.splice(client, up, b, initial);
      },
      (e: Error) => {
        this.stats.connectFailures++;
        if (isLocalFailure(e)) {
          this.log.debug({ backend: b.key, err: e.message }, 'l4: no socket for the tunnel stream');
          if (!client.destroyed) resetSocket(client);
          return;
        }
        this.lb.fail(b);
        tried.add(b.key);
        this.log.debug(
          { backend: b.key, err: e.message },
          'l4 tunnel stream failed, trying the next backend',
        );
        if (!client.destroyed) next();
      },
    );
  }

  /** The tunnel stream took the client's connection: it is ours to count until it closes. */
  private joined(client: Socket, b: Backend): void {
    this.lb.succeed(b);
    this.lb.acquire(b);
    this.stats.active++;
    this.stats.tunnelJoined++;
    this.sockets.add(client); // closeAll destroys it: the stream then aborts
    const released = (): void => {
      this.lb.release(b);
      this.stats.active--;
      this.sockets.delete(client);
    };
    // the stream may have ended (and closed the client) before its promise came round to us
    if (client.closed) released();
    else client.once('close', released);
  }

  private splice(client: Socket, up: Socket, b: Backend, initial?: Buffer): void {
    this.lb.acquire(b);
    this.stats.active++;
    this.sockets.add(client);
    this.sockets.add(up);
    if (this.engine && !b.tunnel) {
      this.handOver(this.engine, client, up, b, initial);
      return;
    }
    this.pipe(client, up, b, initial);
  }

  /** Give the pair to the splice engine once what Node holds is written (see SpliceEngine.handOver). */
  private handOver(engine: SpliceEngine, client: Socket, up: Socket, b: Backend, initial?: Buffer): void {
    const kill = (): void => {
      client.destroy();
      up.destroy();
    };
    client.on('error', kill);
    up.on('error', kill);
    const released = (): void => {
      this.lb.release(b);
      this.stats.active--;
      this.sockets.delete(client);
      this.sockets.delete(up);
    };
    let id: number | undefined;
    engine.handOver(
      client,
      up,
      { toB: initial, idleMs: this.opts.idleTimeoutMs },
      {
        started: (n) => {
          id = n;
          this.spliceIds.add(n);
          this.stats.spliced++;
        },
        fallback: () => this.pipe(client, up, b), // the engine could not take it: JavaScript pipes
        failed: released,
        done: (reason) => {
          if (id !== undefined) this.spliceIds.delete(id);
          if (reason === 'error') this.log.debug({ backend: b.key }, 'l4 connection ended with an error');
          released();
        },
      },
    );
  }

  private pipe(client: Socket, up: Socket, b: Backend, initial?: Buffer): void {
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
    const idle = this.opts.idleTimeoutMs;
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
    for (const id of this.spliceIds) this.engine?.abort(id);
    for (const s of this.sockets) s.destroy();
  }
}
