import { BeehiveModule, ChannelContext, Group, Logger, ReadySignal, silentLogger } from '@edgecore/beehive';
import { MetaClient, type MetaChange } from '@edgecore/metamanager/client';
import { inject, injectable, optional } from 'inversify';
import { ServiceCatalog, type CatalogDelta } from './catalog/catalog';
import type {
  DestinationRule,
  EndpointSlice,
  Endpoints,
  NodeStatus,
  Pod,
  Service,
  ServicePort,
} from './catalog/types';
import { isExternalName } from './catalog/types';
import { MESH_MODULE_NAME, ResolvedEdgeMeshOptions } from './config';
import { ClusterZone, type EndpointNames } from './dns/cluster-zone';
import type { DnsServer } from './dns/dns-server';
import type { Forwarder } from './dns/forwarder';
import { Interception } from './iptables/interception';
import type { IptablesManager } from './iptables/iptables';
import { dnsListen, resolveMode, type MeshMode } from './listen';
import { BackendIndex } from './lb/backend-index';
import { serviceEndpoints, type Backend } from './lb/backends';
import { LoadBalancer } from './lb/load-balancer';
import { publishedBackends } from './lb/published';
import type {
  BackendPathRow,
  BackendPaths,
  ExplainStep,
  PublishedBackends,
  ServiceExplainer,
} from './tunnel';
import type { PortalSpec } from './portal-table';
import type { ForwardProxy, ResolvedTarget } from './proxy/forward-proxy';
import { ActiveHealth, healthCheckOf } from './health/active-health';
import { HttpProxy } from './proxy/http/http-proxy';
import { H2Proxy } from './proxy/h2/h2-proxy';
import { UpstreamPool } from './proxy/http/upstream-pool';
import { TcpProxy } from './proxy/l4/tcp-proxy';
import { ConnectionBudget } from './proxy/connection-budget';
import { desiredPortals, type PortalManager } from './proxy/portals';
import { processMessages, type MeshChanges, type MeshKey } from './process';
import { parseEndpointName, parseServiceName } from './service-name';
import { DnsServerFactory, ForwardProxyFactory, PortalManagerFactory } from './services';
import type { VipAllocator } from './vip/vip-allocator';
import { isHeadless, VipTable } from './vip/vip-table';

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
 * The EdgeMesh beehive module (name `edgemesh`, group `mesh`): its lifecycle. It loads the whole
 * catalog from MetaManager before DNS answers anything, gives every service a VIP, starts the
 * parts the container module bound (interception, DNS, portals, the explicit proxy) in order, and
 * reconciles them with each batch of changes MetaManager forwards after its commits.
 */
@injectable()
export class EdgeMeshModule implements BeehiveModule, PublishedBackends, BackendPaths, ServiceExplainer {
  readonly name = MESH_MODULE_NAME;
  readonly group = Group.Mesh;
  readonly dependencies: string[];
  readonly mode: MeshMode;
  private readonly modeReason?: string;
  dns!: DnsServer;
  portals!: PortalManager;
  forwardProxy?: ForwardProxy;
  /** Address of the explicit proxy (unprivileged mode). */
  forwardProxyAddress?: string;
  /** iptables mode's interception, once it is set up. */
  interception?: Interception;
  readonly updates: EdgeMeshUpdateStats = {
    applied: 0,
    batches: 0,
    maxBatch: 0,
    lagMsSum: 0,
    lagCount: 0,
    lagMsMax: 0,
  };
  private cloud = false;
  private readonly readiness = new ReadySignal();
  /** A change taken from the mailbox is not applied yet (what a caller waits on: no sleep). */
  applying = false;
  /** The backends this node publishes (`proto/host:port`), rebuilt after a change. */
  private published?: Set<string>;

