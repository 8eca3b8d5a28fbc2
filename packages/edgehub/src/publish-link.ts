import { connect as netConnect, isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import WebSocket, { createWebSocketStream } from 'ws';
import { EdgeHubError, HubCode, InvalidEdgeHubOptionError } from './edgehub-errors';

/**
 * A publish-only MQTT client (5 or 3.1.1) for the cloud's bulk applies: CONNECT, QoS 1 PUBLISH
 * (retained, with MQTT 5's message expiry), PUBACK, keepalive, DISCONNECT — nothing else.
 *
 * Why not mqtt.js, which every other link of ours uses: an apply of a fleet catalog is tens of
 * thousands of publishes, and mqtt.js spends ~20 µs on each (a packet object, its outgoing store,
 * a message-id allocator, six socket writes per packet, its event machinery) — a third of what
 * edgectl spends per object, on the same cores as the broker when both run on one host. Here a
 * publish is one buffer for its header, written with the others queued in the same turn of the
 * event loop (one socket write per turn, or per 64 KiB), and its PUBACK one table lookup.
 *
 * It keeps what the broker announces in its CONNACK (MQTT 5): never more publishes awaiting their
 * PUBACK than its Receive Maximum (the rest wait here, in order), no packet larger than its
 * Maximum Packet Size (refused here, naming the topic), its Server Keep Alive, and a retained or
 * QoS 1 publish fails at once where it says it takes none. mqtt.js sends past the Receive Maximum
 * (stock mosquitto announces 20 and tolerates more at QoS 1; a broker that enforces it disconnects
 * the client).
 *
 * URLs: `mqtt://`, `tcp://` (port 1883), `mqtts://`, `ssl://`, `tls://` (8883; the certificate is
 * verified against `ca`, or the system's CAs, and the host name), `ws://`, `wss://` (MQTT over
 * WebSocket, subprotocol `mqtt`; 80 / 443, the URL's path). User and password may be in the URL.
 */
export interface PublishLinkOptions {
  clientId: string;
  username?: string;
  password?: string;
  /** 5 (default) or 4 (MQTT 3.1.1). */
  protocolVersion?: 4 | 5;
  /** PEM: the CA that signed the broker's certificate (TLS and wss). */
  ca?: Buffer;
  /** Seconds (default 60; the broker's Server Keep Alive wins). */
  keepaliveSeconds?: number;
  /** How long the transport and the CONNACK may take (default 10,000 ms). */
  connectTimeoutMs?: number;
}

export interface LinkPublishOptions {
  retain?: boolean;
  /** MQTT 5's Message Expiry Interval, seconds (ignored in 3.1.1). */
  expirySeconds?: number;
}

export type PublishCallback = (err?: Error) => void;

/** Reason codes of MQTT 5 (CONNACK, PUBACK, DISCONNECT) by number. */
const REASONS: Record<number, string> = {
  0: 'Success',
  4: 'Disconnect with Will Message',
  16: 'No matching subscribers',
  128: 'Unspecified error',
  129: 'Malformed Packet',
  130: 'Protocol Error',
  131: 'Implementation specific error',
  132: 'Unsupported Protocol Version',
  133: 'Client Identifier not valid',
  134: 'Bad User Name or Password',
  135: 'Not authorized',
  136: 'Server unavailable',
  137: 'Server busy',
  138: 'Banned',
  139: 'Server shutting down',
  140: 'Bad authentication method',
  141: 'Keep Alive timeout',
  142: 'Session taken over',
  144: 'Topic Name invalid',
  147: 'Receive Maximum exceeded',
  148: 'Topic Alias invalid',
  149: 'Packet too large',
  150: 'Message rate too high',
  151: 'Quota exceeded',
  152: 'Administrative action',
  153: 'Payload format invalid',
  154: 'Retain not supported',
  155: 'QoS not supported',
  156: 'Use another server',
  157: 'Server moved',
  159: 'Connection rate exceeded',
  160: 'Maximum connect time',
};

/** CONNACK return codes of MQTT 3.1.1. */
const RETURN_CODES_311: Record<number, string> = {
  1: 'Unacceptable protocol version',
  2: 'Identifier rejected',
  3: 'Server unavailable',
  4: 'Bad user name or password',
  5: 'Not authorized',
};

/** The broker refused the connection (its CONNACK's reason code, or 3.1.1 return code). */
export class ConnectRefusedError extends EdgeHubError {
  constructor(
    readonly server: string,
    readonly reasonCode: number,
    reason: string,
  ) {
    super(HubCode.ConnectRefused, `broker ${server} refused the connection: ${reason} (${reasonCode})`);
  }
}

/** The broker refused one publish (its PUBACK's reason code ≥ 128), or it could not be sent as is. */
export class PublishRefusedError extends EdgeHubError {
  constructor(
    readonly topic: string,
    readonly reasonCode: number,
    reason: string,
  ) {
    super(HubCode.PublishRefused, `broker refused the publish on "${topic}": ${reason} (${reasonCode})`);
  }
}

/** The link closed (or never opened) with publishes unanswered: they are failed with this. */
export class LinkClosedError extends EdgeHubError {
  constructor(
    readonly server: string,
    reason: string,
  ) {
    super(HubCode.Disconnected, `MQTT link to ${server} closed: ${reason}`);
  }
}

function reasonOf(code: number, v: 4 | 5): string {
  return (v === 5 ? REASONS[code] : RETURN_CODES_311[code]) ?? `reason ${code}`;
}

/** MQTT's Variable Byte Integer, written at `at`; returns the offset after it. */
function writeVarint(buf: Buffer, at: number, n: number): number {
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 128;
    buf[at++] = b;
  } while (n > 0);
  return at;
}

