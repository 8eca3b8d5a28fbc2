import {
  READ_SERVICE_LABELS,
  SERVICE_NAME_LABEL,
  type EndpointSlice,
  type Pod,
  type Service,
  type SliceEndpoint,
} from './types';

/**
 * The annotation prefixes EdgeMesh reads (`edgecore.io/…` policies, `service.kubernetes.io/…`
 * topology): a service keeps these and drops the rest — `kubectl.kubernetes.io/last-applied-configuration`
 * alone is a copy of the whole object. A new annotation EdgeMesh reads must fall under one of them.
 */
export const READ_ANNOTATION_PREFIXES = ['edgecore.io/', 'service.kubernetes.io/'] as const;

/** Distinct strings and shapes remembered at most (names of nodes, namespaces, zones: a few hundred). */
const REMEMBERED = 10_000;

/**
 * What the catalog keeps of an object: the fields EdgeMesh reads (`types.ts`, nothing else — no
 * managedFields, no container specs, no status but the pod's phase, addresses and Ready
 * condition), with one copy of what many objects repeat — a node name, a namespace, a zone, a
 * phase; a slice's conditions; a port list every replica or slice shares (frozen: nobody may
 * change a shared one). A node holding 10,000 services, their slices and its pods spent ~950 bytes
 * per object on the parsed JSON of even minimal objects; real ones carry kilobytes EdgeMesh never
 * reads. MetaManager keeps the objects whole.
 */
export class Compactor {
  private readonly strings = new Map<string, string>();
  /**
   * Endpoint addresses apart (node IPs under host networking, where every endpoint on a node has
   * its address; one per pod under container networking), and an endpoint's one-address list.
   */
  private readonly addresses = new Map<string, string>();
  private readonly addressLists = new Map<string, readonly string[]>();
  private readonly shapes = new Map<string, unknown>();
  /** Pod specs by their containers (one copy), node name, hostNetwork (see podSpec). */
  private readonly podSpecs = new Map<unknown, Map<unknown, Map<unknown, Pod['spec']>>>();
  private podSpecCount = 0;
  /** A pod's Ready condition by its status (one copy of `[{ type: 'Ready', status }]`). */
  private readonly readyConditions = new Map<
    unknown,
    NonNullable<NonNullable<Pod['status']>['conditions']>
  >();

  /** One copy of a string many objects repeat (past REMEMBERED distinct ones, the string itself). */
  str<T extends string | undefined>(s: T, seen = this.strings): T {
    if (s === undefined) return s;
    const have = seen.get(s);
    if (have !== undefined) return have as T;
    if (seen.size < REMEMBERED) seen.set(s, s);
    return s;
  }

  /**
   * One frozen copy of a small JSON structure many objects repeat (a port list, a slice endpoint's
   * conditions), made from its JSON: what it was made of is never frozen or kept.
   */
  shape<T>(value: T): T {
    const key = JSON.stringify(value);
    let have = this.shapes.get(key);
    if (have === undefined) {
      have = deepFreeze(JSON.parse(key));
      if (this.shapes.size < REMEMBERED) this.shapes.set(key, have);
    }
    return have as T;
  }

  // Objects are made as literals with their usual fields (an absent one undefined): a field added
  // after a literal is made goes to a separate property array (~40 bytes more per object).

  service(o: Service, namespace: string): Service {
    const m = o.metadata;
    let spec: Service['spec'];
    if (o.spec) {
      spec = pick(o.spec, SERVICE_SPEC);
      if (spec.ports) spec.ports = this.shape(spec.ports.map((p) => pick(p, SERVICE_PORT)));
      if (spec.sessionAffinityConfig) spec.sessionAffinityConfig = this.shape(spec.sessionAffinityConfig);
    }
    return {
      metadata: {
        name: m.name,
        namespace: this.str(namespace),
        labels: readLabels(m.labels),
        annotations: readAnnotations(m.annotations),
        resourceVersion: m.resourceVersion,
      },
      spec,
    };
  }

  slice(o: EndpointSlice, namespace: string): EndpointSlice {
    let packed: unknown[] | undefined;
    if (o.endpoints) {
      packed = new Array<unknown>(o.endpoints.length * ENDPOINT_FIELDS);
      o.endpoints.forEach((e, i) => this.endpoint(e, packed!, i * ENDPOINT_FIELDS));
    }
    return new KeptSlice(
      o.metadata.name,
      this.str(namespace),
      o.metadata.labels?.[SERVICE_NAME_LABEL],
      this.str(o.addressType),
      packed,
      o.ports && this.shape(o.ports.map((p) => pick(p, SLICE_PORT))),
    );
  }