  constructor(
    @inject(ResolvedEdgeMeshOptions) readonly options: ResolvedEdgeMeshOptions,
    @inject(MetaClient) private readonly meta: MetaClient,
    @inject(ServiceCatalog) readonly catalog: ServiceCatalog,
    @inject(VipTable) readonly vipTable: VipTable,
    @inject(BackendIndex) private readonly backends: BackendIndex,
    @inject(ClusterZone) readonly zone: ClusterZone,
    @inject(LoadBalancer) readonly lb: LoadBalancer,
    @inject(UpstreamPool) private readonly pool: UpstreamPool,
    @inject(HttpProxy) readonly http: HttpProxy,
    @inject(H2Proxy) readonly h2: H2Proxy,
    @inject(TcpProxy) readonly tcp: TcpProxy,
    @inject(ActiveHealth) readonly health: ActiveHealth,
    @inject(DnsServerFactory) private readonly newDns: DnsServerFactory,
    @inject(PortalManagerFactory) private readonly newPortals: PortalManagerFactory,
    @inject(ForwardProxyFactory) private readonly newForwardProxy: ForwardProxyFactory,
    @inject(Interception) private readonly intercept: Interception,
    @inject(ConnectionBudget) readonly connections: ConnectionBudget,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
  ) {
    this.dependencies = options.dependencies;
    const m = resolveMode(options);
    this.mode = m.mode;
    this.modeReason = m.reason;
  }

  /**
   * Whether `host:port` is a backend of this node's own (see `publishedBackends`): the one question
   * EdgeTunnel asks before it opens a stream another node asked for.
   */
  publishes(node: string, host: string, port: number, proto: 'tcp' | 'udp'): boolean {
    this.published ??= publishedBackends(this.catalog, node);
    return this.published.has(`${proto}/${host}:${port}`);
  }

  /** Every portal's backends with the path to each: routed, or through the tunnel. */
  backendPaths(): BackendPathRow[] {
    const rows: BackendPathRow[] = [];
    this.eachBackend((e, b) =>
      rows.push({
        namespace: e.namespace,
        service: e.endpoint ? `${e.endpoint}.${e.service}` : e.service,
        port: `${e.portName ?? e.port}/${e.transport}`,
        backend: `${b.host}:${b.port}`,
        node: b.node,
        path: b.tunnel ? 'tunnel' : 'direct',
      }),
    );
    return rows;
  }

  /** The last backendPathCounts() and the generations it was counted at. */
  private pathCounts?: {
    at: { portals: PortalManager | undefined; p: number; b: number };
    n: { direct: number; tunnel: number };
  };

  /**
   * How many of those backends are routed and how many tunneled (`/metrics`: no rows built) —
   * counted over every port again only once a portal or a port's backends changed since the last
   * count: a scrape of a quiet node walked them all (at 10,000 services, 2.9 ms of CPU a scrape,
   * 1.1 ms without the walk).
   */
  backendPathCounts(): { direct: number; tunnel: number } {
    const portals = this.portals;
    const at = { portals, p: portals?.generation ?? 0, b: this.backends.generation };
    const c = this.pathCounts;
    if (c && c.at.portals === at.portals && c.at.p === at.p && c.at.b === at.b) return { ...c.n };
    const n = { direct: 0, tunnel: 0 };
    for (const e of portals?.specs() ?? []) this.backends.countPaths(e, n);
    this.pathCounts = { at, n };
    return { ...n };
  }

  private eachBackend(f: (e: PortalSpec, b: Backend) => void): void {
    // the portals' specs as held: a /metrics scrape at 10,000 services copied the whole table
    // (half of a scrape's cost, and the bench scrapes while it measures)
    for (const e of this.portals?.specs() ?? []) for (const b of this.backends.of(e)) f(e, b);
  }

  get cloudConnected(): boolean {
    return this.cloud;
  }

  /** The VIP pool's allocations. */
  get vips(): VipAllocator {
    return this.vipTable.allocator;
  }

  get forwarder(): Forwarder | undefined {
    return this.dns?.forwarder;
  }

  get iptables(): IptablesManager | undefined {
    return this.interception?.iptables;
  }

  /** iptables mode with `l4Mode: dnat` in force. */
  get l4Dnat(): boolean {
    return this.interception?.l4Dnat ?? false;
  }

  enable(): boolean {
    return this.options.enable;
  }

  ready(): Promise<void> {
    return this.readiness.promise;
  }

