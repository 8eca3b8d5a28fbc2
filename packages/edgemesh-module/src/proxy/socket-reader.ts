import type { Socket } from 'node:net';

/**
 * Pull-style reading from a socket with bounded buffering: the socket is paused once
 * `highWater` bytes wait unread, so a fast sender cannot grow memory (back-pressure).
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private size = 0;
  private waiter?: () => void;
  ended = false;
  error?: Error;

  constructor(
    readonly sock: Socket,
    private readonly highWater = 64 * 1024,
  ) {
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.length;
      if (this.size >= this.highWater) sock.pause();
      this.wake();
    });
    sock.on('end', () => {
      this.ended = true;
      this.wake();
    });
    sock.on('error', (e) => {
      this.error = e;
      this.ended = true;
      this.wake();
    });
    sock.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  get buffered(): number {
    return this.size;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Wait until data (or EOF) is available. */
  wait(): Promise<void> {
    if (this.size > 0 || this.ended) return Promise.resolve();
    return new Promise((r) => (this.waiter = r));
  }

  /** Everything buffered as one Buffer (possibly empty), resuming the socket unless told not to. */
  take(resume = true): Buffer {
    const b = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = [];
    this.size = 0;
    if (resume && this.sock.isPaused() && !this.ended) this.sock.resume();
    return b;
  }

  /** Put bytes back in front (leftover after a message boundary). */
  unshift(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.unshift(b);
    this.size += b.length;
  }

  /** Stop listening (the socket is handed to someone else). */
  detach(): void {
    this.sock.removeAllListeners('data');
    this.sock.removeAllListeners('end');
  }
}

/**
 * Write and wait for 'drain' when the kernel buffer is full. A string is HTTP head text, parsed as
 * latin1 and written back as latin1: byte for byte, so obs-text (UTF-8 in a header value, say)
 * passes unchanged.
 */
export function writeAll(sock: Socket, b: Buffer | string): Promise<void> {
  if (sock.destroyed) return Promise.reject(new Error('socket closed'));
  if (typeof b === 'string' ? sock.write(b, 'latin1') : sock.write(b)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (e?: Error): void => {
      sock.off('drain', ok);
      sock.off('close', closed);
      if (e) reject(e);
      else resolve();
    };
    const ok = (): void => done();
    const closed = (): void => done(new Error('socket closed'));
    sock.once('drain', ok);
    sock.once('close', closed);
  });
}
