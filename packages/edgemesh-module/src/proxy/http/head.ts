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
/**
 * RFC 3986 §3.1: a URI scheme. A target that starts with one and a colon is absolute-form (or
 * authority-form, `host:port`, which reads the same); with `//` it has an authority.
 */
const SCHEME = '[A-Za-z][A-Za-z0-9+.-]*';
const SCHEME_FIRST = new RegExp(`^${SCHEME}:`);
const ABSOLUTE = new RegExp(`^(${SCHEME}):\\/\\/([^/?#]+)(.*)$`);

/**
 * Index just past the head, -1 if not complete yet; throws 431 past `max` bytes. A head ends with
 * an empty line; lines end with CRLF or a bare LF (nginx and haproxy both take bare LFs and
 * normalize them, as RFC 9112 §2.2 allows), and empty lines before a request line are skipped
 * (§2.2: a server SHOULD ignore at least one).
 */
export function headEnd(buf: Buffer, max: number, crlfOnly = false): number {
  if (crlfOnly) {
    // an upstream's response head: CRLFs only (one with bare LFs is malformed, in both engines)
    const i = buf.indexOf(CRLFCRLF);
    if (i >= 0) return i + 4 > max ? tooLarge(max) : i + 4;
    if (buf.indexOf(LFLF) >= 0 || buf.indexOf(LFCRLF) >= 0)
      throw new HttpParseError(400, 'bare LF in a response head');
    return buf.length > max ? tooLarge(max) : -1;
  }
  let from = 0;
  while (from < buf.length && (buf[from] === 10 || (buf[from] === 13 && buf[from + 1] === 10)))
    from += buf[from] === 10 ? 1 : 2;
  for (let nl = buf.indexOf(10, from); nl >= 0; nl = buf.indexOf(10, nl + 1)) {
    if (nl + 1 > max) break;
    const next = buf[nl + 1];
    if (next === 10) return nl + 2 > max ? tooLarge(max) : nl + 2;
    if (next === 13 && buf[nl + 2] === 10) return nl + 3 > max ? tooLarge(max) : nl + 3;
    if (next === undefined || (next === 13 && nl + 2 >= buf.length)) break; // the end may come next
  }
  return buf.length > max ? tooLarge(max) : -1;
}

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const LFLF = Buffer.from('\n\n', 'latin1');
const LFCRLF = Buffer.from('\n\r\n', 'latin1');

function tooLarge(max: number): never {
  throw new HttpParseError(431, `request head larger than ${max} bytes`, 'head-too-large');
}

/** RFC 9110 §5.5: no control byte but HTAB in a field value (obs-text, 0x80–0xFF, is allowed). */
// eslint-disable-next-line no-control-regex -- control bytes are what it finds
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;
/** Optional whitespace around a field value (SP, HTAB): what is trimmed, and nothing else. */
const OWS = /^[ \t]+|[ \t]+$/g;
/** No control byte nor space in a request-target (RFC 9112 §3.2; nginx and haproxy both refuse them). */
// eslint-disable-next-line no-control-regex -- control bytes are what it finds
const BAD_TARGET = /[\x00-\x20\x7f]/;

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
    const value = line.slice(c + 1).replace(OWS, '');
    if (CTL.test(value)) throw new HttpParseError(400, 'control characters in a header value');
    head.headers.push([name, value]);
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      if (!CONTENT_LENGTH.test(value)) throw new HttpParseError(400, 'bad Content-Length', 'bad-framing');
      const n = Number(value);
      if (head.contentLength !== undefined && head.contentLength !== n)
        throw new HttpParseError(400, 'conflicting Content-Length', 'bad-framing');
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
      if (!head.chunked)
        throw new HttpParseError(400, 'request Transfer-Encoding must end with chunked', 'bad-framing');
      // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is faulty framing (nginx: 400)
      if (head.version === '1.0')
        throw new HttpParseError(400, 'Transfer-Encoding in an HTTP/1.0 request', 'bad-framing');
      // RFC 9112 §6.1: a coding we do not understand → 501 (as nginx): forwarding the body with
      // only `chunked` would hand the upstream gzip bytes unlabelled, or chunked ones twice
      if (codings.length !== 1)
        throw new HttpParseError(
          501,
          `request Transfer-Encoding "${te}" not implemented`,
          'unsupported-coding',
        );
      if (head.contentLength !== undefined)
        throw new HttpParseError(400, 'both Content-Length and Transfer-Encoding', 'bad-framing');
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
 * An absolute-form request target with an authority, `scheme://authority[/path]`: its scheme
 * (lower case), the authority as sent, the Host to send upstream (the authority without userinfo,
 * RFC 9112 §3.2.2) and the origin-form target (`http://h?q` → `/?q`); undefined for any other form
 * (origin-form costs one character test).
 */