  vipOf(serviceKey: string): string | undefined {
    return this.vipTable.vipOf(serviceKey);
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
      // a burst held by keys: each object as this node stores it now (gone: a delete; never a
      // remote query, the store is what the node holds), one request per type
      onRead: async (keys) => ({
        changes: await this.readStored(keys),
        timestamps: keys.map((k) => k.timestamp),
      }),
    });
  }

  /** These objects as MetaManager stores them now, as changes (one that is gone: a delete). */
  private async readStored(keys: MeshKey[]): Promise<MetaChange[]> {
    const byType = new Map<string, number[]>();
    keys.forEach((k, i) => {
      const at = byType.get(k.type);
      if (at) at.push(i);
      else byType.set(k.type, [i]);
    });
    const objects: unknown[] = new Array(keys.length);
    await Promise.all(
      [...byType].map(async ([type, at]) => {
        const got = this.meta.getMany
          ? await this.meta.getMany(
              type,
              at.map((i) => `${keys[i].namespace}/${keys[i].name}`),
            )
          : await Promise.all(
              at.map((i) => this.meta.get(keys[i].namespace, type, keys[i].name, { local: true })),
            );
        at.forEach((i, j) => (objects[i] = got[j]));
      }),
    );
    return keys.map((k, i) => ({
      operation: objects[i] === undefined ? 'delete' : 'update',
      namespace: k.namespace,
      type: k.type,
      name: k.name,
      object: objects[i],
    }));
  }

  async stop(): Promise<void> {
    await this.interception?.stop();
    this.forwardProxy?.close();
    await this.portals?.closeAll();
    this.http.close();
    this.h2.close();
    this.health.close();
    this.tcp.closeAll();
    this.pool.close();
    await this.dns?.close();
  }

  /**
   * `edgectl explain`: the path of a service through this node, step by step — in the catalog,
   * its name and VIP, the interception rules (read back from the kernel in iptables mode: a rule
   * deleted by hand shows), its portals, its backends with their health — and the first step
   * that breaks.
   */
  async explain(
    namespace: string,
    name: string,
  ): Promise<{ service: string; steps: ExplainStep[]; brokenAt?: string }> {
    const key = `${namespace}/${name}`;
    const steps: ExplainStep[] = [];
    const done = () => ({ service: key, steps, brokenAt: steps.find((s) => !s.ok)?.step });
    const svc = this.catalog.services.get(key);
    if (!svc) {
      steps.push({
        step: 'catalog',
        ok: false,
        detail: `service ${key} is not in this node's catalog (not applied, deleted, or not received: the cloud link is ${this.cloudConnected ? 'up' : 'down'})`,
      });
      return done();
    }
    const ports = (svc.spec?.ports ?? []).map(
      (p) => `${p.name ? `${p.name} ` : ''}${p.port}/${p.protocol ?? 'TCP'}`,
    );
    const slices = [...this.catalog.slicesOf(key)].length;
    steps.push({
      step: 'catalog',
      ok: true,
      detail: `Service${svc.spec?.clusterIP === 'None' ? ' (headless)' : ''}${svc.spec?.type ? ` ${svc.spec.type}` : ''}, ports ${ports.join(', ') || 'none'}; ${slices ? `${slices} slice(s)` : 'no slice: backends from the pods its selector picks'}`,
    });
    const fqdn = `${name}.${namespace}.svc.${this.zone.domain}`;
    if (isExternalName(svc)) {
      steps.push({
        step: 'name',
        ok: true,
        detail: `${fqdn} → CNAME ${svc.spec?.externalName} (no VIP, portal or rule)`,
      });
      return done();
    }
    const vip = this.vipTable.vipOf(key);
    steps.push({ step: 'name', ok: !!vip, detail: vip ? `${fqdn} → ${vip}` : `${fqdn} has no VIP yet` });
    const entries = (this.portals?.table() ?? []).filter(
      (e) => e.namespace === namespace && e.service === name && !e.endpoint,
    );
    if (this.mode === 'iptables' && this.iptables) {
      let live: string[] = [];
      let err: string | undefined;
      try {
        live = await this.iptables.liveNatRules();
      } catch (e) {
        err = (e as Error).message;
      }
      const missing = entries.filter(
        (e) =>
          !live.some(
            (l) =>
              l.includes(`-d ${e.vip}/32`) &&
              l.includes(`--dport ${e.port}`) &&
              l.includes(`${e.namespace}/${e.service}:${e.port}`),
          ),
      );
      steps.push({
        step: 'rules',
        ok: !err && missing.length === 0,
        detail: err
          ? `cannot read the nat table: ${err}`
          : missing.length
            ? `no DNAT rule for ${missing.map((e) => `${e.vip}:${e.port}/${e.transport}`).join(', ')} in the nat table (deleted by hand? the next resync, every ${this.options.iptablesSyncSeconds} s, writes it again)`
            : entries
                .map((e) => `${e.vip}:${e.port}/${e.transport} → ${e.listenHost}:${e.listenPort}`)
                .join(', ') || 'no port',
      });
    } else
      steps.push({
        step: 'rules',
        ok: true,
        detail:
          `unprivileged mode: no rules; clients use the explicit proxy ${this.forwardProxyAddress ?? ''} or the portals`.trim(),
      });
    steps.push({
      step: 'portal',
      ok: entries.length > 0,
      detail: entries.length
        ? entries
            .map((e) => `${e.port}/${e.transport} ${e.protocol} on ${e.listenHost}:${e.listenPort}`)
            .join(', ')
        : 'no portal (no TCP/UDP port, or not synced yet)',
    });
    const rows: NonNullable<ExplainStep['backends']> = [];
    const now = Date.now();
    for (const e of entries)
      for (const b of this.backends.of(e)) {
        const h = this.health.state(b.key);
        rows.push({
          port: `${e.port}/${e.transport}`,
          key: b.key,
          node: b.node,
          path: b.tunnel ? 'tunnel' : 'direct',
          state: h && !h.healthy ? 'unhealthy' : this.lb.isEjected(b.key, now) ? 'ejected' : 'ok',
          tier: b.tier,
          terminating: b.terminating,
          lastError: h?.lastError,
          latencyMs: this.lb.latencyNow(b.key),
          active: this.lb.active.get(b.key) ?? 0,
        });
      }
    const emptyPorts = entries
      .filter((e) => !this.backends.of(e).length)
      .map((e) => `${e.port}/${e.transport}`);
    const usable = rows.filter((r) => r.state === 'ok').length;
    steps.push({
      step: 'backends',
      ok: emptyPorts.length === 0 && (rows.length === 0 || usable > 0),
      detail: emptyPorts.length
        ? `no backend for ${emptyPorts.join(', ')} (no ready endpoint${svc.spec?.internalTrafficPolicy === 'Local' ? ' on this node: internalTrafficPolicy Local' : ''})`
        : `${rows.length} backend(s), ${usable} usable`,
      backends: rows,
    });
    return done();
  }

  /**
   * The active health checks of these services (`<ns>/<name>`): the backends of every port of a
   * service that asks for checks (annotations, health/active-health.ts); none for the others.
   */
  private syncHealth(keys: Iterable<string>): void {
    for (const key of keys) {
      const svc = this.catalog.services.get(key);
      const spec = svc
        ? healthCheckOf(svc, (field, value) =>
            this.log.warn(
              { service: key, field, value },
              'ignoring a health-check annotation value EdgeMesh does not know',
            ),
          )
        : undefined;
      const backends: Backend[] = [];
      if (svc && spec) {
        const [namespace, service] = key.split('/');
        for (const p of svc.spec?.ports ?? []) {
          const transport = (p.protocol ?? 'TCP') === 'UDP' ? 'UDP' : 'TCP';
          if (transport === 'UDP') continue; // no check speaks UDP
          const k = `${key}:${p.port}/${transport}`;
          backends.push(
            ...this.backends.of({
              key: k,
              serviceKey: key,
              namespace,
              service,
              vip: '',
              port: p.port,
              transport,
              protocol: 'tcp',
            }),
          );
        }
      }
      this.health.sync(key, spec, backends);
    }
  }

  /** Backends of a portal's service port (cached until a change may have touched them). */
  backendsFor(spec: PortalSpec): readonly Backend[] {
    return this.backends.of(spec);
  }

  /**
   * A service name (any DNS form) or VIP plus a port → its TCP portal's backends; an endpoint of a
   * headless service (`<label>.<svc>.<ns>.svc.<domain>`, or its VIP) → that endpoint's alone.
   */
  resolveTarget(host: string, port: number): ResolvedTarget | undefined {
    // a service (the usual case) first: its VIP or any of its names
    let key = this.vipTable.serviceOf(host);
    if (!key) {
      const n = parseServiceName(host, this.zone.domain);
      if (n && this.catalog.getService(n.namespace, n.service)) key = `${n.namespace}/${n.service}`;
    }
    if (key) {
      const spec = this.portals.spec(`${key}:${port}/TCP`);
      return spec
        ? { scope: spec.key, backends: this.backends.of(spec), protocol: spec.protocol }
        : undefined;
    }
    const ep = this.vipTable.endpointOf(host) ?? this.endpointByName(host);
    if (!ep) return undefined;
    const svcSpec = this.portals.spec(`${ep.service}:${port}/TCP`);
    if (!svcSpec) return undefined;
    // the service port's backends of that endpoint (cached per key like a portal's)
    const spec = { ...svcSpec, key: `${ep.service}.${ep.label}:${port}/TCP`, endpoint: ep.label };
    const backends = this.backends.of(spec);
    return backends.length ? { scope: spec.key, backends, protocol: spec.protocol } : undefined;
  }

  /** `<label>.<svc>.<ns>.svc.<domain>` of a headless service (its backends say if it is ready). */
  private endpointByName(host: string): { service: string; label: string } | undefined {
    const e = parseEndpointName(host, this.zone.domain);
    if (!e || !isHeadless(this.catalog.getService(e.namespace, e.service))) return undefined;
    return { service: `${e.namespace}/${e.service}`, label: e.label };
  }

  /** The labels of the ready endpoints of a headless service (serving `port` when given). */
  private endpointLabels(ns: string, svc: string, port?: ServicePort): string[] {
    const s = this.catalog.getService(ns, svc);
    if (!isHeadless(s)) return [];
    const eps = serviceEndpoints(this.catalog, s!, this.options.networking, this.backends.paths);
    return [...eps]
      .filter(([, list]) => !port || list.some((x) => x.port === port))
      .map(([label]) => label)
      .sort();
  }

  /** The zone's view of headless services' endpoints: their VIPs are allocated on first use. */
  private endpointNames(): EndpointNames {
    return {
      labels: (ns, svc, port) => this.endpointLabels(ns, svc, port),
      vipOf: (ns, svc, label) => this.vipTable.endpointVip(`${ns}/${svc}`, label),
      ensure: (ns, svc, labels) =>
        this.serialized(async () => {
          const key = `${ns}/${svc}`;
          // still ready now that it is this one's turn (a batch before it may have removed it)
          const ready = new Set(this.endpointLabels(ns, svc));
          await this.vipTable.ensureEndpoints(
            key,
            labels.filter((l) => ready.has(l)),
          );
          if (await this.syncPortalsOf([key])) await this.interception?.changed(true, false);
        }),
      endpointOf: (ip) => this.vipTable.endpointOf(ip),
    };
  }

  /** Portal (and rule) changes run one at a time: a catalog batch, an endpoint's first query. */
  private portalWork: Promise<unknown> = Promise.resolve();
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.portalWork.then(fn, fn);
    this.portalWork = run.catch(() => undefined);
    return run;
  }

  /**
   * Bring the portals of these services (their VIP and their endpoints' VIPs) in line; whether the
   * table changed (the caller tells interception).
   */
  private async syncPortalsOf(keys: string[]): Promise<boolean> {
    if (!this.portals || !keys.length) return false;
    const live = keys.flatMap((k) => {
      const svc = this.catalog.services.get(k);
      return svc ? [[k, svc] as [string, Service]] : [];
    });
    return this.portals.syncServices(
      keys,
      desiredPortals(
        live,
        (k) => this.vipTable.vipOf(k),
        (k) => this.vipTable.endpointsOf(k),
      ),
    );
  }

  private async boot(): Promise<void> {
    const o = this.options;
    // 1. The whole catalog, before anything answers (offline too: MetaManager answers from SQLite).
    const [services, endpoints, pods, nodes, slices, rules] = await Promise.all([
      this.meta.list<Service>('*', 'service'),
      this.meta.list<Endpoints>('*', 'endpoints'),
      this.meta.list<Pod>('*', 'pod'),
      this.meta.list<NodeStatus>('*', 'nodestatus'),
      this.meta.list<EndpointSlice>('*', 'endpointslice'),
      this.meta.list<DestinationRule>('*', 'destinationrule'),
    ]);
    this.catalog.load(services, endpoints, pods, nodes, slices, rules);
    this.published = undefined;
    // 2. VIPs: persisted allocations first, then every service, then release the orphans.
    await this.vipTable.load([...this.catalog.services.entries()]);
    // 3. Interception (iptables mode): listen address, VIP route, leftovers of a crash.
    let listenIP: string | undefined;
    if (this.mode === 'iptables') {
      this.interception = this.intercept;
      listenIP = await this.intercept.prepare();
    } else {
      if (o.l4Mode === 'dnat')
        this.log.warn({ mode: this.mode }, 'l4Mode dnat needs iptables mode; TCP ports keep the portal');
      if (o.mode !== 'unprivileged')
        this.log.info(
          { reason: this.modeReason },
          'edgemesh in unprivileged mode: DNS on 127.0.0.1, explicit proxy on listenPort, no interception',
        );
    }
    // 4. DNS.
    const listen = dnsListen(o, this.mode, listenIP);
    this.dns = this.newDns(listen, this.mode);
    const a = await this.dns.listen();
    this.zone.setNameserverAddress(a.address);
    this.zone.setEndpointNames(this.endpointNames());
    this.interception?.dnsListening(a.address);
    // 5. Portals per service port, their rules; the explicit proxy when unprivileged.
    // portals short of file descriptors are tried again in turn with the other portal work
    this.portals = this.newPortals(
      this.mode === 'unprivileged' ? '127.0.0.1' : listen.host,
      () =>
        void this.serialized(async () => {
          if (this.portals && (await this.portals.retryUnopened()))
            await this.interception?.changed(true, false);
        }).catch((e) => this.log.warn({ err: e }, 'portal retry failed')),
    );
    await this.portals.sync(desiredPortals(this.catalog.services, (k) => this.vipTable.vipOf(k)));
    this.syncHealth(this.catalog.services.keys());
    await this.interception?.start(() => this.portals.table());
    if (this.mode === 'unprivileged') {
      this.forwardProxy = this.newForwardProxy((h, p) => this.resolveTarget(h, p));
      const fa = await this.forwardProxy.listen('127.0.0.1', o.listenPort);
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
        vips: this.vipTable.allocated,
        upstreams: this.dns.forwarder.upstreamList.map((u) => `${u.host}:${u.port}`),
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
    if (delta.applied) this.published = undefined;
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
    await this.vipTable.ensure(await this.vipTable.updateMany(delta.services));
    this.backends.invalidate(delta.backends);
    this.dns?.invalidate();
    await this.serialized(async () => {
      // endpoint VIPs handed out whose endpoint is gone (not ready, deleted) go with their portals
      const endpointsGone: string[] = [];
      for (const k of new Set([...delta.backends, ...delta.services.keys()])) {
        if (!this.vipTable.endpointsOf(k).size) continue;
        const [ns, svc] = k.split('/');
        if (await this.vipTable.dropEndpoints(k, new Set(this.endpointLabels(ns, svc))))
          endpointsGone.push(k);
      }
      if (endpointsGone.length) this.dns?.invalidate(); // an answer cached meanwhile named a gone VIP
      const changed = [...new Set([...delta.services.keys(), ...endpointsGone])];
      await this.syncPortalsOf(changed);
      if (this.portals) await this.interception?.changed(changed.length > 0, delta.backends.size > 0);
      this.syncHealth(new Set([...delta.backends, ...delta.services.keys()]));
    });
  }
}
