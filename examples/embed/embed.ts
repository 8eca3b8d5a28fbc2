/**
 * Embedding EdgeMesh in another edge runtime: its own beehive core, its own metadata source bound
 * in place of MetaManager's client (no SQLite, no MQTT), EdgeMesh registered by binding it.
 */
import 'reflect-metadata';
import { beehiveContainerModule, Core } from '@edgecore/beehive';
import {
  type Backend,
  EdgeMeshModule,
  EdgeMeshOptions,
  edgemeshContainerModule,
  LbStrategyContribution,
  type LbStrategy,
} from '@edgecore/edgemesh-module';
import { MetaClient } from '@edgecore/metamanager/client';
import { Container } from 'inversify';

/**
 * The host runtime's own load-balancing rule, contributed beside the built-in strategies: every
 * request to the backend that sorts first by address (a primary, with the others as failover —
 * passive health still ejects it when it refuses connections).
 */
export class PreferFirst implements LbStrategy {
  readonly name = 'PreferFirst';
  pick(b: readonly Backend[]): Backend {
    return [...b].sort((x, y) => (x.key < y.key ? -1 : 1))[0];
  }
}

/** The host runtime's own metadata: an in-memory map keyed `<ns>/<type>/<name>`. */
export class StaticMetaSource implements MetaClient {
  constructor(private readonly objects = new Map<string, unknown>()) {}
  async get<T>(ns: string, type: string, name: string): Promise<T | undefined> {
    return this.objects.get(`${ns}/${type}/${name}`) as T | undefined;
  }
  async list<T>(ns: string, type: string): Promise<T[]> {
    return [...this.objects]
      .filter(([k]) => (ns === '*' || k.startsWith(`${ns}/`)) && k.split('/')[1] === type)
      .map(([, v]) => v as T);
  }
  async put(ns: string, type: string, name: string, object: unknown): Promise<void> {
    this.objects.set(`${ns}/${type}/${name}`, object);
  }
  async delete(ns: string, type: string, name: string): Promise<void> {
    this.objects.delete(`${ns}/${type}/${name}`);
  }
}

export async function startEmbedded(
  source: MetaClient,
  dnsPort = 5353,
  proxyPort = 40001,
  lbStrategy = 'PreferFirst',
): Promise<{ core: Core; mesh: EdgeMeshModule }> {
  const c = new Container();
  c.loadSync(beehiveContainerModule, edgemeshContainerModule);
  c.bind(MetaClient).toConstantValue(source);
  // one more strategy at EdgeMesh's contribution point, chosen by name like a built-in one
  c.bind(LbStrategyContribution).toConstantValue({ name: 'PreferFirst', create: () => new PreferFirst() });
  c.bind(EdgeMeshOptions).toConstantValue({
    lbStrategy,
    mode: 'unprivileged',
    listenPort: proxyPort,
    dns: { listenPort: dnsPort, upstreams: [] },
    dependencies: [],
  });
  const core = c.get(Core);
  await core.start();
  return { core, mesh: c.get(EdgeMeshModule) };
}

if (require.main === module) {
  const source = new StaticMetaSource();
  void source.put('default', 'service', 'hello', {
    metadata: { name: 'hello', namespace: 'default' },
    spec: { clusterIP: 'None', ports: [{ name: 'http-0', port: 80 }] },
  });
  void startEmbedded(source).then(({ core, mesh }) => {
    console.log(
      `hello.default.svc.cluster.local → ${mesh.vipOf('default/hello')} (dig @127.0.0.1 -p 5353 hello.default.svc.cluster.local)`,
    );
    core.installSignalHandlers(process, () => process.exit(0));
  });
}
