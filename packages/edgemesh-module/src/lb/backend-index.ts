import type { ServiceCatalog } from '../catalog/catalog';
import { IndexMap } from '../catalog/index-map';
import { portProtocol, type PortalSpec } from '../portal-table';
import { attachBackendTls, BACKEND_TLS_ANNOTATION, backendTlsOf } from '../proxy/tls/backend-tls';
import type { Service, ServicePort } from '../catalog/types';
import { DIRECT, hasTunneled, resolveBackends, type Backend, type Networking, type Paths } from './backends';
import { attachPolicy, type ServicePolicies } from './service-policy';
import type { Here } from './topology';

/**
 * The backends of each service port, resolved from the catalog once and cached until a change may
 * have touched them: a proxied request costs one map lookup by portal key, nothing allocated.
 */
export class BackendIndex {
  /**
   * Backends per portal key — or, for a port only counted (countPaths), its counts packed in one
   * number: all × COUNT + tunneled; STALE once its service changed…
   */
  private readonly cache = new Map<string, Backend[] | number>();
  /** …and, per service, which portal keys are cached (to clear only those). */
  private readonly cachedPortsOf = new IndexMap();
  private changes = 0;

  constructor(
    private readonly catalog: ServiceCatalog,
    private readonly networking: Networking,
    readonly paths: Paths = DIRECT,
    readonly here: Here = {},
    private readonly policies?: ServicePolicies,
    private readonly clusterDomain = 'cluster.local',
  ) {}

  /**
   * Bumped whenever a port's backends may differ from what was last resolved or counted (a list
   * resolved afresh, an invalidation): what a count over every port may cache by.
   */
  get generation(): number {
    return this.changes;
  }

  /** Backends of a portal's service port. */
  of(spec: PortalSpec): readonly Backend[] {
    const have = this.cache.get(spec.key);
    if (typeof have === 'object') return have;
    const svc = this.catalog.getService(spec.namespace, spec.service);
    const sp = svc && portOf(svc, spec);
    const b = this.resolve(spec, svc, sp);
    if (svc) attachPolicy(b, this.policies?.of(svc, this.catalog.destinationRules));
    const proto = sp && portProtocol(sp);
    if (
      svc &&
      (proto === 'https' || (proto === 'h2' && svc.metadata.annotations?.[BACKEND_TLS_ANNOTATION] === 'true'))
    )
      attachBackendTls(b, backendTlsOf(svc, this.clusterDomain));
    this.cache.set(spec.key, b);
    this.cachedPortsOf.add(spec.serviceKey, spec.key);
    this.changes++;
    return b;
  }

  /**
   * Add a portal's backends reached directly and through the tunnel to `into` — from its list when
   * one is cached, else from a count remembered until the service changes: the `/metrics` gauge
   * counts every service's backends without holding the list of every idle one (5 MiB at 10,000
   * services).
   */
  countPaths(spec: PortalSpec, into: { direct: number; tunnel: number }): void {
    let have = this.cache.get(spec.key);
    let tunnel: number;
    let all: number;
    if (typeof have === 'object') {
      all = have.length;
      tunnel = hasTunneled(have) ? have.filter((b) => b.tunnel).length : 0;
    } else {
      if (have === undefined || have === STALE) {
        const svc = this.catalog.getService(spec.namespace, spec.service);
        const b = this.resolve(spec, svc, svc && portOf(svc, spec));
        have = b.length * COUNT + b.filter((x) => x.tunnel).length;
        this.cache.set(spec.key, have);
        this.cachedPortsOf.add(spec.serviceKey, spec.key);
      }
      all = Math.floor(have / COUNT);
      tunnel = have % COUNT;
    }
    into.direct += all - tunnel;
    into.tunnel += tunnel;
  }

  /** The service port's backends from the catalog (nothing attached). */
  private resolve(spec: PortalSpec, svc: Service | undefined, sp: ServicePort | undefined): Backend[] {
    const b =
      svc && sp
        ? resolveBackends(this.catalog, svc, sp, this.networking, { paths: this.paths, here: this.here })
        : [];
    return spec.endpoint ? b.filter((x) => x.endpoint === spec.endpoint) : b; // an endpoint's own VIP
  }

  /**
   * The backends of these services (`<ns>/<name>`) may have changed. A service that is still
   * there keeps its entries, marked stale (resolved again when next asked for): a Map whose keys
   * are deleted and added again grows its table for good (V8 doubles a table whose deleted
   * entries are under half of it — +0.9 MiB at 10,000 services after a churn). A gone service's
   * entries go; so do those of a port a live service dropped, once the service goes.
   */
  invalidate(services: Iterable<string>): void {
    for (const s of services) {
      if (!this.cachedPortsOf.has(s)) continue; // nothing of it resolved or counted
      this.changes++;
      if (this.catalog.services.has(s)) {
        for (const k of this.cachedPortsOf.values(s)) this.cache.set(k, STALE);
        continue;
      }
      for (const k of this.cachedPortsOf.values(s)) this.cache.delete(k);
      this.cachedPortsOf.deleteKey(s);
    }
  }
}

/** Packs a port's backend count with its tunneled count (fewer than this many backends per port). */
const COUNT = 2 ** 20;
/** A cached port whose service changed since. */
const STALE = -1;

/** The service's port a portal serves (its number and transport). */
function portOf(svc: Service, spec: PortalSpec): ServicePort | undefined {
  return svc.spec?.ports?.find(
    (p) => p.port === spec.port && ((p.protocol ?? 'TCP') === 'UDP') === (spec.transport === 'UDP'),
  );
}
