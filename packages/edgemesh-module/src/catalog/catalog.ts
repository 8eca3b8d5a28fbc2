import type { MetaChange } from '@edgecore/metamanager/client';
import {
  SERVICE_NAME_LABEL,
  type DestinationRule,
  type EndpointSlice,
  type Endpoints,
  type NodeStatus,
  type Pod,
  type Service,
} from './types';
import { Compactor } from './compact';
import { flatKey, IndexMap } from './index-map';

/** What one batch of changes did, for a reconcile of only what it touched. */
export interface CatalogDelta {
  /** Services added, changed or deleted: the state before the batch and after it. */
  services: Map<string, { previous?: Service; current?: Service }>;
  /** Services whose backends may have changed (a pod their selector may pick, their Endpoints). */
  backends: Set<string>;
  /** Changes of a type the catalog keeps (service, endpoints, endpointslice, pod, …). */
  applied: number;
}

/** The suffix of the key of a slice converted from an Endpoints object (never a real slice's). */
const FROM_ENDPOINTS = '#endpoints';

/**
 * In-memory view of services, endpoints and pods (KubeEdge EdgeMesh kept these behind
 * MetaManager queries per request; a map lookup is what a DNS answer can afford).
 * Keys are `<namespace>/<name>`. Pods are indexed by their labels and services by their
 * selectors, so a change costs what it touches, not the size of the catalog.
 */
export class ServiceCatalog {
  readonly services = new Map<string, Service>();
  readonly pods = new Map<string, Pod>();
  readonly endpoints = new Map<string, Endpoints>();
  /**
   * EndpointSlices by `<ns>/<slice>`; an Endpoints object is converted on the way in (one slice
   * per subset, keyed `<ns>/<name>#endpoints<i>`), so the backends are read from slices alone.
   */
  readonly slices = new Map<string, EndpointSlice>();
  /** `<ns>/<service>` → keys of its slices (label `kubernetes.io/service-name`). */
  private readonly slicesByService = new IndexMap();
  /** DestinationRules by `<ns>/<name>` (per-service LB policy, standalone EdgeMesh's objects). */
  readonly destinationRules = new Map<string, DestinationRule>();
  /** Other nodes' statuses by node name (site, tunnel reachability). */
  readonly nodes = new Map<string, NodeStatus>();
  /** Namespaces that have at least one service (NODATA vs NXDOMAIN for `<ns>.svc.<domain>`). */
  private readonly nsCount = new Map<string, number>();
  /** `<ns>\0<label>=<value>` → keys of the pods with that label. */
  private readonly podsByLabel = new IndexMap();
  /** `<ns>\0<label>=<value>` → keys of the services whose selector has that pair. */
  private readonly servicesBySelector = new IndexMap();
  /** Services, slices and pods as kept: the fields EdgeMesh reads (compact.ts), or whole. */
  private readonly keep?: Compactor;

  /**
   * By default only what EdgeMesh reads is kept of each object. `whole`: every object as given (the
   * cloud's slice controller compares the slices it holds with the ones it computes, and holds the
   * objects it is given anyway).
   */
  constructor(options: { whole?: boolean } = {}) {
    if (!options.whole) this.keep = new Compactor();
  }

  static key(namespace: string, name: string): string {
    return `${namespace}/${name}`;
  }

  hasNamespace(ns: string): boolean {
    return (this.nsCount.get(ns) ?? 0) > 0;
  }

  getService(namespace: string, name: string): Service | undefined {
    return this.services.get(`${namespace}/${name}`);
  }

  /** Pods of `namespace` whose labels match every pair of `selector` (an empty one matches none). */
  *podsMatching(namespace: string, selector: Record<string, string> | undefined): Iterable<Pod> {
    if (!selector) return;
    let smallest: string | undefined;
    let fewest = Infinity;
    for (const k in selector) {
      const pair = pairKey(namespace, k, selector[k]);
      const n = this.podsByLabel.count(pair);
      if (!n) return; // a pair no pod has: nothing matches
      if (n < fewest) [smallest, fewest] = [pair, n];
    }
    if (smallest === undefined) return;
    for (const key of this.podsByLabel.values(smallest)) {
      const p = this.pods.get(key)!;
      if (matches(selector, p.metadata.labels)) yield p;
    }
  }

