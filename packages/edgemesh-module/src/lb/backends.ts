import { isDnsLabel } from '@edgecore/beehive';
import type { ServiceCatalog } from '../catalog/catalog';
import type { Pod, Service, ServicePort } from '../catalog/types';

export interface Backend {
  host: string;
  port: number;
  /** `host:port` (`node/host:port` through the tunnel): the identity of strategies, health, pools. */
  key: string;
  /** The pod (or endpoints address) it came from, for logs and metrics. */
  origin: string;
  /**
   * Its endpoint's DNS label under a headless service (spec §2.4.1): the endpoint's hostname (an
   * Endpoints address's, or a pod's `hostname` when its `subdomain` is the service), else the
   * address dashed (`192-0-2-2`).
   */
  endpoint?: string;
  /** The node it runs on (the pod's `nodeName`, the Endpoints address's), when known. */
  node?: string;
  /** Reached through EdgeTunnel: its node is in another site (see `Paths`). */
  tunnel?: boolean;
}

/**
 * The path to a backend: direct (routed, as in one site — the default, and always for a node of
 * this node's site), or through EdgeTunnel for a node whose published status names another site.
 */
export interface Paths {
  tunneled(node: string | undefined): boolean;
}

export const DIRECT: Paths = { tunneled: () => false };

const withTunnel = new WeakMap<readonly Backend[], boolean>();

/**
 * Whether a backend list has one reached through the tunnel — asked per accepted connection, so
 * remembered per list (BackendIndex hands out the same array until the service changes).
 */
export function hasTunneled(list: readonly Backend[]): boolean {
  let v = withTunnel.get(list);
  if (v === undefined) withTunnel.set(list, (v = list.some((b) => b.tunnel)));
  return v;
}

/** An endpoint's label: its hostname when it is a DNS label, else its address with dashes. */
export function endpointLabel(hostname: string | undefined, address: string): string {
  return hostname && isDnsLabel(hostname) ? hostname.toLowerCase() : address.replace(/[.:]/g, '-');
}

export type Networking = 'host' | 'container';

function ready(p: Pod): boolean {
  if (p.status?.phase !== 'Running') return false;
  const c = p.status.conditions?.find((x) => x.type === 'Ready');
  return !c || c.status === 'True';
}

/** The pod's port for `targetPort` (number, or a container port name), and its hostPort. */
function podPort(
  p: Pod,
  target: number | string | undefined,
  fallback: number,
): { port: number; hostPort?: number } | undefined {
  const ports = (p.spec?.containers ?? []).flatMap((c) => c.ports ?? []);
  if (typeof target === 'string' && !/^\d+$/.test(target)) {
    const named = ports.find((x) => x.name === target);
    return named ? { port: named.containerPort, hostPort: named.hostPort } : undefined;
  }
  const port = target === undefined ? fallback : Number(target);
  const cp = ports.find((x) => x.containerPort === port);
  return { port, hostPort: cp?.hostPort };
}

/**
 * Backends of one service port: the service's Endpoints object when it has one, else the pods its
 * selector picks that are Running and Ready — at hostIP:hostPort (host networking, the seed's
 * model; a hostNetwork pod listens on hostIP:targetPort) or podIP:targetPort (container networking).
 */
export function resolveBackends(
  catalog: ServiceCatalog,
  svc: Service,
  sp: ServicePort,
  networking: Networking,
  paths: Paths = DIRECT,
): Backend[] {
  const ns = svc.metadata.namespace ?? 'default';
  const out: Backend[] = [];
  const seen = new Set<string>();
  const add = (
    host: string | undefined,
    port: number | undefined,
    origin: string,
    hostname: string | undefined,
    node: string | undefined,
  ): void => {
    if (!host || !port) return;
    // a backend through the tunnel is named with its node: sites may reuse private addresses,
    // and a pooled connection, health and LB state must never cross from one to the other
    const tunnel = paths.tunneled(node);
    const key = tunnel ? `${node}/${host}:${port}` : `${host}:${port}`;
    if (seen.has(key)) return;
    seen.add(key);
    const b: Backend = { host, port, key, origin, endpoint: endpointLabel(hostname, host), node };
    if (tunnel) b.tunnel = true;
    out.push(b);
  };
  const ep = catalog.endpoints.get(`${ns}/${svc.metadata.name}`);
  if (ep?.subsets?.length) {
    for (const sub of ep.subsets) {
      const p =
        (sub.ports ?? []).find(
          (x) => (sp.name ? x.name === sp.name : true) && (x.protocol ?? 'TCP') === (sp.protocol ?? 'TCP'),
        ) ?? (sub.ports?.length === 1 ? sub.ports[0] : undefined);
      for (const a of sub.addresses ?? [])
        add(a.ip, p?.port, `endpoints/${ns}/${svc.metadata.name}`, a.hostname, a.nodeName);
    }
    return out;
  }
  for (const p of catalog.podsMatching(ns, svc.spec?.selector)) {
    if (!ready(p)) continue;
    const pp = podPort(p, sp.targetPort, sp.port);
    if (!pp) continue;
    const origin = `pod/${ns}/${p.metadata.name}`;
    const hostname = p.spec?.subdomain === svc.metadata.name ? p.spec?.hostname : undefined;
    const node = p.spec?.nodeName;
    if (networking === 'container' && p.status?.podIP && !p.spec?.hostNetwork)
      add(p.status.podIP, pp.port, origin, hostname, node);
    else if (p.spec?.hostNetwork) add(p.status?.hostIP, pp.port, origin, hostname, node);
    else add(p.status?.hostIP, pp.hostPort, origin, hostname, node);
  }
  return out;
}

/**
 * The ready endpoints of a headless service by their DNS label: each with the service ports it
 * serves and its backend for each (a label is one address, or one hostname).
 */
export function serviceEndpoints(
  catalog: ServiceCatalog,
  svc: Service,
  networking: Networking,
  paths: Paths = DIRECT,
): Map<string, { port: ServicePort; backend: Backend }[]> {
  const out = new Map<string, { port: ServicePort; backend: Backend }[]>();
  for (const sp of svc.spec?.ports ?? []) {
    if (sp.protocol === 'SCTP') continue;
    for (const b of resolveBackends(catalog, svc, sp, networking, paths)) {
      const label = b.endpoint!;
      let list = out.get(label);
      if (!list) out.set(label, (list = []));
      list.push({ port: sp, backend: b });
    }
  }
  return out;
}
