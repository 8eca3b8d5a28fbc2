import type { z } from 'zod/v3';
import { dnsServerOptionsSchema, resolveMeshOptions } from '../config';
import * as dnsPacket from 'dns-packet';
import { createServer, type AddressInfo, type Server, type Socket as TcpSocket } from 'node:net';
import { Logger, resetSocket, silentLogger } from '@edgecore/beehive';
import type { ConnectionBudget } from '../proxy/connection-budget';
import { DnsFormatError, DnsListenError } from '../edgemesh-errors';
import { cidrContains, ipToInt, parseCidr, type Cidr } from '../net/ipv4';
import type { ClusterZone, ZoneAnswer } from './cluster-zone';
import type { Forwarder } from './forwarder';
import {
  errorReply,
  optRecord,
  parseQuery,
  plainQuestionEnd,
  QTYPE,
  readName,
  RCODE,
  type ParsedQuery,
} from './wire';
import { openUdp, type UdpTransport } from './udp-batch';

/**
 * Where to listen, who may query (others get REFUSED: not an open resolver), our EDNS payload
 * size, the answer cache, the TCP idle timeout, and the UDP I/O: `native` (recvmmsg/sendmmsg
 * addon, batches of datagrams per system call), `dgram` (node:dgram), or `auto` (native when the
 * addon is built).
 */
export type DnsServerOptions = z.input<typeof dnsServerOptionsSchema> & {
  log?: Logger;
  /** The node's count of client connections: a TCP client takes a place in it too. */
  budget?: ConnectionBudget;
};

export interface DnsStats {
  queries: number;
  dropped: number;
  truncated: number;
  answerCacheHits: number;
  /** TCP connections reset at accept: `tcpClients` reached, or the node's connection limit. */
  tcpRefused: number;
}

/** dns-packet's RR codec (exported at runtime, missing from its type definitions). */
const rrCodec = (
  dnsPacket as unknown as {
    answer: {
      encode(r: dnsPacket.Answer, buf: Buffer, off: number): Buffer;
      encodingLength(r: dnsPacket.Answer): number;
    };
  }
).answer;
const rrEncode = (r: dnsPacket.Answer, buf: Buffer, off: number): number => {
  rrCodec.encode(r, buf, off);
  return (rrCodec.encode as unknown as { bytes: number }).bytes;
};

const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;

/**
 * EdgeMesh's DNS server on UDP and TCP. The hot path (a cluster name already answered once) is a
 * map lookup keyed by the raw question bytes plus EDNS flavour, a buffer copy and an id patch.
 */
export class DnsServer {
  readonly stats: DnsStats = { queries: 0, dropped: 0, truncated: 0, answerCacheHits: 0, tcpRefused: 0 };
  private udp?: UdpTransport;
  private tcp?: Server;
  private readonly tcpConns = new Set<TcpSocket>();
  private readonly allow: Cidr[];
  private readonly allowCache = new Map<string, boolean>();
  /** question bytes + EDNS flavour → encoded zone answer (id 0). Cleared on every catalog change. */
  private readonly answers = new Map<string, Buffer>();
  private readonly log: Logger;
  private readonly ednsSize: number;
  private readonly answerCacheSize: number;
  private boundPort = 0;
  private readonly opts: z.output<typeof dnsServerOptionsSchema>;
  private readonly budget?: ConnectionBudget;