  /** The slices of a service (`<ns>/<name>`): its EndpointSlices and its converted Endpoints. */
  *slicesOf(serviceKey: string): Iterable<EndpointSlice> {
    for (const k of this.slicesByService.values(serviceKey)) yield this.slices.get(k)!;
  }

  /** Whether the service's backends come from slices (any, even empty) rather than from pods. */
  hasSlices(serviceKey: string): boolean {
    return this.slicesByService.has(serviceKey);
  }

  /** Replace the whole view (start-up load). */
  load(
    services: Service[],
    endpoints: Endpoints[],
    pods: Pod[],
    nodes: NodeStatus[] = [],
    slices: EndpointSlice[] = [],
    destinationRules: DestinationRule[] = [],
  ): void {
    this.services.clear();
    this.nodes.clear();
    for (const n of nodes) this.nodes.set(n.metadata.name, n);
    this.nsCount.clear();
    this.pods.clear();
    this.endpoints.clear();
    this.slices.clear();
    this.slicesByService.clear();
    this.destinationRules.clear();
    this.podsByLabel.clear();
    this.servicesBySelector.clear();
    const ns = (o: { metadata: { namespace?: string } }) => o.metadata.namespace ?? 'default';
    for (const s of services) this.putService(keyOf(s), this.service(s, ns(s)));
    for (const e of endpoints) this.putEndpoints(keyOf(e), e);
    for (const sl of slices) this.putSlice(keyOf(sl), this.slice(sl, ns(sl)));
    for (const d of destinationRules) this.destinationRules.set(keyOf(d), d);
    for (const p of pods) this.putPod(keyOf(p), this.pod(p, ns(p)));
  }

  /** Apply one change forwarded by MetaManager. Returns false for types the catalog ignores. */
  apply(ch: MetaChange): boolean {
    return this.applyBatch([ch]).applied > 0;
  }

  /** Apply changes in order; the delta says what a reconcile has to look at. */
  applyBatch(changes: Iterable<MetaChange>): CatalogDelta {
    const delta: CatalogDelta = { services: new Map(), backends: new Set(), applied: 0 };
    for (const ch of changes) {
      const key = flatKey(`${ch.namespace}/${ch.name}`);
      const del = ch.operation === 'delete';
      switch (ch.type) {
        case 'service': {
          const previous = this.services.get(key);
          const d = delta.services.get(key) ?? { previous };
          d.current = del ? undefined : this.service(ch.object as Service, ch.namespace);
          if (d.current) this.putService(key, d.current, previous);
          else if (previous) this.removeService(key, previous);
          if (d.previous || d.current) delta.services.set(key, d);
          delta.backends.add(key);
          break;
        }
        case 'endpoints':
          this.removeEndpoints(key);
          if (!del) this.putEndpoints(key, withNamespace(ch.object as Endpoints, ch.namespace));
          delta.backends.add(key);
          break;
        case 'endpointslice': {
          const previous = this.slices.get(key);
          const was = previous && serviceOfSlice(previous);
          if (was !== undefined) delta.backends.add(was);
          if (!del) {
            const sl = this.slice(ch.object as EndpointSlice, ch.namespace);
            const svc = serviceOfSlice(sl);
            this.putSlice(key, sl, svc, was);
            delta.backends.add(svc);
          } else if (previous) this.removeSlice(key, previous);
          break;
        }
        case 'destinationrule': {
          const previous = this.destinationRules.get(key);
          const dr = del ? undefined : withNamespace(ch.object as DestinationRule, ch.namespace);
          if (dr) this.destinationRules.set(key, dr);
          else this.destinationRules.delete(key);
          // the services it may name: its own name, and its host's
          for (const d of [previous, dr])
            if (d) for (const k of ruleTargets(d, ch.namespace)) delta.backends.add(k);
          break;
        }
        case 'pod': {
          const previous = this.pods.get(key);
          if (previous) this.servicesSelecting(ch.namespace, previous, delta.backends);
          const p = del ? undefined : this.pod(ch.object as Pod, ch.namespace);
          if (p) {
            this.putPod(key, p, previous);
            if (!previous || !sameLabels(previous.metadata.labels, p.metadata.labels))
              this.servicesSelecting(ch.namespace, p, delta.backends);
          } else if (previous) this.removePod(key, previous);
          break;
        }
        case 'nodestatus': {
          const previous = this.nodes.get(ch.name);
          const n = del ? undefined : (ch.object as NodeStatus);
          if (n) this.nodes.set(ch.name, n);
          else this.nodes.delete(ch.name);
          // a node's site decides the path to its backends (direct or tunnel), its zone their
          // tier: rare, so every service is looked at again; relays and addresses are read when a
          // stream is opened
          if (previous?.site !== n?.site || previous?.zone !== n?.zone)
            for (const k of this.services.keys()) delta.backends.add(k);
          break;
        }
        default:
          continue;
      }
      delta.applied++;
    }
    return delta;
  }

