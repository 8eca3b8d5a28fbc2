import { ChannelContext, Core, type Logger } from '@edgecore/beehive';
import { BeehiveMetaClient, MetaManagerModule, MetaStore, type MetaClient } from '@edgecore/metamanager';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '@edgecore/test-support';
import {
  createEdgeMesh,
  H2Proxy,
  HttpProxy,
  LoadBalancer,
  PortalManager,
  RoundRobin,
  TcpProxy,
  UpstreamPool,
  type Backend,
  type EdgeMeshModule,
  type EdgeMeshOptions,
  type MeshTunnel,
  type Pod,
  type PortalSpec,
  type Service,
} from '../src';

/**
 * A PortalManager on 127.0.0.1 over proxies of its own (round robin; no HTTP/2 upstream is ever
 * dialed), with its HTTP and TCP proxies (close `http` after).
 */
export function testPortals(
  backendsOf: (spec: PortalSpec) => readonly Backend[],
  opts: ConstructorParameters<typeof PortalManager>[6] = {},
): { portals: PortalManager; http: HttpProxy; tcp: TcpProxy } {
  const lb = new LoadBalancer(new RoundRobin());
  const http = new HttpProxy(lb, new UpstreamPool());
  const tcp = new TcpProxy(lb);
  const h2 = new H2Proxy(lb, { connect: () => Promise.reject(new Error('not dialed')) });
  return { portals: new PortalManager('127.0.0.1', http, tcp, h2, lb, backendsOf, opts), http, tcp };
}

export { freePort, tmpDir, until } from '@edgecore/test-support';

/**
 * Run a child script of this directory (TypeScript, through ts-node) in a process of its own whose
 * open-file limit `prlimit` sets to `nofile` (soft = hard), and parse the JSON line it prints.
 */
export async function underFileLimit(child: string, nofile: number, args: string[] = []): Promise<any> {
  const { stdout } = await promisify(execFile)(
    'prlimit',
    [
      `--nofile=${nofile}:${nofile}`,
      process.execPath,
      '-r',
      'ts-node/register/transpile-only',
      join(__dirname, child),
      ...args,
    ],
    { timeout: 30_000 },
  );
  return JSON.parse(stdout);
}

export function service(
  name: string,
  ns = 'default',
  extra: Partial<NonNullable<Service['spec']>> = {},
): Service {
  return {
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: {
      clusterIP: 'None',
      selector: { app: name },
      ports: [{ name: 'http-0', port: 12345, protocol: 'TCP', targetPort: 80 }],
      ...extra,
    },
  };
}

export interface MeshNode {
  ctx: ChannelContext;
  core: Core;
  mesh: EdgeMeshModule;
  mm: MetaManagerModule;
  /** Write like EdgeHub does (commit, then forwarded to mesh). */
  put(svc: Service): Promise<void>;
  putPod(pod: Pod): Promise<void>;
  delPod(ns: string, name: string): Promise<void>;
  del(ns: string, name: string): Promise<void>;
  /** Write any object (`ns/type/name`), e.g. another node's status. */
  putObject(ns: string, type: string, name: string, obj: unknown): Promise<void>;
  /** Wait until EdgeMesh processed everything sent so far. */
  settle(): Promise<void>;
  port: number;
  stop(): Promise<void>;
}

