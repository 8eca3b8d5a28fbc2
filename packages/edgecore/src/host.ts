import 'reflect-metadata';
import {
  BeehiveOptions,
  beehiveContainerModule,
  ChannelContext,
  Core,
  Logger,
  splitHostPort,
} from '@edgecore/beehive';
import { MetaManagerModule, MetaManagerOptions, metamanagerContainerModule } from '@edgecore/metamanager';
import { EdgeHubModule, EdgeHubOptions, edgehubContainerModule } from '@edgecore/edgehub';
import { EdgeMeshModule, EdgeMeshOptions, edgemeshContainerModule } from '@edgecore/edgemesh-module';
import { Container } from 'inversify';
import type { EdgeCoreConfig } from './config/config';
import { DbLock } from './db-lock';
import { MetricsRegistry, type MetricFamily } from './observability/metrics';
import { ObservabilityServer } from './observability/observability-server';

/** edgecore.yaml module keys, in KubeEdge's naming. */
type ModuleKey = keyof EdgeCoreConfig['modules'];

/**
 * How a module gets into the host: a config key and a loader that binds it into the container.
 * Each module package contributes one; the host loads those whose `enable` is true.
 */
export interface ModuleLoader {
  key: ModuleKey;
  load(c: Container, cfg: EdgeCoreConfig, metrics: MetricsRegistry): void;
}

const metaManagerLoader: ModuleLoader = {
  key: 'metaManager',
  load(c, cfg, metrics) {
    const mmCfg = cfg.modules.metaManager;
    c.loadSync(metamanagerContainerModule);
    c.bind(MetaManagerOptions).toConstantValue({
      ...mmCfg,
      dataSource: cfg.database.dataSource,
    } satisfies MetaManagerOptions);
    metrics.register(() => {
      const mm = c.get(MetaManagerModule);
      const s = mm.stats;
      return [
        {
          name: 'edgecore_metadata_updates_total',
          help: 'Metadata writes by outcome (applied, unchanged, stale, rejected).',
          type: 'counter',
          samples: (['applied', 'unchanged', 'stale', 'rejected'] as const).map((k) => ({
            labels: { result: k },
            value: s[k],
          })),
        },
        {
          name: 'edgecore_metadata_queries_total',
          help: 'Metadata queries answered.',
          type: 'counter',
          samples: [{ value: s.queries }],
        },
        {
          name: 'edgecore_metadata_remote_queries_total',
          help: 'Queries forwarded to the cloud, by outcome.',
          type: 'counter',
          samples: [
            { labels: { result: 'sent' }, value: s.remoteQueries },
            { labels: { result: 'failed' }, value: s.remoteFailures },
          ],
        },
        {
          name: 'edgecore_cloud_connected',
          help: '1 while the cloud link is up (as MetaManager saw it).',
          type: 'gauge',
          samples: [{ value: mm.cloudConnected ? 1 : 0 }],
        },
      ];
    });
  },
};

const edgeHubLoader: ModuleLoader = {
  key: 'edgeHub',
  load(c, cfg, metrics) {
    const h = cfg.modules.edgeHub;
    c.loadSync(edgehubContainerModule);
    c.bind(EdgeHubOptions).toConstantValue({ ...h, nodeName: h.nodeName! } satisfies EdgeHubOptions);
    metrics.register(() => {
      const s = c.get(EdgeHubModule).stats;
      return [
        counter(
          'edgecore_edgehub_digest_checks_total',
          'Comparisons of the cloud digests with the local store.',
          s.sync.checks,
        ),
        counter(
          'edgecore_edgehub_resyncs_total',
          'Object types read back from retained state because the local digest differed (a lost message).',
          s.sync.resyncs,
        ),
        counter(
          'edgecore_edgehub_orphans_deleted_total',
          'Objects deleted by a resync because the broker no longer retains them.',
          s.sync.orphansDeleted,
        ),
        ...lagFamilies('edgecore_edgehub_update_lag_seconds', 'Cloud publish to committed on this node', s),
        {
          name: 'edgecore_edgehub_messages_total',
          help: 'MQTT messages from the cloud, by outcome.',
          type: 'counter',
          samples: [
            { labels: { result: 'received' }, value: s.received },
            { labels: { result: 'committed' }, value: s.committed },
            { labels: { result: 'malformed' }, value: s.malformed },
          ],
        },
        {
          name: 'edgecore_edgehub_connects_total',
          help: 'Successful connections to the broker.',
          type: 'counter',
          samples: [{ value: s.connects }],
        },
        {
          name: 'edgecore_edgehub_connected',
          help: '1 while the MQTT link is up.',
          type: 'gauge',
          samples: [{ value: c.get(EdgeHubModule).cloudConnected ? 1 : 0 }],
        },
      ];
    });
  },
};

/** A counter family with one unlabelled sample. */
function counter(name: string, help: string, value: number): MetricFamily {
  return { name, help, type: 'counter', samples: [{ value }] };
}

