import {
  podConditions,
  podEndpoint,
  SERVICE_NAME_LABEL,
  ServiceCatalog,
  type EndpointSlice,
  type Networking,
  type Pod,
  type Service,
  type SliceEndpoint,
} from '@edgecore/edgemesh-module';
import { hash } from 'node:crypto';
import type { PlannedObject } from './manifest';

/** The label on the slices edgectl manages (it never touches another's). */
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'edgectl.edgecore.io';
/** Endpoints per slice (kube-controller-manager's --max-endpoints-per-slice default). */
export const MAX_ENDPOINTS_PER_SLICE = 100;

type Key = string; // `<ns>/<name>`

/**
 * The endpoint-slice controller on the cloud side: from the services and pods edgectl publishes,
 * the EndpointSlices of each service with a selector — so a node needs services and slices, not the
 * pods of other nodes. It starts from the broker's retained state and answers, after a batch of
 * applies and deletes, which slices to publish and which to delete (only those that changed: a
 * slice whose content is the same is not published again).
 *
 * Endpoints are grouped by their ports (a named `targetPort` may resolve differently per pod), at
 * most 100 per slice, each with `ready`/`serving`/`terminating`, `nodeName`, `zone` (its node's, from
 * the nodes' published status), `hostname` (a pod whose `subdomain` is the service) and a
 * `targetRef` to its pod. An address is where the pod serves other nodes (`podEndpoint`, the rule a
 * node applies to pods itself). A service whose selector picks nothing has one empty slice: a node
 * knows it has no endpoints, rather than guessing from pods.
 */
export class SliceController {
  /**
   * Services, pods and the managed slices, with the catalog's indexes (label → pods, selector →
   * services), each object as given: edgectl holds them anyway for the length of an apply (the
   * documents it publishes, the retained state it read), so a compact copy of each, as a node
   * keeps, only added to them — 50,000 pods with image, env and resources took 36 MiB of heap
   * with compact copies and 27 MiB without, and noting one cost 12 µs instead of 15.
   */
  private readonly catalog = new ServiceCatalog({ whole: true });
  private readonly dirty = new Set<Key>();

  constructor(
    private readonly networking: Networking = 'host',
    /** Node name → its zone (`topology.kubernetes.io/zone`), as the nodes publish it. */
    private readonly zones: ReadonlyMap<string, string> = new Map(),
  ) {}

  /** The retained state: services, pods, and slices (only managed ones are kept). */
  load(services: Service[], pods: Pod[], slices: EndpointSlice[]): void {
    const managed = slices.filter((sl) => sl.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY);
    this.catalog.load(services, [], pods, [], managed);
    this.dirty.clear();
  }

  /** A planned apply or delete of a service or pod (others are not the controller's business). */
  note(o: PlannedObject, deleted: boolean): void {
    if (o.type !== 'service' && o.type !== 'pod') return;
    const d = this.catalog.applyBatch([
      {
        operation: deleted ? 'delete' : 'update',
        type: o.type,
        namespace: o.namespace,
        name: o.name,
        object: o.object,
      },
    ]);
    // the services whose selector may pick the pod (before and after), or the service itself
    for (const k of d.backends) this.dirty.add(k);
  }

  /**
   * The slices to publish and to delete for what changed since load() or the last plan(); the
   * controller's state then holds them as published.
   */
  plan(): { apply: PlannedObject[]; remove: PlannedObject[] } {
    const apply: PlannedObject[] = [];
    const remove: PlannedObject[] = [];
    const slice = (operation: 'update' | 'delete', sl: EndpointSlice): void => {
      const namespace = sl.metadata.namespace ?? 'default';
      const o = { type: 'endpointslice' as const, namespace, name: sl.metadata.name, object: sl };
      (operation === 'update' ? apply : remove).push(o);
      this.catalog.applyBatch([{ operation, type: o.type, namespace, name: o.name, object: sl }]);
    };
    for (const skey of this.dirty) {
      const svc = this.catalog.services.get(skey);
      const want = svc?.spec?.selector && svc.spec.type !== 'ExternalName' ? this.desired(svc) : [];
      const have = new Map([...this.catalog.slicesOf(skey)].map((sl) => [sl.metadata.name, sl]));
      for (const sl of want) {
        const old = have.get(sl.metadata.name);
        have.delete(sl.metadata.name);
        if (!old || !sameSlice(old, sl)) slice('update', sl);
      }
      for (const old of have.values()) slice('delete', old);
    }
    this.dirty.clear();
    return { apply, remove };
  }

