import type { ServicePort } from './catalog/types';

/**
 * The portal table: one row per service port, what the proxy listens on and what interception
 * (iptables) maps `VIP:port` to. Both sides read it; neither owns the other.
 */
export type PortalProtocol = 'http' | 'tcp' | 'udp';

/** The seed's convention: port name `http` or `http-<n>`, or appProtocol http → L7. */
export function portProtocol(p: ServicePort): PortalProtocol {
  if ((p.protocol ?? 'TCP') === 'UDP') return 'udp';
  if (p.name === 'http' || /^http-\d+$/.test(p.name ?? '') || p.appProtocol?.toLowerCase() === 'http')
    return 'http';
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
