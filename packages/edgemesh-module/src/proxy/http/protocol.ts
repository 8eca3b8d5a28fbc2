/**
 * HTTP/1.1 protocol tables of the L7 proxy, stated once: the heads parser, the exchange and the
 * error answers read them here.
 */

/** Reason phrases (RFC 9110 §15) of the statuses the proxies answer with themselves. */
export const REASON_PHRASES: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

/** The reason phrase of a status the proxies answer with themselves. */
export function reasonPhrase(status: number): string {
  return REASON_PHRASES[status] ?? 'Error';
}

/** RFC 9110 §7.6.1: hop-by-hop fields (plus whatever Connection names), never forwarded. */
export const HOP_BY_HOP: readonly string[] = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
];

/**
 * RFC 9110 §6.5.1: fields that must not be trailers — message framing, routing, request
 * modifiers, authentication, response control (Go's net/http refuses the same list). Dropped from
 * a chunked request's trailer section on the way upstream.
 */
export const FORBIDDEN_TRAILERS: readonly string[] = [
  'authorization',
  'cache-control',
  'connection',
  'content-encoding',
  'content-length',
  'content-range',
  'content-type',
  'expect',
  'host',
  'keep-alive',
  'max-forwards',
  'pragma',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'range',
  'realm',
  'te',
  'trailer',
  'transfer-encoding',
  'www-authenticate',
];

/** RFC 9110 §9.2.2: idempotent methods, which may go to a second backend after a failure. */
export const IDEMPOTENT_METHODS: readonly string[] = ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'];

/** Limits of the framing parsers. */
export const LIMITS = {
  /** A response head from upstream (the request head's limit is `maxHeadBytes`). */
  responseHeadBytes: 64 * 1024,
  /** A chunk-size line, extensions included. */
  chunkLineBytes: 1024,
  /** Trailer fields of a chunked body, in all. */
  trailerBytes: 16384,
  /** Hex digits of a chunk size. */
  chunkSizeDigits: 12,
  /** Decimal digits of a Content-Length. */
  contentLengthDigits: 15,
} as const;
