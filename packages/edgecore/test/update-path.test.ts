import { digestEquals, newMessage, Operation, silentLogger, toWire } from '@edgecore/beehive';
import { EdgeHubModule } from '@edgecore/edgehub';
import { EdgeMeshModule, MESH_PACE } from '@edgecore/edgemesh-module';
import { MetaManagerModule } from '@edgecore/metamanager';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connectAsync } from 'mqtt';
import { EdgeCoreHost, ObjectPublisher, parseConfig } from '../src';
import { until } from '@edgecore/test-support';
import { Mosquitto } from '@edgecore/test-support';
import { MqttRelay } from '@edgecore/test-support';

const execFileP = promisify(execFile);
const EDGECTL = join(__dirname, '..', 'bin', 'edgectl');

/**
 * edgectl as a user runs it: a process of its own, so that its pace is the broker's and not the
 * node's (in this process its publishes would wait on the node's event loop, and a burst would
 * come no faster than the node takes it).
 */
async function edgectl(args: string[]): Promise<number> {
  try {
    await execFileP(process.execPath, [EDGECTL, ...args], { timeout: 120_000 });
    return 0;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'number' ? code : 1;
  }
}

function services(names: string[]): string {
  return names
    .map(
      (n) => `apiVersion: v1
kind: Service
metadata: { name: ${n}, namespace: default }
spec: { clusterIP: None, selector: { app: ${n} }, ports: [{ name: http-0, port: 80, targetPort: 80 }] }
`,
    )
    .join('---\n');
}

