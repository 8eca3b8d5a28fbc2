import { BeehiveModule, ChannelContext, Group, Logger, ReadySignal, silentLogger } from '@edgecore/beehive';
import { MetaClient } from '@edgecore/metamanager/client';
import { inject, injectable, multiInject, optional } from 'inversify';
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { ServiceCatalog, type CatalogDelta } from './catalog/catalog';
import type { Endpoints, Pod, Service } from './catalog/types';
import { DEFAULT_CLUSTER_DOMAIN, DEFAULT_SUBNET, EdgeMeshOptions, MESH_MODULE_NAME } from './config';
import { ClusterZone } from './dns/cluster-zone';
import { DnsServer } from './dns/dns-server';
import { Forwarder, parseUpstreams, upstreamsFromResolvConf } from './dns/forwarder';
import { defaultAllowFrom, dnsListen, nodeIPv4s, resolveMode, type MeshMode } from './listen';
import { VipAllocator } from './vip/vip-allocator';
import { resolveBackends, type Backend } from './lb/backends';
import { LoadBalancer } from './lb/load-balancer';
import { createStrategy, LbStrategyContribution, STICKY_TIMEOUT_MS } from './lb/strategies';
import { ForwardProxy, type ResolvedTarget } from './proxy/forward-proxy';
import { HttpProxy } from './proxy/http/http-proxy';
import type { PortalSpec } from './portal-table';
import { desiredPortals, PortalManager } from './proxy/portals';
import { TcpProxy } from './proxy/l4/tcp-proxy';
import { UpstreamPool } from './proxy/http/upstream-pool';
import { run } from './iptables/exec';
import { iptablesBinaries, IptablesManager, proxiedByUs } from './iptables/iptables';
import { ListenInterface } from './iptables/listen-interface';
import { ResolvConfHijack } from './dns/resolvconf';
import { processMessages, type MeshChanges } from './process';
import { InvalidOptionError } from './edgemesh-errors';

export interface EdgeMeshUpdateStats {
  /** Changes from MetaManager applied to the catalog. */
  applied: number;
  /** Batches they were applied in (one reconcile each). */
  batches: number;
  /** The largest batch. */
  maxBatch: number;
  /** Cloud publish → applied here (the change's message timestamp), summed, counted, and at most. */
  lagMsSum: number;
  lagCount: number;
  lagMsMax: number;
}

/**
 * The EdgeMesh beehive module (name `edgemesh`, group `mesh`): loads the whole catalog from
 * MetaManager before DNS answers anything, gives every service a VIP, serves DNS, and follows the
 * changes MetaManager forwards after each commit.
 */
@injectable()
export class EdgeMeshModule implements BeehiveModule {
  readonly name = MESH_MODULE_NAME;
  readonly group = Group.Mesh;
  readonly dependencies: string[];
  readonly mode: MeshMode;
  private readonly modeReason?: string;
  iptables?: IptablesManager;
  /** iptables mode with `l4Mode: dnat` in force: plain TCP (and, with conntrack, UDP) ports are
   * DNAT'd straight to backends. */
  l4Dnat = false;
  private listenIfc?: ListenInterface;
  private resolvConf?: ResolvConfHijack;
  vips!: VipAllocator;
  zone!: ClusterZone;
  forwarder!: Forwarder;
  dns!: DnsServer;
  lb!: LoadBalancer;
  http!: HttpProxy;
  tcp!: TcpProxy;
  portals!: PortalManager;
  forwardProxy?: ForwardProxy;
  /** Address of the explicit proxy (unprivileged mode). */
  forwardProxyAddress?: string;
  private pool?: UpstreamPool;
  /** Backends per portal key, cached until the service's backends may have changed… */
  private readonly backendCache = new Map<string, Backend[]>();
  /** …and, per service, which portal keys are cached (to clear only those). */
  private readonly cachedPortsOf = new Map<string, Set<string>>();
  readonly updates: EdgeMeshUpdateStats = {
    applied: 0,
    batches: 0,
    maxBatch: 0,
    lagMsSum: 0,
    lagCount: 0,
    lagMsMax: 0,
  };
  private cloud = false;
  /** service key → VIP (allocated or the real ClusterIP), and back. */
  private readonly vipByService = new Map<string, string>();
  private readonly serviceByVip = new Map<string, string>();
  private readonly readiness = new ReadySignal();
  /** DNAT mode: rule syncs for pod/Endpoints changes, one after another… */
  private backendSyncs: Promise<void> = Promise.resolve();
  /** …and whether one is queued and not yet started (every change before it starts is in it). */
  private backendSyncQueued = false;
  private stopping = false;
  /** A change taken from the mailbox is not applied yet (what a caller waits on: no sleep). */
  applying = false;

