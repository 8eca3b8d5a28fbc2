import { BeehiveModule, Logger, MetricsContribution, silentLogger } from '@edgecore/beehive';
import { MetaClient } from '@edgecore/metamanager/client';
import {
  Container,
  ContainerModule,
  type ContainerModuleLoadOptions,
  type ResolutionContext,
} from 'inversify';
import { ServiceCatalog } from './catalog/catalog';
import { EdgeMeshOptions, resolveEdgeMeshOptions, ResolvedEdgeMeshOptions } from './config';
import { ClusterZone } from './dns/cluster-zone';
import { DnsServer } from './dns/dns-server';
import { Forwarder, parseUpstreams, upstreamsFromResolvConf } from './dns/forwarder';
import { EdgeMeshModule } from './edgemesh-module';
import { EdgeMeshMetrics } from './metrics';
import { Interception } from './iptables/interception';
import { defaultAllowFrom, nodeIPv4s } from './listen';
import { BackendIndex } from './lb/backend-index';
import { ActiveHealth } from './health/active-health';
import { LoadBalancer } from './lb/load-balancer';
import { H2Proxy } from './proxy/h2/h2-proxy';
import { ServicePolicies } from './lb/service-policy';
import { DnsServerFactory, ForwardProxyFactory, PortalManagerFactory } from './services';
import { BUILTIN_LB_STRATEGIES, createStrategy, LbStrategyContribution } from './lb/strategies';
import { ForwardProxy } from './proxy/forward-proxy';
import { ConnectionBudget } from './proxy/connection-budget';
import { HttpProxy } from './proxy/http/http-proxy';
import { UpstreamPool } from './proxy/http/upstream-pool';
import { TcpProxy } from './proxy/l4/tcp-proxy';
import { PortalManager, portalPortRange } from './proxy/portals';
import { VipTable } from './vip/vip-table';
import {
  BackendDialer,
  BackendPaths,
  MeshTunnel,
  PublishedBackends,
  ServiceExplainer,
  SitePaths,
} from './tunnel';

type Bind = ContainerModuleLoadOptions['bind'];

const optionsOf = (ctx: ResolutionContext): ResolvedEdgeMeshOptions =>
  ctx.get<ResolvedEdgeMeshOptions>(ResolvedEdgeMeshOptions);
const logOf = (ctx: ResolutionContext): Logger => ctx.get<Logger>(Logger, { optional: true }) ?? silentLogger;

/** What the mesh knows: the catalog, the VIPs (persisted through MetaClient), backends per port. */
export function bindCatalog(bind: Bind): void {
  bind(ResolvedEdgeMeshOptions)
    .toDynamicValue((ctx) => resolveEdgeMeshOptions(ctx.get<EdgeMeshOptions>(EdgeMeshOptions)))
    .inSingletonScope();
  bind(ServiceCatalog)
    .toDynamicValue(() => new ServiceCatalog())
    .inSingletonScope();
  bind(VipTable)
    .toDynamicValue((ctx) => new VipTable(optionsOf(ctx).subNet, ctx.get<MetaClient>(MetaClient), logOf(ctx)))
    .inSingletonScope();
  bind(SitePaths)
    .toDynamicValue(
      (ctx) => new SitePaths(ctx.get(ServiceCatalog), ctx.get<MeshTunnel>(MeshTunnel, { optional: true })),
    )
    .inSingletonScope();
  bind(BackendDialer)
    .toDynamicValue(
      (ctx) => new BackendDialer(ctx.get(SitePaths), ctx.get<MeshTunnel>(MeshTunnel, { optional: true })),
    )
    .inSingletonScope();
  bind(BackendIndex)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      const tunnel = ctx.get<MeshTunnel>(MeshTunnel, { optional: true });
      const lb = ctx.get(LoadBalancer);
      return new BackendIndex(
        ctx.get(ServiceCatalog),
        o.networking,
        ctx.get(SitePaths),
        { node: o.nodeName ?? tunnel?.node, zone: o.zone },
        new ServicePolicies(() => lb.strategyNames, logOf(ctx)),
        o.clusterDomain,
      );
    })
    .inSingletonScope();
}

