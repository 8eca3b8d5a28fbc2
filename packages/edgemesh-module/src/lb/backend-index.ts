import type { ServiceCatalog } from '../catalog/catalog';
import { portProtocol, type PortalSpec } from '../portal-table';
import { attachBackendTls, BACKEND_TLS_ANNOTATION, backendTlsOf } from '../proxy/tls/backend-tls';
import { DIRECT, resolveBackends, type Backend, type Networking, type Paths } from './backends';
import { attachPolicy, type ServicePolicies } from './service-policy';
import type { Here } from './topology';

/**
 * The backends of each service port, resolved from the catalog once and cached until a change may
 * have touched them: a proxied request costs one map lookup by portal key, nothing allocated.
 */
export class BackendIndex {
  /** Backends per portal key… */
  private readonly cache = new Map<string, Backend[]>();
  /** …and, per service, which portal keys are cached (to clear only those). */
  private readonly cachedPortsOf = new Map<string, Set<string>>();

  constructor(
    private readonly catalog: ServiceCatalog,
    private readonly networking: Networking,
    readonly paths: Paths = DIRECT,
    readonly here: Here = {},
    private readonly policies?: ServicePolicies,
    private readonly clusterDomain = 'cluster.local',
  ) {}

  /** Backends of a portal's service port. */
  of(spec: PortalSpec): readonly Backend[] {
    let b = this.cache.get(spec.key);
    if (b) return b;
    const svc = this.catalog.getService(spec.namespace, spec.service);
    const sp = svc?.spec?.ports?.find(
      (p) => p.port === spec.port && ((p.protocol ?? 'TCP') === 'UDP') === (spec.transport === 'UDP'),
    );
    b =
      svc && sp
        ? resolveBackends(this.catalog, svc, sp, this.networking, { paths: this.paths, here: this.here })
        : [];
    if (spec.endpoint) b = b.filter((x) => x.endpoint === spec.endpoint); // an endpoint's own VIP
    if (svc) attachPolicy(b, this.policies?.of(svc, this.catalog.destinationRules));
    const proto = sp && portProtocol(sp);
    if (
      svc &&
      (proto === 'https' || (proto === 'h2' && svc.metadata.annotations?.[BACKEND_TLS_ANNOTATION] === 'true'))
    )
      attachBackendTls(b, backendTlsOf(svc, this.clusterDomain));
    this.cache.set(spec.key, b);
    const skey = `${spec.namespace}/${spec.service}`;
    let keys = this.cachedPortsOf.get(skey);
    if (!keys) this.cachedPortsOf.set(skey, (keys = new Set()));
    keys.add(spec.key);
    return b;
  }

  /** The backends of these services (`<ns>/<name>`) may have changed. */
  invalidate(services: Iterable<string>): void {
    for (const s of services) {
      for (const k of this.cachedPortsOf.get(s) ?? []) this.cache.delete(k);
      this.cachedPortsOf.delete(s);
    }
  }
}