  /** A service as kept, in `ns` (the namespace of its key, whatever its metadata says). */
  private service(s: Service, ns: string): Service {
    return this.keep ? this.keep.service(s, ns) : withNamespace(s, ns);
  }

  private slice(sl: EndpointSlice, ns: string): EndpointSlice {
    return this.keep ? this.keep.slice(sl, ns) : withNamespace(sl, ns);
  }

  private pod(p: Pod, ns: string): Pod {
    return this.keep ? this.keep.pod(p, ns) : withNamespace(p, ns);
  }

  /** Add the services whose selector may pick this pod (a superset: each shares a label pair). */
  private servicesSelecting(ns: string, p: Pod, out: Set<string>): void {
    const labels = p.metadata.labels;
    for (const k in labels) {
      for (const s of this.servicesBySelector.values(pairKey(ns, k, labels[k]))) out.add(s);
    }
  }

  /*
   * An update overwrites the object where it is and changes the indexes by the difference only:
   * a delete and re-add of the same key leaves a deleted entry in a Map's table, and a map of
   * 10,000 keys that saw 6,400 such updates doubles its table for good (V8 grows a table whose
   * deleted entries are under half of it). A pod, a service, a slice also keep their place in
   * every index whose key did not change (backend order stays as it was).
   */

  /** `svc`: the slice's service key; `was`: its previous version's, when it had one. */
  private putSlice(key: string, sl: EndpointSlice, svc = serviceOfSlice(sl), was?: string): void {
    this.slices.set(key, sl);
    if (was === svc) return;
    if (was !== undefined) this.slicesByService.delete(was, key);
    this.slicesByService.add(svc, key);
  }

  private removeSlice(key: string, sl: EndpointSlice): void {
    this.slices.delete(key);
    this.slicesByService.delete(serviceOfSlice(sl), key);
  }

  /** An Endpoints object, kept, and converted into slices (one per subset). */
  private putEndpoints(key: string, e: Endpoints): void {
    this.endpoints.set(key, e);
    endpointsToSlices(e).forEach((sl, i) => this.putSlice(`${key}${FROM_ENDPOINTS}${i}`, sl));
  }

  private removeEndpoints(key: string): void {
    const e = this.endpoints.get(key);
    if (!e) return;
    this.endpoints.delete(key);
    for (let i = 0; i < (e.subsets?.length ?? 0); i++) {
      const k = `${key}${FROM_ENDPOINTS}${i}`;
      const sl = this.slices.get(k);
      if (sl) this.removeSlice(k, sl);
    }
  }

  private putService(key: string, s: Service, previous?: Service): void {
    const ns = s.metadata.namespace ?? 'default';
    this.services.set(key, s);
    if (!previous) this.nsCount.set(ns, (this.nsCount.get(ns) ?? 0) + 1);
    const sel = s.spec?.selector;
    const was = previous?.spec?.selector;
    for (const pair of pairsOnlyIn(ns, was, sel)) this.servicesBySelector.delete(pair, key);
    for (const pair of pairsOnlyIn(ns, sel, was)) this.servicesBySelector.add(pair, key);
  }

  private removeService(key: string, s: Service): void {
    this.services.delete(key);
    const ns = s.metadata.namespace ?? 'default';
    const n = (this.nsCount.get(ns) ?? 1) - 1;
    if (n > 0) this.nsCount.set(ns, n);
    else this.nsCount.delete(ns);
    const sel = s.spec?.selector;
    for (const k in sel) this.servicesBySelector.delete(pairKey(ns, k, sel[k]), key);
  }

