import { capturedIo, freePort, Mosquitto, until } from '@edgecore/test-support';

const wait = (cond: () => boolean | Promise<boolean>, ms: number, what = 'the condition') =>
  until(cond, what, ms, 50);
import { brokerBridge, EdgeHubModule, RetainedReader } from '@edgecore/edgehub';
import { connectAsync } from 'mqtt';
import { EdgeMeshModule } from '@edgecore/edgemesh-module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeCoreHost, ObjectPublisher } from '../src';
import { startUnprivilegedNode } from './unprivileged-node';
import { edgectl, parseDuration } from '../src/cli/edgectl';

/**
 * A fleet on three brokers: the cloud's (edgectl publishes there) and two regional ones bridged
 * to it with the section `edgectl broker bridge` writes. A node lists both regional brokers and
 * fails over; its state converges after each move, including a delete made while it moved and a
 * delete whose tombstone was collected while it was away.
 */
describe('several brokers: bridges, failover, tombstones', () => {
  const SERVICES = 1500; // more than a stock broker queues for one client (1,000)
  let dir: string;
  let cloud: Mosquitto;
  let r1: Mosquitto;
  let r2: Mosquitto;
  const hosts: EdgeCoreHost[] = [];
  const quiet = capturedIo;
  const run = async (...args: string[]): Promise<string> => {
    const q = quiet();
    const code = await edgectl(['--server', cloud.url, ...args], q.io);
    if (code !== 0) throw new Error(`edgectl ${args.join(' ')}: ${code} ${q.err.join('')}`);
    return q.out.join('');
  };
  const svc = (name: string) =>
    `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: default }
spec: { clusterIP: None, selector: { app: ${name} }, ports: [{ name: http, port: 80 }] }
`;
  const manifest = (name: string, text: string): string => {
    const f = join(dir, `${name}.yaml`);
    writeFileSync(f, text);
    return f;
  };
  const node = async () => {
    const h = await startUnprivilegedNode({
      dataSource: join(dir, 'node.db'),
      nodeName: 'n1',
      mqtt: `{ servers: [${r1.url}, ${r2.url}] }`,
    });
    hosts.push(h);
    return { host: h, mesh: h.container.get(EdgeMeshModule), hub: h.container.get(EdgeHubModule) };
  };
  /** What a broker retains under a filter (topic → payload bytes). */
  /** What a broker retains under a filter (topic → payload bytes; `texts`: the payloads too). */
  const retained = async (
    m: Mosquitto,
    filter: string,
    texts?: Map<string, string>,
  ): Promise<Map<string, number>> => {
    const r = await RetainedReader.open(m.url, { clientId: `probe-${Math.random().toString(16).slice(2)}` });
    const out = new Map<string, number>();
    try {
      await r.read(filter, `probe/fence/${Math.random()}`, (t, p) => {
        out.set(t, p.length);
        texts?.set(t, p.toString());
      });
    } finally {
      await r.close();
    }
    return out;
  };
  const regional = async (name: string): Promise<Mosquitto> => {
    const q = quiet();
    expect(
      await edgectl(['broker', 'bridge', '--cloud', `127.0.0.1:${cloud.port}`, '--name', name], q.io),
    ).toBe(0);
    // a stock broker that keeps nothing across a restart: a bridge connect brings the state back
    return Mosquitto.start({ stock: true, persistence: false, extra: q.out.join('') });
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'multi-broker-'));
    // stock queue limits; max_inflight_messages as the README asks of the broker edgectl publishes
    // to (its Receive Maximum, which edgectl keeps within: at 20 an edgectl in this process waits
    // on the node's event loop between every 20 publishes — a 3,000-service burst outlasted the
    // test on a loaded host). The bridges' QoS 0 hop does not depend on it.
    cloud = await Mosquitto.start({ stock: true, maxInflight: 1000 });
    await run(
      'apply',
      '-f',
      manifest('many', Array.from({ length: SERVICES }, (_, i) => svc(`svc-${i}`)).join('---\n')),
    );
    r1 = await regional('r1');
    r2 = await regional('r2');
  });
  afterAll(async () => {
    for (const h of hosts) await h.stop().catch(() => undefined);
    for (const m of [r1, r2, cloud]) await m?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a regional broker bridged to a stock cloud broker holds its whole retained state', async () => {
    for (const m of [r1, r2])
      await wait(
        async () => (await retained(m, 'edgecore/objects/default/service/+')).size === SERVICES,
        20_000,
      );
  });

  it('the node fails over to the next broker and converges, with a delete made while it moved', async () => {
    const { mesh, hub } = await node();
    await wait(() => mesh.catalog.services.size === SERVICES, 60_000);
    expect(hub.server).toBe(r1.url);
    await r1.stop();
    // while the node moves: one service deleted, one created
    await run('delete', '-f', manifest('gone', svc('svc-7')));
    await run('apply', '-f', manifest('new', svc('svc-new')));
    await wait(
      () =>
        hub.cloudConnected &&
        hub.server === r2.url &&
        mesh.catalog.services.has('default/svc-new') &&
        !mesh.catalog.services.has('default/svc-7'),
      30_000,
    );
    expect(hub.stats.failovers).toBe(1);
    expect(await hub.checkSync()).toBe(true);
    expect(mesh.catalog.services.size).toBe(SERVICES);
    // and back: r1 returns, r2 goes; the node's session on r1 is gone with r1's restart
    await r1.restart();
    await wait(
      async () => (await retained(r1, 'edgecore/objects/default/service/+')).size >= SERVICES,
      20_000,
    );
    await r2.stop();
    await run('apply', '-f', manifest('new2', svc('svc-new2')));
    await wait(
      () => hub.cloudConnected && hub.server === r1.url && mesh.catalog.services.has('default/svc-new2'),
      30_000,
    );
    expect(hub.stats.failovers).toBe(2);
    await r2.restart();
  });

  it('a collected tombstone: the node that was away converges through the digests', async () => {
    const [{ host, hub: oldHub }] = [{ host: hosts[0], hub: hosts[0].container.get(EdgeHubModule) }];
    expect(oldHub.cloudConnected).toBe(true);
    await host.stop();
    hosts.length = 0;
    await run('delete', '-f', manifest('gone2', svc('svc-8')));
    const topic = 'edgecore/objects/default/service/svc-8';
    expect((await retained(cloud, topic)).get(topic)).toBeGreaterThan(0); // the tombstone
    expect(await run('gc', '--tombstone-ttl', '1h')).toMatch(/^0 tombstone\(s\) cleared, 4 younger/);
    expect(await run('gc', '--tombstone-ttl', '0')).toMatch(/^4 tombstone\(s\) cleared/);
    await wait(async () => !(await retained(cloud, topic)).has(topic), 10_000);
    // the regional brokers forget it too (the bridge carries the clear)
    await wait(async () => !(await retained(r1, topic)).has(topic), 10_000);
    // the node's sessions are gone (brokers restarted without persistence): nothing will tell it
    // of svc-8 but the digest of its namespace
    for (const m of [r1, r2]) {
      await m.stop();
      await m.restart();
    }
    await wait(
      async () =>
        !(await retained(r1, topic)).has(topic) &&
        (await retained(r1, 'edgecore/objects/default/service/+')).size >= SERVICES - 1,
      20_000,
    );
    const { mesh, hub } = await node();
    await wait(() => hub.cloudConnected && !mesh.catalog.services.has('default/svc-8'), 30_000);
    expect(hub.stats.sync.orphansDeleted).toBeGreaterThanOrEqual(1);
    expect(mesh.catalog.services.has('default/svc-9')).toBe(true);
    expect(await hub.checkSync()).toBe(true);
  });

  it('a node whose first broker is down from the start links to the next', async () => {
    const dead = `tcp://127.0.0.1:${await freePort()}`;
    const h = await startUnprivilegedNode({
      dataSource: join(dir, 'n2.db'),
      nodeName: 'n2',
      mqtt: `{ servers: [${dead}, ${r2.url}] }`,
    });
    hosts.push(h);
    const hub = h.container.get(EdgeHubModule);
    const mesh = h.container.get(EdgeMeshModule);
    await wait(() => hub.cloudConnected && mesh.catalog.services.has('default/svc-9'), 30_000, 'n2 on r2');
    expect(hub.server).toBe(r2.url);
    expect(hub.stats.failovers).toBe(0); // its first link: nothing to fail over from
  });

  it('tombstones expire on the broker by themselves (MQTT 5 message expiry), bridged ones too', async () => {
    // long enough to see the tombstone arrive on the regional broker under a loaded machine
    const pub = await ObjectPublisher.connect(cloud.url, { tombstoneTtlSeconds: 5 });
    try {
      await pub.begin(['service']);
      const o = { type: 'service' as const, namespace: 'default', name: 'svc-9', object: {} };
      await pub.delete(o);
      await pub.finish();
    } finally {
      await pub.close();
    }
    const topic = 'edgecore/objects/default/service/svc-9';
    // the tombstone itself (not the live object it replaced) reached the bridged broker
    await wait(async () => {
      const texts = new Map<string, string>();
      return (await retained(r2, topic, texts)).has(topic) && /"operation":"delete"/.test(texts.get(topic)!);
    }, 5_000);
    // then both brokers forget it by themselves
    await wait(
      async () => !(await retained(cloud, topic)).has(topic) && !(await retained(r2, topic)).has(topic),
      15_000,
    );
    expect((await retained(cloud, topic)).has(topic)).toBe(false);
    expect((await retained(r2, topic)).has(topic)).toBe(false);
  });

  it("a cloud broker restart's replay is not queued for a node that is away; it converges on what changed meanwhile", async () => {
    const start = () =>
      startUnprivilegedNode({
        dataSource: join(dir, 'n3.db'),
        nodeName: 'n3',
        mqtt: `{ servers: [${r1.url}] }`,
      });
    let h = await start();
    hosts.push(h);
    let hub = h.container.get(EdgeHubModule);
    let mesh = h.container.get(EdgeMeshModule);
    await wait(async () => hub.cloudConnected && (await hub.checkSync()), 60_000, 'n3 on r1, in sync');
    const size = mesh.catalog.services.size;
    await h.stop(); // its session on r1 stays
    hosts.splice(hosts.indexOf(h), 1);
    // the cloud broker restarts: each bridge reconnects and reads the whole retained catalog again
    await cloud.stop();
    await cloud.restart();
    // the bridge is back once a message published on the cloud broker reaches r1 (its
    // subscriptions are made in order, so the retained replay went before)
    const probe = await connectAsync(r1.url, { clientId: `bridge-probe-${process.pid}` });
    const sender = await connectAsync(cloud.url, { clientId: `bridge-probe-sender-${process.pid}` });
    try {
      let through = false;
      probe.on('message', () => (through = true));
      await probe.subscribeAsync('edgecore/nodes/probe/down', { qos: 0 });
      await wait(
        async () => (await sender.publishAsync('edgecore/nodes/probe/down', 'x', { qos: 0 }), through),
        20_000,
        'the bridge back',
      );
    } finally {
      await probe.endAsync(true);
      await sender.endAsync(true);
    }
    // published after the bridge subscribed, so it reaches r1 after the replay
    await run('apply', '-f', manifest('away', svc('svc-away')));
    await wait(
      async () => (await retained(r1, 'edgecore/objects/default/service/svc-away')).size === 1,
      20_000,
    );
    h = await start();
    hosts.push(h);
    hub = h.container.get(EdgeHubModule);
    mesh = h.container.get(EdgeMeshModule);
    await wait(() => hub.cloudConnected && mesh.catalog.services.has('default/svc-away'), 30_000, 'svc-away');
    expect(mesh.catalog.services.size).toBe(size + 1);
    expect(await hub.checkSync()).toBe(true);
    // a replay queued in its session would have been up to a thousand messages (the broker's
    // limit); what came on the link is digests and statuses
    expect(hub.stats.received).toBeLessThan(100);
    // svc-away came by the digest check's read of the namespace that differed
    expect(hub.stats.sync.loads + hub.stats.sync.resyncs).toBeGreaterThanOrEqual(1);
  });

  it('a burst of three times a stock regional broker’s queue reaches a linked node over the QoS 0 hop, without a reconnect', async () => {
    const h = await startUnprivilegedNode({
      dataSource: join(dir, 'n4.db'),
      nodeName: 'n4',
      mqtt: `{ servers: [${r2.url}] }`,
    });
    hosts.push(h);
    const hub = h.container.get(EdgeHubModule);
    const mesh = h.container.get(EdgeMeshModule);
    await wait(async () => hub.cloudConnected && (await hub.checkSync()), 60_000, 'n4 on r2, in sync');
    const size = mesh.catalog.services.size;
    const BURST = 3000; // three times what a stock broker queues for one client
    await run(
      'apply',
      '-f',
      manifest('burst', Array.from({ length: BURST }, (_, i) => svc(`burst-${i}`)).join('---\n')),
    );
    await wait(() => mesh.catalog.services.size === size + BURST, 60_000, 'the burst on n4');
    expect(await hub.checkSync()).toBe(true);
    expect(hub.stats.failovers).toBe(0);
    expect(hub.stats.connects).toBe(1); // no reconnect needed
  });

  it('durations and the bridge section', async () => {
    expect(parseDuration('24h', 'x')).toBe(86_400_000);
    expect(parseDuration('90', 'x')).toBe(90_000);
    expect(parseDuration('1.5m', 'x')).toBe(90_000);
    expect(() => parseDuration('1 week', '--tombstone-ttl')).toThrow(/--tombstone-ttl: expected a duration/);
    const q = quiet();
    expect(await edgectl(['broker', 'bridge'], q.io)).toBe(2);
    expect(q.err.join('')).toMatch(/--cloud HOST:PORT is required/);
    expect(brokerBridge({ cloud: 'c:1883' })).toMatch(/topic edgecore\/objects\/# in 0\n/);
  });
});
