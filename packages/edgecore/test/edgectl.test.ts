import { silentLogger } from '@edgecore/beehive';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  EdgeCoreHost,
  ManifestError,
  ObjectPublisher,
  parseConfig,
  planManifest,
  SLICE_PLAN_EVERY,
} from '../src';
import { edgectl } from '../src/cli/edgectl';
import { Mosquitto } from '@edgecore/test-support';
import { until } from '@edgecore/test-support';
import { connectAsync } from 'mqtt';

const execFileP = promisify(execFile);

/** A pod as edgectl plans it: node-scoped, retained on its node's topics. */
function plannedPod(namespace: string, name: string, node: string, podIP: string) {
  return {
    type: 'pod' as const,
    namespace,
    name,
    node,
    object: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace },
      spec: { nodeName: node },
      status: { phase: 'Running', podIP },
    },
  };
}
const dig = async (args: string[]): Promise<string> =>
  (await execFileP('dig', args, { timeout: 10_000 })).stdout;

const SEED = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 1
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      nodeName: edge-node-b
      hostNetwork: true
      containers:
      - name: nginx
        image: nginx:1.15.12
        ports:
        - containerPort: 80
          hostPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: nginx-svc
  namespace: default
spec:
  clusterIP: None
  selector:
    app: nginx
  ports:
    - name: http-0
      port: 12345
      protocol: TCP
      targetPort: 80
