import type { z } from 'zod/v3';
import { forwarderOptionsSchema, resolveMeshOptions } from '../config';
import { isLocalFailure } from '../open-files';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { connect as tcpConnect } from 'node:net';
import { randomInt } from 'node:crypto';
import { errorReply, optRecord, QTYPE, RCODE, sameQuestion, walkRecords, type ParsedQuery } from './wire';

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
  /** The upstream's reply as received (re-encoding would change the question's octets). */
  raw: Buffer;
  expires: number;
  stored: number;
  /** A prefetch of it is under way. */
  refreshing?: boolean;
}

/** Per-upstream timeout, cached answers at most (oldest first out), source address, TTL cap. */
export type ForwarderOptions = z.input<typeof forwarderOptionsSchema>;

export interface ForwarderStats {
  forwarded: number;
  cacheHits: number;
  upstreamFailures: number;
  tcpRetries: number;
  servfail: number;
  /** Expired answers served because no upstream answered (RFC 8767). */
  staleServed: number;
  /**
   * Queries that could not be sent for want of a local resource (a socket: EMFILE, ENFILE,
   * ENOBUFS, ENOMEM) — no verdict on any upstream.
   */
  localFailures: number;
  /** Replies refused for another question, id, address or port (RFC 5452). */
  mismatched: number;
  /** Answers refreshed before they expired (`prefetch`). */
  prefetches: number;
}

/**
 * Forwards queries outside the cluster domain to the host's resolvers: random query id and source
 * port per query, and a reply taken only from the upstream's address and port, with our id and
 * our question (RFC 5452 §9.1); UDP then TCP when the answer is truncated (RFC 1035 §4.2.2), or TCP
 * only (`upstreamTcp`); failover in order; a TTL-respecting cache (RFC 2308 for negatives) keyed
 * by the question's octet labels (ASCII case folded), which keeps the upstream's bytes and gives
 * each client its own question, id, RD bit and EDNS (OPT only to EDNS clients); serve-stale
 * (RFC 8767) when every upstream failed; SERVFAIL when there is nothing to serve.
 */