  constructor(
    @inject(EdgeMeshOptions) readonly options: EdgeMeshOptions,
    @inject(MetaClient) private readonly meta: MetaClient,
    @inject(ServiceCatalog) readonly catalog: ServiceCatalog,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
    @multiInject(LbStrategyContribution)
    @optional()
    private readonly strategies: LbStrategyContribution[] = [],
  ) {
    this.dependencies = options.dependencies ?? ['metamanager'];
    const m = resolveMode(options);
    this.mode = m.mode;
    this.modeReason = m.reason;
  }

  get cloudConnected(): boolean {
    return this.cloud;
  }

  enable(): boolean {
    return this.options.enable ?? true;
  }

  ready(): Promise<void> {
    return this.readiness.promise;
  }

  vipOf(serviceKey: string): string | undefined {
    return this.vipByService.get(serviceKey);
  }

  async start(ctx: ChannelContext, signal: AbortSignal): Promise<void> {
    try {
      await this.boot();
    } catch (e) {
      this.readiness.reject(e);
      throw e;
    }
    this.readiness.resolve();
    await processMessages(ctx, this.name, signal, {
      onConnection: (up) => (this.cloud = up),
      onBusy: (busy) => (this.applying = busy),
      onChanges: (batch) => this.applyChanges(batch),
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.backendSyncs;
    await this.iptables
      ?.cleanup()
      .catch((e) => this.log.error({ err: (e as Error).message }, 'removing iptables rules failed'));
    await this.listenIfc?.teardown();
    this.resolvConf?.restore();
    this.forwardProxy?.close();
    await this.portals?.closeAll();
    this.http?.close();
    this.tcp?.closeAll();
    this.pool?.close();
    await this.dns?.close();
  }

  /**
   * iptables mode with `l4Mode: dnat` and a strategy iptables can express: random picks
   * (RoundRobin, Random), or random picks remembered per client address (SessionStickiness).
   */
  private dnatMode(): boolean {
    if (this.options.l4Mode !== 'dnat') return false;
    const strategy = this.options.lbStrategy ?? 'RoundRobin';
    if (strategy !== 'RoundRobin' && strategy !== 'Random' && strategy !== 'SessionStickiness') {
      this.log.warn(
        { lbStrategy: strategy },
        'l4Mode dnat: iptables cannot express this strategy; TCP ports keep the portal',
      );
      return false;
    }
    this.l4Dnat = true;
    let forwarding = '1';
    try {
      forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    } catch {
      // no procfs: nothing to warn about
    }
    if (forwarding === '0')
      this.log.warn(
        {},
        'l4Mode dnat: net.ipv4.ip_forward is 0, so containers cannot reach backends on other hosts (host processes can)',
      );
    return true;
  }

  /** Program the whole rule set for the current portal table (one iptables-restore). */
  private syncRules(): Promise<void> {
    const name = this.options.proxyName ?? 'edgemesh';
    return this.iptables!.sync(this.portals.table(), (e) =>
      proxiedByUs(this.catalog.getService(e.namespace, e.service)?.metadata.labels, name),
    );
  }

  /** Backends of a portal's service port, cached until the next catalog change. */
  backendsFor(spec: PortalSpec): readonly Backend[] {
    let b = this.backendCache.get(spec.key); // per request: one lookup, nothing allocated
    if (b) return b;
    const svc = this.catalog.getService(spec.namespace, spec.service);
    const sp = svc?.spec?.ports?.find(
      (p) => p.port === spec.port && ((p.protocol ?? 'TCP') === 'UDP') === (spec.transport === 'UDP'),
    );
    b = svc && sp ? resolveBackends(this.catalog, svc, sp, this.options.networking ?? 'host') : [];
    this.backendCache.set(spec.key, b);
    const skey = `${spec.namespace}/${spec.service}`;
    let keys = this.cachedPortsOf.get(skey);
    if (!keys) this.cachedPortsOf.set(skey, (keys = new Set()));
    keys.add(spec.key);
    return b;
  }

  /** A service name (any DNS form) or VIP plus a port → its TCP portal's backends. */
  resolveTarget(host: string, port: number): ResolvedTarget | undefined {
    const h = host.replace(/\.$/, '');
    let key = this.serviceByVip.get(h);
    if (!key) {
      const domain = (this.options.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN).toLowerCase();
      const short = h.endsWith(`.svc.${domain}`)
        ? h.slice(0, -`.svc.${domain}`.length)
        : h.endsWith('.svc')
          ? h.slice(0, -4)
          : h;
      const l = short.split('.');
      if (l.length === 2 && this.catalog.getService(l[1], l[0])) key = `${l[1]}/${l[0]}`;
    }
    if (!key) return undefined;
    const spec = this.portals.get(`${key}:${port}/TCP`);
    if (!spec) return undefined;
    return { scope: spec.key, backends: this.backendsFor(spec) };
  }

  private async boot(): Promise<void> {
    const o = this.options;
    // 1. The whole catalog, before anything answers (offline too: MetaManager answers from SQLite).
    const [services, endpoints, pods] = await Promise.all([
      this.meta.list<Service>('*', 'service'),
      this.meta.list<Endpoints>('*', 'endpoints'),
      this.meta.list<Pod>('*', 'pod'),
    ]);
    this.catalog.load(services, endpoints, pods);
    // 2. VIPs: persisted allocations first, then every service, then release the orphans.
    this.vips = new VipAllocator(o.subNet ?? DEFAULT_SUBNET, this.meta);
    const dropped = await this.vips.load();
    if (dropped.length) this.log.warn({ dropped }, 'ignored persisted VIPs outside the pool or duplicated');
    await this.ensureVips([...this.catalog.services.entries()]);
    const orphans = this.vips.services().filter((k) => !this.catalog.services.has(k));
    await Promise.all(orphans.map((k) => this.vips.release(k)));
    // 3. Interception set-up (iptables mode): listen address, VIP route, leftovers of a crash.
    let listenIP: string | undefined;
    if (this.mode === 'iptables') {
      this.listenIfc = new ListenInterface(o.listenInterface ?? 'docker0', { log: this.log });
      listenIP = await this.listenIfc.ensure();
      await this.listenIfc.routeSubnet(o.subNet ?? DEFAULT_SUBNET);
      // DNAT mode: plain TCP ports, and UDP ports when conntrack can forget a gone backend's flows
      const dnat = this.dnatMode();
      const udp = dnat && (await run('conntrack', ['--version'])).code === 0;
      if (dnat && !udp)
        this.log.warn({}, 'l4Mode dnat: conntrack (conntrack-tools) not found; UDP ports keep the portal');
      this.iptables = new IptablesManager({
        dnatAffinitySeconds:
          this.options.lbStrategy === 'SessionStickiness' ? STICKY_TIMEOUT_MS / 1000 : undefined,
        dnatTargets: dnat
          ? (e) => (e.protocol === 'tcp' || (udp && e.protocol === 'udp') ? this.backendsFor(e) : undefined)
          : undefined,
        listenIP,
        listenInterface: this.listenIfc.name,
        dnsPort: o.dns?.listenPort ?? 53,
        hijackDns: (o.dns?.hijack ?? 'iptables') === 'iptables',
        syncIntervalMs: o.iptablesSyncIntervalMs,
        ...iptablesBinaries(o.iptablesBackend),
        log: this.log,
      });
      await this.iptables.cleanup();
      if (o.dns?.hijack === 'resolvconf') {
        this.resolvConf = new ResolvConfHijack(o.dns.resolvConf ?? '/etc/resolv.conf', listenIP);
        this.resolvConf.recover(); // a crashed run's change first, so upstreams come from the original
      }
    } else if (o.l4Mode === 'dnat') {
      this.log.warn({ mode: this.mode }, 'l4Mode dnat needs iptables mode; TCP ports keep the portal');
    }
    if (this.mode !== 'iptables' && o.mode !== 'unprivileged') {
      this.log.info(
        { reason: this.modeReason },
        'edgemesh in unprivileged mode: DNS on 127.0.0.1, explicit proxy on listenPort, no interception',
      );
    }
    // DNS.
    const listen = dnsListen(o, this.mode, listenIP);
    this.zone = new ClusterZone(this.catalog, {
      clusterDomain: o.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN,
      ttl: o.dns?.ttl ?? 5,
      vipOf: (k) => this.vipByService.get(k),
      serviceOfVip: (ip) => this.serviceByVip.get(ip),
      inPool: (ip) => this.vips.contains(ip),
    });
    const self = listen.port === 53 ? new Set([listen.host, ...nodeIPv4s()]) : new Set<string>();
    const upstreams = o.dns?.upstreams?.length
      ? parseUpstreams(o.dns.upstreams)
      : upstreamsFromResolvConf(o.dns?.resolvConf ?? '/etc/resolv.conf', self);
    this.forwarder = new Forwarder(upstreams, {
      timeoutMs: o.dns?.upstreamTimeoutMs,
      cacheSize: o.dns?.cacheSize,
      bindAddress: this.mode === 'iptables' ? listen.host : undefined,
    });
    this.dns = new DnsServer(this.zone, this.forwarder, {
      ...listen,
      allowFrom: o.dns?.allowFrom ?? defaultAllowFrom(o),
      udpBackend: o.dns?.udpBackend,
      log: this.log,
    });
    const a = await this.dns.listen();
    if (this.resolvConf) {
      this.resolvConf.apply();
      this.log.info(
        { path: this.resolvConf.path, nameserver: a.address },
        'resolv.conf now points at edgemesh',
      );
    }
    // 4. Proxy: load balancer, portals per service port, explicit proxy when unprivileged.
    const px = o.proxy ?? {};
    this.lb = new LoadBalancer(
      createStrategy(o.lbStrategy, this.strategies.length ? this.strategies : undefined),
      {
        baseEjectMs: px.ejectBaseMs,
        maxEjectMs: px.ejectMaxMs,
      },
    );
    this.pool = new UpstreamPool({ connectTimeoutMs: px.connectTimeoutMs });
    this.http = new HttpProxy(this.lb, this.pool, {
      log: this.log,
      connectTimeoutMs: px.connectTimeoutMs,
      responseTimeoutMs: px.responseTimeoutMs,
      headTimeoutMs: px.headTimeoutMs,
      maxHeadBytes: px.maxHeadBytes,
      engine: o.httpEngine,
      coalesceUs: o.httpCoalesceUs,
    });
    this.tcp = new TcpProxy(this.lb, {
      log: this.log,
      connectTimeoutMs: px.connectTimeoutMs,
      idleTimeoutMs: px.tcpIdleTimeoutMs,
      splice: px.splice,
    });
    const portalHost = this.mode === 'unprivileged' ? '127.0.0.1' : listen.host;
    this.portals = new PortalManager(
      portalHost,
      this.http,
      this.tcp,
      this.lb,
      (spec) => this.backendsFor(spec),
      {
        log: this.log,
        hashHeader: o.consistentHashHeader,
        udp: { idleTimeoutMs: px.udpIdleTimeoutMs },
        portRange: portalPortRange(o.portalPortRange ?? 'auto'),
      },
    );
    await this.portals.sync(desiredPortals(this.catalog.services, (k) => this.vipByService.get(k)));
    if (this.iptables) {
      await this.syncRules();
      this.iptables.startResync();
    }
    if (this.mode === 'unprivileged') {
      this.forwardProxy = new ForwardProxy(this.http, this.tcp, (h, p) => this.resolveTarget(h, p), {
        log: this.log,
        maxHeadBytes: px.maxHeadBytes,
        headTimeoutMs: px.headTimeoutMs,
        hashHeader: o.consistentHashHeader,
      });
      const fa = await this.forwardProxy.listen('127.0.0.1', o.listenPort ?? 40001);
      this.forwardProxyAddress = `${fa.address}:${fa.port}`;
    }
    this.log.info(
      {
        mode: this.mode,
        dns: `${a.address}:${a.port}`,
        dnsUdp: this.dns.udpBackend,
        l4Splice: this.tcp.splicing,
        l4Mode: this.l4Dnat ? 'dnat' : 'portal',
        l7Engine: this.http.native ? 'native' : 'js',
        proxy: this.forwardProxyAddress,
        portals: this.portals.table().length,
        lbStrategy: this.lb.strategy.name,
        services: this.catalog.services.size,
        vips: this.vips.allocated,
        upstreams: upstreams.map((u) => `${u.host}:${u.port}`),
      },
      'edgemesh serving',
    );
  }

  /**
   * One batch of changes from MetaManager: the catalog first, then one reconcile of what the batch
   * touched — VIPs of its new services in one pass, the backend cache of the services whose
   * backends may have changed, one DNS cache flush, the portals of its services, one rule sync.
   * A burst costs what it changed, not a pass over the catalog per object.
   */
  private async applyChanges(batch: MeshChanges): Promise<void> {
    const delta = this.catalog.applyBatch(batch.changes);
    try {
      if (delta.applied) await this.reconcile(delta);
    } catch (e) {
      this.log.error({ err: e }, 'catalog change failed');
    }
    const now = Date.now();
    const u = this.updates;
    u.applied += delta.applied;
    u.batches++;
    if (batch.changes.length > u.maxBatch) u.maxBatch = batch.changes.length;
    for (const t of batch.timestamps) {
      const lag = now - t;
      if (!(t > 0) || lag < 0) continue;
      u.lagMsSum += lag;
      u.lagCount++;
      if (lag > u.lagMsMax) u.lagMsMax = lag;
    }
  }

  private async reconcile(delta: CatalogDelta): Promise<void> {
    const upserts: [string, Service][] = [];
    for (const [key, { previous, current }] of delta.services) {
      if (!current) await this.dropVip(key, true);
      else {
        if (previous && previous.spec?.clusterIP !== current.spec?.clusterIP)
          await this.dropVip(key, isRealIP(current.spec?.clusterIP));
        upserts.push([key, current]);
      }
    }
    await this.ensureVips(upserts);
    for (const s of delta.backends) {
      for (const k of this.cachedPortsOf.get(s) ?? []) this.backendCache.delete(k);
      this.cachedPortsOf.delete(s);
    }
    this.dns?.invalidate();
    if (delta.services.size && this.portals) {
      const changed = [...delta.services.keys()];
      const live = changed.flatMap((k) => {
        const svc = this.catalog.services.get(k);
        return svc ? [[k, svc] as [string, Service]] : [];
      });
      await this.portals.syncServices(
        changed,
        desiredPortals(live, (k) => this.vipByService.get(k)),
      );
    }
    if (this.iptables && this.portals) {
      if (delta.services.size)
        await this.syncRules().catch((e) =>
          this.log.error({ err: (e as Error).message }, 'iptables sync failed'),
        );
      // DNAT mode writes backends into the rules: a pod or Endpoints change is a rule change too
      else if (this.l4Dnat && delta.backends.size) this.syncBackendRules();
    }
  }

  /**
   * DNAT mode, a pod or Endpoints change: a rule sync, not awaited by the change, so a burst (a
   * node back online, a rollout) costs one or two writes, not one per pod — a sync queued and not
   * yet started takes every change that comes before it starts.
   */
  private syncBackendRules(): void {
    if (this.backendSyncQueued) return;
    this.backendSyncQueued = true;
    this.backendSyncs = this.backendSyncs
      .then(() => {
        this.backendSyncQueued = false;
        return this.stopping ? undefined : this.syncRules();
      })
      .catch((e) => this.log.error({ err: (e as Error).message }, 'iptables sync failed'));
  }

  /** VIPs for these services: real ClusterIPs reserved, the rest allocated in one pass. */
  private async ensureVips(services: [string, Service][]): Promise<void> {
    const alloc: string[] = [];
    for (const [key, s] of services) {
      const cip = s.spec?.clusterIP;
      if (!isRealIP(cip)) {
        alloc.push(key);
        continue;
      }
      try {
        this.vips.reserve(key, cip!);
        this.bindVip(key, cip!);
      } catch (e) {
        this.noVip(key, e);
      }
    }
    if (!alloc.length) return;
    let got: (string | Error)[];
    try {
      got = await this.vips.allocateMany(alloc);
    } catch (e) {
      for (const key of alloc) this.noVip(key, e);
      return;
    }
    got.forEach((ip, i) => (ip instanceof Error ? this.noVip(alloc[i], ip) : this.bindVip(alloc[i], ip)));
  }

  private bindVip(key: string, ip: string): void {
    const old = this.vipByService.get(key);
    if (old && old !== ip) this.serviceByVip.delete(old);
    this.vipByService.set(key, ip);
    this.serviceByVip.set(ip, key);
  }

  /** Pool exhausted or a conflict: this service gets no VIP; every other one is unaffected. */
  private noVip(key: string, e: unknown): void {
    this.log.error(
      { service: key, code: (e as { code?: string }).code, err: (e as Error).message },
      'no VIP for service',
    );
  }

  private async dropVip(key: string, release: boolean): Promise<void> {
    const ip = this.vipByService.get(key);
    if (ip) {
      this.vipByService.delete(key);
      if (this.serviceByVip.get(ip) === key) this.serviceByVip.delete(ip);
      this.vips.unreserve(key, ip);
    }
    if (release) await this.vips.release(key);
  }
}

/** `auto` → the kernel's ephemeral range, `FROM-TO`, or `0` (random bind: undefined). */
export function portalPortRange(spec: string): { from: number; to: number } | undefined {
  if (spec === '0') return undefined;
  let text = spec;
  if (spec === 'auto') {
    try {
      text = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().replace(/\s+/, '-');
    } catch {
      return undefined; // no procfs: the kernel picks, as before
    }
  }
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text);
  const from = Number(m?.[1]);
  const to = Number(m?.[2]);
  if (!m || from < 1 || to > 65535 || from > to)
    throw new InvalidOptionError('portalPortRange', spec, 'auto, 0 or FROM-TO within 1-65535');
  return { from, to };
}

function isRealIP(ip: string | undefined): boolean {
  return !!ip && ip !== 'None' && isIPv4(ip);
}