  private putPod(key: string, p: Pod, previous?: Pod): void {
    this.pods.set(key, p);
    const ns = p.metadata.namespace ?? 'default';
    const labels = p.metadata.labels;
    const was = previous?.metadata.labels;
    for (const pair of pairsOnlyIn(ns, was, labels)) this.podsByLabel.delete(pair, key);
    for (const pair of pairsOnlyIn(ns, labels, was)) this.podsByLabel.add(pair, key);
  }

  private removePod(key: string, p: Pod): void {
    this.pods.delete(key);
    const ns = p.metadata.namespace ?? 'default';
    const labels = p.metadata.labels;
    for (const k in labels) this.podsByLabel.delete(pairKey(ns, k, labels[k]), key);
  }
}

/** Kubernetes label selection; a service without a selector has Endpoints only. */
export function matches(
  sel: Record<string, string> | undefined,
  labels: Record<string, string> | undefined,
): boolean {
  if (!sel || Object.keys(sel).length === 0) return false;
  for (const k in sel) if (labels?.[k] !== sel[k]) return false;
  return true;
}

function sameLabels(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  for (const k of ka) if (a![k] !== b?.[k]) return false;
  return true;
}

function pairKey(ns: string, k: string, v: string): string {
  return `${ns}\0${k}=${v}`;
}

/** The label pairs of `a` that `b` does not have, as index keys of `ns`. */
function* pairsOnlyIn(
  ns: string,
  a: Record<string, string> | undefined,
  b: Record<string, string> | undefined,
): Iterable<string> {
  for (const k in a) if (b?.[k] !== a[k]) yield pairKey(ns, k, a[k]);
}

/** `<ns>/<service>` of a slice (its `kubernetes.io/service-name` label; none: a key no service has). */
function serviceOfSlice(sl: EndpointSlice): string {
  return `${sl.metadata.namespace ?? 'default'}/${sl.metadata.labels?.[SERVICE_NAME_LABEL] ?? ''}`;
}

/**
 * The services a DestinationRule may apply to (`<ns>/<name>`): the one of its own name (standalone
 * EdgeMesh's rule) and the one its `spec.host` names (`svc`, `svc.ns`, `svc.ns.svc[.<domain>]`).
 */
export function ruleTargets(d: DestinationRule, ns: string): string[] {
  const out = [`${ns}/${d.metadata.name}`];
  const host = typeof d.spec?.host === 'string' ? d.spec.host.toLowerCase() : '';
  const [svc, hostNs] = host.split('.');
  if (svc) out.push(`${hostNs || ns}/${svc}`);
  return out;
}

/**
 * The EndpointSlices the mirroring controller would make of an Endpoints object: one per subset,
 * its `addresses` ready, its `notReadyAddresses` not.
 */
export function endpointsToSlices(e: Endpoints): EndpointSlice[] {
  const ns = e.metadata.namespace ?? 'default';
  return (e.subsets ?? []).map((sub, i) => ({
    kind: 'EndpointSlice',
    metadata: {
      name: `${e.metadata.name}-${i}`,
      namespace: ns,
      labels: { [SERVICE_NAME_LABEL]: e.metadata.name },
    },
    addressType: 'IPv4',
    ports: (sub.ports ?? []).map((p) => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP' })),
    endpoints: [
      ...(sub.addresses ?? []).map((a) => ({
        addresses: [a.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: a.nodeName,
        hostname: a.hostname,
      })),
      ...(sub.notReadyAddresses ?? []).map((a) => ({
        addresses: [a.ip],
        conditions: { ready: false, serving: false, terminating: false },
        nodeName: a.nodeName,
        hostname: a.hostname,
      })),
    ],
  }));
}

function keyOf(o: { metadata: { name: string; namespace?: string } }): string {
  return flatKey(`${o.metadata.namespace ?? 'default'}/${o.metadata.name}`);
}

function withNamespace<T extends { metadata: { namespace?: string } }>(o: T, ns: string): T {
  return o.metadata.namespace === ns ? o : { ...o, metadata: { ...o.metadata, namespace: ns } };
}
