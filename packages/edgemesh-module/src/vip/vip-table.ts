import type { Logger } from '@edgecore/beehive';
import type { MetaClient } from '@edgecore/metamanager/client';
import { isIPv4 } from 'node:net';
import { isExternalName, type Service } from '../catalog/types';
import { VipAllocator } from './vip-allocator';

/** A service's ClusterIP when it is a real address (not `None`, not empty). */
export function isRealIP(ip: string | undefined): ip is string {
  return !!ip && ip !== 'None' && isIPv4(ip);
}

/** A headless service (no real ClusterIP, not an alias): its endpoints have names of their own. */
export function isHeadless(s: Service | undefined): boolean {
  return !!s && !isRealIP(s.spec?.clusterIP) && !isExternalName(s);
}

/** The allocation key of an endpoint's VIP: `<ns>/<svc>.<label>` (a service name has no dot). */
const endpointKey = (service: string, label: string): string => `${service}.${label}`;

/**
 * The VIP of every service, both directions: allocated from the pool (persisted by the
 * allocator) or the service's real ClusterIP (reserved in the pool when inside it). DNS answers
 * and PTRs from it, portals and the explicit proxy find services by it.
 */
export class VipTable {
  readonly allocator: VipAllocator;
  private readonly vipByService = new Map<string, string>();
  /**
   * The other direction for a real ClusterIP outside the pool only: a pool address's holder is
   * the allocator's (allocated or reserved), checked against `vipByService` — a second map of
   * every VIP was 0.4 MiB at 10,000 services.
   */
  private readonly outsideByVip = new Map<string, string>();
  /** Endpoint VIPs of headless services (allocated when a name of theirs is first asked for). */
  private readonly endpointVips = new Map<string, Map<string, string>>();
  private readonly endpointByVip = new Map<string, { service: string; label: string }>();

  constructor(
    subNet: string,
    meta: MetaClient,
    private readonly log: Logger,
  ) {
    this.allocator = new VipAllocator(subNet, meta);
  }

  /** The VIP of `<ns>/<name>`, if it has one. */
  vipOf(serviceKey: string): string | undefined {
    return this.vipByService.get(serviceKey);
  }

  /** The service key of a VIP (not an endpoint's: see endpointOf). */
  serviceOf(ip: string): string | undefined {
    const holder = this.allocator.serviceOf(ip);
    if (holder !== undefined) return this.vipByService.get(holder) === ip ? holder : undefined;
    return this.outsideByVip.get(ip);
  }

  /** Whether `ip` lies in the pool (a free pool address is ours: PTR NXDOMAIN, not forwarded). */
  inPool(ip: string): boolean {
    return this.allocator.contains(ip);
  }

  get allocated(): number {
    return this.allocator.allocated;
  }

  /**
   * At start: the persisted allocations, then a VIP for each of `services`, then the allocations
   * of services that are gone released.
   */
  async load(services: [string, Service][]): Promise<void> {
    const dropped = await this.allocator.load();
    if (dropped.length) this.log.warn({ dropped }, 'ignored persisted VIPs outside the pool or duplicated');
    await this.ensure(services);
    // endpoint VIPs are not kept across a restart: the first query of a name allocates again
    const live = new Set(services.flatMap(([k, s]) => (isExternalName(s) ? [] : [k])));
    const orphans = this.allocator.services().filter((k) => !live.has(k));
    await this.allocator.releaseMany(orphans);
  }

  /** VIPs for these services: real ClusterIPs reserved, the rest allocated in one pass. */
  async ensure(services: [string, Service][]): Promise<void> {
    const alloc: string[] = [];
    for (const [key, s] of services) {
      if (isExternalName(s)) continue; // an alias: no VIP
      const cip = s.spec?.clusterIP;
      if (!isRealIP(cip)) {
        alloc.push(key);
        continue;
      }
      try {
        this.allocator.reserve(key, cip);
        this.bind(key, cip);
      } catch (e) {
        this.noVip(key, e);
      }
    }
    if (!alloc.length) return;
    let got: (string | Error)[];
    try {
      got = await this.allocator.allocateMany(alloc);
    } catch (e) {
      for (const key of alloc) this.noVip(key, e);
      return;
    }
    got.forEach((ip, i) => (ip instanceof Error ? this.noVip(alloc[i], ip) : this.bind(alloc[i], ip)));
  }