/** `_sum` and `_count` (counters) and `_max` (gauge) of a lag in milliseconds, in seconds. */
function lagFamilies(
  name: string,
  what: string,
  s: { lagMsSum: number; lagCount: number; lagMsMax: number },
): MetricFamily[] {
  return [
    counter(`${name}_sum`, `${what}: seconds, summed.`, s.lagMsSum / 1000),
    counter(`${name}_count`, `${what}: updates measured.`, s.lagCount),
    { ...counter(`${name}_max`, `${what}: the longest, seconds.`, s.lagMsMax / 1000), type: 'gauge' },
  ];
}

const edgeMeshLoader: ModuleLoader = {
  key: 'edgeMesh',
  load(c, cfg, metrics) {
    const m = cfg.modules.edgeMesh;
    c.loadSync(edgemeshContainerModule);
    c.bind(EdgeMeshOptions).toConstantValue({
      ...m,
      dependencies: cfg.modules.metaManager.enable ? ['metamanager'] : [],
    } satisfies EdgeMeshOptions);
    metrics.register(() => {
      const mesh = c.get(EdgeMeshModule);
      const dns = mesh.dns?.stats;
      const fwd = mesh.forwarder?.stats;
      return [
        {
          name: 'edgecore_dns_queries_total',
          help: 'DNS queries received.',
          type: 'counter',
          samples: [{ value: dns?.queries ?? 0 }],
        },
        {
          name: 'edgecore_dns_responses_total',
          help: 'DNS responses by rcode.',
          type: 'counter',
          samples: Object.entries(mesh.dns?.rcodes() ?? {}).map(([rcode, value]) => ({
            labels: { rcode },
            value,
          })),
        },
        {
          name: 'edgecore_dns_forwarded_total',
          help: 'Queries forwarded upstream, cache hits and failures.',
          type: 'counter',
          samples: [
            { labels: { result: 'forwarded' }, value: fwd?.forwarded ?? 0 },
            { labels: { result: 'cache_hit' }, value: fwd?.cacheHits ?? 0 },
            { labels: { result: 'upstream_failure' }, value: fwd?.upstreamFailures ?? 0 },
            { labels: { result: 'servfail' }, value: fwd?.servfail ?? 0 },
          ],
        },
        counter(
          'edgecore_mesh_updates_applied_total',
          'Catalog changes from MetaManager applied by EdgeMesh.',
          mesh.updates.applied,
        ),
        counter(
          'edgecore_mesh_update_batches_total',
          'Batches those changes were applied in (one reconcile each).',
          mesh.updates.batches,
        ),
        ...lagFamilies(
          'edgecore_mesh_update_lag_seconds',
          'Cloud publish to applied in EdgeMesh',
          mesh.updates,
        ),
        {
          name: 'edgecore_mesh_services',
          help: 'Services in the EdgeMesh catalog.',
          type: 'gauge',
          samples: [{ value: mesh.catalog.services.size }],
        },
        {
          name: 'edgecore_mesh_vips_allocated',
          help: 'VIPs allocated from subNet.',
          type: 'gauge',
          samples: [{ value: mesh.vips?.allocated ?? 0 }],
        },
        {
          name: 'edgecore_proxy_http_responses_total',
          help: 'L7 proxy responses by status.',
          type: 'counter',
          samples: [...(mesh.http?.stats.byStatus ?? new Map<number, number>())].map(([status, value]) => ({
            labels: { status: String(status) },
            value,
          })),
        },
        {
          name: 'edgecore_proxy_http_backend_requests_total',
          help: 'L7 proxy requests by backend.',
          type: 'counter',
          samples: [...(mesh.http?.stats.byBackend ?? new Map<string, number>())].map(([backend, value]) => ({
            labels: { backend },
            value,
          })),
        },
        {
          name: 'edgecore_proxy_active_connections',
          help: 'Open client connections by kind.',
          type: 'gauge',
          samples: [
            { labels: { kind: 'http' }, value: mesh.http?.stats.activeConnections ?? 0 },
            { labels: { kind: 'tcp' }, value: mesh.tcp?.stats.active ?? 0 },
          ],
        },
        {
          name: 'edgecore_proxy_spliced_connections_total',
          help: 'Connections whose bytes went through the native splice engine, by kind.',
          type: 'counter',
          samples: [
            { labels: { kind: 'tcp' }, value: mesh.tcp?.stats.spliced ?? 0 },
            { labels: { kind: 'upgrade' }, value: mesh.http?.stats.splicedTunnels ?? 0 },
          ],
        },
        {
          name: 'edgecore_proxy_native_http_connections_total',
          help: 'L7 client connections (portals and the explicit proxy) taken by the native HTTP engine.',
          type: 'counter',
          samples: [{ value: mesh.http?.stats.nativeConnections ?? 0 }],
        },
        {
          name: 'edgecore_proxy_native_http_coalesced_wakeups_total',
          help: 'Wake-ups of the native HTTP engine that waited for more events under load (httpCoalesceUs).',
          type: 'counter',
          samples: [{ value: mesh.http?.native?.coalescedWakeups ?? 0 }],
        },
        {
          name: 'edgecore_dns_udp_native',
          help: '1 when the DNS server uses the native batched UDP path, 0 on node:dgram.',
          type: 'gauge',
          samples: [{ value: mesh.dns?.udpBackend === 'native' ? 1 : 0 }],
        },
        {
          name: 'edgecore_lb_ejections_total',
          help: 'Backends ejected by passive health.',
          type: 'counter',
          samples: [{ value: mesh.lb?.stats.ejections ?? 0 }],
        },
        {
          name: 'edgecore_mesh_portals',
          help: 'Portals (one per service port).',
          type: 'gauge',
          samples: [{ value: mesh.portals?.size ?? 0 }],
        },
      ];
    });
  },
};

