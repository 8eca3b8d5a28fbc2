import type { Socket as DgramSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';

/**
 * UDP over a tunnel stream: each datagram is a 2-byte big-endian length and its bytes (a UDP
 * payload is at most 65,507 bytes over IPv4, so a length always fits). A stream carries one
 * client's datagrams to one backend, both ways; it closes after `idleMs` without one.
 */
export const MAX_DATAGRAM = 65_535;

export function frame(d: Buffer): Buffer {
  if (d.length > MAX_DATAGRAM) throw new RangeError(`datagram of ${d.length} bytes`);
  const out = Buffer.allocUnsafe(2 + d.length);
  out.writeUInt16BE(d.length, 0);
  d.copy(out, 2);
  return out;
}

/** Reassembles datagrams from stream chunks cut anywhere. */
export class Deframer {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer, emit: (d: Buffer) => void): void {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (buf.length >= 2) {
      const n = buf.readUInt16BE(0);
      if (buf.length < 2 + n) break;
      emit(buf.subarray(2, 2 + n));
      buf = buf.subarray(2 + n);
    }
    this.pending = buf.length ? Buffer.from(buf) : Buffer.alloc(0);
  }
}

/**
 * A datagram channel over a tunnel stream: `send` frames, `message` events deframe — the shape of
 * a connected `dgram` socket that EdgeMesh's UDP proxy uses.
 */
export class DatagramChannel extends EventEmitter {
  private readonly deframer = new Deframer();
  closed = false;

  constructor(
    readonly stream: Duplex,
    idleMs: number,
  ) {
    super();
    stream.on('data', (c: Buffer) => this.deframer.push(c, (d) => this.emit('message', d)));
    const end = (): void => this.close();
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
    if (idleMs > 0 && 'setTimeout' in stream)
      (stream as unknown as { setTimeout(ms: number, cb: () => void): void }).setTimeout(idleMs, end);
  }

  send(d: Buffer): void {
    if (this.closed) return;
    this.stream.write(frame(d));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.destroy();
    this.emit('close');
  }
}

/** Bytes of framed datagrams a UdpStream holds for a reader that lags; past it, new ones are dropped. */
export const UDP_STREAM_BUFFER = 1 << 20;

/**
 * The serving end of a UDP flow: a connected UDP socket as a stream of framed datagrams — what is
 * written is deframed and sent to the backend, each datagram the backend sends comes out framed.
 * It ends (and closes the socket) when the stream written to it ends, when destroyed, or after
 * `idleMs` without a datagram either way. Joined to a tunnel stream: on the links, or the
 * plaintext of a spliced stream's end-to-end TLS.
 */
export class UdpStream extends Duplex {
  private readonly deframer = new Deframer();
  private readonly idle?: NodeJS.Timeout;
  /** Its readable side was ended (the flow is over): a datagram still arriving goes nowhere. */
  private over = false;

  constructor(
    private readonly sock: DgramSocket,
    idleMs: number,
  ) {
    super({ allowHalfOpen: false });
    sock.on('message', (m: Buffer) => {
      this.idle?.refresh();
      // a tunnel that lags: datagrams are dropped, as a full socket buffer drops them, not held
      if (!this.over && this.readableLength < UDP_STREAM_BUFFER) this.push(frame(m));
    });
    sock.on('error', (e) => this.destroy(e));
    if (idleMs > 0) this.idle = setTimeout(() => this.destroy(), idleMs);
  }

  override _read(): void {
    // datagrams come when they come (see the buffer's bound above)
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.idle?.refresh();
    try {
      this.deframer.push(chunk, (d) => this.sock.send(d));
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  /** The flow's other end is done: so is the flow. */
  override _final(cb: (e?: Error | null) => void): void {
    this.over = true;
    this.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    clearTimeout(this.idle);
    try {
      this.sock.close();
    } catch {
      // closed already
    }
    cb(err);
  }
}