function varintSize(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/** Bytes of packets gathered before a socket write. */
const CHUNK = 65_536;

/**
 * Under a burst a slot a PUBACK frees is not filled at once while the link is at least half full:
 * the publishes waiting for it go when a batch of slots is free (`batchOf`), or after this many
 * milliseconds. mosquitto reads one packet per connection per turn of its loop and answers each
 * with a PUBACK of its own, so a publisher that fills every slot as it frees writes once per
 * publish, and the broker reads once per write; a stock mosquitto (a Receive Maximum of 20, eight
 * links kept full) took 23-33 µs of edgectl's CPU per publish that way, 12-16 with the batch
 * (29-37 and 23-29 of its own). The broker is never left idle by it: half the window is still in
 * flight.
 */
const HOLD_MS = 1;

/** Free slots under a Receive Maximum worth a write of their own (0: never wait for them). */
export function batchOf(receiveMaximum: number): number {
  const quarter = receiveMaximum >> 2;
  return quarter < 2 ? 0 : Math.min(16, quarter);
}

/**
 * Links a publisher (edgectl) opens at most to one broker when its Receive Maximum is below the
 * publisher's window (stock mosquitto announces 20): each keeps within the maximum, together they
 * keep up to this many times it in flight, a topic always on the same link (its order kept). 32
 * (640 in flight on stock mosquitto): mosquitto reads one packet per connection per turn of its
 * loop, so more links take more publishes per turn (whole applies to a stock broker, six pairs:
 * 10,098–13,143 objects/s end to end over 32 links against 9,215–11,240 over 8).
 */
export const MAX_PUBLISH_LINKS = 32;

/** How many links a publisher keeping `window` in flight opens to a broker announcing `receiveMaximum`. */
export function publishLinksFor(window: number, receiveMaximum: number): number {
  return Math.max(1, Math.min(MAX_PUBLISH_LINKS, Math.ceil(window / receiveMaximum)));
}

/** The largest Remaining Length MQTT can encode (four varint bytes). */
const MAX_REMAINING = 268_435_455;

/** Property identifiers of MQTT 5 and how their values are encoded (to skip the unknown). */
const PROPERTY_KIND: Record<number, 'byte' | 'u16' | 'u32' | 'varint' | 'string' | 'pair'> = {
  0x01: 'byte',
  0x02: 'u32',
  0x03: 'string',
  0x08: 'string',
  0x09: 'string',
  0x0b: 'varint',
  0x11: 'u32',
  0x12: 'string',
  0x13: 'u16',
  0x15: 'string',
  0x16: 'string',
  0x17: 'byte',
  0x18: 'u32',
  0x19: 'byte',
  0x1a: 'string',
  0x1c: 'string',
  0x1f: 'string',
  0x21: 'u16',
  0x22: 'u16',
  0x23: 'u16',
  0x24: 'byte',
  0x25: 'byte',
  0x26: 'pair',
  0x27: 'u32',
  0x28: 'byte',
  0x29: 'byte',
  0x2a: 'byte',
};

class Malformed extends Error {}

/** Read a Variable Byte Integer at `at`: [value, offset after], or undefined if `end` comes first. */
function readVarint(b: Buffer, at: number, end: number): [number, number] | undefined {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < 4; i++) {
    if (at >= end) return undefined;
    const byte = b[at++];
    n += (byte & 127) * mul;
    if (!(byte & 128)) return [n, at];
    mul *= 128;
  }
  throw new Malformed('a variable byte integer longer than four bytes');
}

