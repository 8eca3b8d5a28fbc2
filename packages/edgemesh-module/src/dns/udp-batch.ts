import { createSocket, type Socket } from 'node:dgram';
import { DnsListenError } from '../edgemesh-errors';
import { loadNative, nativeUnavailable } from '../native';

/**
 * The UDP side of the DNS server, behind one small interface with two implementations:
 * - `native`: the addon's batched socket (native/udp_batch.c) — recvmmsg/sendmmsg, one call into
 *   JavaScript per batch of up to 64 datagrams, replies written into a send slab and flushed with
 *   one system call. Linux only; built by `npm install` (node-gyp).
 * - `dgram`: node:dgram, one event per datagram. Used where the addon is not built, or on request.
 */
export type UdpBackend = 'auto' | 'native' | 'dgram';

/**
 * A query handler. `msg` may be a view into a receive buffer that is reused after the handler
 * returns: a handler that keeps it (an asynchronous reply) must copy it first. When `out` is given
 * (the native path: the reply's slot in the send buffer), the handler may write the reply there and
 * return its length instead of a Buffer.
 */
export type UdpHandler = (
  msg: Buffer,
  address: string,
  port: number,
  out?: Buffer,
) => Buffer | number | Promise<Buffer> | undefined;

export interface UdpTransport {
  readonly backend: 'native' | 'dgram';
  readonly port: number;
  close(): Promise<void>;
}

interface UdpBatchBinding {
  open(
    host: string,
    port: number,
    inBuf: Buffer,
    inMeta: Uint32Array,
    outBuf: Buffer,
    outMeta: Uint32Array,
    slotSize: number,
    onBatch: (n: number) => void,
  ): object;
  localPort(h: object): number;
  flush(h: object, n: number): number;
  sendOne(h: object, buf: Buffer, address: number, port: number): boolean;
  close(h: object): void;
}

/** The addon's UDP half, or undefined when the addon is not built (see `nativeUnavailable()`). */
export function loadUdpBatch(): UdpBatchBinding | undefined {
  return loadNative<{ udp: UdpBatchBinding }>()?.udp;
}

const SLOT = 4096; // the largest UDP reply we send (EDNS size is capped at 4096)
const SLOTS = 64;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export class UdpBatchStats {
  batches = 0;
  datagrams = 0;
  /** Queries larger than a slot (4,096 bytes) — dropped. */
  oversized = 0;
  /** Replies the kernel would not take (send buffer full). */
  sendDropped = 0;
}

class NativeUdp implements UdpTransport {
  readonly backend = 'native';
  readonly stats = new UdpBatchStats();
  private readonly inBuf = Buffer.alloc(SLOT * SLOTS);
  private readonly inMeta = new Uint32Array(SLOTS * 3);
  private readonly outBuf = Buffer.alloc(SLOT * SLOTS);
  private readonly outMeta = new Uint32Array(SLOTS * 3);
  private readonly names = new Map<number, string>();
  /** One view per send slot, made once (no allocation per reply). */
  private readonly outSlots = Array.from({ length: SLOTS }, (_, i) =>
    this.outBuf.subarray(i * SLOT, (i + 1) * SLOT),
  );
  private handle?: object;
  readonly port: number;

  constructor(
    private readonly b: UdpBatchBinding,
    host: string,
    port: number,
    private readonly handler: UdpHandler,
    private readonly onError: (e: unknown) => void,
  ) {
    if (!IPV4.test(host))
      throw new DnsListenError(`udp ${host}:${port}`, new Error('native UDP is IPv4 only'));
    try {
      this.handle = b.open(host, port, this.inBuf, this.inMeta, this.outBuf, this.outMeta, SLOT, (n) =>
        this.onBatch(n),
      );
    } catch (e) {
      throw new DnsListenError(`udp ${host}:${port}`, e as Error);
    }
    this.port = b.localPort(this.handle);
  }