export function absoluteForm(
  target: string | undefined,
): { scheme: string; authority: string; host: string; path: string } | undefined {
  if (!target || target[0] === '/') return undefined;
  const abs = ABSOLUTE.exec(target);
  if (!abs) return undefined;
  return {
    scheme: abs[1].toLowerCase(),
    authority: abs[2],
    host: abs[2].replace(/^.*@/, ''),
    path: abs[3].startsWith('/') ? abs[3] : `/${abs[3]}`,
  };
}

/**
 * The lines of a head (empty lines before it and the empty line that ends it left out), each
 * without its CRLF or bare LF; header bytes as they came (latin1). A CR anywhere else is a 400.
 */
function headLines(buf: Buffer, end: number): string[] {
  const lines = buf.toString('latin1', 0, end).split('\n');
  const out: string[] = [];
  for (const l of lines) {
    const line = l.endsWith('\r') ? l.slice(0, -1) : l;
    if (line.includes('\r')) throw new HttpParseError(400, 'bare CR in the head');
    if (line !== '' || out.length) out.push(line);
  }
  while (out.length && out[out.length - 1] === '') out.pop();
  return out;
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
  // an HTTP/2 client with prior knowledge (its preface): answered in HTTP/2, so that it can say why
  if (lines[0] === 'PRI * HTTP/2.0')
    throw new HttpParseError(505, 'this service port speaks HTTP/1.1, not HTTP/2', 'http2-preface');
  const m = /^([^ ]+) ([^ ]+) HTTP\/(\d)\.(\d)$/.exec(lines[0] ?? '');
  if (!m || !TOKEN.test(m[1])) throw new HttpParseError(400, 'malformed request line');
  // RFC 9110 §2.5: another major version is not ours (505, as nginx); a higher minor one is
  // answered as the highest we have, HTTP/1.1 (nginx and haproxy both forward 1.2 as 1.1)
  if (m[3] !== '1')
    throw new HttpParseError(505, `HTTP/${m[3]}.${m[4]} is not supported`, 'unsupported-version');
  if (BAD_TARGET.test(m[2]))
    throw new HttpParseError(400, 'control bytes in the request-target', 'bad-target');
  // RFC 9112 §3.2: origin-form, absolute-form (a scheme first), authority-form (CONNECT), or `*`
  // (OPTIONS); a target of no form is refused, not guessed at
  const t = m[2];
  if (t[0] !== '/' && !(t === '*' ? m[1] === 'OPTIONS' : SCHEME_FIRST.test(t)))
    throw new HttpParseError(400, 'a request-target of no form (RFC 9112 §3.2)', 'bad-target');
  const head = newHead({ method: m[1], target: m[2] }, m[4] === '0' ? '0' : '1', end);
  parseHeaders(lines, head, true);
  // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any with more than one.
  let hosts = 0;
  for (const [k] of head.headers) if (k.length === 4 && k.toLowerCase() === 'host') hosts++;
  if (hosts > 1) throw new HttpParseError(400, 'more than one Host header', 'bad-host');
  if (hosts === 0 && head.version === '1.1')
    throw new HttpParseError(400, 'HTTP/1.1 request without Host', 'bad-host');
  return head;
}

export function parseResponseHead(buf: Buffer, end: number): Head {
  const lines = headLines(buf, end);
  const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
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