/** DNS: the cluster zone, and the server + forwarder of a listen address. */
export function bindDns(bind: Bind): void {
  bind(ClusterZone)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      return new ClusterZone(ctx.get(ServiceCatalog), ctx.get(VipTable), {
        clusterDomain: o.clusterDomain,
        ttl: o.dns.ttl,
        shortNames: o.dns.shortNames,
      });
    })
    .inSingletonScope();
  bind<DnsServerFactory>(DnsServerFactory).toDynamicValue((ctx) => (listen, mode) => {
    const o = optionsOf(ctx);
    // our own address is no upstream (a resolv.conf that points at us, as the hijack writes)
    const self = listen.port === 53 ? new Set([listen.host, ...nodeIPv4s()]) : new Set<string>();
    const upstreams = o.dns.upstreams.length
      ? parseUpstreams(o.dns.upstreams)
      : upstreamsFromResolvConf(o.dns.resolvConf, self);
    const forwarder = new Forwarder(upstreams, {
      timeoutMs: o.dns.upstreamTimeoutMs,
      cacheSize: o.dns.cacheSize,
      bindAddress: mode === 'iptables' ? listen.host : undefined,
      serveStale: o.dns.serveStale,
      upstreamTcp: o.dns.upstreamTcp,
      prefetch: o.dns.prefetch,
    });
    return new DnsServer(ctx.get(ClusterZone), forwarder, {
      ...listen,
      allowFrom: o.dns.allowFrom ?? defaultAllowFrom(o),
      udpBackend: o.dns.udpBackend,
      tcpClients: o.dns.tcpClients,
      budget: ctx.get(ConnectionBudget),
      log: logOf(ctx),
    });
  });
}

/** Load balancing: the strategies, a contribution point looked up by `lbStrategy`; passive health. */
export function bindLb(bind: Bind): void {
  for (const s of BUILTIN_LB_STRATEGIES) bind(LbStrategyContribution).toConstantValue(s);
  bind(LoadBalancer)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      const strategies = ctx.getAll<LbStrategyContribution>(LbStrategyContribution, { optional: true });
      const lb = new LoadBalancer(
        createStrategy(o.lbStrategy, strategies),
        {
          baseEjectMs: o.proxy.ejectBaseMs,
          maxEjectMs: o.proxy.ejectMaxMs,
          retryBudgetPercent: o.proxy.retryBudgetPercent,
          retryBudgetMinPerSecond: o.proxy.retryBudgetMinPerSecond,
        },
        strategies,
      );
      lb.health = ctx.get(ActiveHealth);
      return lb;
    })
    .inSingletonScope();
  bind(ActiveHealth)
    .toDynamicValue(
      (ctx) =>
        new ActiveHealth(ctx.get(BackendDialer), logOf(ctx), optionsOf(ctx).proxy.healthChecksPerSecond),
    )
    .inSingletonScope();
}

