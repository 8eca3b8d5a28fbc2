import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import { Mosquitto, recordingLogger, until } from '@edgecore/test-support';
import { EdgeMeshModule } from '@edgecore/edgemesh-module';
import { MetaServer } from '@edgecore/metamanager';
import { EdgeCoreHost, parseConfig } from '../src';
import { edgectl } from '../src/cli/edgectl';

/**
 * The Service API through the whole path: YAML → edgectl (the slice controller) → mosquitto →
 * EdgeHub → MetaManager (SQLite) → EdgeMesh, and HTTP requests through this node's portals to real
 * backends. This node is `n1` in zone z1; `n2` (z1) and `n3` (z2) are other nodes that published
 * their status; each node's pods listen on its own loopback address.
 */

const IP = { n1: '127.0.0.11', n2: '127.0.0.12', n3: '127.0.0.13' } as const;
type NodeName = keyof typeof IP;

interface Backend {
  id: string;
  node: NodeName;
  port: number;
  server: Server;
  hits: number;
  connections: number;
  /** Answer /slow after this many ms. */
  slowMs: number;
  listen(): Promise<void>;
  close(): Promise<void>;
}

async function backend(id: string, node: NodeName): Promise<Backend> {
  const sockets = new Set<Socket>();
  const b: Backend = {
    id,
    node,
    port: 0,
    hits: 0,
    connections: 0,
    slowMs: 1500,
    server: createServer((req, res) => {
      b.hits++;
      const answer = (): void => {
        res.setHeader('content-type', 'text/plain');
        res.end(id);
      };
      if (req.url === '/slow') setTimeout(answer, b.slowMs);
      else answer();
    }),
    /** Listen (again, after close: the same address and port). */
    async listen() {
      await new Promise<void>((r) => b.server.listen(b.port, IP[node], r));
      b.port = (b.server.address() as AddressInfo).port;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        b.server.close(() => r());
      }),
  };
  b.server.on('connection', (s: Socket) => {
    b.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await b.listen();
  return b;
}

const podYaml = (name: string, app: string, b: Backend, extra = ''): string => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: default, labels: { app: ${app} }${extra} }
spec:
  nodeName: ${b.node}
  containers: [{ name: c, image: nginx, ports: [{ containerPort: 80, hostPort: ${b.port} }] }]
status: { hostIP: ${IP[b.node]} }
`;
const svcYaml = (name: string, spec = '', annotations = ''): string => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: default${annotations ? `, annotations: { ${annotations} }` : ''} }
spec:
  selector: { app: ${name} }
  ports: [{ name: http, port: 80, targetPort: 80 }]
${spec}`;