`;

function io(stdin = ''): { out: string[]; err: string[]; io: Parameters<typeof edgectl>[1] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { stdout: (s) => out.push(s), stderr: (s) => err.push(s), stdin: () => stdin } };
}

describe('edgectl manifests', () => {
  it('expands a Deployment into Running/Ready pods on its node, with hostIP from --node-ip', () => {
    const docs = planManifest(SEED, 'seed.yaml', { nodeIPs: { 'edge-node-b': '198.51.100.2' } });
    expect(docs.map((d) => d.display)).toEqual(['deployment.apps/nginx-deployment', 'service/nginx-svc']);
    const pod = docs[0].objects[0];
    expect(pod).toMatchObject({ type: 'pod', namespace: 'default', name: 'nginx-deployment-0' });
    expect(pod.object.metadata.labels).toEqual({ app: 'nginx' });
    expect(pod.object.spec.nodeName).toBe('edge-node-b');
    expect(pod.object.status).toMatchObject({
      phase: 'Running',
      hostIP: '198.51.100.2',
      podIP: '198.51.100.2',
      conditions: [{ type: 'Ready', status: 'True' }],
    });
  });

  it.each([
    [
      'unsupported kind',
      'apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n',
      'document 1: unsupported kind "Secret"',
    ],
    [
      'bad name',
      'apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {ports: [{port: 1}]}\n',
      'document 1: metadata.name',
    ],
    [
      'bad port',
      'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 70000}]}\n',
      'document 1: spec.ports[0].port must be 1-65535',
    ],
    [
      'second document invalid',
      SEED + '---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\n',
      'document 3: Service without spec',
    ],
    [
      'no node IP',
      SEED.replace('edge-node-b', 'edge-node-z'),
      'document 1: pod nginx-deployment-0: no status.hostIP and no --node-ip for node "edge-node-z"',
    ],
    ['invalid YAML', 'apiVersion: v1\nkind: [\n', 'document 1: invalid YAML'],
  ])('%s → error with file and document index', (_n, text, msg) => {
    expect(() => planManifest(text, 'f.yaml', { nodeIPs: { 'edge-node-b': '198.51.100.2' } })).toThrow(
      ManifestError,
    );
    expect(() => planManifest(text, 'f.yaml', { nodeIPs: { 'edge-node-b': '198.51.100.2' } })).toThrow(
      `f.yaml: ${msg}`,
    );
  });
});

describe('edgectl → mosquitto → EdgeHub → MetaManager → MetaServer (round trip)', () => {
  let broker: Mosquitto;
  let dir: string;
  let host: EdgeCoreHost;
  let metaserver: string;

  beforeAll(async () => {
    broker = await Mosquitto.start();
    dir = mkdtempSync(join(tmpdir(), 'edgectl-'));
    host = new EdgeCoreHost(
      parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { nodeName: edge-node-a, nodeIP: 198.51.100.1, mqtt: { server: ${broker.url} } }
  metaManager: { metaServer: { enable: true, server: 127.0.0.1:0 } }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`),
      { logger: silentLogger },
    );
    await host.start();
    const { MetaServer } = await import('@edgecore/metamanager');
    metaserver = `http://127.0.0.1:${host.container.get(MetaServer).address()!.port}`;
  });
  afterAll(async () => {
    await host.stop();
    await broker.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const services = async (): Promise<string[]> =>
    ((await (await fetch(`${metaserver}/api/v1/namespaces/default/services`)).json()) as any).items.map(
      (s: any) => s.metadata.name,
    );

  it('apply -f prints kubectl-style lines; the node stores the objects; get prints a table', async () => {
    const f = join(dir, 'nginx.yaml');
    writeFileSync(f, SEED);
    const a = io();
    expect(
      await edgectl(['--server', broker.url, 'apply', '-f', f, '--node-ip', 'edge-node-b=127.0.0.1'], a.io),
    ).toBe(0);
    expect(a.out.join('')).toBe('deployment.apps/nginx-deployment created\nservice/nginx-svc created\n');
    await until(async () => (await services()).includes('nginx-svc'), 'service on the node');
    // the node gets the service and its slice (edgectl computes it), not the pods of another node
    const g = io();
    await until(async () => {
      g.out.length = 0;
      await edgectl(['get', 'endpointslices', '--metaserver', metaserver], g.io);
      return /127\.0\.0\.1/.test(g.out.join(''));
    }, 'the slice on the node');
    expect(g.out.join('')).toMatch(
      /^NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\nnginx-svc-[0-9a-f]{5}\s+IPv4\s+80\s+127\.0\.0\.1\n$/,
    );
    const pods = io();
    expect(await edgectl(['get', 'pods', '--metaserver', metaserver], pods.io)).toBe(0);
    expect(pods.out.join('')).toBe('No resources found in default namespace.\n');
    // applied again: kubectl's "configured"
    const again = io();
    expect(
      await edgectl(
        ['--server', broker.url, 'apply', '-f', f, '--node-ip', 'edge-node-b=127.0.0.1'],
        again.io,
      ),
    ).toBe(0);
    expect(again.out.join('')).toBe(
      'deployment.apps/nginx-deployment configured\nservice/nginx-svc configured\n',
    );
    const s = io();
    expect(await edgectl(['get', 'svc', '-A', '--metaserver', metaserver], s.io)).toBe(0);
    expect(s.out.join('')).toMatch(/default\s+nginx-svc\s+ClusterIP\s+None\s+12345\/TCP/);
  });

  it('EdgeMesh on the same node resolves the applied service with dig', async () => {
    const { EdgeMeshModule } = await import('@edgecore/edgemesh-module');
    const port = host.container.get(EdgeMeshModule).dns.port;
    const out = await dig([
      '@127.0.0.1',
      '-p',
      String(port),
      '+short',
      'nginx-svc.default.svc.cluster.local',
    ]);
    expect(out.trim()).toMatch(/^198\.18\.\d+\.\d+$/);
    const m = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
    expect(m).toMatch(/edgecore_dns_responses_total\{rcode="NOERROR"\} [1-9]/);
    expect(m).toContain('edgecore_mesh_services 1');
    // the explicit proxy answers for the service: the pod is 127.0.0.1:80 (refused → 502, or whatever serves :80)
    const mesh = host.container.get(EdgeMeshModule);
    const r = await execFileP('curl', [
      '-s',
      '-w',
      ' %{http_code}',
      '-x',
      `http://${mesh.forwardProxyAddress}`,
      'http://nginx-svc.default.svc.cluster.local:12345/',
    ]).catch((e) => e);
    expect(r.stdout).toMatch(/ (200|502)$/);
    expect(await (await fetch(`http://${host.observabilityAddress}/metrics`)).text()).toContain(
      'edgecore_mesh_portals 1',
    );
  });

  it('a later apply wins (fresh resourceVersion)', async () => {
    const f = join(dir, 'svc.yaml');
    writeFileSync(f, SEED.split('---\n')[1].replace('12345', '23456'));
    expect(await edgectl(['--server', broker.url, 'apply', '-f', f], io().io)).toBe(0);
    await until(async () => {
      const s = (await (
        await fetch(`${metaserver}/api/v1/namespaces/default/services/nginx-svc`)
      ).json()) as any;
      return s.spec.ports[0].port === 23456;
    }, 'updated port');
  });

  it('reads from stdin; delete -f removes the objects', async () => {
    const d = io(SEED);
    expect(await edgectl(['--server', broker.url, 'delete', '-f', '-'], d.io)).toBe(0);
    expect(d.out.join('')).toBe('deployment.apps "nginx-deployment" deleted\nservice "nginx-svc" deleted\n');
    await until(async () => (await services()).length === 0, 'service gone');
    const { EdgeMeshModule } = await import('@edgecore/edgemesh-module');
    const port = host.container.get(EdgeMeshModule).dns.port;
    await until(
      async () =>
        /NXDOMAIN/.test(await dig(['@127.0.0.1', '-p', String(port), 'nginx-svc.default.svc.cluster.local'])),
      'NXDOMAIN after delete',
    );
    const g = io();
    await edgectl(['get', 'pods', '--metaserver', metaserver], g.io);
    expect(g.out.join('')).toBe('No resources found in default namespace.\n');
  });

  it('a file with any invalid document publishes nothing and exits non-zero', async () => {
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, SEED + '---\napiVersion: v1\nkind: Secret\nmetadata: {name: c}\n');
    const b = io();
    expect(
      await edgectl(['--server', broker.url, 'apply', '-f', f, '--node-ip', 'edge-node-b=127.0.0.1'], b.io),
    ).toBe(1);
    expect(b.err.join('')).toContain(`${f}: document 3: unsupported kind "Secret"`);
    // a fence instead of a wait: anything the bad run published was acknowledged by the broker
    // before that run ended, so the broker queued it for the node before the fence applied now —
    // once the fence is on the node, whatever else is there is all the bad file sent
    const fence = join(dir, 'fence.yaml');
    writeFileSync(
      fence,
      'apiVersion: v1\nkind: Service\nmetadata: {name: fence}\nspec: {clusterIP: None, ports: [{port: 1}]}\n',
    );
    expect(await edgectl(['--server', broker.url, 'apply', '-f', fence], io().io)).toBe(0);
    await until(async () => (await services()).includes('fence'), 'the fence on the node');
    expect((await services()).filter((n) => n !== 'fence')).toEqual([]);
  });

  it("a publisher's digest follows its publishes: the same as one read back from the broker", async () => {
    const { ObjectPublisher } = await import('../src');
    const { digestEquals } = await import('@edgecore/beehive');
    const obj = (name: string, namespace: string) => ({
      type: 'service' as const,
      namespace,
      name,
      object: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name, namespace },
        spec: { clusterIP: 'None', ports: [{ name: 'http-0', port: 80, targetPort: 80 }] },
      },
    });
    const pub = await ObjectPublisher.connect(broker.url);
    try {
      await pub.begin(['service']);
      for (const n of ['d1', 'd2', 'd3']) await pub.apply(obj(n, 'digest-a'));
      await pub.apply(obj('d1', 'digest-b'));
      await pub.apply(obj('d2', 'digest-a')); // a newer version of a live object
      await pub.delete(obj('d3', 'digest-a'));
      await pub.delete(obj('never', 'digest-a')); // a tombstone of nothing
      await pub.finish();
      const mine = pub.digest('service')!;
      const fresh = await ObjectPublisher.connect(broker.url);
      try {
        await fresh.begin(['service']);
        const read = fresh.digest('service')!;
        expect(digestEquals(mine, read)).toBe(true);
        expect(mine.namespaces?.['digest-a']).toEqual(read.namespaces?.['digest-a']);
        expect(mine.namespaces?.['digest-a']?.count).toBe(2);
        expect(mine.namespaces?.['digest-b']).toEqual(read.namespaces?.['digest-b']);
      } finally {
        await fresh.close();
      }
    } finally {
      await pub.close();
    }
  });

  it('a pod applied on another node is deleted from the node that had it, in this run and the next', async () => {
    const { ObjectPublisher } = await import('../src');
    const pod = (node: string) => plannedPod('moving', 'p', node, '10.0.0.9');
    // where the broker retains the pod live, per node (a tombstone is not live)
    const liveOn = async (): Promise<string[]> => {
      const pub = await ObjectPublisher.connect(broker.url);
      try {
        await pub.begin(['pod'], { objects: ['pod'] });
        return (pub.retained.get('pod') ?? [])
          .filter((r) => r.namespace === 'moving')
          .map((r) => r.node!)
          .sort();
      } finally {
        await pub.close();
      }
    };
    const move = async (steps: string[]): Promise<void> => {
      const pub = await ObjectPublisher.connect(broker.url);
      try {
        await pub.begin(['pod']);
        for (const n of steps) await pub.apply(pod(n));
        await pub.finish();
        expect(pub.has(pod(steps.at(-1)!))).toBe(true);
      } finally {
        await pub.close();
      }
    };
    await move(['node-m1', 'node-m2']); // moved within one run
    expect(await liveOn()).toEqual(['node-m2']);
    await move(['node-m3']); // and in a later run, which knows only what the broker retains
    expect(await liveOn()).toEqual(['node-m3']);
    const pub = await ObjectPublisher.connect(broker.url);
    try {
      await pub.begin(['pod']);
      expect(pub.digest('pod', 'node-m3')?.count).toBe(1);
      expect(pub.digest('pod', 'node-m1')?.count ?? 0).toBe(0);
      expect(pub.digest('pod', 'node-m2')?.count ?? 0).toBe(0);
    } finally {
      await pub.close();
    }
  });

  it('a run publishes only the digests that changed: every node compares its state on each one it gets', async () => {
    const { ObjectPublisher } = await import('../src');
    const pod = (name: string, node: string, ip: string) => plannedPod('digests', name, node, ip);
    const run = async (apply: ReturnType<typeof pod>[]): Promise<void> => {
      const pub = await ObjectPublisher.connect(broker.url);
      try {
        await pub.begin(['pod']);
        for (const p of apply) await pub.apply(p);
        await pub.finish();
      } finally {
        await pub.close();
      }
    };
    await run([pod('a', 'dg-node-1', '10.1.0.1'), pod('b', 'dg-node-2', '10.1.0.2')]);
    // a watcher of the digest topics, told apart from the retained copies by a marker after each run
    const watcher = await connectAsync(broker.url, { clientId: 'digest-watcher', protocolVersion: 5 });
    try {
      const got: string[] = [];
      watcher.on('message', (topic, _p, packet) => {
        if (!packet.retain) got.push(topic);
      });
      await watcher.subscribeAsync(['edgecore/nodes/+/digest/+', 'edgecore/digest/+', 'test/marker'], {
        qos: 1,
        rh: 2,
      });
      const after = async (apply: ReturnType<typeof pod>[]): Promise<string[]> => {
        got.length = 0;
        await run(apply);
        await watcher.publishAsync('test/marker', 'x', { qos: 1 });
        await until(() => got.includes('test/marker'), 'the marker');
        return got.filter((t) => t !== 'test/marker').sort();
      };
      expect(await after([])).toEqual([]); // nothing changed: no digest sent
      expect(await after([pod('a', 'dg-node-1', '10.1.0.3')])).toEqual([
        'edgecore/nodes/dg-node-1/digest/pod',
      ]);
      // a pod that moves changes both nodes' digests
      expect(await after([pod('b', 'dg-node-1', '10.1.0.2')])).toEqual([
        'edgecore/nodes/dg-node-1/digest/pod',
        'edgecore/nodes/dg-node-2/digest/pod',
      ]);
    } finally {
      await watcher.endAsync(true);
    }
  });

  it("a Deployment scaled down loses its surplus pods; deleted, all of them (edgectl keeps no state: it reads the broker's)", async () => {
    const dep = (replicas: number) => `apiVersion: apps/v1
kind: Deployment
metadata: { name: scaled, namespace: default }
spec:
  replicas: ${replicas}
  selector: { matchLabels: { app: scaled } }
  template:
    metadata: { labels: { app: scaled } }
    spec: { nodeName: edge-node-b, containers: [{ name: c, image: x, ports: [{ containerPort: 80, hostPort: 8080 }] }] }
`;
    const f = join(dir, 'scaled.yaml');
    const pods = async (): Promise<string[]> => {
      const pub = await ObjectPublisher.connect(broker.url);
      try {
        await pub.begin(['pod'], { objects: ['pod'] });
        return (pub.retained.get('pod') ?? [])
          .map((r) => r.name)
          .filter((n) => n.startsWith('scaled-'))
          .sort();
      } finally {
        await pub.close();
      }
    };
    const run = async (verb: 'apply' | 'delete', replicas: number) => {
      writeFileSync(f, dep(replicas));
      const x = io();
      expect(
        await edgectl(['--server', broker.url, verb, '-f', f, '--node-ip', 'edge-node-b=127.0.0.1'], x.io),
      ).toBe(0);
    };
    await run('apply', 3);
    expect(await pods()).toEqual(['scaled-0', 'scaled-1', 'scaled-2']);
    await run('apply', 1);
    expect(await pods()).toEqual(['scaled-0']);
    await run('apply', 2);
    await run('delete', 1);
    expect(await pods()).toEqual([]);
  });

  it('a large apply sends the slices along with the services and pods they follow from, not all after them', async () => {
    const n = Math.ceil((SLICE_PLAN_EVERY * 1.5) / 2); // service + one pod each: past one plan's worth
    const docs: string[] = [];
    for (let i = 0; i < n; i++)
      docs.push(
        `apiVersion: v1\nkind: Service\nmetadata: { name: s${i}, namespace: plan-every }\nspec: { selector: { app: a${i} }, ports: [{ port: 80 }] }\n`,
        `apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: d${i}, namespace: plan-every }\nspec:\n  replicas: 1\n  selector: { matchLabels: { app: a${i} } }\n  template:\n    metadata: { labels: { app: a${i} } }\n    spec: { nodeName: edge-node-b, containers: [{ name: c, image: x, ports: [{ containerPort: 80, hostPort: 8080 }] }] }\n`,
      );
    const f = join(dir, 'plan-every.yaml');
    writeFileSync(f, docs.join('---\n'));
    // what the broker hands a node, in the order edgectl published it
    const watcher = await connectAsync(broker.url, { clientId: 'plan-every-watcher', clean: true });
    const order: string[] = [];
    watcher.on(
      'message',
      (topic, payload) => payload.length && order.push(topic.split('/').slice(-2).join('/')),
    );
    await watcher.subscribeAsync('edgecore/objects/plan-every/#', { qos: 1 });
    try {
      const x = io();
      expect(
        await edgectl(['--server', broker.url, 'apply', '-f', f, '--node-ip', 'edge-node-b=127.0.0.1'], x.io),
      ).toBe(0);
      const slices = (o: string[]) => o.filter((t) => t.startsWith('endpointslice/'));
      await until(
        () => slices(order).length >= n && order.includes(`service/s${n - 1}`),
        'every slice and the last service',
        20_000,
      );
      expect(new Set(slices(order).map((t) => t.replace(/-[0-9a-f]{5}$/, ''))).size).toBe(n);
      // the first slices came before the last services
      expect(order.indexOf(slices(order)[0])).toBeLessThan(order.indexOf(`service/s${n - 1}`));
    } finally {
      await watcher.endAsync();
    }
  });

  it("a file of services then a file of Deployments: a node's services come between its pods, not as one burst", async () => {
    const n = 200;
    const svcs: string[] = [];
    const deps: string[] = [];
    for (let i = 0; i < n; i++) {
      svcs.push(
        `apiVersion: v1\nkind: Service\nmetadata: { name: s${i}, namespace: spread }\nspec: { selector: { app: a${i} }, ports: [{ port: 80 }] }\n`,
      );
      // half the pods on edge-node-b, half on edge-node-c
      deps.push(
        `apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: d${i}, namespace: spread }\nspec:\n  replicas: 1\n  selector: { matchLabels: { app: a${i} } }\n  template:\n    metadata: { labels: { app: a${i} } }\n    spec: { nodeName: edge-node-${i % 2 ? 'c' : 'b'}, containers: [{ name: c, image: x, ports: [{ containerPort: 80, hostPort: 8080 }] }] }\n`,
      );
    }
    const f1 = join(dir, 'spread-services.yaml');
    const f2 = join(dir, 'spread-deployments.yaml');
    writeFileSync(f1, svcs.join('---\n'));
    writeFileSync(f2, deps.join('---\n'));
    // what the broker hands edge-node-b (every service, its own pods), in the order edgectl published
    // it: on a broker of the test's own that takes 1,000 in flight, so edgectl publishes over one
    // link (the stock one's 20 has it use eight, whose publishes the broker interleaves as they come)
    const own = await Mosquitto.start({ maxInflight: 1000 });
    const watcher = await connectAsync(own.url, { clientId: 'spread-watcher', clean: true });
    const order: string[] = [];
    watcher.on('message', (topic, payload) => {
      const kind = topic.split('/').at(-2);
      if (payload.length && (kind === 'service' || kind === 'pod')) order.push(kind);
    });
    await watcher.subscribeAsync(
      ['edgecore/objects/spread/service/#', 'edgecore/nodes/edge-node-b/objects/spread/pod/#'],
      { qos: 1 },
    );
    try {
      const x = io();
      const code = await edgectl(
        [
          '--server',
          own.url,
          'apply',
          '-f',
          f1,
          '-f',
          f2,
          '--node-ip',
          'edge-node-b=127.0.0.1',
          '--node-ip',
          'edge-node-c=127.0.0.2',
        ],
        x.io,
      );
      expect(x.err.join('')).toBe('');
      expect(code).toBe(0);
      // kubectl's lines still in file order
      expect(x.out.join('').split('\n')[0]).toBe('service/s0 created');
      await until(() => order.length >= n + n / 2, "edge-node-b's services and pods", 20_000);
      // in file order the node would get 200 services in a row; spread, its share of services
      // (2 of every 3 objects it gets) comes between its pods
      const runs = order
        .join(' ')
        .split('pod')
        .map((r) => r.trim().split(' ').filter(Boolean).length);
      expect(Math.max(...runs)).toBeLessThanOrEqual(3);
      expect(order.indexOf('pod')).toBeLessThan(5);
    } finally {
      await watcher.endAsync();
      await own.destroy();
    }
  });

  it('metrics show the cloud link', async () => {
    const m = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
    expect(m).toContain('edgecore_edgehub_connected 1');
    expect(m).toMatch(/edgecore_edgehub_messages_total\{result="committed"\} [1-9]/);
  });
});

