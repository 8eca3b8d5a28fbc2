import type { MetaChange } from '@edgecore/metamanager/client';
import type { Endpoints, NodeStatus, Pod, Service } from './types';

/** What one batch of changes did, for a reconcile of only what it touched. */
export interface CatalogDelta {
  /** Services added, changed or deleted: the state before the batch and after it. */
  services: Map<string, { previous?: Service; current?: Service }>;
  /** Services whose backends may have changed (a pod their selector may pick, their Endpoints). */
  backends: Set<string>;
  /** Changes of a type the catalog keeps (service, endpoints, pod). */
  applied: number;
}

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
  /** Other nodes' statuses by node name (site, tunnel reachability). */
  readonly nodes = new Map<string, NodeStatus>();
  /** Namespaces that have at least one service (NODATA vs NXDOMAIN for `<ns>.svc.<domain>`). */
  private readonly nsCount = new Map<string, number>();
  /** `<ns>\0<label>=<value>` → keys of the pods with that label. */
  private readonly podsByLabel = new Map<string, Set<string>>();
  /** `<ns>\0<label>=<value>` → keys of the services whose selector has that pair. */
  private readonly servicesBySelector = new Map<string, Set<string>>();

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
    let smallest: Set<string> | undefined;
    for (const k in selector) {
      const set = this.podsByLabel.get(pairKey(namespace, k, selector[k]));
      if (!set) return; // a pair no pod has: nothing matches
      if (!smallest || set.size < smallest.size) smallest = set;
    }
    if (!smallest) return;
    for (const key of smallest) {
      const p = this.pods.get(key)!;
      if (matches(selector, p.metadata.labels)) yield p;
    }
  }

  /** Replace the whole view (start-up load). */
  load(services: Service[], endpoints: Endpoints[], pods: Pod[], nodes: NodeStatus[] = []): void {
    this.services.clear();
    this.nodes.clear();
    for (const n of nodes) this.nodes.set(n.metadata.name, n);
    this.nsCount.clear();
    this.pods.clear();
    this.endpoints.clear();
    this.podsByLabel.clear();
    this.servicesBySelector.clear();
    for (const s of services) this.putService(keyOf(s), s);
    for (const e of endpoints) this.endpoints.set(keyOf(e), e);
    for (const p of pods) this.putPod(keyOf(p), p);
  }

  /** Apply one change forwarded by MetaManager. Returns false for types the catalog ignores. */
  apply(ch: MetaChange): boolean {
    return this.applyBatch([ch]).applied > 0;
  }

  /** Apply changes in order; the delta says what a reconcile has to look at. */
  applyBatch(changes: Iterable<MetaChange>): CatalogDelta {
    const delta: CatalogDelta = { services: new Map(), backends: new Set(), applied: 0 };
    for (const ch of changes) {
      const key = `${ch.namespace}/${ch.name}`;
      const del = ch.operation === 'delete';
      switch (ch.type) {
        case 'service': {
          const previous = this.services.get(key);
          const d = delta.services.get(key) ?? { previous };
          if (previous) this.removeService(key, previous);
          d.current = del ? undefined : withNamespace(ch.object as Service, ch.namespace);
          if (d.current) this.putService(key, d.current);
          if (d.previous || d.current) delta.services.set(key, d);
          delta.backends.add(key);
          break;
        }
        case 'endpoints':
          if (del) this.endpoints.delete(key);
          else this.endpoints.set(key, withNamespace(ch.object as Endpoints, ch.namespace));
          delta.backends.add(key);
          break;
        case 'pod': {
          const previous = this.pods.get(key);
          if (previous) this.servicesSelecting(ch.namespace, previous, delta.backends);
          const p = del ? undefined : withNamespace(ch.object as Pod, ch.namespace);
          if (previous && p && sameLabels(previous.metadata.labels, p.metadata.labels)) {
            this.pods.set(key, p); // same place in every index: backend order stays as it was
            break;
          }
          if (previous) this.removePod(key, previous);
          if (p) {
            this.putPod(key, p);
            this.servicesSelecting(ch.namespace, p, delta.backends);
          }
          break;
        }
        case 'nodestatus': {
          const previous = this.nodes.get(ch.name);
          const n = del ? undefined : (ch.object as NodeStatus);
          if (n) this.nodes.set(ch.name, n);
          else this.nodes.delete(ch.name);
          // a node's site decides the path to its backends (direct or tunnel): rare, so every
          // service is looked at again; relays and addresses are read when a stream is opened
          if (previous?.site !== n?.site) for (const k of this.services.keys()) delta.backends.add(k);
          break;
        }
        default:
          continue;
      }
      delta.applied++;
    }
    return delta;
  }

  /** Add the services whose selector may pick this pod (a superset: each shares a label pair). */
  private servicesSelecting(ns: string, p: Pod, out: Set<string>): void {
    const labels = p.metadata.labels;
    for (const k in labels) {
      const set = this.servicesBySelector.get(pairKey(ns, k, labels[k]));
      if (set) for (const s of set) out.add(s);
    }
  }

  private putService(key: string, s: Service): void {
    const ns = s.metadata.namespace ?? 'default';
    this.services.set(key, s);
    this.nsCount.set(ns, (this.nsCount.get(ns) ?? 0) + 1);
    const sel = s.spec?.selector;
    for (const k in sel) addTo(this.servicesBySelector, pairKey(ns, k, sel[k]), key);
  }

  private removeService(key: string, s: Service): void {
    this.services.delete(key);
    const ns = s.metadata.namespace ?? 'default';
    const n = (this.nsCount.get(ns) ?? 1) - 1;
    if (n > 0) this.nsCount.set(ns, n);
    else this.nsCount.delete(ns);
    const sel = s.spec?.selector;
    for (const k in sel) removeFrom(this.servicesBySelector, pairKey(ns, k, sel[k]), key);
  }

  private putPod(key: string, p: Pod): void {
    this.pods.set(key, p);
    const ns = p.metadata.namespace ?? 'default';
    const labels = p.metadata.labels;
    for (const k in labels) addTo(this.podsByLabel, pairKey(ns, k, labels[k]), key);
  }

  private removePod(key: string, p: Pod): void {
    this.pods.delete(key);
    const ns = p.metadata.namespace ?? 'default';
    const labels = p.metadata.labels;
    for (const k in labels) removeFrom(this.podsByLabel, pairKey(ns, k, labels[k]), key);
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

function addTo(index: Map<string, Set<string>>, k: string, v: string): void {
  let s = index.get(k);
  if (!s) index.set(k, (s = new Set()));
  s.add(v);
}

function removeFrom(index: Map<string, Set<string>>, k: string, v: string): void {
  const s = index.get(k);
  if (!s) return;
  s.delete(v);
  if (!s.size) index.delete(k);
}

function keyOf(o: { metadata: { name: string; namespace?: string } }): string {
  return `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}

function withNamespace<T extends { metadata: { namespace?: string } }>(o: T, ns: string): T {
  return o.metadata.namespace === ns ? o : { ...o, metadata: { ...o.metadata, namespace: ns } };
}
