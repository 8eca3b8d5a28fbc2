import { DnsFormatError } from '../edgemesh-errors';
/**
 * Hand-rolled parsing of DNS queries for the hot path (RFC 1035 §4.1). dns-packet is used to
 * build answers once; queries are read here without allocating a decoded object tree.
 */

export const QTYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
} as const;
export const QCLASS = { IN: 1, CH: 3, HS: 4, ANY: 255 } as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export interface ParsedQuery {
  id: number;
  /** Header flags word as received. */
  flags: number;
  opcode: number;
  rd: boolean;
  /**
   * The name in presentation form without the trailing dot ('' for the root), lower-cased in ASCII
   * only (RFC 4343): a label's own dot or backslash is escaped (`\.`, `\\`) and any other octet
   * outside 0x21–0x7e is `\DDD`, so two names are equal exactly when their octet labels are.
   */
  name: string;
  qtype: number;
  qclass: number;
  /** Byte offset just past the question section. */
  questionEnd: number;
  /** EDNS0 (RFC 6891): advertised UDP payload size and DO bit, when an OPT RR is present. */
  edns?: { udpSize: number; dnssecOk: boolean; version: number };
}

/** Read a (possibly compressed) name starting at `off`; returns the name and the offset after it. */
export function readName(buf: Buffer, off: number): { name: string; end: number } {
  let name = '';
  let end = -1;
  let jumps = 0;
  let total = 0;
  for (;;) {
    if (off >= buf.length) throw new DnsFormatError('name runs past the packet', off);
    const len = buf[off];
    if (len === 0) {
      if (end < 0) end = off + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) throw new DnsFormatError('truncated compression pointer', off);
      if (++jumps > 16) throw new DnsFormatError('compression loop', off);
      if (end < 0) end = off + 2;
      off = ((len & 0x3f) << 8) | buf[off + 1];
      continue;
    }
    if (len & 0xc0) throw new DnsFormatError('bad label type', off);
    if (off + 1 + len > buf.length) throw new DnsFormatError('label runs past the packet', off);
    total += len + 1;
    // RFC 1035 §3.1: 255 octets at most, the root's length octet included
    if (total + 1 > 255) throw new DnsFormatError('name longer than 255 octets', off);
    const label = labelText(buf, off + 1, off + 1 + len);
    name = name ? `${name}.${label}` : label;
    off += 1 + len;
  }
  return { name, end };
}

/** A label in presentation form (RFC 1035 §5.1): `.` and `\` escaped, other odd octets as `\DDD`. */
function labelText(buf: Buffer, start: number, end: number): string {
  let plain = true;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) {
      plain = false;
      break;
    }
  }
  if (plain) return buf.toString('latin1', start, end);
  let out = '';
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c === 0x2e || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
    else if (c <= 0x20 || c >= 0x7f) out += `\\${String(c).padStart(3, '0')}`;
    else out += String.fromCharCode(c);
  }
  return out;
}

function skipRR(buf: Buffer, off: number): number {
  const { end } = readName(buf, off);
  if (end + 10 > buf.length) throw new DnsFormatError('truncated resource record', end);
  const rdlen = buf.readUInt16BE(end + 8);
  const next = end + 10 + rdlen;
  if (next > buf.length) throw new DnsFormatError('rdata runs past the packet', end + 10);
  return next;
}

/**
 * Offset just past the question of a plain query (1 question, no other records, uncompressed
 * name), or -1 when the packet needs the full parser. Builds no strings: the hot path of a
 * repeated query only needs the question's bytes as a cache key.
 */
export function plainQuestionEnd(buf: Buffer): number {
  const len = buf.length;
  if (
    len < 17 ||
    buf[4] !== 0 ||
    buf[5] !== 1 ||
    buf[6] !== 0 ||
    buf[7] !== 0 ||
    buf[8] !== 0 ||
    buf[9] !== 0 ||
    buf[10] !== 0 ||
    buf[11] !== 0
  )
    return -1;
  let off = 12;
  for (let l = buf[off]; l !== 0; l = buf[off]) {
    if (l > 63) return -1;
    off += l + 1;
    if (off >= len) return -1;
  }
  off += 5; // root label + qtype + qclass
  return off === len ? off : -1;
}

/**
 * Parse a query. Throws DnsFormatError (with the byte offset) for anything malformed; the caller
 * answers FORMERR when at least the 12-byte header was readable.
 */
