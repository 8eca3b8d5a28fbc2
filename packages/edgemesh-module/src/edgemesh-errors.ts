import { BeehiveError } from '@edgecore/beehive';
/** EdgeMesh errors, each with a stable code. */
/** Base of this package's errors: a BeehiveError, so every edgecore error has a stable `code`. */
export class EdgeMeshError extends BeehiveError {}

export class VipPoolExhaustedError extends EdgeMeshError {
  constructor(
    readonly subnet: string,
    readonly service: string,
  ) {
    super('EDGEMESH_VIP_EXHAUSTED', `no free VIP in ${subnet} for service ${service}`);
  }
}

export class VipConflictError extends EdgeMeshError {
  constructor(
    readonly ip: string,
    readonly service: string,
    readonly holder: string,
  ) {
    super('EDGEMESH_VIP_CONFLICT', `service ${service} wants ${ip}, already held by ${holder}`);
  }
}

export class InvalidSubnetError extends EdgeMeshError {
  constructor(subnet: string, reason: string) {
    super('EDGEMESH_INVALID_SUBNET', `invalid subNet "${subnet}": ${reason}`);
  }
}

export class DnsListenError extends EdgeMeshError {
  constructor(address: string, cause: Error) {
    super('EDGEMESH_DNS_LISTEN', `DNS server cannot listen on ${address}: ${cause.message}`, { cause });
  }
}

/** The explicit proxy (unprivileged mode's `listenPort`) cannot listen: the port is taken, say. */
export class ProxyListenError extends EdgeMeshError {
  constructor(address: string, cause: Error) {
    super('EDGEMESH_PROXY_LISTEN', `explicit proxy cannot listen on ${address}: ${cause.message}`, { cause });
  }
}

/** A native piece was required by config (`native`) but the addon is not built. */
export class NativeUnavailableError extends EdgeMeshError {
  constructor(what: string, why: string) {
    super('EDGEMESH_NATIVE_UNAVAILABLE', `${what}: the native addon is not built (${why})`);
  }
}

/** An option given to a library class is out of its range (edgecore's config schema checks the file). */
export class InvalidOptionError extends EdgeMeshError {
  constructor(
    readonly key: string,
    value: unknown,
    expected: string,
  ) {
    super('EDGEMESH_INVALID_OPTION', `option ${key}: ${JSON.stringify(value)} is not ${expected}`);
  }
}

/** A request head the proxy does not forward (RFC 9112): answered with `status`. */
export class HttpParseError extends EdgeMeshError {
  constructor(
    readonly status: 400 | 408 | 431 | 501 | 505,
    message: string,
    /** Why, for `/metrics` (`edgecore_proxy_http_rejected_total{reason}`). */
    readonly reason: RejectReason = 'malformed-head',
  ) {
    super('EDGEMESH_HTTP_PARSE', message);
  }
}

/**
 * Why a request was refused without reaching a backend: a head that is not HTTP/1.1 we forward, a
 * target we will not send, framing that is ambiguous or not ours to undo (501), Host missing or
 * twice, a head too large (431) or too slow (408), a malformed chunked body, a client gone inside
 * its head.
 */
export type RejectReason =
  | 'malformed-head'
  | 'bad-target'
  | 'bad-framing'
  | 'unsupported-coding'
  | 'unsupported-version'
  | 'http2-preface'
  | 'bad-host'
  | 'head-too-large'
  | 'head-timeout'
  | 'bad-chunk'
  | 'closed-in-head';

/** A connect to a backend failed (`reason`: an errno name or `timeout`). */
export class ConnectError extends EdgeMeshError {
  constructor(
    readonly backend: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super('EDGEMESH_UPSTREAM_CONNECT', `connect to ${backend} failed: ${reason}`, options);
  }
}

/** No response head from a backend in `proxy.responseTimeoutMs` (answered with 504). */
export class UpstreamTimeoutError extends EdgeMeshError {
  constructor(backend: string, ms: number) {
    super('EDGEMESH_UPSTREAM_TIMEOUT', `upstream ${backend} did not answer in ${ms} ms`);
  }
}

/** A DNS message that cannot be parsed (answered with FORMERR), with the byte offset. */
export class DnsFormatError extends EdgeMeshError {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super('EDGEMESH_DNS_FORMERR', `${message} at byte ${offset}`);
  }
}

/** An iptables-restore (or iptables) run failed; the first lines of its stderr. */
export class IptablesError extends EdgeMeshError {
  constructor(what: string, stderr: string) {
    super('EDGEMESH_IPTABLES', `${what} failed: ${stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  }
}

/**
 * Codes of the errors the native addon throws (TypeErrors and Errors with `code`): a bad call of
 * its JavaScript API, which is a bug of ours, never the peer's input.
 */
export const NATIVE_ERROR_CODES = {
  /** native/http/ */
  httpEngine: 'EDGEMESH_HTTP_ENGINE',
  /** native/splice.c */
  splice: 'EDGEMESH_SPLICE',
  /** native/udp_batch.c */
  udpBatch: 'EDGEMESH_UDP_BATCH',
} as const;

/** `lbStrategy` names no strategy bound (the built-in ones, or an embedder's contributions). */
export class UnknownLbStrategyError extends EdgeMeshError {
  constructor(
    readonly strategy: string,
    known: readonly string[],
  ) {
    super('EDGEMESH_UNKNOWN_LB_STRATEGY', `unknown lbStrategy "${strategy}" (${known.join(', ')})`);
  }
}