  private name(ip: number): string {
    let s = this.names.get(ip);
    if (s === undefined) {
      s = `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
      if (this.names.size >= 10_000) this.names.clear();
      this.names.set(ip, s);
    }
    return s;
  }

  private onBatch(n: number): void {
    const { inBuf, inMeta, outBuf, outMeta } = this;
    this.stats.batches++;
    this.stats.datagrams += n;
    let m = 0;
    for (let i = 0; i < n; i++) {
      const len = inMeta[i * 3];
      if (len === 0) {
        this.stats.oversized++;
        continue;
      }
      const ip = inMeta[i * 3 + 1];
      const port = inMeta[i * 3 + 2];
      let reply: Buffer | number | Promise<Buffer> | undefined;
      try {
        reply = this.handler(inBuf.subarray(i * SLOT, i * SLOT + len), this.name(ip), port, this.outSlots[m]);
      } catch (e) {
        this.onError(e);
        continue;
      }
      if (reply === undefined) continue;
      if (typeof reply === 'number') {
        outMeta[m * 3] = reply; // written in place
        outMeta[m * 3 + 1] = ip;
        outMeta[m * 3 + 2] = port;
        m++;
        continue;
      }
      if (!Buffer.isBuffer(reply)) {
        reply.then(
          (r) => this.sendOne(r, ip, port),
          (e) => this.onError(e),
        );
        continue;
      }
      if (reply.length > SLOT) {
        this.sendOne(reply, ip, port);
        continue;
      }
      reply.copy(outBuf, m * SLOT);
      outMeta[m * 3] = reply.length;
      outMeta[m * 3 + 1] = ip;
      outMeta[m * 3 + 2] = port;
      m++;
    }
    if (m > 0 && this.handle) this.stats.sendDropped += m - this.b.flush(this.handle, m);
  }

  private sendOne(r: Buffer, ip: number, port: number): void {
    if (this.handle && !this.b.sendOne(this.handle, r, ip, port)) this.stats.sendDropped++;
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    if (h) this.b.close(h);
  }
}

class DgramUdp implements UdpTransport {
  readonly backend = 'dgram';
  private constructor(
    private readonly sock: Socket,
    readonly port: number,
  ) {}

  static async open(
    host: string,
    port: number,
    handler: UdpHandler,
    onError: (e: unknown) => void,
  ): Promise<DgramUdp> {
    const udp = createSocket({ type: 'udp4' });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', (e) => reject(new DnsListenError(`udp ${host}:${port}`, e)));
      udp.bind(port, host, () => resolve());
    });
    udp.removeAllListeners('error');
    udp.on('error', onError);
    const t = new DgramUdp(udp, udp.address().port);
    udp.on('message', (msg, rinfo) => {
      let reply: Buffer | number | Promise<Buffer> | undefined;
      try {
        reply = handler(msg, rinfo.address, rinfo.port);
      } catch (e) {
        onError(e);
        return;
      }
      if (reply === undefined || typeof reply === 'number') return; // no `out` given: never a number
      if (Buffer.isBuffer(reply)) udp.send(reply, rinfo.port, rinfo.address);
      else
        reply.then(
          (r) => udp.send(r, rinfo.port, rinfo.address),
          (e) => onError(e),
        );
    });
    return t;
  }

  close(): Promise<void> {
    return new Promise<void>((r) => this.sock.close(() => r()));
  }
}

/**
 * Open the UDP side on host:port. `auto` takes the native path when the addon is built and the
 * host is an IPv4 address, else dgram; `native` fails when the addon is missing.
 */
export async function openUdp(
  backend: UdpBackend,
  host: string,
  port: number,
  handler: UdpHandler,
  onError: (e: unknown) => void,
): Promise<UdpTransport> {
  const b = backend === 'dgram' ? undefined : loadUdpBatch();
  if (backend === 'native' && !b)
    throw new DnsListenError(
      `udp ${host}:${port}`,
      new Error(`udpBackend native: the udp_batch addon is not built (${nativeUnavailable()})`),
    );
  if (b && (backend === 'native' || IPV4.test(host))) return new NativeUdp(b, host, port, handler, onError);
  return DgramUdp.open(host, port, handler, onError);
}