describe('Service semantics through edgectl, mosquitto, MetaManager and EdgeMesh', () => {
  let broker: Mosquitto;
  let dir: string;
  let host: EdgeCoreHost;
  let mesh: EdgeMeshModule;
  let metaserver: string;
  const logs: { level: string; obj: any; msg?: string }[] = [];
  const backends: Backend[] = [];

  const apply = async (yaml: string, verb: 'apply' | 'delete' = 'apply'): Promise<string> => {
    const f = join(dir, `m-${Math.random().toString(16).slice(2)}.yaml`);
    writeFileSync(f, yaml);
    const out: string[] = [];
    const err: string[] = [];
    const code = await edgectl(['--server', broker.url, verb, '-f', f], {
      stdout: (s) => out.push(s),
      stderr: (s) => err.push(s),
      stdin: () => '',
    });
    if (code !== 0) throw new Error(`edgectl ${verb}: ${err.join('')}`);
    return out.join('');
  };

  /** GET through the service's portal (where interception sends VIP:80), its answer and status. */
  const get = (svc: string, path = '/', headers: Record<string, string> = {}) => {
    const portal = mesh.portals.table().find((e) => e.service === svc && e.port === 80);
    if (!portal) throw new Error(`no portal of ${svc}`);
    return new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        {
          host: portal.listenHost,
          port: portal.listenPort,
          path,
          agent: false,
          headers: { host: `${svc}.default.svc.cluster.local`, ...headers },
        },
        (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  };
  const backendsOf = (svc: string): string[] =>
    (mesh.resolveTarget(`${svc}.default.svc.cluster.local`, 80)?.backends ?? []).map((b) => b.key).sort();
  const keyOf = (b: Backend): string => `${IP[b.node]}:${b.port}`;
  const serving = (svc: string, want: Backend[]) =>
    until(
      () => JSON.stringify(backendsOf(svc)) === JSON.stringify(want.map(keyOf).sort()),
      `${svc} served by ${want.map((b) => b.id).join(',') || 'nothing'}`,
    );

  beforeAll(async () => {
    broker = await Mosquitto.start();
    dir = mkdtempSync(join(tmpdir(), 'svc-semantics-'));
    // the other nodes' statuses (their zones), as their EdgeHub publishes them
    const other = await connectAsync(broker.url, { clientId: 'other-nodes', reconnectPeriod: 0 });
    for (const [node, zone] of [
      ['n2', 'z1'],
      ['n3', 'z2'],
    ])
      await other.publishAsync(
        `edgecore/nodes/${node}/status`,
        JSON.stringify({ status: 'online', node, zone }),
        { qos: 1, retain: true },
      );
    await other.endAsync();
    host = new EdgeCoreHost(
      parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub:
    nodeName: n1
    nodeIP: ${IP.n1}
    nodeLabels: { topology.kubernetes.io/zone: z1 }
    mqtt: { server: ${broker.url} }
  metaManager: { metaServer: { enable: true, server: 127.0.0.1:0 } }
  edgeMesh:
    mode: unprivileged
    listenPort: 0
    dns: { listenPort: 0, upstreams: [127.0.0.1:9] }
    proxy: { ejectBaseMs: 200, ejectMaxMs: 400 }
`),
      { logger: recordingLogger(logs) },
    );
    await host.start();
    mesh = host.container.get(EdgeMeshModule);
    metaserver = `http://127.0.0.1:${host.container.get(MetaServer).address()!.port}`;
    // n1's own status carries its zone (from its labels)
    await until(async () => {
      const c = await connectAsync(broker.url, { clientId: 'status-reader', reconnectPeriod: 0 });
      let zone: string | undefined;
      c.on('message', (_t, p) => (zone = JSON.parse(p.toString()).zone));
      await c.subscribeAsync('edgecore/nodes/n1/status');
      await new Promise((r) => setTimeout(r, 50));
      await c.endAsync();
      return zone === 'z1';
    }, 'n1 publishes its zone');
  });

  afterAll(async () => {
    await host?.stop();
    await Promise.all(backends.map((b) => b.close()));
    await broker?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (id: string, node: NodeName): Promise<Backend> => {
    const b = await backend(id, node);
    backends.push(b);
    return b;
  };

  it('a node gets services and slices, not the pods of other nodes; slices split over several objects', async () => {
    const a = await start('web-a', 'n2');
    const b = await start('web-b', 'n3');
    const mine = await start('web-l', 'n1');
    const out = await apply(
      [
        svcYaml('web'),
        podYaml('web-a', 'web', a),
        podYaml('web-b', 'web', b),
        podYaml('web-l', 'web', mine),
      ].join('---\n'),
    );
    expect(out).toBe('service/web created\npod/web-a created\npod/web-b created\npod/web-l created\n');
    await serving('web', [a, b, mine]);
    const pods = (await (await fetch(`${metaserver}/api/v1/namespaces/default/pods`)).json()) as any;
    expect(pods.items.map((p: any) => p.metadata.name)).toEqual(['web-l']);
    const slices = (await (
      await fetch(`${metaserver}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices`)
    ).json()) as any;
    const zones = Object.fromEntries(
      slices.items.flatMap((s: any) => s.endpoints.map((e: any) => [e.targetRef.name, e.zone])),
    );
    expect(zones).toEqual({ 'web-a': 'z1', 'web-b': 'z2', 'web-l': 'z1' });
    // a service without selector, its endpoints in two hand-made slices (a PLC and a broker at the edge)
    const slice = (name: string, be: Backend) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}, namespace: default, labels: { kubernetes.io/service-name: plc } }
addressType: IPv4
ports: [{ name: http, port: ${be.port}, protocol: TCP }]
endpoints: [{ addresses: [${IP[be.node]}], nodeName: ${be.node}, conditions: { ready: true } }]
`;
    const p1 = await start('plc-1', 'n2');
    const p2 = await start('plc-2', 'n3');
    expect(
      await apply(
        [
          `apiVersion: v1
kind: Service
metadata: { name: plc, namespace: default }
spec: { ports: [{ name: http, port: 80 }] }
`,
          slice('plc-1', p1),
          slice('plc-2', p2),
        ].join('---\n'),
      ),
    ).toBe(
      'service/plc created\nendpointslice.discovery.k8s.io/plc-1 created\nendpointslice.discovery.k8s.io/plc-2 created\n',
    );
    await serving('plc', [p1, p2]);
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add((await get('plc')).body);
    expect([...seen].sort()).toEqual(['plc-1', 'plc-2']);
    await apply(slice('plc-2', p2), 'delete');
    await serving('plc', [p1]);
  });

  it('an endpoint going terminating under load: no failed request, nothing new to it, its open request finishes', async () => {
    const a = await start('term-a', 'n2');
    const b = await start('term-b', 'n3');
    await apply([svcYaml('term'), podYaml('term-a', 'term', a), podYaml('term-b', 'term', b)].join('---\n'));
    await serving('term', [a, b]);
    // one slow request on each (round robin): term-b's is open while it starts terminating
    const slow = [get('term', '/slow'), get('term', '/slow')];
    await until(() => a.hits + b.hits === 2, 'both slow requests at their backends');
    expect(b.hits).toBe(1);
    const statuses: number[] = [];
    let stop = false;
    const load = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) statuses.push((await get('term')).status);
    })();
    await apply(podYaml('term-b', 'term', b, ', deletionTimestamp: "2026-12-05T08:00:00Z"'));
    await serving('term', [a]);
    const after = { hits: b.hits, connections: b.connections };
    const from = statuses.length;
    await until(() => statuses.length >= from + 50, 'fifty requests after the change', 20_000);
    stop = true;
    await load;
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect({ hits: b.hits, connections: b.connections }).toEqual(after);
    const answers = await Promise.all(slow);
    expect(answers.map((r) => r.status)).toEqual([200, 200]);
    expect(answers.map((r) => r.body).sort()).toEqual(['term-a', 'term-b']);
  });

  it('internalTrafficPolicy Local: only this node’s endpoint; none here → 503, no fallback', async () => {
    const here = await start('loc-here', 'n1');
    const there = await start('loc-there', 'n2');
    await apply(
      [
        svcYaml('loc', '  internalTrafficPolicy: Local\n'),
        podYaml('loc-here', 'loc', here),
        podYaml('loc-there', 'loc', there),
        svcYaml('away', '  internalTrafficPolicy: Local\n'),
        podYaml('away-there', 'away', there),
      ].join('---\n'),
    );
    await serving('loc', [here]);
    for (let i = 0; i < 6; i++) expect(await get('loc')).toEqual({ status: 200, body: 'loc-here' });
    await until(
      () => backendsOf('away').length === 0 && !!mesh.resolveTarget('away.default.svc.cluster.local', 80),
      'away known',
    );
    const r = await get('away');
    expect(r.status).toBe(503);
    expect(there.hits).toBe(0);
  });

  it('PreferSameZone: the zone’s endpoint while it lives; the other zone when it dies; back when it returns', async () => {
    const near = await start('zone-near', 'n2');
    const far = await start('zone-far', 'n3');
    await apply(
      [
        svcYaml('zoned', '  trafficDistribution: PreferSameZone\n'),
        podYaml('zone-near', 'zoned', near),
        podYaml('zone-far', 'zoned', far),
      ].join('---\n'),
    );
    await serving('zoned', [near, far]);
    for (let i = 0; i < 6; i++) expect((await get('zoned')).body).toBe('zone-near');
    await near.close();
    for (let i = 0; i < 6; i++) expect(await get('zoned')).toEqual({ status: 200, body: 'zone-far' });
    await near.listen(); // the same address and port again
    await until(async () => (await get('zoned')).body === 'zone-near', 'back to the near zone', 10_000, 50);
    for (let i = 0; i < 6; i++) expect((await get('zoned')).body).toBe('zone-near');
  });

  it('per-service policies side by side on one node; an unknown DestinationRule field is one warning', async () => {
    const x = await start('pol-x', 'n2');
    const y = await start('pol-y', 'n3');
    const pods = (app: string) => [podYaml(`${app}-x`, app, x), podYaml(`${app}-y`, app, y)];
    const out = await apply(
      [
        svcYaml('rr'),
        ...pods('rr'),
        svcYaml(
          'sticky',
          '  sessionAffinity: ClientIP\n  sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } }\n',
        ),
        ...pods('sticky'),
        svcYaml('hashed'),
        ...pods('hashed'),
        `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: { name: hashed, namespace: default }
spec:
  host: hashed.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: { consistentHash: { httpHeaderName: x-user } }
    connectionPool: { tcp: { maxConnections: 100 } }
`,
      ].join('---\n'),
    );
    expect(out).toContain('destinationrule.networking.istio.io/hashed created\n');
    for (const s of ['rr', 'sticky', 'hashed']) await serving(s, [x, y]);
    await until(() => mesh.backendPaths().length > 0, 'rows');
    const bodies = async (svc: string, n: number, headers?: Record<string, string>) => {
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push((await get(svc, '/', headers)).body);
      return out;
    };
    expect(new Set(await bodies('rr', 6)).size).toBe(2);
    expect(new Set(await bodies('sticky', 8)).size).toBe(1);
    for (const u of ['u1', 'u2', 'u3'])
      expect(new Set(await bodies('hashed', 4, { 'x-user': u })).size).toBe(1);
    const spread = new Set<string>();
    for (let i = 0; i < 20; i++) spread.add((await get('hashed', '/', { 'x-user': `user-${i}` })).body);
    expect(spread.size).toBe(2);
    const warned = logs.filter(
      (l) => l.level === 'warn' && l.obj?.field === 'spec.trafficPolicy.connectionPool',
    );
    expect(warned).toHaveLength(1);
    expect(warned[0].obj.object).toBe('destinationrule/default/hashed');
  });
});
