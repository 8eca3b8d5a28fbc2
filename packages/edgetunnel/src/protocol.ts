/**
 * The tunnel's wire, stated once (see README "Protocol"). Every link is TLS 1.3 with certificates
 * of the fleet CA on both ends, carrying HTTP/2; a stream is an HTTP/2 CONNECT (RFC 9113 §8.5)
 * whose `:authority` is the backend `host:port`, its END_STREAM a TCP half-close.
 *
 * - ALPN `h2`: the dialling side is the HTTP/2 client — a node's outbound link to a relay (it
 *   opens streams to other nodes), or a node's link to a peer that accepts direct dials.
 * - ALPN `edgetunnel-rev`: a node's reverse link to a relay — the node dials out, then serves
 *   HTTP/2 on it, so the relay can open streams to a node behind NAT without ever dialling it.
 */
export const ALPN_FORWARD = 'h2';
export const ALPN_REVERSE = 'edgetunnel-rev';

/** Request header: the node whose backend a stream is for (node → relay). */
export const H_NODE = 'edgetunnel-node';
/** Request header: the node a stream comes from, as the relay authenticated it (relay → node). */
export const H_FROM = 'edgetunnel-from';
/** Request header: `tcp` (a byte stream, half-close kept) or `udp` (length-framed datagrams). */
export const H_PROTO = 'edgetunnel-proto';
/** Response header: why a stream was not opened (an errno such as ECONNREFUSED, or a word). */
export const H_ERROR = 'edgetunnel-error';
/**
 * Spliced streams (see README "Spliced streams"). Request node → relay: `1`, the node would take
 * the stream spliced. Relay → target node (request) and relay → source node (200 answer): the
 * one-time token both nodes present on the relay's splice port.
 */
export const H_SPLICE = 'edgetunnel-splice';
/** With a token: the relay's splice port (on the address the node dialled for its link). */
export const H_SPLICE_PORT = 'edgetunnel-splice-port';
/** ALPN of the end-to-end TLS of a spliced stream (node to node, through the relay's splice). */
export const ALPN_SPLICED = 'edgetunnel-spliced';
/** A spliced connection's first bytes on the relay's splice port: this, then the token. */
export const SPLICE_MAGIC = 'ETS1';
/** A token: 16 random bytes in hex. */
export const SPLICE_TOKEN_CHARS = 32;

export type TunnelProto = 'tcp' | 'udp';

/**
 * Status of a refused CONNECT: 403 the target node publishes no such backend (or the source is
 * revoked), 502 the target could not connect to its backend, 503 the relay has no link to the
 * target node (try another relay), 400 a malformed request.
 */
export const STATUS = { ok: 200, bad: 400, forbidden: 403, badGateway: 502, noLink: 503 } as const;

/**
 * Flow control: a stream may have 1 MiB unacknowledged (a 1 Gbit/s link with 8 ms of round trip),
 * the link 16 MiB in all — what bounds a tunnel's memory however many streams it carries.
 */
export const H2_SETTINGS = {
  initialWindowSize: 1 << 20,
  maxFrameSize: 1 << 20,
  maxConcurrentStreams: 65_536,
  enablePush: false,
};
export const H2_CONNECTION_WINDOW = 16 << 20;

/** Certificate roles (the subject's OU): a node's name is its CN; a relay's too. */
export const ROLE_NODE = 'node';
export const ROLE_RELAY = 'relay';

/**
 * TLS 1.3 suites in our order of preference: AES-128-GCM first (the same security margin for a
 * link's lifetime, fewer rounds than AES-256 — measurable on a relay that decrypts and encrypts
 * every byte), then Node's defaults.
 */
export const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';