  /** The slices a service should have now. */
  private desired(svc: Service): EndpointSlice[] {
    const ns = svc.metadata.namespace ?? 'default';
    const name = svc.metadata.name;
    const ports = (svc.spec?.ports ?? []).filter((p) => p.protocol !== 'SCTP');
    const notReadyToo = !!svc.spec?.publishNotReadyAddresses;
    // endpoints grouped by their port mapping
    const groups = new Map<string, { ports: EndpointSlice['ports']; endpoints: SliceEndpoint[] }>();
    for (const pod of this.catalog.podsMatching(ns, svc.spec?.selector)) {
      const phase = pod.status?.phase;
      if (phase === 'Succeeded' || phase === 'Failed') continue;
      let host: string | undefined;
      const mapped: NonNullable<EndpointSlice['ports']> = [];
      for (const sp of ports) {
        const at = podEndpoint(pod, sp, this.networking);
        if (!at || (host !== undefined && at.host !== host)) continue;
        host = at.host;
        mapped.push({
          name: sp.name ?? '',
          port: at.port,
          protocol: sp.protocol ?? 'TCP',
          appProtocol: sp.appProtocol,
        });
      }
      if (host === undefined) continue;
      const c = podConditions(pod);
      const ready = c.ready || (notReadyToo && !c.terminating);
      const node = pod.spec?.nodeName;
      // built without undefined fields, in the order a slice read back from JSON has them, so
      // that an unchanged slice compares equal (sameSlice) without a JSON round trip per endpoint
      const e: SliceEndpoint = {
        addresses: [host],
        conditions: { ready, serving: c.serving || ready, terminating: c.terminating },
        ...(node !== undefined ? { nodeName: node } : {}),
        targetRef: { kind: 'Pod', name: pod.metadata.name, namespace: ns },
      };
      const zone = node ? this.zones.get(node) : undefined;
      if (zone) e.zone = zone;
      if (pod.spec?.subdomain === name && pod.spec.hostname) e.hostname = pod.spec.hostname;
      const gk = groupKey(mapped);
      let g = groups.get(gk);
      if (!g) groups.set(gk, (g = { ports: mapped, endpoints: [] }));
      g.endpoints.push(e);
    }
    const out: EndpointSlice[] = [];
    const slice = (suffix: string, p: EndpointSlice['ports'], endpoints: SliceEndpoint[]): EndpointSlice =>
      ({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: `${name}-${suffix}`,
          namespace: ns,
          labels: { [SERVICE_NAME_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY },
        },
        addressType: 'IPv4',
        endpoints,
        ports: p,
      }) as EndpointSlice;
    // in the order of their ports' JSON, each slice named after a hash of it (names stay what
    // they were whatever the grouping key)
    const bySig = [...groups.values()].map((g) => [JSON.stringify(g.ports), g] as const);
    for (const [sig, g] of bySig.sort(([a], [b]) => (a < b ? -1 : 1))) {
      g.endpoints.sort((a, b) => (a.targetRef!.name! < b.targetRef!.name! ? -1 : 1));
      const h = hash('sha256', sig, 'hex').slice(0, 5);
      for (let i = 0; i * MAX_ENDPOINTS_PER_SLICE < g.endpoints.length; i++)
        out.push(
          slice(
            `${h}${i ? `-${i}` : ''}`,
            g.ports,
            g.endpoints.slice(i * MAX_ENDPOINTS_PER_SLICE, (i + 1) * MAX_ENDPOINTS_PER_SLICE),
          ),
        );
    }
    if (!out.length)
      out.push(
        slice(
          'empty',
          ports.map((sp) => ({ name: sp.name ?? '', port: undefined, protocol: sp.protocol ?? 'TCP' })),
          [],
        ),
      );
    return out;
  }
}

/**
 * An endpoint's port mapping as a key for grouping: the same mappings, the same key, and two
 * different ones never the same (each string after its length, an absent appProtocol apart from
 * an empty one) — what its JSON would be as a key, cheaper to make per pod.
 */
function groupKey(mapped: NonNullable<EndpointSlice['ports']>): string {
  let k = '';
  for (const p of mapped) {
    const { name = '', protocol = '', appProtocol: ap } = p; // desired() sets name and protocol
    k += `${name.length}:${name}${p.port}/${protocol.length}:${protocol}${ap === undefined ? '-' : `${ap.length}:${ap}`};`;
  }
  return k;
}

/** The same endpoints and ports (the published one carries a resourceVersion; the rest is ours). */
function sameSlice(a: EndpointSlice, b: EndpointSlice): boolean {
  return (
    JSON.stringify([a.endpoints ?? [], a.ports ?? []]) === JSON.stringify([b.endpoints ?? [], b.ports ?? []])
  );
}