export function parseQuery(buf: Buffer): ParsedQuery {
  if (buf.length < 12) throw new DnsFormatError('shorter than a DNS header', buf.length);
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  if (qd !== 1) throw new DnsFormatError(`expected 1 question, got ${qd}`, 4);
  const q = readName(buf, 12);
  if (q.end + 4 > buf.length) throw new DnsFormatError('truncated question', q.end);
  const qtype = buf.readUInt16BE(q.end);
  const qclass = buf.readUInt16BE(q.end + 2);
  const questionEnd = q.end + 4;
  let edns: ParsedQuery['edns'];
  if (ar > 0) {
    let off = questionEnd;
    for (let i = 0; i < an + ns; i++) off = skipRR(buf, off);
    for (let i = 0; i < ar; i++) {
      const start = off;
      const n = readName(buf, off);
      if (n.end + 10 > buf.length) throw new DnsFormatError('truncated additional record', n.end);
      if (buf.readUInt16BE(n.end) === QTYPE.OPT) {
        if (edns) throw new DnsFormatError('more than one OPT record', start);
        const ttl = buf.readUInt32BE(n.end + 4);
        edns = {
          udpSize: Math.max(512, buf.readUInt16BE(n.end + 2)),
          version: (ttl >>> 16) & 0xff,
          dnssecOk: (ttl & 0x8000) !== 0,
        };
      }
      off = skipRR(buf, start);
    }
  }
  return {
    id,
    flags,
    opcode: (flags >>> 11) & 0xf,
    rd: (flags & 0x0100) !== 0,
    name: q.name.toLowerCase(),
    qtype,
    qclass,
    questionEnd,
    edns,
  };
}

/**
 * A minimal error reply that echoes the question when it was readable: header + question, with
 * QR set and the given RCODE (RFC 1035 §4.1.1).
 */
export function errorReply(query: Buffer, rcode: number, questionEnd?: number): Buffer {
  const qlen = questionEnd !== undefined && questionEnd <= query.length ? questionEnd : 12;
  const out = Buffer.allocUnsafe(qlen);
  query.copy(out, 0, 0, qlen);
  const flags = query.readUInt16BE(2);
  // QR=1, keep opcode and RD, RA=1, rcode
  out.writeUInt16BE(0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xf), 2);
  out.writeUInt16BE(qlen > 12 ? 1 : 0, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(0, 10);
  return out;
}

/**
 * An OPT RR (RFC 6891 §6.1.2): root owner, the UDP payload size we accept, extended RCODE and
 * version 0, the DO bit echoed (RFC 3225), no options. What every reply to an EDNS query carries.
 */
export function optRecord(udpSize: number, dnssecOk: boolean): Buffer {
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(QTYPE.OPT, 1);
  opt.writeUInt16BE(udpSize, 3);
  if (dnssecOk) opt.writeUInt16BE(0x8000, 7);
  return opt;
}

/** Where a resource record sits in a message (answer, authority and additional sections). */
export interface RecordPos {
  start: number;
  end: number;
  type: number;
  /** Offset of its 32-bit TTL. */
  ttlAt: number;
  /** 0 answer, 1 authority, 2 additional. */
  section: 0 | 1 | 2;
}

/** The records of a message after its question(s); throws DnsFormatError when malformed. */
export function walkRecords(buf: Buffer): RecordPos[] {
  if (buf.length < 12) throw new DnsFormatError('shorter than a DNS header', buf.length);
  let off = 12;
  for (let i = buf.readUInt16BE(4); i > 0; i--) {
    off = readName(buf, off).end + 4;
    if (off > buf.length) throw new DnsFormatError('truncated question', off);
  }
  const out: RecordPos[] = [];
  const counts = [buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  counts.forEach((n, section) => {
    for (let i = 0; i < n; i++) {
      const start = off;
      const { end } = readName(buf, off);
      off = skipRR(buf, start);
      out.push({
        start,
        end: off,
        type: buf.readUInt16BE(end),
        ttlAt: end + 4,
        section: section as 0 | 1 | 2,
      });
    }
  });
  return out;
}

/**
 * Whether `reply` answers the question of `query`: the same name (octet labels, ASCII case
 * folded), type and class (RFC 5452 §9.1: id, address, port — and the question).
 */
export function sameQuestion(query: Buffer, reply: Buffer): boolean {
  try {
    if (reply.length < 12 || reply.readUInt16BE(4) !== 1 || query.readUInt16BE(4) !== 1) return false;
    const a = readName(query, 12);
    const b = readName(reply, 12);
    if (b.end + 4 > reply.length || a.name.toLowerCase() !== b.name.toLowerCase()) return false;
    return query.readUInt32BE(a.end) === reply.readUInt32BE(b.end);
  } catch {
    return false;
  }
}
