import { connect, type Socket } from 'node:net';
import type { z } from 'zod/v3';
import { resolveMeshOptions, upstreamPoolOptionsSchema } from '../../config';
import { ConnectError } from '../../edgemesh-errors';
import type { Backend } from '../../lb/backends';
import { SocketReader } from '../socket-reader';

/** An upstream connection with the reader that stays attached to it for its whole life. */
export interface UpstreamConn {
  sock: Socket;
  reader: SocketReader;
}

export type UpstreamPoolOptions = z.input<typeof upstreamPoolOptionsSchema>;

/**
 * Keep-alive connections per backend (what undici's Pool does, without the HTTP layer on top):
 * idle connections are reused LIFO, closed after `idleMs`, at most `maxIdle` per backend. A
 * connection that received bytes or EOF while idle is discarded.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, UpstreamConn[]>();
  readonly options: z.output<typeof upstreamPoolOptionsSchema>;

  constructor(
    options: UpstreamPoolOptions = {},
    /** How a fresh connection is made (EdgeMesh's BackendDialer: routed, or through the tunnel). */
    private readonly dial: (b: Backend, timeoutMs: number) => Promise<Socket> = connectTo,
  ) {
    this.options = resolveMeshOptions(upstreamPoolOptionsSchema, options, 'pool');
  }

  /** A fresh connection to `b` (never pooled before). */
  connect(b: Backend): Promise<Socket> {
    return this.dial(b, this.options.connectTimeoutMs);
  }

  /** An idle connection (reused: true) or a fresh one. */
  async get(b: Backend): Promise<UpstreamConn & { reused: boolean }> {
    const list = this.idle.get(b.key);
    while (list?.length) {
      const c = list.pop()!;
      if (!c.sock.destroyed && !c.reader.ended && c.reader.buffered === 0) {
        c.sock.setTimeout(0);
        return { ...c, reused: true };
      }
      c.sock.destroy();
    }
    const sock = await this.connect(b);
    sock.on('timeout', () => sock.destroy()); // armed only while idle in the pool
    sock.on('error', () => sock.destroy());
    return { sock, reader: new SocketReader(sock), reused: false };
  }

  /** Return a connection whose last response was complete and reusable. */
  put(b: Backend, c: UpstreamConn): void {
    if (c.sock.destroyed) return;
    let list = this.idle.get(b.key);
    if (!list) this.idle.set(b.key, (list = []));
    if (list.length >= this.options.maxIdle) {
      c.sock.destroy();
      return;
    }
    c.sock.setTimeout(this.options.idleMs);
    list.push(c);
  }

  close(): void {
    for (const list of this.idle.values()) for (const c of list) c.sock.destroy();
    this.idle.clear();
  }
}

export function connectTo(b: Backend, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: b.host, port: b.port, noDelay: true });
    const t = setTimeout(() => {
      s.destroy();
      reject(new ConnectError(b.key, 'timeout'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(new ConnectError(b.key, e.code ?? e.message, { cause: e }));
    });
  });
}
