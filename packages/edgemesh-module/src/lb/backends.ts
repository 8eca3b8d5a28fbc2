import { isDnsLabel } from '@edgecore/beehive';
import type { ServiceCatalog } from '../catalog/catalog';
import type { EndpointSlice, Pod, Service, ServicePort, SliceEndpoint } from '../catalog/types';
import type { BackendTls } from '../proxy/tls/backend-tls';
import { conditionsOf, tierOf, topologyMode, usableEndpoints, type Here } from './topology';

export interface Backend {
  host: string;
  port: number;
  /** `host:port` (`node/host:port` through the tunnel): the identity of strategies, health, pools. */
  key: string;
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
  /** TLS originated to it (`appProtocol: https`, proxy/tls/backend-tls.ts). */
  tls?: BackendTls;
  /** Serving but terminating: in the list only while no endpoint is ready (KEP-1669). */
  terminating?: boolean;
  /** Its nearness under a topology-aware service (lb/topology TIER); unset for every other service. */
  tier?: number;
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

/** What a resolve needs besides the catalog: the path rule, this node, and what the list is for. */
export interface ResolveContext {
  paths?: Paths;
  here?: Here;
  /**
   * DNS answers (a headless service's records): the ready endpoints (all of them with
   * `publishNotReadyAddresses`), whatever the traffic policies say.
   */
  dns?: boolean;
}

/** Running, Ready, and not being deleted. */
export function podConditions(p: Pod): { ready: boolean; serving: boolean; terminating: boolean } {
  const running = p.status?.phase === 'Running';
  const c = p.status?.conditions?.find((x) => x.type === 'Ready');
  const serving = running && (!c || c.status === 'True');
  const terminating = !!p.metadata.deletionTimestamp;
  return { ready: serving && !terminating, serving, terminating };
}

/**
 * Where a pod serves a service port from other nodes — the rule the node applies to pods and the
 * cloud's slice controller applies when it writes slices: hostIP:hostPort (host networking, the
 * seed's model; a hostNetwork pod listens on hostIP:targetPort) or podIP:targetPort (container
 * networking). `targetPort` is a number or one of the pod's container port names.
 */
export function podEndpoint(
  p: Pod,
  sp: Pick<ServicePort, 'port' | 'targetPort'>,
  networking: Networking,
): { host: string; port: number } | undefined {
  const ports = (p.spec?.containers ?? []).flatMap((c) => c.ports ?? []);
  const target = sp.targetPort;
  let port: number;
  let hostPort: number | undefined;
  if (typeof target === 'string' && !/^\d+$/.test(target)) {
    const named = ports.find((x) => x.name === target);
    if (!named) return undefined;
    port = named.containerPort;
    hostPort = named.hostPort;
  } else {
    port = target === undefined ? sp.port : Number(target);
    hostPort = ports.find((x) => x.containerPort === port)?.hostPort;
  }
  if (networking === 'container' && p.status?.podIP && !p.spec?.hostNetwork)
    return { host: p.status.podIP, port };
  const hostIP = p.status?.hostIP;
  if (!hostIP) return undefined;
  if (p.spec?.hostNetwork) return { host: hostIP, port };
  return hostPort ? { host: hostIP, port: hostPort } : undefined;
}

/** A slice's port for a service port: by name and protocol, or its only port. */
function slicePort(sl: EndpointSlice, sp: ServicePort): number | undefined {
  const proto = sp.protocol ?? 'TCP';
  const ports = sl.ports ?? [];
  const p =
    ports.find((x) => (x.name ?? '') === (sp.name ?? '') && (x.protocol ?? 'TCP') === proto) ??
    (!sp.name ? ports.find((x) => (x.protocol ?? 'TCP') === proto) : undefined) ??
    (ports.length === 1 && (ports[0].protocol ?? 'TCP') === proto ? ports[0] : undefined);
  return p?.port ?? undefined;
}

interface Candidate {
  host: string;
  port: number;
  hostname?: string;
  node?: string;
  zone?: string;
  hints?: SliceEndpoint['hints'];
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

/**
 * Backends of one service port. From its slices — EndpointSlices (the cloud computes them from
 * pods and selectors, or a user writes them for a service without selector) and its converted
 * Endpoints — when it has any (an empty slice too: no backend); else, for a runtime that feeds
 * pods (the seed's model), from the pods its selector picks (`podEndpoint`). Then the traffic
 * rules of lb/topology: terminating endpoints, `internalTrafficPolicy`, the tiers of
 * `trafficDistribution`.
 */
export function resolveBackends(
  catalog: ServiceCatalog,
  svc: Service,
  sp: ServicePort,
  networking: Networking,
  ctx: ResolveContext = {},
): Backend[] {
  const paths = ctx.paths ?? DIRECT;
  const here = ctx.here ?? {};
  const ns = svc.metadata.namespace ?? 'default';
  const skey = `${ns}/${svc.metadata.name}`;
  const notReadyToo = !!svc.spec?.publishNotReadyAddresses;
  const cands: Candidate[] = [];
  if (catalog.hasSlices(skey)) {
    for (const sl of catalog.slicesOf(skey)) {
      if (sl.addressType && sl.addressType !== 'IPv4') continue;
      const port = slicePort(sl, sp);
      if (!port) continue;
      for (const e of sl.endpoints ?? []) {
        const host = e.addresses?.[0];
        if (!host) continue;
        const c = conditionsOf(e.conditions);
        cands.push({
          host,
          port,
          hostname: e.hostname,
          node: e.nodeName,
          zone: e.zone,
          hints: e.hints,
          ...c,
        });
      }
    }
  } else {
    for (const p of catalog.podsMatching(ns, svc.spec?.selector)) {
      const at = podEndpoint(p, sp, networking);
      if (!at) continue;
      cands.push({
        ...at,
        hostname: p.spec?.subdomain === svc.metadata.name ? p.spec?.hostname : undefined,
        node: p.spec?.nodeName,
        ...podConditions(p),
      });
    }
  }
  // publishNotReadyAddresses: an endpoint that is not terminating counts as ready
  if (notReadyToo) for (const c of cands) if (!c.terminating) c.ready = c.serving = true;
  const use = ctx.dns ? cands.filter((c) => c.ready) : usableEndpoints(svc, cands, here);
  const mode = ctx.dns ? undefined : topologyMode(svc);
  const out: Backend[] = [];
  const seen = new Set<string>();
  for (const c of use) {
    // a backend through the tunnel is named with its node: sites may reuse private addresses,
    // and a pooled connection, health and LB state must never cross from one to the other
    const tunnel = paths.tunneled(c.node);
    const key = tunnel ? `${c.node}/${c.host}:${c.port}` : `${c.host}:${c.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const b: Backend = {
      host: c.host,
      port: c.port,
      key,
      endpoint: endpointLabel(c.hostname, c.host),
      node: c.node,
    };
    if (tunnel) b.tunnel = true;
    if (c.terminating) b.terminating = true;
    if (mode) {
      const zone = c.zone ?? (c.node ? catalog.nodes.get(c.node)?.zone : undefined);
      b.tier = tierOf(mode, { node: c.node, zone, hints: c.hints, tunneled: tunnel }, here);
    }
    out.push(b);
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
    for (const b of resolveBackends(catalog, svc, sp, networking, { paths, dns: true })) {
      const label = b.endpoint!;
      let list = out.get(label);
      if (!list) out.set(label, (list = []));
      list.push({ port: sp, backend: b });
    }
  }
  return out;
}
