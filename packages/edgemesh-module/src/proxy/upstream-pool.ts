import { connect, type Socket } from 'node:net';
import type { Backend } from '../lb/backends';

export class ConnectError extends Error {
  readonly code = 'EDGEMESH_UPSTREAM_CONNECT';
  constructor(
    readonly backend: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`connect to ${backend} failed: ${reason}`, options);
  }
}

/**
 * Keep-alive connections per backend (what undici's Pool does, without the HTTP layer on top):
 * idle sockets are reused LIFO, closed after `idleMs`, at most `maxIdle` per backend.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, Socket[]>();

  constructor(private readonly opts: { connectTimeoutMs?: number; idleMs?: number; maxIdle?: number } = {}) {}

  /** An idle socket (reused: true) or a fresh connection. */
  async get(b: Backend): Promise<{ sock: Socket; reused: boolean }> {
    const list = this.idle.get(b.key);
    while (list?.length) {
      const s = list.pop()!;
      s.removeAllListeners('close');
      s.removeAllListeners('error');
      s.removeAllListeners('data');
      s.removeAllListeners('timeout');
      s.setTimeout(0);
      if (!s.destroyed && s.readable && s.writable) return { sock: s, reused: true };
    }
    return { sock: await connectTo(b, this.opts.connectTimeoutMs ?? 5000), reused: false };
  }

  /** Return a socket whose last response was complete and reusable. */
  put(b: Backend, s: Socket): void {
    if (s.destroyed) return;
    let list = this.idle.get(b.key);
    if (!list) this.idle.set(b.key, (list = []));
    if (list.length >= (this.opts.maxIdle ?? 64)) {
      s.destroy();
      return;
    }
    s.removeAllListeners('data');
    s.removeAllListeners('end');
    s.removeAllListeners('error');
    s.removeAllListeners('close');
    s.removeAllListeners('timeout');
    const drop = (): void => {
      s.destroy();
      const l = this.idle.get(b.key);
      const i = l?.indexOf(s) ?? -1;
      if (i >= 0) l!.splice(i, 1);
    };
    s.on('error', drop);
    s.on('close', drop);
    s.on('data', drop); // unsolicited bytes: the connection is unusable
    s.setTimeout(this.opts.idleMs ?? 30_000, drop);
    if (s.isPaused()) s.resume();
    list.push(s);
  }

  close(): void {
    for (const list of this.idle.values()) for (const s of list) s.destroy();
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
