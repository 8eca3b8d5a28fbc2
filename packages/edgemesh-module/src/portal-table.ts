import type { ServicePort } from './catalog/types';

/**
 * The portal table: one row per service port, what the proxy listens on and what interception
 * (iptables) maps `VIP:port` to. Both sides read it; neither owns the other.
 */
export type PortalProtocol = 'http' | 'h2' | 'https' | 'tcp' | 'udp';

/**
 * `appProtocol` values EdgeMesh recognises (Kubernetes' standard ones, and IANA names), and the
 * portal each is served by: `http` and WebSocket (`kubernetes.io/ws`, an HTTP/1.1 upgrade) by the
 * HTTP/1 proxy; h2c and gRPC by the HTTP/2 proxy (each stream balanced); `https` by its first
 * byte — a TLS ClientHello passes through at L4 (SNI and ALPN read, nothing terminated), plain
 * HTTP goes to the HTTP/1 proxy, which originates TLS to the backend; `kubernetes.io/wss` at L4.
 */
export const APP_PROTOCOLS: Readonly<Record<string, PortalProtocol>> = {
  http: 'http',
  'kubernetes.io/ws': 'http',
  'kubernetes.io/h2c': 'h2',
  grpc: 'h2',
  https: 'https',
  'kubernetes.io/wss': 'tcp',
};

/**
 * The portal of a TCP port: its `appProtocol` when it has one (an unknown value → L4, never a
 * guess), else its name: `http`, `http-<n>` → HTTP/1 (the seed's convention); `grpc`,
 * `grpc-<n>`, `h2c`, `http2` → HTTP/2 (Istio's port-name prefixes); anything else → L4.
 */
export function portProtocol(p: ServicePort): PortalProtocol {
  if ((p.protocol ?? 'TCP') === 'UDP') return 'udp';
  if (p.appProtocol !== undefined) return APP_PROTOCOLS[p.appProtocol.toLowerCase()] ?? 'tcp';
  const name = p.name ?? '';
  if (name === 'http' || /^http-\d+$/.test(name)) return 'http';
  if (name === 'grpc' || /^grpc-\d+$/.test(name) || name === 'h2c' || name === 'http2') return 'h2';
  return 'tcp';
}

export interface PortalSpec {
  /** `<ns>/<svc>:<port>/<proto>` — stable identity of the service port. */
  key: string;
  /** `<ns>/<svc>`: the service's key, one string that every index by service shares. */
  serviceKey: string;
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
