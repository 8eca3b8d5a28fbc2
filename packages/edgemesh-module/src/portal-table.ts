import type { ServicePort } from './catalog/types';

/**
 * The portal table: one row per service port, what the proxy listens on and what interception
 * (iptables) maps `VIP:port` to. Both sides read it; neither owns the other.
 */
export type PortalProtocol = 'http' | 'tcp' | 'udp';

/**
 * `appProtocol` values EdgeMesh recognises (Kubernetes' standard ones, and IANA names), and the
 * portal each is served by: `http` and WebSocket (`kubernetes.io/ws`, an HTTP/1.1 upgrade) by the
 * L7 proxy; h2c, gRPC and the TLS ones (`https`, `kubernetes.io/wss`) byte for byte at L4 (the L7
 * proxy speaks HTTP/1.x and does not terminate TLS).
 */
export const APP_PROTOCOLS: Readonly<Record<string, PortalProtocol>> = {
  http: 'http',
  'kubernetes.io/ws': 'http',
  'kubernetes.io/h2c': 'tcp',
  grpc: 'tcp',
  https: 'tcp',
  'kubernetes.io/wss': 'tcp',
};

/**
 * The portal of a TCP port: its `appProtocol` when it has one (an unknown value → L4, never a
 * guess), else the seed's convention: port name `http` or `http-<n>` → L7.
 */
export function portProtocol(p: ServicePort): PortalProtocol {
  if ((p.protocol ?? 'TCP') === 'UDP') return 'udp';
  if (p.appProtocol !== undefined) return APP_PROTOCOLS[p.appProtocol.toLowerCase()] ?? 'tcp';
  if (p.name === 'http' || /^http-\d+$/.test(p.name ?? '')) return 'http';
  return 'tcp';
}

export interface PortalSpec {
  /** `<ns>/<svc>:<port>/<proto>` — stable identity of the service port. */
  key: string;
  namespace: string;
  service: string;
  vip: string;
  port: number;
  portName?: string;
  transport: 'TCP' | 'UDP';
  protocol: PortalProtocol;
  /** A headless service's endpoint (its DNS label): the portal of its own VIP, to it alone. */
  endpoint?: string;
}

/** One row of the portal table: what interception maps VIP:port to. */
export interface PortalEntry extends PortalSpec {
  listenHost: string;
  listenPort: number;
}
