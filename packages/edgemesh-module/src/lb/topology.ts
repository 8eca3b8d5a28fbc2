import type { Service, SliceEndpoint } from '../catalog/types';

/**
 * Where traffic may go and where it should go first — Kubernetes' rules for one service, in one
 * place (every engine and the DNAT rules read their outcome from the backend list):
 *
 * - **Terminating endpoints** (KEP-1669): ready ones only; while none is ready, the ones still
 *   serving though terminating. (Open connections are never cut: a backend list only decides new
 *   ones.)
 * - **`internalTrafficPolicy: Local`**: only endpoints on this node, by the same ready-then-serving
 *   rule; none → none (a 503 or a refused connection, never a fallback to another node).
 * - **`trafficDistribution`** `PreferSameNode`, `PreferSameZone`, `PreferClose` (and the
 *   `service.kubernetes.io/topology-mode: Auto` annotation with EndpointSlice `hints`): each
 *   endpoint gets a tier — this node (PreferSameNode only), this zone, this site (EdgeTunnel's:
 *   not through a tunnel), elsewhere; the load balancer picks among the nearest tier that has a
 *   healthy endpoint, so the next tier takes over when the nearer ones die or are ejected.
 */

/** This node, as the topology rules see it. */
export interface Here {
  node?: string;
  /** `topology.kubernetes.io/zone` of this node (edgecore.yaml). */
  zone?: string;
}

export const TIER = { node: 0, zone: 1, site: 2, elsewhere: 3 } as const;

export type TopologyMode = 'node' | 'zone';

const TOPOLOGY_MODE_ANNOTATION = 'service.kubernetes.io/topology-mode';
const TOPOLOGY_HINTS_ANNOTATION = 'service.kubernetes.io/topology-aware-hints';

/** Whether the service prefers near endpoints, and how near (undefined: every endpoint alike). */
export function topologyMode(svc: Service): TopologyMode | undefined {
  const td = svc.spec?.trafficDistribution;
  if (td === 'PreferSameNode') return 'node';
  if (td === 'PreferSameZone' || td === 'PreferClose') return 'zone';
  const a = svc.metadata.annotations;
  const mode = (a?.[TOPOLOGY_MODE_ANNOTATION] ?? a?.[TOPOLOGY_HINTS_ANNOTATION])?.toLowerCase();
  return mode === 'auto' ? 'zone' : undefined;
}

/** An endpoint as the rules read it. */
export interface EndpointFacts {
  node?: string;
  zone?: string;
  hints?: SliceEndpoint['hints'];
  /** Reached through EdgeTunnel (another site). */
  tunneled: boolean;
}

/** The endpoint's tier under `mode` (lower is nearer). Hints, when the slice has them, decide the zone. */
export function tierOf(mode: TopologyMode, e: EndpointFacts, here: Here): number {
  if (mode === 'node' && here.node) {
    if (e.node === here.node || e.hints?.forNodes?.some((n) => n.name === here.node)) return TIER.node;
  }
  if (here.zone) {
    const zones = e.hints?.forZones;
    if (zones?.length ? zones.some((z) => z.name === here.zone) : e.zone === here.zone) return TIER.zone;
  }
  return e.tunneled ? TIER.elsewhere : TIER.site;
}

/** Slice endpoint conditions as the API defines unset ones: ready, serving like ready, not terminating. */
export function conditionsOf(c: SliceEndpoint['conditions']): {
  ready: boolean;
  serving: boolean;
  terminating: boolean;
} {
  const ready = c?.ready ?? true;
  return { ready, serving: c?.serving ?? ready, terminating: c?.terminating ?? false };
}

/**
 * The endpoints new traffic may use, of `all` (each with its `ready`/`serving`/`terminating` and
 * `node`): ready ones, else serving-terminating ones; under `Local`, of this node only.
 */
export function usableEndpoints<
  T extends { ready: boolean; serving: boolean; terminating: boolean; node?: string },
>(svc: Service, all: readonly T[], here: Here): T[] {
  const local = svc.spec?.internalTrafficPolicy === 'Local';
  const mine = local ? all.filter((e) => !!here.node && e.node === here.node) : all;
  const ready = mine.filter((e) => e.ready && !e.terminating);
  return ready.length ? ready : mine.filter((e) => e.serving && e.terminating);
}

/** The candidates of the nearest tier (a list without tiers is returned as it is). */
export function nearest<T extends { tier?: number }>(cands: readonly T[]): readonly T[] {
  if (cands.length < 2 || cands[0].tier === undefined) return cands;
  let min = Infinity;
  for (const c of cands) if (c.tier! < min) min = c.tier!;
  let all = true;
  for (const c of cands) if (c.tier !== min) all = false;
  return all ? cands : cands.filter((c) => c.tier === min);
}
