import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';

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
