import { HttpParseError } from '../../edgemesh-errors';
import { HOP_BY_HOP, LIMITS } from './protocol';

/**
 * HTTP/1.x message heads (RFC 9112) parsed by hand: the proxy forwards bodies as raw bytes and only
 * needs the framing. Request smuggling defences per RFC 9112 §6.3: Content-Length with
 * Transfer-Encoding, differing Content-Lengths, or a request TE not ending in chunked → 400; other
 * codings before chunked → 501 (§6.1). Responses: TE other than chunked alone, or with CL, is
 * an error (502 upstream of it), as nginx.
 */
export interface Head {
  /** Request: method; response: undefined. */
  method?: string;
  target?: string;
  status?: number;
  reason?: string;
  version: '1.0' | '1.1';
  /** Raw header lines in order: [name, value]. */
  headers: [string, string][];
  contentLength?: number;
  chunked: boolean;
  /** Connection tokens, lower-case. */
  connection: Set<string>;
  /** Bytes of the head including the final CRLFCRLF. */
  length: number;
}

const CONTENT_LENGTH = new RegExp(`^\\d{1,${LIMITS.contentLengthDigits}}$`);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CRLFCRLF = Buffer.from('\r\n\r\n');

/** Index just past the head, -1 if not complete yet; throws 431 past `max` bytes. */
export function headEnd(buf: Buffer, max: number): number {
  const i = buf.indexOf(CRLFCRLF);
  if (i < 0) {
    if (buf.length > max) throw new HttpParseError(431, `request head larger than ${max} bytes`);
    return -1;
  }
  if (i + 4 > max) throw new HttpParseError(431, `request head larger than ${max} bytes`);
  return i + 4;
}

function parseHeaders(lines: string[], head: Head, isRequest: boolean): void {
  let te: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === '') continue;
    if (line[0] === ' ' || line[0] === '\t') throw new HttpParseError(400, 'obsolete line folding'); // RFC 9112 §5.2
    const c = line.indexOf(':');
    if (c <= 0) throw new HttpParseError(400, `malformed header line ${i}`);
    const name = line.slice(0, c);
    if (!TOKEN.test(name)) throw new HttpParseError(400, `bad header name "${name.slice(0, 40)}"`);
    const value = line.slice(c + 1).trim();
    if (/[\0\r\n]/.test(value)) throw new HttpParseError(400, 'control characters in a header value');
    head.headers.push([name, value]);
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      if (!CONTENT_LENGTH.test(value)) throw new HttpParseError(400, 'bad Content-Length');
      const n = Number(value);
      if (head.contentLength !== undefined && head.contentLength !== n)
        throw new HttpParseError(400, 'conflicting Content-Length');
      head.contentLength = n;
    } else if (lower === 'transfer-encoding') {
      te = te ? `${te}, ${value}` : value;
    } else if (lower === 'connection') {
      for (const t of value.split(',')) if (t.trim()) head.connection.add(t.trim().toLowerCase());
    }
  }
  if (te !== undefined) {
    const codings = te
      .toLowerCase()
      .split(',')
      .map((s) => s.trim());
    head.chunked = codings[codings.length - 1] === 'chunked';
    if (isRequest) {
      if (!head.chunked) throw new HttpParseError(400, 'request Transfer-Encoding must end with chunked');
      // RFC 9112 §6.1: a coding we do not understand → 501 (as nginx): forwarding the body with
      // only `chunked` would hand the upstream gzip bytes unlabelled, or chunked ones twice
      if (codings.length !== 1)
        throw new HttpParseError(501, `request Transfer-Encoding "${te}" not implemented`);
      if (head.contentLength !== undefined)
        throw new HttpParseError(400, 'both Content-Length and Transfer-Encoding');
    } else if (codings.length !== 1 || !head.chunked || head.contentLength !== undefined) {
      // as nginx: a coding we cannot undo (gzip, say: the field is hop-by-hop) or TE with CL
      throw new HttpParseError(
        400,
        'upstream Transfer-Encoding other than chunked alone, or with Content-Length',
      );
    }
    if (head.chunked) head.contentLength = undefined;
  }
}

/**
 * An absolute-form request target, `http://authority[/path]`: the authority as sent, the Host to
 * send upstream (the authority without userinfo, RFC 9112 §3.2.2) and the origin-form target
 * (`http://h?q` → `/?q`); undefined for any other form (origin-form costs one character test).
 */
export function absoluteForm(
  target: string | undefined,
): { authority: string; host: string; path: string } | undefined {
  if (!target || target[0] === '/') return undefined;
  const abs = /^http:\/\/([^/?#]+)(.*)$/i.exec(target);
  if (!abs) return undefined;
  return {
    authority: abs[1],
    host: abs[1].replace(/^.*@/, ''),
    path: abs[2].startsWith('/') ? abs[2] : `/${abs[2]}`,
  };
}

/** The lines of a head (its final CRLFCRLF left out); header bytes as they came (latin1). */
function headLines(buf: Buffer, end: number): string[] {
  return buf.toString('latin1', 0, end - 4).split('\r\n');
}

/** A head with its start line read (`start`) and no fields yet. */
function newHead(start: Pick<Head, 'method' | 'target' | 'status' | 'reason'>, v: string, end: number): Head {
  return {
    ...start,
    version: v === '1' ? '1.1' : '1.0',
    headers: [],
    chunked: false,
    connection: new Set(),
    length: end,
  };
}

export function parseRequestHead(buf: Buffer, end: number): Head {
  const lines = headLines(buf, end);
  const m = /^([^ ]+) ([^ ]+) HTTP\/1\.([01])$/.exec(lines[0]);
  if (!m || !TOKEN.test(m[1])) throw new HttpParseError(400, 'malformed request line');
  const head = newHead({ method: m[1], target: m[2] }, m[3], end);
  parseHeaders(lines, head, true);
  // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any with more than one.
  let hosts = 0;
  for (const [k] of head.headers) if (k.length === 4 && k.toLowerCase() === 'host') hosts++;
  if (hosts > 1) throw new HttpParseError(400, 'more than one Host header');
  if (hosts === 0 && head.version === '1.1') throw new HttpParseError(400, 'HTTP/1.1 request without Host');
  return head;
}

export function parseResponseHead(buf: Buffer, end: number): Head {
  const lines = headLines(buf, end);
  const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new HttpParseError(400, 'malformed status line from upstream');
  const head = newHead({ status: Number(m[2]), reason: m[3] ?? '' }, m[1], end);
  parseHeaders(lines, head, false);
  return head;
}

/** Whether the client asked to keep its connection (HTTP/1.1 unless `close`; HTTP/1.0 if `keep-alive`). */
export function wantsKeepAlive(h: Head): boolean {
  return h.version === '1.1' ? !h.connection.has('close') : h.connection.has('keep-alive');
}

export function header(h: Head, name: string): string | undefined {
  const l = name.toLowerCase();
  for (const [k, v] of h.headers) if (k.toLowerCase() === l) return v;
  return undefined;
}

const HOP = new Set(HOP_BY_HOP);

/** Header lines to forward: hop-by-hop ones removed. */
export function endToEnd(h: Head): [string, string][] {
  return h.headers.filter(([k]) => {
    const l = k.toLowerCase();
    return !HOP.has(l) && !h.connection.has(l);
  });
}