  constructor(
    private readonly zone: ClusterZone,
    readonly forwarder: Forwarder,
    options: DnsServerOptions,
  ) {
    this.opts = resolveMeshOptions(dnsServerOptionsSchema, options, 'dns');
    this.allow = this.opts.allowFrom.map(parseCidr);
    this.log = options.log ?? silentLogger;
    this.budget = options.budget;
    this.ednsSize = this.opts.ednsUdpSize;
    this.answerCacheSize = this.opts.answerCacheSize;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Forget encoded answers (the catalog or VIPs changed). */
  invalidate(): void {
    this.answers.clear();
  }

  /**
   * UDP and TCP on the same port. With port 0 the UDP socket picks a free port first and TCP takes
   * the same number; another process may hold that number on TCP, so port 0 retries (a few times)
   * with a fresh UDP port.
   */
  async listen(): Promise<{ address: string; port: number }> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listenOnce();
      } catch (e) {
        const inUse = (e as { cause?: { code?: string } }).cause?.code === 'EADDRINUSE';
        if (this.opts.port !== 0 || !inUse || attempt >= 5) throw e;
      }
    }
  }

  private async listenOnce(): Promise<{ address: string; port: number }> {
    const { host } = this.opts;
    const udp = await openUdp(
      this.opts.udpBackend,
      host,
      this.opts.port,
      (msg, address, _port, out) => this.onUdp(msg, address, out),
      (e) => this.log.warn({ err: (e as Error).message }, 'dns udp error'),
    );
    const tcp = createServer((s) => this.onTcpConnection(s));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', (e) => reject(new DnsListenError(`tcp ${host}:${udp.port}`, e)));
      tcp.listen(udp.port, host, () => resolve());
    }).catch(async (e) => {
      await udp.close();
      throw e;
    });
    this.udp = udp;
    this.tcp = tcp;
    this.boundPort = udp.port;
    return { address: host, port: this.boundPort };
  }

  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    for (const c of this.tcpConns) c.destroy();
    if (udp) await udp.close();
    if (tcp) await new Promise<void>((r) => tcp.close(() => r()));
  }

  private allowed(address: string): boolean {
    let ok = this.allowCache.get(address);
    if (ok === undefined) {
      const n = ipToInt(address.startsWith('::ffff:') ? address.slice(7) : address);
      ok = this.allow.some((c) => cidrContains(c, n));
      if (this.allowCache.size > 10_000) this.allowCache.clear();
      this.allowCache.set(address, ok);
    }
    return ok;
  }

  /** Which UDP I/O path is serving (`native` or `dgram`), once listening. */
  get udpBackend(): 'native' | 'dgram' | undefined {
    return this.udp?.backend;
  }

  private onUdp(msg: Buffer, address: string, out?: Buffer): Buffer | number | Promise<Buffer> | undefined {
    try {
      return this.handle(msg, address, false, out);
    } catch (e) {
      this.log.error({ err: e }, 'dns handler failed');
      return msg.length >= 12 ? errorReply(msg, RCODE.SERVFAIL) : undefined;
    }
  }

  private onTcpConnection(sock: TcpSocket): void {
    if (this.tcpConns.size >= this.opts.tcpClients) {
      this.stats.tcpRefused++;
      resetSocket(sock);
      return;
    }
    if (this.budget?.admit(sock) === false) {
      this.stats.tcpRefused++;
      return;
    }
    this.tcpConns.add(sock);
    sock.setTimeout(this.opts.tcpIdleMs, () => sock.destroy());
    sock.on('close', () => this.tcpConns.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        let reply: Buffer | Promise<Buffer> | undefined;
        try {
          reply = this.handle(Buffer.from(msg), sock.remoteAddress ?? '', true);
        } catch (e) {
          this.log.error({ err: e }, 'dns handler failed');
          reply = msg.length >= 12 ? errorReply(Buffer.from(msg), RCODE.SERVFAIL) : undefined;
        }
        if (!reply) {
          sock.destroy(); // unreadable framing: nothing sensible to answer
          return;
        }
        Promise.resolve(reply).then(
          (r) => {
            if (sock.destroyed) return;
            const l = Buffer.allocUnsafe(2);
            l.writeUInt16BE(r.length);
            sock.write(Buffer.concat([l, r]));
          },
          () => sock.destroy(),
        );
      }
    });
  }

  private readonly rcodeCounts = new Float64Array(16);

  private count(rcode: number): void {
    this.rcodeCounts[rcode & 0xf]++;
  }

  /** Replies sent, by RCODE name. */
  rcodes(): Record<string, number> {
    const out: Record<string, number> = {};
    this.rcodeCounts.forEach((n, i) => n && (out[RCODE_NAMES[i] ?? `RCODE${i}`] = n));
    return out;
  }

  /**
   * One query → its reply (or undefined to drop). Never throws for bad input. `msg` is only read
   * during the call (the native UDP path passes a view into a reused buffer); the forwarding path
   * copies it.
   */
  handle(msg: Buffer, from: string, tcp: boolean): Buffer | Promise<Buffer> | undefined;
  /** With `out`: a cached plain answer is written there and its length returned (no allocation). */
  handle(
    msg: Buffer,
    from: string,
    tcp: boolean,
    out?: Buffer,
  ): Buffer | number | Promise<Buffer> | undefined;
  handle(
    msg: Buffer,
    from: string,
    tcp: boolean,
    out?: Buffer,
  ): Buffer | number | Promise<Buffer> | undefined {
    this.stats.queries++;
    if (msg.length < 12 || msg[2] & 0x80) {
      // unreadable header, or a response (QR=1): never answer, avoids reflection loops
      this.stats.dropped++;
      return undefined;
    }
    if (!this.allowed(from)) {
      this.count(RCODE.REFUSED);
      return errorReply(msg, RCODE.REFUSED);
    }
    // Hot path: a plain query (no EDNS) whose answer is already encoded.
    const qend = (msg[2] & 0x78) === 0 ? plainQuestionEnd(msg) : -1;
    if (qend > 0) {
      const hit = this.answers.get(msg.toString('latin1', 12, qend) + 'N');
      if (hit) {
        this.stats.answerCacheHits++;
        const inPlace = out !== undefined && (tcp || hit.length <= 512) && hit.length <= out.length;
        const reply = inPlace ? out : Buffer.allocUnsafe(hit.length);
        hit.copy(reply);
        reply[0] = msg[0];
        reply[1] = msg[1];
        reply[2] |= msg[2] & 0x01; // RD
        this.count(reply[3] & 0xf);
        if (inPlace) return hit.length;
        if (!tcp && reply.length > 512) return this.truncateTo(reply, 512, msg, parseQuery(msg));
        return reply;
      }
    }
    let q: ParsedQuery;
    try {
      q = parseQuery(msg);
    } catch (e) {
      if (!(e instanceof DnsFormatError)) throw e;
      // an opcode we do not implement is NOTIMP even without a question (RFC 1035 §4.1.1)
      const rcode = (msg[2] & 0x78) !== 0 ? RCODE.NOTIMP : RCODE.FORMERR;
      this.count(rcode);
      return errorReply(msg, rcode);
    }
    if (q.opcode !== 0) return this.errorAnswer(msg, q, RCODE.NOTIMP);
    if (q.edns && q.edns.version > 0) {
      // RFC 6891 §6.1.3: BADVERS is an extended rcode; answer FORMERR-free BADVERS via OPT.
      return this.badvers(msg, q);
    }
    // zone transfers are not served, to anyone (BIND and Knot without an allow-transfer ACL)
    if (q.qtype === QTYPE.AXFR || q.qtype === QTYPE.IXFR) return this.errorAnswer(msg, q, RCODE.REFUSED);
    const limit = tcp ? 65535 : q.edns ? Math.min(q.edns.udpSize, 4096) : 512;
    const key = msg.toString('latin1', 12, q.questionEnd) + (q.edns ? (q.edns.dnssecOk ? 'D' : 'E') : 'N');
    let tpl = this.answers.get(key);
    if (tpl) this.stats.answerCacheHits++;
    else {
      const a = this.zone.resolve(q);
      if (!a) {
        const fwd = this.forwarder.forward(Buffer.from(msg), q);
        return fwd.then((r) => {
          this.count(r.readUInt16BE(2) & 0xf);
          return this.truncateTo(r, limit, msg, q);
        });
      }
      if (a.pending) return this.afterPending(msg, q, a.pending, limit);
      if (a.rcode === RCODE.REFUSED || a.rcode === RCODE.NOTIMP) return this.errorAnswer(msg, q, a.rcode);
      if (a.shortForm && this.zone.shortNames === 'fallback') return this.shortForm(msg, q, a, limit);
      tpl = this.encode(msg, q, a);
      if (this.answers.size >= this.answerCacheSize) this.answers.clear();
      this.answers.set(key, tpl);
    }
    const reply = Buffer.allocUnsafe(tpl.length);
    tpl.copy(reply);
    reply.writeUInt16BE(q.id, 0);
    if (q.rd) reply[2] |= FLAG_RD >> 8;
    this.count(reply[3] & 0xf);
    return reply.length > limit ? this.truncateTo(reply, limit, msg, q) : reply;
  }

  /**
   * A short form under `dns.shortNames: fallback`: the upstream's answer when the name exists
   * there (even NODATA: a real name is never shadowed), ours when it does not (NXDOMAIN) or no
   * upstream answers (SERVFAIL: offline). Not kept in the answer cache (the forwarder caches the
   * upstream's verdict).
   */
  private async shortForm(msg: Buffer, q: ParsedQuery, a: ZoneAnswer, limit: number): Promise<Buffer> {
    const copy = Buffer.from(msg); // the native UDP path reuses msg's memory
    const up = await this.forwarder.forward(copy, q); // it copies what it sends upstream
    const rcode = up.readUInt16BE(2) & 0xf;
    if (rcode === RCODE.NXDOMAIN || rcode === RCODE.SERVFAIL) return this.answerNow(copy, q, a, limit);
    this.count(rcode);
    return this.truncateTo(up, limit, copy, q);
  }

  /**
   * The zone is allocating endpoint VIPs for this question: answer once that is done (a failed
   * allocation is SERVFAIL; the question is not asked again in a loop).
   */
  private async afterPending(
    msg: Buffer,
    q: ParsedQuery,
    pending: Promise<void>,
    limit: number,
  ): Promise<Buffer> {
    const copy = Buffer.from(msg); // the native UDP path reuses msg's memory
    const ok = await pending.then(
      () => true,
      (e) => (
        this.log.warn({ err: (e as Error).message, name: q.name }, 'endpoint VIP not allocated'),
        false
      ),
    );
    const a = ok ? this.zone.resolve(q) : undefined;
    if (!a || a.pending) return this.errorAnswer(copy, q, RCODE.SERVFAIL);
    return this.answerNow(copy, q, a, limit);
  }

  /** A zone answer encoded for this query alone (not kept in the answer cache). */
  private answerNow(msg: Buffer, q: ParsedQuery, a: ZoneAnswer, limit: number): Buffer {
    const reply = this.encode(msg, q, a);
    reply.writeUInt16BE(q.id, 0);
    if (q.rd) reply[2] |= FLAG_RD >> 8;
    this.count(reply[3] & 0xf);
    return this.truncateTo(reply, limit, msg, q);
  }

  /** Header + the client's question bytes + RRs (dns-packet encodes the RRs once per name). */
  private encode(msg: Buffer, q: ParsedQuery, a: ZoneAnswer): Buffer {
    const owner = readName(msg, 12).name; // the client's spelling, for 0x20-randomizing resolvers
    const fix = (rs: dnsPacket.Answer[]): dnsPacket.Answer[] =>
      rs.map((r) => (r.name.toLowerCase() === q.name ? { ...r, name: owner } : r));
    const additionals = [...a.additionals];
    if (q.edns)
      additionals.push({
        type: 'OPT',
        name: '.',
        udpPayloadSize: this.ednsSize,
        flags: q.edns.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
        options: [],
      } as unknown as dnsPacket.Answer);
    const sections = [fix(a.answers), a.authorities, additionals];
    const qbytes = msg.subarray(12, q.questionEnd);
    let len = 12 + qbytes.length;
    for (const s of sections) for (const r of s) len += rrCodec.encodingLength(r);
    const out = Buffer.alloc(len);
    out.writeUInt16BE(0, 0);
    out.writeUInt16BE(FLAG_QR | (a.aa === false ? 0 : FLAG_AA) | FLAG_RA | (a.rcode & 0xf), 2);
    out.writeUInt16BE(1, 4);
    out.writeUInt16BE(sections[0].length, 6);
    out.writeUInt16BE(sections[1].length, 8);
    out.writeUInt16BE(sections[2].length, 10);
    qbytes.copy(out, 12);
    let off = 12 + qbytes.length;
    for (const s of sections) {
      for (const r of s) {
        off += rrEncode(r, out, off);
      }
    }
    return out;
  }

  /**
   * An answer larger than the client's limit: header + question with TC set (RFC 1035 §4.2.1), and
   * our OPT when the query had one (RFC 6891 §7: a truncated answer to EDNS still carries OPT).
   */
  private truncateTo(r: Buffer, limit: number, msg: Buffer, q: ParsedQuery): Buffer {
    if (r.length <= limit) return r;
    this.stats.truncated++;
    const end = Math.min(q.questionEnd, r.length);
    const opt = q.edns ? optRecord(this.ednsSize, q.edns.dnssecOk) : undefined;
    const out = Buffer.allocUnsafe(end + (opt?.length ?? 0));
    r.copy(out, 0, 0, end);
    out.writeUInt16BE(r.readUInt16BE(2) | FLAG_TC, 2);
    out.writeUInt16BE(1, 4);
    out.writeUInt32BE(0, 6);
    out.writeUInt16BE(opt ? 1 : 0, 10);
    opt?.copy(out, end);
    void msg;
    return out;
  }

  /**
   * An error reply with the question echoed and, to an EDNS query, our OPT (RFC 6891 §6.1.1: a
   * responder that understands EDNS MUST include OPT in its response, errors too).
   */
  private errorAnswer(msg: Buffer, q: ParsedQuery, rcode: number): Buffer {
    this.count(rcode);
    const head = errorReply(msg, rcode, q.questionEnd);
    if (!q.edns) return head;
    const out = Buffer.concat([head, optRecord(this.ednsSize, q.edns.dnssecOk)]);
    out.writeUInt16BE(1, 10);
    return out;
  }

  private badvers(msg: Buffer, q: ParsedQuery): Buffer {
    const opt = {
      type: 'OPT',
      name: '.',
      udpPayloadSize: this.ednsSize,
      extendedRcode: 1,
      flags: 0,
      options: [],
    } as unknown as dnsPacket.Answer;
    const head = errorReply(msg, 0, q.questionEnd);
    const rr = Buffer.alloc(rrCodec.encodingLength(opt));
    rrEncode(opt, rr, 0);
    const out = Buffer.concat([head, rr]);
    out.writeUInt16BE(1, 10);
    this.count(RCODE.NOERROR);
    return out;
  }
}

export type { AddressInfo };
