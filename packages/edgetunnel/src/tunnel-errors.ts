import { BeehiveError } from '@edgecore/beehive';

/** Base of EdgeTunnel's errors: a BeehiveError, so every edgecore error has a stable `code`. */
export class TunnelError extends BeehiveError {}

export const TunnelCode = {
  /** A certificate or key file cannot be read or parsed. */
  CertUnreadable: 'TUNNEL_CERT_UNREADABLE',
  CertExpired: 'TUNNEL_CERT_EXPIRED',
  CertNotYetValid: 'TUNNEL_CERT_NOT_YET_VALID',
  /** Not signed by the fleet CA the node or relay is configured with. */
  CertWrongCa: 'TUNNEL_CERT_WRONG_CA',
  /** The certificate names another node (or another role) than the one configured. */
  CertNameMismatch: 'TUNNEL_CERT_NAME_MISMATCH',
  CertKeyMismatch: 'TUNNEL_CERT_KEY_MISMATCH',
  /** `openssl` failed while creating certificates. */
  Openssl: 'TUNNEL_OPENSSL',
  /** No live relay (or direct peer link) reaches the target node. */
  NoPath: 'TUNNEL_NO_PATH',
  /** The target node refused the stream: no backend of its own at that address. */
  Refused: 'TUNNEL_REFUSED',
  /** The target node could not connect to its backend. */
  Unreachable: 'TUNNEL_UNREACHABLE',
  Timeout: 'TUNNEL_TIMEOUT',
  InvalidOption: 'TUNNEL_INVALID_OPTION',
  Listen: 'TUNNEL_LISTEN',
} as const;

/** A certificate that cannot serve: expired, from another CA, for another name, unreadable. */
export class CertificateError extends TunnelError {
  constructor(
    code: string,
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, `${file}: ${message}`, options);
  }
}

/** A stream that could not be opened to `node` (`host:port`): the code says why. */
export class StreamOpenError extends TunnelError {
  constructor(
    code: string,
    readonly node: string,
    readonly target: string,
    reason: string,
  ) {
    super(code, `tunnel stream to ${target} on node ${node}: ${reason}`);
  }
}

/** An EdgeTunnel option that is missing or not what its key takes. */
export class InvalidTunnelOptionError extends TunnelError {
  constructor(
    readonly key: string,
    value: unknown,
    expected: string,
  ) {
    super(
      TunnelCode.InvalidOption,
      `option ${key}: ${JSON.stringify(value) ?? 'undefined'} is not valid: ${expected}`,
    );
  }
}
