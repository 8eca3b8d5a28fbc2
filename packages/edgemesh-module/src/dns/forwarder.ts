import type { z } from 'zod';
import { forwarderOptionsSchema, resolveMeshOptions } from '../config';
import * as dnsPacket from 'dns-packet';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { connect as tcpConnect } from 'node:net';
import { randomInt } from 'node:crypto';
import { errorReply, RCODE, type ParsedQuery } from './wire';

export interface Upstream {
  host: string;
  port: number;
}

/** `IP` or `IP:PORT` strings → upstreams. */
export function parseUpstreams(list: string[]): Upstream[] {
  return list.map((s) => {
    const [host, port] = s.split(':');
    if (!isIPv4(host) || (port !== undefined && !(Number(port) > 0 && Number(port) < 65536)))
      throw new Error(`bad upstream "${s}": expected IP or IP:PORT`);
    return { host, port: port ? Number(port) : 53 };
  });
}

/** Nameservers of a resolv.conf, minus our own addresses (so we never forward to ourselves). */
export function upstreamsFromResolvConf(path: string, exclude: ReadonlySet<string>): Upstream[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && isIPv4(m[1]) && !exclude.has(m[1])) out.push({ host: m[1], port: 53 });
  }
  return out;
}

interface CacheEntry {
  packet: dnsPacket.Packet;
  expires: number;
  stored: number;
}

/** Per-upstream timeout, cached answers at most (oldest first out), source address, TTL cap. */
export type ForwarderOptions = z.input<typeof forwarderOptionsSchema>;

export interface ForwarderStats {
  forwarded: number;
  cacheHits: number;
  upstreamFailures: number;
  tcpRetries: number;
  servfail: number;
}

/**
 * Forwards queries outside the cluster domain to the host's resolvers: random query id and source
 * port per query (RFC 5452), UDP then TCP when the answer is truncated (RFC 1035 §4.2.2), failover
 * in order, a TTL-respecting cache (RFC 2308 for negatives), SERVFAIL when every upstream failed.
 */
export class Forwarder {
  readonly stats: ForwarderStats = {
    forwarded: 0,
    cacheHits: 0,
    upstreamFailures: 0,
    tcpRetries: 0,
    servfail: 0,
  };
  private readonly cache = new Map<string, CacheEntry>();
  private readonly timeoutMs: number;
  private readonly cacheSize: number;
  private readonly maxTtl: number;
  private readonly opts: z.output<typeof forwarderOptionsSchema>;

  constructor(
    private upstreams: Upstream[],
    options: ForwarderOptions = {},
  ) {
    this.opts = resolveMeshOptions(forwarderOptionsSchema, options, 'forwarder');
    this.timeoutMs = this.opts.timeoutMs;
    this.cacheSize = this.opts.cacheSize;
    this.maxTtl = this.opts.maxTtl;
  }

  setUpstreams(u: Upstream[]): void {
    this.upstreams = u;
  }

  get upstreamList(): readonly Upstream[] {
    return this.upstreams;
  }

  get cacheEntries(): number {
    return this.cache.size;
  }