export async function startMesh(
  db: string,
  opts: Partial<EdgeMeshOptions> = {},
  log?: Logger,
  tunnel?: MeshTunnel,
  /** EdgeMesh's MetaClient made from the beehive one (an embedder's own, say). */
  metaClient: (c: BeehiveMetaClient) => MetaClient = (c) => c,
): Promise<MeshNode> {
  const ctx = new ChannelContext();
  const mm = new MetaManagerModule({ dataSource: db }, new MetaStore(db));
  const mesh = createEdgeMesh(
    // port 0 everywhere: test files run in parallel
    {
      // unprivileged: these tests run in the host namespace and must never program iptables there
      mode: 'unprivileged',
      listenPort: 0,
      ...opts,
      dns: { listenPort: 0, upstreams: ['127.0.0.1:9'], upstreamTimeoutMs: 300, ...opts.dns },
    },
    metaClient(new BeehiveMetaClient(ctx, { source: 'edgemesh' })),
    log,
    tunnel,
  );
  const core = new Core(ctx, [mm, mesh]);
  await core.start();
  ctx.addModule('cloud', 'user');
  const client = new BeehiveMetaClient(ctx, { source: 'cloud' });
  let rv = Date.now() * 1000;
  const settle = async (): Promise<void> => {
    // MetaManager forwards before it acknowledges: the change is in EdgeMesh's mailbox, or taken
    // and being applied (mesh.applying) — wait until neither, however slow the machine is
    const deadline = Date.now() + 20_000;
    while ((ctx.queued('edgemesh') > 0 || mesh.applying) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 2));
  };
  return {
    ctx,
    core,
    mesh,
    mm,
    port: mesh.dns.port,
    put: async (s) => {
      await client.put(s.metadata.namespace ?? 'default', 'service', s.metadata.name, s, ++rv);
      await settle();
    },
    del: async (ns, name) => {
      await client.delete(ns, 'service', name);
      await settle();
    },
    putPod: async (p) => {
      await client.put(p.metadata.namespace ?? 'default', 'pod', p.metadata.name, p, ++rv);
      await settle();
    },
    putObject: async (ns, type, name, obj) => {
      await client.put(ns, type, name, obj, ++rv);
      await settle();
    },
    delPod: async (ns, name) => {
      await client.delete(ns, 'pod', name);
      await settle();
    },
    settle,
    stop: () => core.shutdown(),
  };
}

/** dnsmasq as a local upstream on 127.0.0.1 (Debian dnsmasq-base). */
export async function startDnsmasq(
  args: string[],
): Promise<{ port: number; proc: ChildProcess; stop: () => Promise<void> }> {
  const port = await freePort();
  const proc = spawn(
    '/usr/sbin/dnsmasq',
    [
      '-k',
      '-C',
      '/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      '-p',
      String(port),
      '--local-ttl=30',
      ...args,
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const { dig } = await import('./dig');
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`dnsmasq exited: ${err}`);
    const r = await dig(port, ['probe.invalid', '+tries=1', '+time=1']).catch(() => '');
    if (r.includes('status:')) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    proc,
    stop: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return r();
        proc.once('exit', () => r());
        proc.kill('SIGTERM');
      }),
  };
}

/** A pod of `app` on this host: Running, Ready, container port 80 published on `hostPort`. */
export function pod(
  name: string,
  app: string,
  hostPort: number,
  extra: { ns?: string; containerPort?: number; portName?: string; protocol?: string } = {},
): Pod {
  return {
    kind: 'Pod',
    metadata: { name, namespace: extra.ns ?? 'default', labels: { app } },
    spec: {
      nodeName: 'edge-node-b',
      containers: [
        {
          name: 'c',
          ports: [
            {
              name: extra.portName,
              containerPort: extra.containerPort ?? 80,
              hostPort,
              protocol: extra.protocol,
            },
          ],
        },
      ],
    },
    status: {
      phase: 'Running',
      hostIP: '127.0.0.1',
      podIP: '127.0.0.1',
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

/** A hostNetwork pod on 127.0.0.1 of node n1 whose container port `portName` is `port`. */
export function hostPod(name: string, app: string, port: number, portName = 'grpc'): Pod {
  return {
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app } },
    spec: {
      nodeName: 'n1',
      hostNetwork: true,
      containers: [{ name: 'c', ports: [{ name: portName, containerPort: port }] }],
    },
    status: {
      phase: 'Running',
      hostIP: '127.0.0.1',
      podIP: '127.0.0.1',
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}