/** Loaders of the modules this build has. */
export const MODULE_LOADERS: ModuleLoader[] = [metaManagerLoader, edgeHubLoader, edgeMeshLoader];

export interface HostOptions {
  logger: Logger;
  loaders?: ModuleLoader[];
}

/** The edgecore process: one inversify container, beehive core, observability, DB lock. */
export class EdgeCoreHost {
  readonly container = new Container();
  readonly metrics = new MetricsRegistry();
  private readonly log: Logger;
  private readonly lock: DbLock;
  private readonly obs: ObservabilityServer;
  private core?: Core;
  private ready = false;
  private notReadyReason = 'starting';
  private stopping?: Promise<void>;

  constructor(
    readonly config: EdgeCoreConfig,
    private readonly opts: HostOptions,
  ) {
    this.log = opts.logger;
    this.lock = new DbLock(config.database.dataSource);
    this.obs = new ObservabilityServer(this.metrics, () => ({
      ready: this.ready,
      reason: this.notReadyReason,
    }));
  }

  get observabilityAddress(): string | undefined {
    return this.obsAddress;
  }
  private obsAddress?: string;

  async start(): Promise<void> {
    const cfg = this.config;
    this.lock.acquire();
    try {
      const c = this.container;
      c.bind(Logger).toConstantValue(this.log);
      c.bind(BeehiveOptions).toConstantValue({ drainTimeoutMs: cfg.drainSeconds * 1000 });
      c.loadSync(beehiveContainerModule);
      const loaders = this.opts.loaders ?? MODULE_LOADERS;
      const have = new Set(loaders.map((l) => l.key));
      for (const key of Object.keys(cfg.modules) as ModuleKey[]) {
        if (cfg.modules[key].enable && !have.has(key))
          this.log.warn({ module: key }, 'module enabled in config but not part of this build yet; skipped');
      }
      for (const l of loaders) if (cfg.modules[l.key].enable) l.load(c, cfg, this.metrics);
      this.registerBusMetrics(c);
      if (cfg.observability.enable) {
        const [host, port] = splitHostPort(cfg.observability.listen);
        const a = await this.obs.listen(host, port);
        this.obsAddress = `${a.address}:${a.port}`;
        this.log.info({ address: this.obsAddress }, 'observability listening');
      }
      this.core = c.get(Core);
      this.notReadyReason = 'modules starting';
      await this.core.start();
      this.ready = true;
      this.log.info(
        { node: cfg.modules.edgeHub.nodeName, dataSource: cfg.database.dataSource },
        'edgecore ready',
      );
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
  }

  /** Stop accepting, let modules drain (drainSeconds), close everything, release the DB lock. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false;
      this.notReadyReason = 'shutting down';
      try {
        await this.core?.shutdown('stop');
        await this.obs.close();
        await this.container.unbindAll();
      } finally {
        this.lock.release();
        this.log.info({}, 'edgecore stopped');
      }
    })();
    return this.stopping;
  }

  private registerBusMetrics(c: Container): void {
    this.metrics.register(() => {
      const ctx = c.get(ChannelContext);
      return [
        {
          name: 'edgecore_beehive_messages_total',
          help: 'Messages accepted into module mailboxes.',
          type: 'counter',
          samples: [{ value: ctx.stats.sent }],
        },
        {
          name: 'edgecore_beehive_late_replies_total',
          help: 'Sync replies that found no waiter (dropped).',
          type: 'counter',
          samples: [{ value: ctx.stats.lateReplies }],
        },
        {
          name: 'edgecore_beehive_sync_timeouts_total',
          help: 'sendSync calls that timed out.',
          type: 'counter',
          samples: [{ value: ctx.stats.timeouts }],
        },
        {
          name: 'edgecore_ready',
          help: '1 once every module serves.',
          type: 'gauge',
          samples: [{ value: this.ready ? 1 : 0 }],
        },
      ];
    });
  }
}
