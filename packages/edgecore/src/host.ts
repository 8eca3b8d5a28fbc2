import 'reflect-metadata';
import {
  BeehiveOptions,
  beehiveContainerModule,
  Core,
  Logger,
  MetricsContribution,
  scrapedGauge,
  splitHostPort,
} from '@edgecore/beehive';
import { MetaManagerOptions, metamanagerContainerModule } from '@edgecore/metamanager';
import { EdgeHubOptions, edgehubContainerModule, NodeStatusPublisher } from '@edgecore/edgehub';
import {
  BackendPaths,
  ServiceExplainer,
  EdgeMeshOptions,
  edgemeshContainerModule,
  MeshTunnel,
  PublishedBackends,
} from '@edgecore/edgemesh-module';
import {
  EdgeTunnelOptions,
  edgetunnelContainerModule,
  TunnelEndpoint,
  TunnelStatusSink,
  TunnelTargetsToken,
  type TunnelTargets,
} from '@edgecore/edgetunnel';
import { Container } from 'inversify';
import type { EdgeCoreConfig } from './config/config';
import { DbLock } from './db-lock';
import { Registry } from 'prom-client';
import { ObservabilityServer } from './observability/observability-server';

/** edgecore.yaml module keys, in KubeEdge's naming. */
type ModuleKey = keyof EdgeCoreConfig['modules'];

/**
 * How a module gets into the host: a config key and a loader that binds it into the container
 * (its container module binds its metrics as a contribution too). The host loads those whose
 * `enable` is true.
 */
export interface ModuleLoader {
  key: ModuleKey;
  load(c: Container, cfg: EdgeCoreConfig): void;
}

const metaManagerLoader: ModuleLoader = {
  key: 'metaManager',
  load(c, cfg) {
    c.loadSync(metamanagerContainerModule);
    c.bind(MetaManagerOptions).toConstantValue({
      ...cfg.modules.metaManager,
      dataSource: cfg.database.dataSource,
      cacheSizeKiB: cfg.database.cacheSizeKiB,
    } satisfies MetaManagerOptions);
  },
};

const edgeHubLoader: ModuleLoader = {
  key: 'edgeHub',
  load(c, cfg) {
    const h = cfg.modules.edgeHub;
    c.loadSync(edgehubContainerModule);
    c.bind(EdgeHubOptions).toConstantValue({
      ...h,
      nodeName: h.nodeName!,
      nodeStatuses: h.nodeStatuses || cfg.modules.edgeTunnel.enable,
      // what the node publishes of itself (its zone, for the tunnel), in its will too
      statusFields: { ...labelStatus(cfg), ...tunnelStatus(cfg) },
    } satisfies EdgeHubOptions);
  },
};

/** The label that names a node's zone. */
const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** This node's zone: EdgeMesh's `zone`, else its `topology.kubernetes.io/zone` label. */
function zoneOf(cfg: EdgeCoreConfig): string | undefined {
  return cfg.modules.edgeMesh.zone ?? cfg.modules.edgeHub.nodeLabels[ZONE_LABEL];
}

/** The node's labels and zone, in its status. */
function labelStatus(cfg: EdgeCoreConfig): Record<string, unknown> {
  const labels = cfg.modules.edgeHub.nodeLabels;
  const zone = zoneOf(cfg);
  return { ...(Object.keys(labels).length ? { labels } : {}), ...(zone ? { zone } : {}) };
}

/** The node's own status fields for EdgeTunnel known from its config (its relays come later). */
function tunnelStatus(cfg: EdgeCoreConfig): Record<string, unknown> {
  const t = cfg.modules.edgeTunnel;
  if (!t.enable) return {};
  return { site: t.site, tunnel: { relays: [], address: t.advertise ?? t.listen } };
}