  /** An endpoint's fields into its slice's array at `at` (see KeptEndpoint). */
  private endpoint(e: SliceEndpoint, into: unknown[], at: number): void {
    into[at] = this.addressList(e.addresses);
    into[at + 1] = e.conditions && this.shape(pick(e.conditions, CONDITIONS));
    into[at + 2] = this.str(e.nodeName);
    if (e.zone === undefined && !e.hints && e.hostname === undefined) {
      into[at + 3] = NO_COMMON; // the usual endpoint: nothing to look up
      return;
    }
    const common: EndpointCommon = { zone: this.str(e.zone), hints: e.hints && this.shape(e.hints) };
    // a hostname is the endpoint's own (a StatefulSet's pod): its part is not shared
    into[at + 3] =
      e.hostname === undefined ? this.shape(common) : Object.freeze({ ...common, hostname: e.hostname });
  }

  /** An endpoint's addresses: a one-address list shared by every endpoint at that address. */
  private addressList(list: string[]): string[] {
    if (list.length !== 1) return list.map((a) => this.str(a, this.addresses));
    let have = this.addressLists.get(list[0]);
    if (have === undefined) {
      have = Object.freeze([this.str(list[0], this.addresses)]);
      if (this.addressLists.size < REMEMBERED) this.addressLists.set(list[0], have);
    }
    return have as string[];
  }

  pod(o: Pod, namespace: string): Pod {
    const m = o.metadata;
    let spec: Pod['spec'];
    if (o.spec) {
      spec = pick(o.spec, POD_SPEC);
      if (spec.nodeName !== undefined) spec.nodeName = this.str(spec.nodeName);
      // of the containers, their ports (with names: a named targetPort) — every replica's are alike
      if (spec.containers)
        spec.containers = this.shape(
          spec.containers.map((c) => ({ ports: c.ports?.map((p) => pick(p, CONTAINER_PORT)) })),
        );
      // and so is the whole spec of the pods a node runs from one template, unless it names the
      // pod itself (a StatefulSet's hostname: not remembered, it is the pod's alone)
      if (spec.hostname === undefined && spec.subdomain === undefined) spec = this.podSpec(spec);
    }
    const st = o.status;
    const ready = st?.conditions?.find((c) => c.type === 'Ready');
    return {
      metadata: {
        name: m.name,
        namespace: this.str(namespace),
        labels: m.labels,
        deletionTimestamp: m.deletionTimestamp,
      },
      spec,
      status: st && {
        phase: this.str(st.phase),
        hostIP: this.str(st.hostIP, this.addresses),
        podIP: st.podIP,
        conditions: ready && this.readyCondition(ready.status),
      },
    };
  }

  /**
   * One frozen copy of a pod spec without a hostname or subdomain (nodeName, hostNetwork and the
   * containers' ports, already one copy): found by those values themselves — what `shape` does,
   * without making the spec's JSON for each pod (a third of what the cloud's slice controller
   * spent on a pod it was told of).
   */
  private podSpec(spec: NonNullable<Pod['spec']>): NonNullable<Pod['spec']> {
    const { nodeName: n, hostNetwork: h } = spec;
    // anything but a name and a flag there (a malformed pod): found by its JSON, as shape() does
    if ((n !== undefined && typeof n !== 'string') || (h !== undefined && typeof h !== 'boolean'))
      return this.shape(spec);
    const byNode = this.podSpecs.get(spec.containers) ?? new Map<unknown, Map<unknown, Pod['spec']>>();
    const byHostNetwork = byNode.get(spec.nodeName) ?? new Map<unknown, Pod['spec']>();
    let have = byHostNetwork.get(spec.hostNetwork);
    if (have === undefined) {
      have = Object.freeze(spec);
      if (this.podSpecCount < REMEMBERED) {
        this.podSpecCount++;
        byHostNetwork.set(spec.hostNetwork, have);
        byNode.set(spec.nodeName, byHostNetwork);
        this.podSpecs.set(spec.containers, byNode);
      }
    }
    return have!;
  }

  /** The one copy of a pod's Ready condition with this status. */
  private readyCondition(status: unknown): NonNullable<NonNullable<Pod['status']>['conditions']> {
    if (status !== undefined && typeof status !== 'string')
      return this.shape([{ type: 'Ready', status: status as string }]); // malformed: not remembered by it
    let have = this.readyConditions.get(status);
    if (have === undefined) {
      have = this.shape([{ type: 'Ready', status: status as string }]);
      if (this.readyConditions.size < REMEMBERED) this.readyConditions.set(status, have);
    }
    return have;
  }
}

/** What many endpoints of a slice have alike: their zone, their hints (and a rare hostname). */
interface EndpointCommon {
  zone?: string;
  hints?: SliceEndpoint['hints'];
  hostname?: string;
}