describe('edgectl certs', () => {
  it('init, node, relay, revoke and the deny list as a ConfigMap that apply takes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edgectl-certs-'));
    try {
      const run = async (...args: string[]) => {
        const c = io();
        const code = await edgectl(['certs', ...args, '--dir', dir], c.io);
        return { code, out: c.out.join(''), err: c.err.join('') };
      };
      expect((await run('init')).code).toBe(0);
      expect((await run('init')).err).toMatch(/exists/);
      expect((await run('node', 'edge-node-a')).out).toContain('edge-node-a.crt');
      expect((await run('relay', 'relay-1')).err).toMatch(/--address is required/);
      expect((await run('relay', 'relay-1', '--address', '203.0.113.254')).code).toBe(0);
      expect((await run('node', 'Bad_Name')).err).toMatch(/not a valid node name/);
      expect((await run('node', 'edge-node-b', '--days', '0')).err).toMatch(/--days 0/);
      const r = await run('revoke', 'edge-node-a');
      expect(r.out).toMatch(/revoked edge-node-a \([0-9A-F:]{95}\)/);
      const cm = (await run('configmap')).out;
      const [doc] = planManifest(cm, 'cm.yaml', { nodeIPs: {} });
      expect(doc.objects[0]).toMatchObject({
        type: 'configmap',
        namespace: 'kube-system',
        name: 'edgetunnel-revoked',
      });
      const data = (doc.objects[0].object as { data: Record<string, string> }).data['revoked.json'];
      expect(JSON.parse(data).revoked).toEqual([{ node: 'edge-node-a', fingerprint256: expect.any(String) }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('edgectl and the embedded broker (aedes, MQTT 3.1.1 only)', () => {
  it('speaks MQTT 5 first and falls back to 3.1.1 for a broker that speaks nothing else', async () => {
    const { EmbeddedBroker } = await import('@edgecore/edgehub');
    const b = new EmbeddedBroker();
    const a = await b.listen('127.0.0.1', 0);
    const dir = mkdtempSync(join(tmpdir(), 'edgectl-aedes-'));
    try {
      const f = join(dir, 'svc.yaml');
      writeFileSync(
        f,
        'apiVersion: v1\nkind: Service\nmetadata: { name: on-aedes }\nspec: { ports: [{ port: 80 }] }\n',
      );
      const out: string[] = [];
      const err: string[] = [];
      const code = await edgectl(['--server', `tcp://127.0.0.1:${a.port}`, 'apply', '-f', f], {
        stdout: (s) => out.push(s),
        stderr: (s) => err.push(s),
        stdin: () => '',
      });
      expect([code, out.join(''), err.join('')]).toEqual([0, 'service/on-aedes created\n', '']);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