export class Forwarder {
  readonly stats: ForwarderStats = {
    forwarded: 0,
    cacheHits: 0,
    upstreamFailures: 0,
    tcpRetries: 0,
    servfail: 0,
    staleServed: 0,
    localFailures: 0,
    mismatched: 0,
    prefetches: 0,
  };
  private readonly cache = new Map<string, CacheEntry>();
  private readonly timeoutMs: number;
  private readonly cacheSize: number;
  private readonly maxTtl: number;
  private readonly opts: z.output<typeof forwarderOptionsSchema>;
  /** Until when the upstreams count as down (every one failed): stale answers come at once. */
  private downUntil = 0;

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
    // q.name is the presentation form: distinct octet labels give distinct keys
    const key = `${q.name}|${q.qtype}|${q.qclass}|${q.edns?.dnssecOk ? 1 : 0}`;
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) {
      this.stats.cacheHits++;
      // prefetch (unbound's): an answer asked for in the last tenth of its TTL is refreshed in the
      // background, so a name in use never expires in front of its clients
      if (this.opts.prefetch && !hit.refreshing && hit.expires - now < (hit.expires - hit.stored) / 10)
        this.prefetch(key, Buffer.from(query), hit);
      return this.fromCache(query, q, hit, now, false);
    }
    const stale = this.opts.serveStale;
    const usable = hit && stale.enable && now - hit.expires <= stale.maxStaleSeconds * 1000 ? hit : undefined;
    if (hit && !usable) this.cache.delete(key);
    if (now < this.downUntil) {
      // the failure recheck time (RFC 8767 §5): no upstream is tried again yet
      if (usable) {
        this.stats.staleServed++;
        return this.fromCache(query, q, usable, now, true);
      }
      this.stats.servfail++;
      return errorReply(query, RCODE.SERVFAIL, q.questionEnd);
    }
    this.stats.forwarded++;
    const { reply, local } = await this.ask(query);
    if (reply) {
      this.downUntil = 0;
      this.store(key, reply, now);
      reply.writeUInt16BE(q.id, 0);
      return reply;
    }
    // the recheck timer is for upstreams that failed; a query this node could not send (out of
    // sockets) says nothing of them, and the next query tries them again
    if (this.upstreams.length && stale.enable && !local)
      this.downUntil = Date.now() + stale.recheckSeconds * 1000;
    if (usable) {
      this.stats.staleServed++;
      return this.fromCache(query, q, usable, now, true);
    }
    this.stats.servfail++;
    return errorReply(query, RCODE.SERVFAIL, q.questionEnd);
  }

  /**
   * The first upstream's usable reply to `query` (with our id); none when all failed, or when the
   * query could not leave this node (`local`: the next upstream would fare no better).
   */
  private async ask(query: Buffer): Promise<{ reply?: Buffer; local?: true }> {
    for (const up of this.upstreams) {
      try {
        const id = randomInt(65536);
        const out = Buffer.from(query);
        out.writeUInt16BE(id, 0);
        let reply: Buffer;
        if (this.opts.upstreamTcp) reply = await this.tcp(up, out, id);
        else {
          reply = await this.udp(up, out, id);
          if (reply.readUInt16BE(2) & 0x0200) {
            this.stats.tcpRetries++;
            reply = await this.tcp(up, out, id);
          }
        }
        const rcode = reply.readUInt16BE(2) & 0xf;
        if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED || rcode === RCODE.NOTIMP)
          throw new Error(`rcode ${rcode}`);
        return { reply };
      } catch (e) {
        if (isLocalFailure(e)) {
          this.stats.localFailures++;
          return { local: true };
        }
        this.stats.upstreamFailures++;
      }
    }
    return {};
  }

  private prefetch(key: string, query: Buffer, e: CacheEntry): void {
    e.refreshing = true;
    this.stats.prefetches++;
    void this.ask(query).then(({ reply }) => {
      e.refreshing = false;
      if (reply) this.store(key, reply, Date.now());
    });
  }

  private store(key: string, reply: Buffer, now: number): void {
    let rrs;
    try {
      rrs = walkRecords(reply);
    } catch {
      return;
    }
    const rcode = reply.readUInt16BE(2) & 0xf;
    const answers = rrs.filter((r) => r.section === 0);
    let ttl: number | undefined;
    if (rcode === RCODE.NOERROR && answers.length) {
      ttl = Math.min(...answers.map((r) => reply.readUInt32BE(r.ttlAt)));
    } else {
      // Negative answer: SOA minimum, bounded by the SOA's own TTL (RFC 2308 §5).
      const soa = rrs.find((r) => r.section === 1 && r.type === QTYPE.SOA);
      if (soa) ttl = Math.min(reply.readUInt32BE(soa.ttlAt), reply.readUInt32BE(soa.end - 4));
    }
    if (!ttl || ttl <= 0) return;
    ttl = Math.min(ttl, this.maxTtl);
    this.cache.delete(key); // re-inserted last: the oldest entries go first
    if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { raw: Buffer.from(reply), stored: now, expires: now + ttl * 1000 });
  }

  /**
   * A cached answer for this client: its id, RD bit and question octets; TTLs reduced by the time
   * spent in the cache (a stale one carries `serveStale.answerTtl`); an OPT only when the client
   * sent one (ours when the cached reply had none, RFC 6891 §7).
   */
  private fromCache(query: Buffer, q: ParsedQuery, e: CacheEntry, now: number, stale: boolean): Buffer {
    let out = Buffer.from(e.raw);
    out.writeUInt16BE(q.id, 0);
    out.writeUInt16BE((out.readUInt16BE(2) & ~0x0100) | (q.rd ? 0x0100 : 0), 2);
    const rrs = walkRecords(out);
    const qEnd = rrs.length ? rrs[0].start : out.length;
    if (qEnd === q.questionEnd) query.copy(out, 12, 12, q.questionEnd); // same name, the client's spelling
    const age = Math.floor((now - e.stored) / 1000);
    for (const r of rrs) {
      if (r.type === QTYPE.OPT) continue;
      const ttl = out.readUInt32BE(r.ttlAt);
      // a stale answer carries the stale TTL (RFC 8767 §4: 30 s), whatever it had
      out.writeUInt32BE(stale ? this.opts.serveStale.answerTtl : Math.max(0, ttl - age), r.ttlAt);
    }
    const opt = rrs.find((r) => r.type === QTYPE.OPT);
    if (!q.edns && opt) {
      out = Buffer.concat([out.subarray(0, opt.start), out.subarray(opt.end)]);
      out.writeUInt16BE(out.readUInt16BE(10) - 1, 10);
    } else if (q.edns && !opt) {
      out = Buffer.concat([out, optRecord(this.opts.ednsUdpSize, q.edns.dnssecOk)]);
      out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
    }
    return out;
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
        // Accept only the upstream's answer to our id and our question (RFC 5452 §9.1); anything
        // else is dropped and the wait goes on, as a spoofed packet must not end it.
        if (
          rinfo.address !== up.host ||
          rinfo.port !== up.port ||
          msg.length < 12 ||
          msg.readUInt16BE(0) !== id ||
          !(msg[2] & 0x80) ||
          !sameQuestion(query, msg)
        ) {
          this.stats.mismatched++;
          return;
        }
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
          if (msg.length < 12 || msg.readUInt16BE(0) !== id || !sameQuestion(query, msg)) {
            this.stats.mismatched++;
            finish(new Error('a reply to another query'));
          } else finish(undefined, Buffer.from(msg));
        }
      });
      sock.on('end', () => finish(new Error('closed before an answer')));
    });
  }
}