const edgeMeshLoader: ModuleLoader = {
  key: 'edgeMesh',
  load(c, cfg) {
    c.loadSync(edgemeshContainerModule);
    c.bind(EdgeMeshOptions).toConstantValue({
      ...cfg.modules.edgeMesh,
      nodeName: cfg.modules.edgeMesh.nodeName ?? cfg.modules.edgeHub.nodeName,
      zone: zoneOf(cfg),
      dependencies: cfg.modules.metaManager.enable ? ['metamanager'] : [],
    } satisfies EdgeMeshOptions);
  },
};

/**
 * EdgeTunnel, and its seams with the other modules (neither package knows the other): EdgeMesh
 * says which backends this node publishes (the only ones the tunnel opens for other nodes) and
 * opens streams to other sites through it; EdgeHub carries its site and relays in the node status.
 */
const edgeTunnelLoader: ModuleLoader = {
  key: 'edgeTunnel',
  load(c, cfg) {
    const node = cfg.modules.edgeHub.nodeName!;
    c.loadSync(edgetunnelContainerModule);
    c.bind(EdgeTunnelOptions).toConstantValue({
      ...cfg.modules.edgeTunnel,
      nodeName: node,
    } satisfies EdgeTunnelOptions);
    const mesh = cfg.modules.edgeMesh.enable;
    c.bind<TunnelTargets>(TunnelTargetsToken).toConstantValue({
      // resolved at the first stream, not at bind time (EdgeMesh depends on the tunnel too)
      allows: (host, port, proto) =>
        mesh && c.get<PublishedBackends>(PublishedBackends).publishes(node, host, port, proto),
    });
    if (cfg.modules.edgeHub.enable)
      c.bind<TunnelStatusSink>(TunnelStatusSink).toDynamicValue((ctx) =>
        ctx.get<NodeStatusPublisher>(NodeStatusPublisher),
      );
    if (mesh)
      c.bind<MeshTunnel>(MeshTunnel).toDynamicValue((ctx) => {
        const t = ctx.get<TunnelEndpoint>(TunnelEndpoint);
        return {
          node: t.node,
          site: t.site,
          open: (r, h, p, join) => t.open(r, h, p, join),
          datagram: (r, h, p) => t.datagram(r, h, p),
        };
      });
  },
};

/** Loaders of the modules this build has. */
export const MODULE_LOADERS: ModuleLoader[] = [
  metaManagerLoader,
  edgeHubLoader,
  edgeTunnelLoader,
  edgeMeshLoader,
];

export interface HostOptions {
  logger: Logger;
  loaders?: ModuleLoader[];
}

/** The edgecore process: one inversify container, beehive core, observability, DB lock. */
export class EdgeCoreHost {
  readonly container = new Container();
  readonly metrics = new Registry();
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
    this.obs = new ObservabilityServer(
      this.metrics,
      () => ({ ready: this.ready, reason: this.notReadyReason }),
      {
        '/debug/endpoints': () =>
          this.container.isBound(BackendPaths)
            ? this.container.get<BackendPaths>(BackendPaths).backendPaths()
            : [],
        '/debug/explain': (q) => {
          const m = /^([a-z0-9-]{1,63})\/([a-z0-9.-]{1,253})$/.exec(q.get('service') ?? '');
          if (!m) throw Object.assign(new Error('expected ?service=NAMESPACE/NAME'), { status: 400 });
          if (!this.container.isBound(ServiceExplainer))
            throw Object.assign(new Error('EdgeMesh is not enabled on this node'), { status: 404 });
          return this.container.get<ServiceExplainer>(ServiceExplainer).explain(m[1], m[2]);
        },
      },
    );
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
      for (const l of loaders) if (cfg.modules[l.key].enable) l.load(c, cfg);
      this.registerMetrics(c);
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

  /** Every package's metrics (their contributions), and the host's own readiness. */
  private registerMetrics(c: Container): void {
    for (const m of c.getAll<MetricsContribution>(MetricsContribution, { optional: true }))
      m.registerMetrics(this.metrics);
    scrapedGauge(this.metrics, 'edgecore_ready', '1 once every module serves.', () => (this.ready ? 1 : 0));
  }
}