/** MQTT 5 properties from `at` to `end`: numbers and strings by identifier (user properties skipped). */
function readProperties(b: Buffer, at: number, end: number): Map<number, number | string> {
  const props = new Map<number, number | string>();
  while (at < end) {
    const id = b[at++];
    const kind = PROPERTY_KIND[id];
    const need = (n: number) => {
      if (at + n > end) throw new Malformed(`property 0x${id.toString(16)} runs past its packet`);
    };
    if (kind === 'byte') {
      need(1);
      props.set(id, b[at++]);
    } else if (kind === 'u16') {
      need(2);
      props.set(id, b.readUInt16BE(at));
      at += 2;
    } else if (kind === 'u32') {
      need(4);
      props.set(id, b.readUInt32BE(at));
      at += 4;
    } else if (kind === 'varint') {
      const v = readVarint(b, at, end);
      if (!v) throw new Malformed('a truncated property');
      props.set(id, v[0]);
      at = v[1];
    } else if (kind === 'string' || kind === 'pair') {
      for (let k = kind === 'pair' ? 2 : 1; k > 0; k--) {
        need(2);
        const len = b.readUInt16BE(at);
        need(2 + len);
        if (kind === 'string') props.set(id, b.toString('utf8', at + 2, at + 2 + len));
        at += 2 + len;
      }
    } else {
      throw new Malformed(`unknown property 0x${id.toString(16)}`);
    }
  }
  return props;
}

/** The Reason String of the properties whose length is at `at` (none: undefined). */
function reasonString(b: Buffer, at: number, end: number): string | undefined {
  if (at >= end) return undefined;
  const len = readVarint(b, at, end);
  if (!len || len[1] + len[0] > end) throw new Malformed('properties that run past their packet');
  return readProperties(b, len[1], len[1] + len[0]).get(0x1f) as string | undefined;
}

/** A publish waiting for room under the broker's Receive Maximum. */
interface Waiting {
  topic: string;
  payload: Buffer | string;
  /** The payload's length in bytes. */
  size: number;
  opts: LinkPublishOptions;
  cb: PublishCallback;
}

export class PublishLink {
  /** Publishes awaiting their PUBACK: packet id → topic and callback. */
  private readonly inflight = new Map<number, { topic: string; cb: PublishCallback }>();
  /** Publishes beyond the Receive Maximum, in order. */
  private readonly waiting: Waiting[] = [];
  private waitingHead = 0;
  private nextId = 0;
  /**
   * Packets written in this turn of the event loop, sent together: encoded in place into `chunk`
   * (64 KiB; a packet that does not fit starts the next one), what is to be written in `out`. A
   * chunk serves turn after turn until it is full: each write takes the part written since the
   * last (`chunkFrom` on), never the bytes before it — a chunk a turn was 64 KiB of memory
   * allocated per write, and over several links a write carries a few packets (eight links to a
   * stock mosquitto: 37–42 µs of CPU per publish with a chunk per write, 22–23 now).
   */
  private out: Buffer[] = [];
  private outBytes = 0;
  private chunk?: Buffer;
  private chunkAt = 0;
  /** Where the part of `chunk` not yet in `out` begins. */
  private chunkFrom = 0;
  private flushScheduled = false;
  /** Releases the waiting after HOLD_MS (see `holding`). */
  private holdTimer?: NodeJS.Timeout;
  private rest?: Buffer;
  private closed?: Error;
  private lastWrite = Date.now();
  private pingSent = 0;
  private keepaliveTimer?: NodeJS.Timeout;
  private readonly closedPromise: Promise<void>;
  private onConnack?: (err?: Error) => void;
  /** end() waiting for every publish's answer. */
  private drainWaiters: (() => void)[] = [];