/** A kept endpoint's fields in its slice's array: addresses, conditions, node, shared part. */
const ENDPOINT_FIELDS = 4;
/** The shared part of an endpoint with no zone, hints or hostname. */
const NO_COMMON: Readonly<EndpointCommon> = Object.freeze({});

/**
 * A slice as the catalog keeps it: six fields, its endpoints packed in one array (four fields
 * each: addresses, conditions, node, and a frozen part the endpoints alike share — zone, hints),
 * its `metadata` and `endpoints` made when read. A node holding 10,000 services keeps ~10,000
 * slices of ~50,000 endpoints, and Node has no pointer compression (an object's header is 24
 * bytes, a field 8): an object per endpoint, per slice's metadata and labels was ~60 % of their
 * memory. No `targetRef`: nothing on a node reads which pod an address is. Read-only, like every
 * shared part of a kept object; `toJSON` gives the plain slice.
 */
class KeptSlice implements EndpointSlice {
  constructor(
    private readonly name: string,
    private readonly ns: string,
    private readonly service: string | undefined,
    readonly addressType: string | undefined,
    private readonly packed: readonly unknown[] | undefined,
    readonly ports: EndpointSlice['ports'],
  ) {}

  get metadata(): EndpointSlice['metadata'] {
    const labels = this.service !== undefined ? { [SERVICE_NAME_LABEL]: this.service } : undefined;
    return { name: this.name, namespace: this.ns, labels };
  }

  /** Its endpoints, made from the packed fields: a new list at each read (read it once a pass). */
  get endpoints(): SliceEndpoint[] | undefined {
    const p = this.packed;
    if (!p) return undefined;
    const out = new Array<SliceEndpoint>(p.length / ENDPOINT_FIELDS);
    for (let i = 0, at = 0; i < out.length; i++, at += ENDPOINT_FIELDS)
      out[i] = new KeptEndpoint(
        p[at] as string[],
        p[at + 1] as SliceEndpoint['conditions'],
        p[at + 2] as string | undefined,
        p[at + 3] as Readonly<EndpointCommon>,
      );
    return out;
  }

  toJSON(): EndpointSlice {
    const { metadata, addressType, endpoints, ports } = this;
    return { metadata, addressType, endpoints, ports };
  }
}

/** A kept slice's endpoint as read (see KeptSlice). */
class KeptEndpoint implements SliceEndpoint {
  constructor(
    readonly addresses: string[],
    readonly conditions: SliceEndpoint['conditions'],
    readonly nodeName: string | undefined,
    private readonly common: Readonly<EndpointCommon>,
  ) {}

  get hostname(): string | undefined {
    return this.common.hostname;
  }

  get zone(): string | undefined {
    return this.common.zone;
  }

  get hints(): SliceEndpoint['hints'] {
    return this.common.hints;
  }

  toJSON(): SliceEndpoint {
    const { addresses, conditions, hostname, nodeName, zone, hints } = this;
    return { addresses, conditions, hostname, nodeName, zone, hints };
  }
}

type SpecOf<T extends { spec?: object }> = NonNullable<T['spec']>;
const SERVICE_SPEC: (keyof SpecOf<Service>)[] = [
  'clusterIP',
  'selector',
  'ports',
  'type',
  'externalName',
  'publishNotReadyAddresses',
  'internalTrafficPolicy',
  'trafficDistribution',
  'sessionAffinity',
  'sessionAffinityConfig',
];
const SERVICE_PORT = ['name', 'port', 'protocol', 'targetPort', 'appProtocol'] as const;
const SLICE_PORT = ['name', 'port', 'protocol', 'appProtocol'] as const;
const CONDITIONS = ['ready', 'serving', 'terminating'] as const;
const POD_SPEC: (keyof SpecOf<Pod>)[] = ['nodeName', 'hostNetwork', 'hostname', 'subdomain', 'containers'];
const CONTAINER_PORT = ['name', 'containerPort', 'hostPort', 'protocol'] as const;

/** The service labels EdgeMesh reads, or undefined when there are none. */
function readLabels(l: Record<string, string> | undefined): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const k of READ_SERVICE_LABELS) if (l?.[k] !== undefined) (out ??= {})[k] = l[k];
  return out;
}

/** The annotations EdgeMesh reads, or undefined when there are none. */
function readAnnotations(a: Record<string, string> | undefined): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const k in a) if (READ_ANNOTATION_PREFIXES.some((p) => k.startsWith(p))) (out ??= {})[k] = a[k];
  return out;
}

/**
 * The named fields of `o` that are set, in that order: a new object (built by assignment, not by
 * deleting from a copy — a delete turns a V8 object into a slower, bigger dictionary).
 */
function pick<T extends object, K extends keyof T>(o: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