async function startHost(
  dir: string,
  node: string,
  server: string,
  protocolVersion: 'auto' | 4 | 5 = 'auto',
): Promise<EdgeCoreHost> {
  const host = new EdgeCoreHost(
    parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { nodeName: ${node}, nodeIP: 198.51.100.1, mqtt: { server: ${server}, protocolVersion: ${protocolVersion} } }
  metaManager: { metaServer: { enable: false } }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`),
    { logger: silentLogger },
  );
  await host.start();
  return host;
}

/** The digest of the broker's retained services, as edgectl computes it. */
async function cloudDigest(url: string) {
  const pub = await ObjectPublisher.connect(url);
  try {
    await pub.begin(['service']);
    return pub.digest('service')!;
  } finally {
    await pub.close();
  }
}

async function dig(port: number, name: string): Promise<string> {
  const r = await execFileP('dig', ['@127.0.0.1', '-p', String(port), '+tries=1', '+time=2', name]);
  return r.stdout;
}

describe('cloud → node updates through a stock mosquitto (max_queued_messages 1000, max_inflight_messages 20)', () => {
  const dirs: string[] = [];
  const tmp = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'update-path-'));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  // MQTT 5: the node's window takes the burst, nothing is dropped; 3.1.1: mosquitto's 20 in flight
  // and 1,000 queued cut the burst short and the digest check reads the rest back
  it.each([
    ['5', 5],
    ['3.1.1', 4],
  ] as const)(
    'MQTT %s: a burst larger than the broker queue ends with exactly the cloud state on the node, without a reconnect',
    async (_name, protocolVersion) => {
      const broker = await Mosquitto.start({ stock: true });
      const dir = tmp();
      const host = await startHost(dir, 'edge-node-burst', broker.url, protocolVersion);
      try {
        const hub = host.container.get(EdgeHubModule);
        const mm = host.container.get(MetaManagerModule);
        const mesh = host.container.get(EdgeMeshModule);
        await until(() => hub.cloudConnected, 'connected');
        const N = 4000;
        const names = Array.from({ length: N }, (_, i) => `burst-${i}`);
        const f = join(dir, 'burst.yaml');
        writeFileSync(f, services(names));
        expect(await edgectl(['--server', broker.url, 'apply', '-f', f])).toBe(0);
        const want = await cloudDigest(broker.url);
        expect(want.count).toBe(N);
        await until(
          () => digestEquals(mm.store.digest('service'), want) && mesh.catalog.services.size === N,
          'the node holds the cloud state',
          90_000,
        );
        // every service has its VIP and answers in DNS, the last one published too
        await until(() => mesh.vips.allocated === N, 'a VIP per service', 30_000);
        expect(await dig(mesh.dns.port, `burst-${N - 1}.default.svc.cluster.local`)).toMatch(
          /status: NOERROR[\s\S]*IN\s+A\s+198\.18\./,
        );
        expect(hub.stats.connects).toBe(1); // no reconnect was needed
        expect(hub.protocolVersion).toBe(protocolVersion);
        if (protocolVersion === 5) expect(hub.stats.sync.resyncs).toBe(0); // nothing was dropped
        // every change reached the mesh (how they were batched depends on timing: process.test)
        expect(mesh.updates.applied).toBeGreaterThanOrEqual(N);
      } finally {
        await host.stop();
        await broker.destroy();
      }
    },
    180_000,
  );

  it('a burst past what EdgeMesh holds with objects is held by keys and read back from the store: the node ends with exactly the cloud state', async () => {
    // the pace lowered so that 2,000 services are past it, and one quiet span long enough for the
    // second and third applies (deletes, changed ports) to come within the same held burst
    const saved = { ...MESH_PACE };
    Object.assign(MESH_PACE, { maxQueued: 300, quietMs: 1500, maxDeferMs: 30_000 });
    // stock queue limits; max_inflight_messages as the README asks of the broker edgectl publishes
    // to (its Receive Maximum: at 20 the burst comes 640 publishes per round trip over 32 links, on a loaded host
    // no longer within one quiet span; the MQTT 5 node's window is its own either way)
    const broker = await Mosquitto.start({ stock: true, maxInflight: 1000 });
    const dir = tmp();
    const host = await startHost(dir, 'edge-node-keys', broker.url, 5);
    try {
      const hub = host.container.get(EdgeHubModule);
      const mm = host.container.get(MetaManagerModule);
      const mesh = host.container.get(EdgeMeshModule);
      await until(() => hub.cloudConnected, 'connected');
      const N = 2000;
      const names = Array.from({ length: N }, (_, i) => `held-${i}`);
      const f = join(dir, 'held.yaml');
      writeFileSync(f, services(names));
      const queries0 = mm.stats.queries;
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f])).toBe(0);
      // within the held burst (only its first changes, before 256 waited at once, were applied): 100 held
      // with their objects and 400 held by keys go, 500 by keys change their port
      expect(mesh.updates.applied).toBeLessThan(N / 2);
      writeFileSync(f, services([...names.slice(0, 100), ...names.slice(1000, 1400)]));
      expect(await edgectl(['--server', broker.url, 'delete', '-f', f])).toBe(0);
      writeFileSync(f, services(names.slice(1500)).replaceAll('port: 80,', 'port: 8080,'));
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f])).toBe(0);
      const want = await cloudDigest(broker.url);
      expect(want.count).toBe(N - 500);
      await until(
        () => digestEquals(mm.store.digest('service'), want) && mesh.catalog.services.size === N - 500,
        'the node holds the cloud state',
        60_000,
      );
      await until(() => !mesh.applying, 'the burst applied', 30_000);
      expect(mesh.catalog.services.has('default/held-50')).toBe(false);
      expect(mesh.catalog.services.has('default/held-1200')).toBe(false);
      expect(mesh.catalog.services.get('default/held-1999')?.spec?.ports?.[0]?.port).toBe(8080);
      expect(mesh.catalog.services.get('default/held-1499')?.spec?.ports?.[0]?.port).toBe(80);
      expect(mesh.vips.allocated).toBe(N - 500);
      expect(await dig(mesh.dns.port, 'held-1999.default.svc.cluster.local')).toMatch(/status: NOERROR/);
      expect(await dig(mesh.dns.port, 'held-1200.default.svc.cluster.local')).toMatch(/status: NXDOMAIN/);
      // the keys past 300 (~1,700 services and their slices) were read back from the store, one
      // request per type and batch of 1,024
      expect(mm.stats.queries - queries0).toBeGreaterThanOrEqual(2);
      expect(mm.stats.queries - queries0).toBeLessThan(100);
      expect(hub.stats.connects).toBe(1);
      expect(hub.stats.sync.resyncs).toBe(0);
    } finally {
      Object.assign(MESH_PACE, saved);
      await host.stop();
      await broker.destroy();
    }
  }, 120_000);

  it('MQTT 5: a fresh node joins a catalog larger than the broker queue without a retained replay; a type with no digest is loaded whole', async () => {
    const broker = await Mosquitto.start({ stock: true });
    const cloud = await connectAsync(broker.url, { clientId: 'test-cloud', reconnectPeriod: 0 });
    const dir = tmp();
    let host: EdgeCoreHost | undefined;
    try {
      // 3,000 services in ten namespaces, published with their digest before the node exists
      const N = 3000;
      const f = join(dir, 'catalog.yaml');
      writeFileSync(
        f,
        Array.from(
          { length: N },
          (_, i) => `apiVersion: v1
kind: Service
metadata: { name: svc-${i}, namespace: ns-${i % 10} }
spec: { clusterIP: None, selector: { app: a${i} }, ports: [{ name: http-0, port: 80, targetPort: 80 }] }
`,
        ).join('---\n'),
      );
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f])).toBe(0);
      const want = await cloudDigest(broker.url);
      expect(want.count).toBe(N);
      // and a ConfigMap as a cloud that publishes no digests would: retained, nothing else
      const cm = newMessage(
        {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: 'settings', namespace: 'ns-0' },
          data: { a: '1' },
        },
        { source: 'cloud', group: 'meta', operation: Operation.Insert, resource: 'ns-0/configmap/settings' },
      );
      await cloud.publishAsync('edgecore/objects/ns-0/configmap/settings', toWire(cm), {
        qos: 1,
        retain: true,
      });

      host = await startHost(dir, 'edge-node-join', broker.url, 5);
      const hub = host.container.get(EdgeHubModule);
      const mm = host.container.get(MetaManagerModule);
      const mesh = host.container.get(EdgeMeshModule);
      await until(
        () =>
          digestEquals(mm.store.digest('service'), want) &&
          mesh.catalog.services.size === N &&
          mm.store.get('ns-0/configmap/settings') !== undefined,
        'the node holds the cloud state',
        60_000,
      );
      // the live link got no replay of the catalog (a stock mosquitto would have dropped all but
      // ~1,000 of it): only digests and statuses came that way
      expect(hub.stats.received).toBeLessThan(100);
      expect(hub.stats.sync.loads).toBeGreaterThanOrEqual(2); // the services, and the ConfigMap whole
      expect(hub.stats.sync.resyncs).toBe(0); // nothing was lost on the way
      expect(broker.log).not.toContain('Outgoing messages are being dropped'); // reads of ≤ 900
      // and what arrives afterwards comes live
      writeFileSync(f, services(['after-join']));
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f])).toBe(0);
      await until(() => mesh.catalog.services.has('default/after-join'), 'a later service, live');
      expect(hub.stats.connects).toBe(1);
      const m = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
      expect(m).toMatch(/^edgecore_edgehub_retained_loads_total [2-9]/m);
    } finally {
      await cloud.endAsync(true);
      await host?.stop();
      await broker.destroy();
    }
  }, 120_000);

  it('messages dropped between broker and node are noticed and read back, without a reconnect', async () => {
    const broker = await Mosquitto.start({ stock: true });
    const node = 'edge-node-gap';
    let dropping = false;
    const lost = new Set(['late-1', 'late-2', 'early-3'].map((n) => `edgecore/objects/default/service/${n}`));
    // only the node's own session loses them; its resync connection reads them like anyone else
    const relay = new MqttRelay(
      broker.port,
      (topic, clientId) => dropping && clientId === node && lost.has(topic),
    );
    const relayPort = await relay.listen();
    const dir = tmp();
    const host = await startHost(dir, node, `tcp://127.0.0.1:${relayPort}`);
    const cloud = await connectAsync(broker.url, { clientId: 'test-cloud', reconnectPeriod: 0 });
    try {
      const hub = host.container.get(EdgeHubModule);
      const mm = host.container.get(MetaManagerModule);
      const mesh = host.container.get(EdgeMeshModule);
      await until(() => hub.cloudConnected, 'connected');
      const early = Array.from({ length: 10 }, (_, i) => `early-${i}`);
      const f1 = join(dir, 'early.yaml');
      writeFileSync(f1, services(early));
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f1])).toBe(0);
      await until(() => mm.store.count('service') === 10, 'ten services');
      expect(await hub.checkSync()).toBe(true); // in step with the cloud before the gap
      const resyncsBefore = hub.stats.sync.resyncs;

      dropping = true;
      // the cloud forgets early-3 altogether (an empty retained payload: no tombstone stays) …
      await cloud.publishAsync('edgecore/objects/default/service/early-3', '', { qos: 1, retain: true });
      // … and publishes five new services; the node's session loses late-1 and late-2
      const late = Array.from({ length: 5 }, (_, i) => `late-${i}`);
      const f2 = join(dir, 'late.yaml');
      writeFileSync(f2, services(late));
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f2])).toBe(0);
      const want = await cloudDigest(broker.url);
      expect(want.count).toBe(14);

      await until(
        () => digestEquals(mm.store.digest('service'), want),
        'converged to the cloud digest',
        20_000,
      );
      expect([...relay.dropped].sort()).toEqual([...lost].sort()); // the gap was real
      expect(mm.store.get('default/service/late-1')).toBeDefined();
      expect(mm.store.get('default/service/late-2')).toBeDefined();
      expect(mm.store.get('default/service/early-3')).toBeUndefined(); // an orphan, proven by the digest
      expect(hub.stats.sync.resyncs).toBeGreaterThan(resyncsBefore);
      expect(hub.stats.sync.orphansDeleted).toBe(1);
      expect(hub.stats.connects).toBe(1);
      await until(() => mesh.catalog.services.size === 14, 'the mesh follows');
      expect(await dig(mesh.dns.port, 'late-2.default.svc.cluster.local')).toMatch(/IN\s+A\s+198\.18\./);
      expect(await dig(mesh.dns.port, 'early-3.default.svc.cluster.local')).toMatch(/status: NXDOMAIN/);
      const m = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
      expect(m).toMatch(/edgecore_edgehub_resyncs_total [1-9]/);
    } finally {
      await cloud.endAsync(true);
      await host.stop();
      await relay.close();
      await broker.destroy();
    }
  }, 120_000);
});