  /** What the broker's CONNACK announced (MQTT 5; 3.1.1 has no such limits). */
  receiveMaximum = 65_535;
  maximumPacketSize = MAX_REMAINING + 5;
  retainAvailable = true;
  maximumQos = 2;
  keepaliveSeconds: number;

  private constructor(
    private readonly stream: Duplex,
    readonly server: string,
    readonly protocolVersion: 4 | 5,
    keepaliveSeconds: number,
  ) {
    this.keepaliveSeconds = keepaliveSeconds;
    this.closedPromise = new Promise((resolve) => stream.once('close', () => resolve()));
    stream.on('data', (d: Buffer) => this.read(d));
    stream.on('error', (e: Error) => this.fail(new LinkClosedError(server, e.message)));
    stream.on('close', () => this.fail(new LinkClosedError(server, 'the connection closed')));
  }

  /** Open the transport, send CONNECT; resolves at a CONNACK that accepts (else rejects). */
  static async connect(server: string, opts: PublishLinkOptions): Promise<PublishLink> {
    const url = new URL(server.includes('://') ? server : `mqtt://${server}`);
    const scheme = url.protocol.slice(0, -1);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const v = opts.protocolVersion ?? 5;
    const timeoutMs = opts.connectTimeoutMs ?? 10_000;
    let stream: Duplex;
    if (scheme === 'mqtt' || scheme === 'tcp') {
      stream = netConnect({ host, port: Number(url.port || 1883) });
    } else if (scheme === 'mqtts' || scheme === 'ssl' || scheme === 'tls') {
      stream = tlsConnect({
        host,
        port: Number(url.port || 8883),
        ca: opts.ca,
        servername: isIP(host) ? undefined : host,
      });
    } else if (scheme === 'ws' || scheme === 'wss') {
      const ws = new WebSocket(url.origin + url.pathname + url.search, ['mqtt'], {
        ca: opts.ca,
        handshakeTimeout: timeoutMs,
      });
      stream = createWebSocketStream(ws);
    } else {
      throw new InvalidEdgeHubOptionError(
        'server',
        server,
        'an MQTT URL: mqtt://, tcp://, mqtts://, ssl://, tls://, ws:// or wss://',
      );
    }
    if ('setNoDelay' in stream) (stream as unknown as { setNoDelay(on: boolean): void }).setNoDelay(true);
    const link = new PublishLink(stream, server, v, opts.keepaliveSeconds ?? 60);
    const username = opts.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
    const password = opts.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
    const accepted = new Promise<void>((resolve, reject) => {
      link.onConnack = (err) => (err ? reject(err) : resolve());
    });
    const timer = setTimeout(
      () => link.destroy(new LinkClosedError(server, `no CONNACK within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      link.write(connectPacket(v, opts.clientId, link.keepaliveSeconds, username, password));
      await accepted;
    } catch (e) {
      link.destroy(e as Error);
      throw e;
    } finally {
      clearTimeout(timer);
    }
    link.startKeepalive();
    return link;
  }

  /** Publishes sent or waiting that have no answer yet. */
  get pending(): number {
    return this.inflight.size + this.waiting.length - this.waitingHead;
  }

  /**
   * QoS 1 publish; `cb` runs at its PUBACK (with a PublishRefusedError if the broker refused it),
   * or with the error that closed the link. Never synchronously.
   */
  publish(topic: string, payload: Buffer | string, opts: LinkPublishOptions, cb: PublishCallback): void {
    if (this.closed) return queueFail(cb, this.closed);
    // a string is encoded straight into the outgoing chunk, never a Buffer of its own
    const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
    const refusal = this.check(topic, size, opts);
    if (refusal) return queueFail(cb, refusal);
    // never ahead of one waiting (a callback that publishes at once would have overtaken it)
    if (
      this.inflight.size < this.receiveMaximum &&
      this.waitingHead === this.waiting.length &&
      !this.holding()
    )
      this.send(topic, payload, size, opts, cb);
    else this.waiting.push({ topic, payload, size, opts, cb });
  }

  publishAsync(topic: string, payload: Buffer | string, opts: LinkPublishOptions = {}): Promise<void> {
    return new Promise((resolve, reject) =>
      this.publish(topic, payload, opts, (e) => (e ? reject(e) : resolve())),
    );
  }

  /** Wait for every publish's answer, send DISCONNECT and close. */
  async end(): Promise<void> {
    if (this.pending && !this.closed) await new Promise<void>((r) => this.drainWaiters.push(r));
    if (!this.closed) {
      this.write(Buffer.from([0xe0, 0]));
      this.flush();
      this.closed = new LinkClosedError(this.server, 'the link was ended');
      this.stopKeepalive();
      this.stream.end();
      const t = setTimeout(() => this.stream.destroy(), 2_000);
      await this.closedPromise;
      clearTimeout(t);
    }
  }

  /** Close at once; publishes without an answer fail with `err`. */
  destroy(err?: Error): void {
    this.fail(err ?? new LinkClosedError(this.server, 'the link was destroyed'));
    this.stream.destroy();
  }

  /** Why a publish cannot go as asked, or undefined. */
  private check(topic: string, bodySize: number, opts: LinkPublishOptions): Error | undefined {
    if (opts.retain && !this.retainAvailable)
      return new PublishRefusedError(topic, 154, 'Retain not supported (the broker announced so)');
    if (this.maximumQos < 1)
      return new PublishRefusedError(topic, 155, 'QoS not supported (the broker takes QoS 0 only)');
    const size = this.packetSize(topic, bodySize, opts);
    if (size > this.maximumPacketSize)
      return new PublishRefusedError(
        topic,
        149,
        `Packet too large (${size} bytes; the broker takes ${this.maximumPacketSize})`,
      );
    // a broker closes the connection over such a topic (a protocol error): every publish in
    // flight would fail with it, not this one alone
    if (!topic || Buffer.byteLength(topic) > 65_535 || /[+#\0]/.test(topic))
      return new PublishRefusedError(
        topic,
        144,
        'Topic Name invalid (empty, longer than 65,535 bytes, or with a wildcard or NUL)',
      );
    return undefined;
  }

  private propertiesLength(opts: LinkPublishOptions): number {
    return this.protocolVersion === 5 && opts.expirySeconds ? 5 : 0;
  }

  private remainingLength(topic: string, bodySize: number, opts: LinkPublishOptions): number {
    const props = this.protocolVersion === 5 ? 1 + this.propertiesLength(opts) : 0;
    return 2 + Buffer.byteLength(topic) + 2 + props + bodySize;
  }

  private packetSize(topic: string, bodySize: number, opts: LinkPublishOptions): number {
    const rem = this.remainingLength(topic, bodySize, opts);
    return 1 + varintSize(rem) + rem;
  }

  private send(
    topic: string,
    payload: Buffer | string,
    size: number,
    opts: LinkPublishOptions,
    cb: PublishCallback,
  ): void {
    let id = this.nextId;
    do id = id >= 65_535 ? 1 : id + 1;
    while (this.inflight.has(id));
    this.nextId = id;
    const topicLen = Buffer.byteLength(topic);
    const rem = this.remainingLength(topic, size, opts);
    const propsLen = this.propertiesLength(opts);
    const total = 1 + varintSize(rem) + rem;
    let at = this.reserve(total);
    const buf = this.chunk!;
    buf[at] = 0x32 | (opts.retain ? 1 : 0); // PUBLISH, QoS 1
    at = writeVarint(buf, at + 1, rem);
    buf.writeUInt16BE(topicLen, at);
    at += 2;
    at += buf.write(topic, at, 'utf8');
    buf.writeUInt16BE(id, at);
    at += 2;
    if (this.protocolVersion === 5) {
      buf[at++] = propsLen;
      if (propsLen) {
        buf[at++] = 0x02; // Message Expiry Interval
        buf.writeUInt32BE(opts.expirySeconds!, at);
        at += 4;
      }
    }
    if (typeof payload === 'string') buf.write(payload, at, 'utf8');
    else payload.copy(buf, at);
    this.inflight.set(id, { topic, cb });
    this.written();
  }

  /** Queue a whole packet for this turn's write. */
  private write(b: Buffer): void {
    const at = this.reserve(b.length);
    b.copy(this.chunk!, at);
    this.written();
  }

  /**
   * Room for `n` bytes in the current chunk: its offset, taken (`chunkAt` moves past it). A full
   * chunk goes to `out` (and the socket, once 64 KiB wait); a packet larger than a chunk gets
   * one of its own size.
   */
  private reserve(n: number): number {
    if (!this.chunk || this.chunkAt + n > this.chunk.length) {
      this.seal();
      if (this.outBytes >= CHUNK) this.flush();
      this.chunk = Buffer.allocUnsafe(Math.max(CHUNK, n));
      this.chunkAt = 0;
      this.chunkFrom = 0;
    }
    const at = this.chunkAt;
    this.chunkAt += n;
    return at;
  }

  /** What the current chunk holds since the last seal joins `out` (the chunk takes more after it). */
  private seal(): void {
    if (this.chunk && this.chunkAt > this.chunkFrom) {
      this.out.push(this.chunk.subarray(this.chunkFrom, this.chunkAt));
      this.outBytes += this.chunkAt - this.chunkFrom;
      this.chunkFrom = this.chunkAt;
    }
  }

  /** Bytes were queued: they go at the end of this turn of the event loop. */
  private written(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    this.seal();
    if (!this.out.length) return;
    const data = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    if (this.stream.destroyed) return;
    this.stream.write(data);
    this.lastWrite = Date.now();
  }

  private read(d: Buffer): void {
    const b = this.rest ? Buffer.concat([this.rest, d]) : d;
    this.rest = undefined;
    let at = 0;
    try {
      while (at < b.length) {
        const len = readVarint(b, at + 1, b.length);
        if (!len || len[1] + len[0] > b.length) break;
        this.packet(b[at], b, len[1], len[1] + len[0]);
        at = len[1] + len[0];
      }
    } catch (e) {
      if (!(e instanceof Malformed)) throw e; // a callback's own failure, not the broker's
      this.destroy(new LinkClosedError(this.server, `a malformed packet from the broker: ${e.message}`));
      return;
    }
    this.pingSent = 0;
    if (at < b.length) this.rest = b.subarray(at);
    // nothing waiting: no timer to arm (release then only tells end() the link has drained)
    if (this.waitingHead === this.waiting.length || !this.holding()) this.release();
  }

  /**
   * Whether a publish that fits under the Receive Maximum waits a moment for more room (HOLD_MS):
   * while the link is at least half full and fewer than a batch of slots are free. Arms the timer
   * that releases them.
   */
  private holding(): boolean {
    const max = this.receiveMaximum;
    const free = max - this.inflight.size;
    if (this.closed || free === 0 || free >= batchOf(max) || this.inflight.size < max / 2) return false;
    this.holdTimer ??= setTimeout(() => {
      this.holdTimer = undefined;
      this.release();
    }, HOLD_MS);
    return true;
  }

  /** Room under the Receive Maximum: the waiting go, in order (a hold, if any, ends here). */
  private release(): void {
    // a timer left from a hold a batch ended would cut the next hold short
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    while (
      this.waitingHead < this.waiting.length &&
      this.inflight.size < this.receiveMaximum &&
      !this.closed
    ) {
      const w = this.waiting[this.waitingHead];
      this.waiting[this.waitingHead++] = undefined as unknown as Waiting;
      this.send(w.topic, w.payload, w.size, w.opts, w.cb);
    }
    if (this.waitingHead === this.waiting.length) {
      this.waiting.length = 0;
      this.waitingHead = 0;
    }
    if (!this.pending) this.drained();
  }

  private drained(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of waiters) r();
  }

  /** One packet from the broker: its first byte, and its body from `at` to `end`. */
  private packet(first: number, b: Buffer, at: number, end: number): void {
    const type = first >> 4;
    if (type === 4) {
      // PUBACK
      if (end - at < 2) throw new Malformed('a PUBACK without its packet identifier');
      const id = b.readUInt16BE(at);
      const rc = end - at > 2 ? b[at + 2] : 0;
      const p = this.inflight.get(id);
      if (!p) throw new Malformed(`a PUBACK for packet ${id}, which is not in flight`);
      this.inflight.delete(id);
      if (rc >= 128) {
        const why = reasonString(b, at + 3, end);
        p.cb(new PublishRefusedError(p.topic, rc, reasonOf(rc, 5) + (why ? `: ${why}` : '')));
      } else p.cb();
    } else if (type === 2) {
      this.connack(b, at, end);
    } else if (type === 13) {
      // PINGRESP
    } else if (type === 14) {
      const rc = end > at ? b[at] : 0;
      const why = reasonString(b, at + 1, end);
      this.destroy(
        new LinkClosedError(
          this.server,
          `the broker disconnected: ${reasonOf(rc, 5)} (${rc})${why ? `: ${why}` : ''}`,
        ),
      );
    } else {
      throw new Malformed(`packet type ${type}, which a publish-only client never asks for`);
    }
  }

  private connack(b: Buffer, at: number, end: number): void {
    const done = this.onConnack;
    this.onConnack = undefined;
    if (!done) throw new Malformed('a second CONNACK');
    if (end - at < 2) throw new Malformed('a CONNACK shorter than two bytes');
    const rc = b[at + 1];
    // a 3.1.1 broker answers a v5 CONNECT in 3.1.1's form: two bytes
    const v = end - at === 2 ? 4 : this.protocolVersion;
    if (rc !== 0) {
      done(new ConnectRefusedError(this.server, rc, reasonOf(rc, v)));
      return;
    }
    if (this.protocolVersion === 5 && end - at > 2) {
      const len = readVarint(b, at + 2, end);
      if (!len) throw new Malformed('a CONNACK whose properties are cut short');
      const props = readProperties(b, len[1], Math.min(end, len[1] + len[0]));
      const num = (id: number) => props.get(id) as number | undefined;
      this.receiveMaximum = num(0x21) ?? this.receiveMaximum;
      this.maximumPacketSize = num(0x27) ?? this.maximumPacketSize;
      this.retainAvailable = (num(0x25) ?? 1) === 1;
      this.maximumQos = num(0x24) ?? this.maximumQos;
      const serverKeepalive = num(0x13);
      if (serverKeepalive !== undefined) this.keepaliveSeconds = serverKeepalive;
    }
    done();
  }

  /** PINGREQ when nothing was written for half the keepalive; no answer for a whole one closes. */
  private startKeepalive(): void {
    if (!this.keepaliveSeconds) return;
    const period = (this.keepaliveSeconds * 1000) / 2;
    this.keepaliveTimer = setInterval(() => {
      const now = Date.now();
      if (this.pingSent && now - this.pingSent >= this.keepaliveSeconds * 1000) {
        this.destroy(
          new LinkClosedError(this.server, `no answer to PINGREQ within ${this.keepaliveSeconds} s`),
        );
        return;
      }
      if (!this.pingSent && now - this.lastWrite >= period) {
        this.pingSent = now;
        this.write(Buffer.from([0xc0, 0]));
      }
    }, period);
    this.keepaliveTimer.unref();
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = undefined;
  }

  /** The link is done: every unanswered publish (and a pending CONNACK) fails with `err`. */
  private fail(err: Error): void {
    this.stopKeepalive();
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const first = !this.closed;
    this.closed ??= err;
    if (!first && !this.pending && !this.onConnack && !this.drainWaiters.length) return;
    const failure = this.closed;
    const connack = this.onConnack;
    this.onConnack = undefined;
    connack?.(failure);
    const answers = [...this.inflight.values()].map((p) => p.cb);
    this.inflight.clear();
    for (let i = this.waitingHead; i < this.waiting.length; i++) answers.push(this.waiting[i].cb);
    this.waiting.length = 0;
    this.waitingHead = 0;
    for (const cb of answers) cb(failure);
    this.drained();
  }
}

function queueFail(cb: PublishCallback, err: Error): void {
  queueMicrotask(() => cb(err));
}

/** CONNECT: clean start, the keepalive, the client id and credentials. */
function connectPacket(
  v: 4 | 5,
  clientId: string,
  keepalive: number,
  username: string | undefined,
  password: string | undefined,
): Buffer {
  const str = (s: string | Buffer) => {
    const bytes = typeof s === 'string' ? Buffer.from(s) : s;
    const len = Buffer.alloc(2);
    len.writeUInt16BE(bytes.length);
    return Buffer.concat([len, bytes]);
  };
  let flags = 0x02;
  const payload = [str(clientId)];
  if (username !== undefined) {
    flags |= 0x80;
    payload.push(str(username));
  }
  if (password !== undefined) {
    flags |= 0x40;
    payload.push(str(Buffer.from(password)));
  }
  const header = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, v, flags, keepalive >> 8, keepalive & 0xff]);
  const body = Buffer.concat([header, ...(v === 5 ? [Buffer.from([0])] : []), ...payload]);
  const fixed = Buffer.alloc(1 + varintSize(body.length));
  fixed[0] = 0x10;
  writeVarint(fixed, 1, body.length);
  return Buffer.concat([fixed, body]);
}