/** The proxies: upstream pool, L7 and L4 engines, the portals, the explicit proxy. */
export function bindProxy(bind: Bind): void {
  bind(UpstreamPool)
    .toDynamicValue((ctx) => {
      const dialer = ctx.get(BackendDialer);
      return new UpstreamPool({ connectTimeoutMs: optionsOf(ctx).proxy.connectTimeoutMs }, (b, ms) =>
        dialer.connect(b, ms),
      );
    })
    .inSingletonScope();
  bind(HttpProxy)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      return new HttpProxy(ctx.get(LoadBalancer), ctx.get(UpstreamPool), {
        connectTimeoutMs: o.proxy.connectTimeoutMs,
        responseTimeoutMs: o.proxy.responseTimeoutMs,
        headTimeoutMs: o.proxy.headTimeoutMs,
        maxHeadBytes: o.proxy.maxHeadBytes,
        tunnelIdleMs: o.proxy.tcpIdleTimeoutMs,
        splice: o.proxy.splice,
        underscoresInHeaders: o.proxy.underscoresInHeaders,
        engine: o.httpEngine,
        coalesceUs: o.httpCoalesceUs,
        log: logOf(ctx),
      });
    })
    .inSingletonScope();
  bind(TcpProxy)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      return new TcpProxy(ctx.get(LoadBalancer), {
        connectTimeoutMs: o.proxy.connectTimeoutMs,
        idleTimeoutMs: o.proxy.tcpIdleTimeoutMs,
        splice: o.proxy.splice,
        log: logOf(ctx),
        dialer: ctx.get(BackendDialer),
      });
    })
    .inSingletonScope();
  bind(H2Proxy)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      return new H2Proxy(ctx.get(LoadBalancer), ctx.get(BackendDialer), {
        maxStreams: o.proxy.h2MaxStreams,
        maxHeaderListBytes: o.proxy.maxHeadBytes,
        replayBytes: o.proxy.h2ReplayBytes,
        pingIntervalMs: o.proxy.h2PingIntervalMs,
        idleTimeoutMs: o.proxy.h2IdleTimeoutMs,
        maxResetsPerSecond: o.proxy.h2MaxResetsPerSecond,
        engine: o.h2Engine,
        coalesceUs: o.httpCoalesceUs,
        connectTimeoutMs: o.proxy.connectTimeoutMs,
        responseTimeoutMs: o.proxy.responseTimeoutMs,
        log: logOf(ctx),
      });
    })
    .inSingletonScope();
  bind(ConnectionBudget)
    .toDynamicValue((ctx) => {
      const o = optionsOf(ctx);
      return new ConnectionBudget({ maxConnections: o.proxy.maxConnections, log: logOf(ctx) });
    })
    .inSingletonScope();
  bind<PortalManagerFactory>(PortalManagerFactory).toDynamicValue((ctx) => (host, onRetry) => {
    const o = optionsOf(ctx);
    const backends = ctx.get(BackendIndex);
    return new PortalManager(
      host,
      ctx.get(HttpProxy),
      ctx.get(TcpProxy),
      ctx.get(H2Proxy),
      ctx.get(LoadBalancer),
      (spec) => backends.of(spec),
      {
        log: logOf(ctx),
        hashHeader: o.consistentHashHeader,
        udp: { idleTimeoutMs: o.proxy.udpIdleTimeoutMs, dialer: ctx.get(BackendDialer) },
        portRange: portalPortRange(o.portalPortRange),
        onRetry,
        budget: ctx.get(ConnectionBudget),
      },
    );
  });
  bind<ForwardProxyFactory>(ForwardProxyFactory).toDynamicValue((ctx) => (resolve) => {
    const o = optionsOf(ctx);
    return new ForwardProxy(
      ctx.get(HttpProxy),
      ctx.get(TcpProxy),
      resolve,
      {
        maxHeadBytes: o.proxy.maxHeadBytes,
        headTimeoutMs: o.proxy.headTimeoutMs,
        hashHeader: o.consistentHashHeader,
        log: logOf(ctx),
        budget: ctx.get(ConnectionBudget),
      },
      ctx.get(H2Proxy),
    );
  });
}

/** iptables mode: the listen address, our nat chains, the resolv.conf hijack. */
export function bindInterception(bind: Bind): void {
  bind(Interception)
    .toDynamicValue(
      (ctx) => new Interception(optionsOf(ctx), ctx.get(ServiceCatalog), ctx.get(BackendIndex), logOf(ctx)),
    )
    .inSingletonScope();
}

/**
 * EdgeMesh in one ContainerModule, a table of contents: each part bound on its own so an
 * embedder can rebind it (a strategy contributed, the load balancer or the DNS server replaced).
 * Needs `EdgeMeshOptions` and a `MetaClient` (MetaManager's container module binds one; an
 * embedder may bind its own).
 */
export const edgemeshContainerModule = new ContainerModule(({ bind }) => {
  bindCatalog(bind);
  bindDns(bind);
  bindLb(bind);
  bindProxy(bind);
  bindInterception(bind);
  bind(EdgeMeshModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(EdgeMeshModule);
  bind(PublishedBackends).toService(EdgeMeshModule);
  bind(BackendPaths).toService(EdgeMeshModule);
  bind(ServiceExplainer).toService(EdgeMeshModule);
  bind(MetricsContribution).toDynamicValue((ctx) => new EdgeMeshMetrics(ctx.get(EdgeMeshModule)));
});

/**
 * An EdgeMesh module with the default parts, for a runtime that does not use inversify itself:
 * its options, where its metadata comes from, and a logger.
 */
export function createEdgeMesh(
  options: EdgeMeshOptions,
  meta: MetaClient,
  log?: Logger,
  /** Streams to backends on other sites (an EdgeTunnel agent, or the embedder's own). */
  tunnel?: MeshTunnel,
): EdgeMeshModule {
  const c = new Container();
  c.loadSync(edgemeshContainerModule);
  c.bind(EdgeMeshOptions).toConstantValue(options);
  c.bind(MetaClient).toConstantValue(meta);
  if (log) c.bind(Logger).toConstantValue(log);
  if (tunnel) c.bind<MeshTunnel>(MeshTunnel).toConstantValue(tunnel);
  return c.get(EdgeMeshModule);
}