  /** The reply for `query` (with the client's id), never throwing. */
  async forward(query: Buffer, q: ParsedQuery): Promise<Buffer> {
    const key = `${q.name}|${q.qtype}|${q.qclass}|${q.edns?.dnssecOk ? 1 : 0}`;
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) {
      this.stats.cacheHits++;
      return this.fromCache(query, q, hit, now);
    }
    if (hit) this.cache.delete(key);
    this.stats.forwarded++;
    for (const up of this.upstreams) {
      try {
        const id = randomInt(65536);
        const out = Buffer.from(query);
        out.writeUInt16BE(id, 0);
        let reply = await this.udp(up, out, id);
        if (reply.readUInt16BE(2) & 0x0200) {
          this.stats.tcpRetries++;
          reply = await this.tcp(up, out, id);
        }
        const rcode = reply.readUInt16BE(2) & 0xf;
        if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED || rcode === RCODE.NOTIMP)
          throw new Error(`rcode ${rcode}`);
        this.store(key, reply, now);
        reply.writeUInt16BE(q.id, 0);
        return reply;
      } catch {
        this.stats.upstreamFailures++;
      }
    }
    this.stats.servfail++;
    return errorReply(query, RCODE.SERVFAIL, q.questionEnd);
  }

  private store(key: string, reply: Buffer, now: number): void {
    let packet: dnsPacket.Packet;
    try {
      packet = dnsPacket.decode(reply);
    } catch {
      return;
    }
    const rcode = reply.readUInt16BE(2) & 0xf;
    let ttl: number | undefined;
    if (rcode === RCODE.NOERROR && packet.answers?.length) {
      ttl = Math.min(...packet.answers.map((a) => (a as { ttl?: number }).ttl ?? 0));
    } else {
      // Negative answer: SOA minimum, bounded by the SOA's own TTL (RFC 2308 §5).
      const soa = packet.authorities?.find((a) => a.type === 'SOA') as
        (dnsPacket.Answer & { ttl?: number; data?: { minimum?: number } }) | undefined;
      if (soa) ttl = Math.min(soa.ttl ?? 0, soa.data?.minimum ?? 0);
    }
    if (!ttl || ttl <= 0) return;
    ttl = Math.min(ttl, this.maxTtl);
    if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { packet, stored: now, expires: now + ttl * 1000 });
  }

  /** A cached answer with TTLs reduced by the time it spent in the cache. */
  private fromCache(query: Buffer, q: ParsedQuery, e: CacheEntry, now: number): Buffer {
    const age = Math.floor((now - e.stored) / 1000);
    const dec = (rs?: dnsPacket.Answer[]): dnsPacket.Answer[] | undefined =>
      rs?.map((r) =>
        r.type === 'OPT'
          ? r
          : ({ ...r, ttl: Math.max(0, ((r as { ttl?: number }).ttl ?? 0) - age) } as dnsPacket.Answer),
      );
    let questions = e.packet.questions;
    try {
      questions = dnsPacket.decode(query).questions; // echo the client's spelling (0x20)
    } catch {
      /* keep the cached question */
    }
    const p = {
      ...e.packet,
      id: q.id,
      questions,
      answers: dec(e.packet.answers),
      authorities: dec(e.packet.authorities),
      additionals: dec(e.packet.additionals),
    };
    const buf = dnsPacket.encode(p);
    // keep the client's RD bit
    buf.writeUInt16BE((buf.readUInt16BE(2) & ~0x0100) | (q.rd ? 0x0100 : 0), 2);
    return buf;
  }

  private udp(up: Upstream, query: Buffer, id: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = createSocket('udp4');
      const done = (err?: Error, buf?: Buffer): void => {
        clearTimeout(timer);
        sock.close();
        if (err) reject(err);
        else resolve(buf!);
      };
      const timer = setTimeout(() => done(new Error('timeout')), this.timeoutMs);
      sock.on('error', (e) => done(e));
      sock.on('message', (msg, rinfo) => {
        // Accept only the upstream's answer to our id (spoofing resistance, RFC 5452 §9.1).
        if (
          rinfo.address !== up.host ||
          rinfo.port !== up.port ||
          msg.length < 12 ||
          msg.readUInt16BE(0) !== id
        )
          return;
        done(undefined, msg);
      });
      sock.bind({ address: this.opts.bindAddress ?? '0.0.0.0', port: 0 }, () =>
        sock.send(query, up.port, up.host, (e) => e && done(e)),
      );
    });
  }

  private tcp(up: Upstream, query: Buffer, id: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = tcpConnect({ host: up.host, port: up.port, localAddress: this.opts.bindAddress });
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => finish(new Error('timeout')), this.timeoutMs);
      const finish = (err?: Error, msg?: Buffer): void => {
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(msg!);
      };
      sock.on('error', (e) => finish(e));
      sock.on('connect', () => {
        const len = Buffer.allocUnsafe(2);
        len.writeUInt16BE(query.length);
        sock.write(Buffer.concat([len, query]));
      });
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          if (msg.length < 12 || msg.readUInt16BE(0) !== id) finish(new Error('id mismatch'));
          else finish(undefined, Buffer.from(msg));
        }
      });
      sock.on('end', () => finish(new Error('closed before an answer')));
    });
  }
}