  /**
   * Services changed or went (a batch's): `current` undefined or an ExternalName alias → its VIP
   * goes (its allocation released); a ClusterIP that changed → the old VIP goes (released when
   * the new one is real). The releases are written in one request. Returns the services that
   * still need a VIP.
   */
  async updateMany(
    changes: Iterable<[string, { previous?: Service; current?: Service }]>,
  ): Promise<[string, Service][]> {
    const need: [string, Service][] = [];
    const release: string[] = [];
    for (const [key, { previous, current }] of changes) {
      if (!current || isExternalName(current)) {
        this.drop(key);
        release.push(key);
        continue;
      }
      if (previous && previous.spec?.clusterIP !== current.spec?.clusterIP) {
        this.drop(key);
        if (isRealIP(current.spec?.clusterIP)) release.push(key);
      }
      need.push([key, current]);
    }
    await this.allocator.releaseMany(release);
    return need;
  }

  /** The VIP of an endpoint of a headless service, if it has one. */
  endpointVip(service: string, label: string): string | undefined {
    return this.endpointVips.get(service)?.get(label);
  }

  /** The endpoint a VIP belongs to. */
  endpointOf(ip: string): { service: string; label: string } | undefined {
    return this.endpointByVip.get(ip);
  }

  /** The endpoint VIPs of a service, by label. */
  endpointsOf(service: string): ReadonlyMap<string, string> {
    return this.endpointVips.get(service) ?? new Map();
  }

  /** VIPs for these endpoints of `service` (allocated and persisted like a service's). */
  async ensureEndpoints(service: string, labels: string[]): Promise<void> {
    const want = labels.filter((l) => !this.endpointVip(service, l));
    if (!want.length) return;
    const got = await this.allocator.allocateMany(want.map((l) => endpointKey(service, l)));
    got.forEach((ip, i) => {
      if (ip instanceof Error) return this.noVip(endpointKey(service, want[i]), ip);
      let m = this.endpointVips.get(service);
      if (!m) this.endpointVips.set(service, (m = new Map()));
      m.set(want[i], ip);
      this.endpointByVip.set(ip, { service, label: want[i] });
    });
  }

  /** Release the endpoint VIPs of `service` whose label is not in `keep`; true when one went. */
  async dropEndpoints(service: string, keep: ReadonlySet<string>): Promise<boolean> {
    const m = this.endpointVips.get(service);
    if (!m) return false;
    const gone: string[] = [];
    for (const [label, ip] of m) {
      if (keep.has(label)) continue;
      m.delete(label);
      this.endpointByVip.delete(ip);
      gone.push(endpointKey(service, label));
    }
    if (!m.size) this.endpointVips.delete(service);
    await this.allocator.releaseMany(gone);
    return gone.length > 0;
  }

  private bind(key: string, ip: string): void {
    const old = this.vipByService.get(key);
    if (old && old !== ip && this.outsideByVip.get(old) === key) this.outsideByVip.delete(old);
    this.vipByService.set(key, ip);
    if (!this.allocator.contains(ip)) this.outsideByVip.set(ip, key);
  }

  /** Pool exhausted or a conflict: this service gets no VIP; every other one is unaffected. */
  private noVip(key: string, e: unknown): void {
    this.log.error(
      { service: key, code: (e as { code?: string }).code, err: (e as Error).message },
      'no VIP for service',
    );
  }

  /** The service's VIP no longer names it (its allocation, if any, is the caller's to release). */
  private drop(key: string): void {
    const ip = this.vipByService.get(key);
    if (ip) {
      this.vipByService.delete(key);
      if (this.outsideByVip.get(ip) === key) this.outsideByVip.delete(ip);
      this.allocator.unreserve(key, ip);
    }
  }
}
