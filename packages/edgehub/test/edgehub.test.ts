import {
  CloudConnected,
  CloudDisconnected,
  newMessage,
  newResponse,
  toWire,
  fromWire,
  type Message,
} from '@edgecore/beehive';
import { decodeChange } from '@edgecore/metamanager';
import { connectAsync, type MqttClient } from 'mqtt';
import { Topics } from '../src';
import { Mosquitto, tmpDir, until } from '@edgecore/test-support';
import { answerBatch, fakeMetaNode, startNode, uniqueNode, type Node } from './helpers';

const topics = new Topics();

function svc(name: string, rv: number, port = 12345): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default', resourceVersion: String(rv) },
    spec: {
      clusterIP: 'None',
      selector: { app: name },
      ports: [{ name: 'http-0', port, protocol: 'TCP', targetPort: 80 }],
    },
  };
}

/** What edgectl does: a retained QoS 1 beehive message per object; delete = retained tombstone. */
async function publish(
  cloud: MqttClient,
  op: 'update' | 'delete',
  name: string,
  rv: number,
  port?: number,
): Promise<void> {
  const resource = `default/service/${name}`;
  const content =
    op === 'delete'
      ? {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name, namespace: 'default', resourceVersion: String(rv) },
        }
      : svc(name, rv, port);
  const msg = newMessage(content, {
    source: 'edgectl',
    operation: op,
    resource,
    resourceVersion: String(rv),
  });
  await cloud.publishAsync(topics.object('default', 'service', name), toWire(msg), { qos: 1, retain: true });
}

describe('EdgeHub against a real mosquitto', () => {
  let broker: Mosquitto;
  let cloud: MqttClient;
  const nodes: Node[] = [];
  const dirs: { cleanup: () => void }[] = [];

  beforeAll(async () => {
    broker = await Mosquitto.start();
  });
  beforeEach(async () => {
    cloud = await connectAsync(broker.url, { clientId: `cloud-${Math.random()}`, reconnectPeriod: 0 });
    // each test starts from a clean slate of retained objects
    await new Promise<void>((resolve) => {
      const seen: string[] = [];
      const probe = (t: string, p: Buffer): void => void (p.length && seen.push(t));
      cloud.on('message', probe);
      cloud.subscribe(topics.objects(), { qos: 1 }, () =>
        setTimeout(async () => {
          cloud.off('message', probe);
          await cloud.unsubscribeAsync(topics.objects());
          for (const t of seen) await cloud.publishAsync(t, '', { qos: 1, retain: true });
          resolve();
        }, 200),
      );
    });
  });
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop();
    await cloud.endAsync(true);
    for (const d of dirs.splice(0)) d.cleanup();
  });
  afterAll(async () => {
    await broker.destroy();
  });

  async function node(name = uniqueNode(), dbDir = tmpDir()): Promise<Node> {
    dirs.push(dbDir);
    const n = await startNode(dbDir.db, { nodeName: name, mqtt: { server: broker.url, keepalive: 5 } });
    nodes.push(n);
    return n;
  }

  it('a node that joins late receives every current object, acknowledged after commit', async () => {
    await publish(cloud, 'update', 'a', 10);
    await publish(cloud, 'update', 'b', 11);
    await publish(cloud, 'update', 'c', 12);
    const n = await node();
    await until(() => n.mm.store.count('service') === 3, 'three services');
    expect(n.mm.store.get('default/service/b')?.resourceVersion).toBe(11);
    expect(n.mesh.filter((m) => decodeChange(m)).length).toBe(3);
    expect(n.hub.stats.committed).toBe(3);
  });

  it("MQTT 5: the node sets the in-flight window (Receive Maximum), not the broker's 20", async () => {
    // A MetaManager stand-in that holds every commit until told: what the broker sends before
    // its first PUBACK is then exactly the window.
    const { EdgeHubModule } = await import('../src');
    const held: Message<unknown>[] = [];
    let release = false;
    const hub = new EdgeHubModule({
      nodeName: uniqueNode(),
      mqtt: { server: broker.url, receiveMaximum: 150 }, // protocolVersion auto: 5 with mosquitto
    });
    const { ctx, core } = await fakeMetaNode(hub, (m, c) => (release ? answerBatch(c, m) : held.push(m)));
    try {
      await until(() => hub.cloudConnected, 'connected');
      await new Promise((r) => setTimeout(r, 200)); // the SUBSCRIBE is through
      await Promise.all(Array.from({ length: 400 }, (_, i) => publish(cloud, 'update', `w-${i}`, 100 + i)));
      const taken = () => held.reduce((n, m) => n + (m.content as unknown[]).length, 0);
      await until(() => taken() >= 150, 'the window taken', 5000).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300)); // nothing beyond the window comes
      // mosquitto's max_inflight_messages (20) bounds a 3.1.1 client only
      expect(taken()).toBe(150);
      release = true;
      for (const m of held.splice(0)) answerBatch(ctx, m);
      await until(() => hub.stats.committed === 400, 'all four hundred, acknowledged in turn');
    } finally {
      await core.shutdown();
    }
  });

  it('a broker that refuses MQTT 5 (the embedded aedes) is spoken to in 3.1.1 at once; 4 can be chosen', async () => {
    const { EmbeddedBroker } = await import('../src');
    const eb = new EmbeddedBroker();
    const a = await eb.listen('127.0.0.1', 0);
    try {
      const auto = await startNode(tmpDir().db, {
        nodeName: uniqueNode(),
        mqtt: { server: `tcp://127.0.0.1:${a.port}`, keepalive: 5 },
        reconnect: { initialMs: 30_000 }, // only the immediate retry can connect in time
      });
      nodes.push(auto);
      await until(() => auto.hub.cloudConnected, 'connected over 3.1.1', 5000);
      expect(auto.hub.protocolVersion).toBe(4);
      expect(auto.logs.some((l) => /refused MQTT 5/.test(l.msg ?? ''))).toBe(true);
      const four = await startNode(tmpDir().db, {
        nodeName: uniqueNode(),
        mqtt: { server: `tcp://127.0.0.1:${a.port}`, keepalive: 5, protocolVersion: 4 },
      });
      nodes.push(four);
      await until(() => four.hub.cloudConnected, 'connected', 5000);
      expect(four.logs.some((l) => /refused MQTT 5/.test(l.msg ?? ''))).toBe(false);
      // with the embedded broker (what `npm start` runs), auto starts in 3.1.1: no refusal to log
      const { freePort } = await import('@edgecore/test-support');
      const p = await freePort();
      const own = await startNode(tmpDir().db, {
        nodeName: uniqueNode(),
        mqtt: {
          server: `tcp://127.0.0.1:${p}`,
          keepalive: 5,
          embeddedBroker: { enable: true, listen: `127.0.0.1:${p}` },
        },
      });
      nodes.push(own);
      await until(() => own.hub.cloudConnected, 'connected to its embedded broker', 5000);
      expect(own.hub.protocolVersion).toBe(4);
      expect(own.logs.some((l) => /refused MQTT 5/.test(l.msg ?? ''))).toBe(false);
    } finally {
      for (const x of nodes.splice(0)) await x.stop();
      await eb.close();
    }
  });

  it('connection status goes to meta and mesh; node presence is retained, with a last will', async () => {
    const name = uniqueNode();
    const statuses: string[] = [];
    await cloud.subscribeAsync(topics.status(name), { qos: 1 });
    cloud.on(
      'message',
      (t, p) => t === topics.status(name) && p.length && statuses.push(JSON.parse(p.toString()).status),
    );
    const n = await node(name);
    await until(() => n.mm.cloudConnected, 'metamanager sees connected');
    expect(n.mesh.some((m) => m.route.operation === 'connect' && m.content === CloudConnected)).toBe(true);
    await until(() => statuses.includes('online'), 'online status');
    await n.stop();
    nodes.pop();
    await until(() => statuses.at(-1) === 'offline', 'offline status after stop');
    expect(n.mesh.some((m) => m.content === CloudDisconnected)).toBe(false); // stopped cleanly: mesh was gone first
  });

  it('an offline node that missed an update and a delete converges after reconnect', async () => {
    const name = uniqueNode();
    const d = tmpDir();
    let n = await node(name, d);
    await publish(cloud, 'update', 'keep', 20, 1000);
    await publish(cloud, 'update', 'gone', 21);
    await until(() => n.mm.store.count('service') === 2, 'two services');
    await n.stop();
    nodes.pop();
    // while the node is away
    await publish(cloud, 'update', 'keep', 22, 2000);
    await publish(cloud, 'delete', 'gone', 23);
    await publish(cloud, 'update', 'new', 24);
    n = await startNode(d.db, { nodeName: name, mqtt: { server: broker.url } });
    nodes.push(n);
    await until(
      () => n.mm.store.get('default/service/gone') === undefined && n.mm.store.count('service') === 2,
      'converged',
    );
    expect(JSON.parse(n.mm.store.get('default/service/keep')!.value).spec.ports[0].port).toBe(2000);
    expect(n.mm.store.get('default/service/new')).toBeDefined();
  });

  it('duplicate delivery is harmless: applied once, forwarded once', async () => {
    const n = await node();
    await until(() => n.mm.cloudConnected, 'connected');
    const msg = toWire(
      newMessage(svc('dup', 30), {
        operation: 'update',
        resource: 'default/service/dup',
        resourceVersion: '30',
      }),
    );
    await cloud.publishAsync(topics.object('default', 'service', 'dup'), msg, { qos: 1, retain: true });
    await cloud.publishAsync(topics.object('default', 'service', 'dup'), msg, { qos: 1, retain: true });
    await until(() => n.hub.stats.received >= 2, 'both deliveries');
    await until(() => n.mm.stats.unchanged + n.mm.stats.applied >= 2, 'both processed');
    expect(n.mm.stats.applied).toBe(1);
    expect(n.mesh.filter((m) => decodeChange(m)?.name === 'dup')).toHaveLength(1);
  });

  it.each([
    ['not JSON', 'default/service/x', Buffer.from('{nope'), 'not JSON'],
    [
      'wrong kind',
      'default/service/x',
      Buffer.from(
        toWire(
          newMessage(
            { kind: 'Pod', metadata: { name: 'x' } },
            { operation: 'update', resource: 'default/service/x' },
          ),
        ),
      ),
      'kind',
    ],
    [
      'missing metadata.name',
      'default/service/x',
      Buffer.from(
        toWire(
          newMessage(
            { kind: 'Service', metadata: {} },
            { operation: 'update', resource: 'default/service/x' },
          ),
        ),
      ),
      'metadata.name',
    ],
    [
      'resource not matching topic',
      'default/service/x',
      Buffer.from(toWire(newMessage(svc('y', 1), { operation: 'update', resource: 'default/service/y' }))),
      'does not match',
    ],
  ])(
    'malformed payload (%s) is logged with the topic and dropped; the subscription keeps working',
    async (_n, res, payload, reason) => {
      const n = await node();
      await until(() => n.mm.cloudConnected, 'connected');
      // connected is not subscribed yet: a retained fence that arrives proves the subscription is
      // in place, so the bad payload below (not retained) is delivered live, before `valid`
      await publish(cloud, 'update', 'fence', 39);
      await until(() => n.mm.store.get('default/service/fence') !== undefined, 'the subscription');
      const [ns, type, name] = res.split('/');
      await cloud.publishAsync(topics.object(ns, type, name), payload, { qos: 1 });
      await publish(cloud, 'update', 'valid', 40);
      await until(
        () => n.mm.store.get('default/service/valid') !== undefined,
        'valid object after the bad one',
      );
      expect(n.hub.stats.malformed).toBe(1);
      const warn = n.logs.find((l) => l.msg === 'dropping malformed payload');
      expect(warn?.obj.topic).toBe(topics.object(ns, type, name));
      expect(warn?.obj.err).toContain(reason);
      expect(n.mm.store.get('default/service/x')).toBeUndefined();
    },
  );

  it('broker restart: the node keeps serving offline, reconnects with backoff and catches up', async () => {
    const n = await node();
    await publish(cloud, 'update', 'before', 50);
    await until(() => n.mm.store.get('default/service/before') !== undefined, 'first object');
    await cloud.endAsync(true);
    await broker.stop();
    await until(() => !n.mm.cloudConnected, 'metamanager sees disconnected');
    expect(n.mesh.some((m) => m.content === CloudDisconnected)).toBe(true);
    // offline: queries still answered from SQLite, fast
    const r = await n.ctx.sendSync(
      'metamanager',
      newMessage(null, { operation: 'query', resource: 'default/service/before' }),
      1000,
    );
    expect((r.content as any).metadata.name).toBe('before');
    const nf = await n.ctx.sendSync(
      'metamanager',
      newMessage(null, { operation: 'query', resource: 'default/service/zzz' }),
      1000,
    );
    expect(nf.content).toMatchObject({ code: 'META_NOT_FOUND' });
    await broker.restart();
    await until(() => n.mm.cloudConnected, 'reconnected', 15_000);
    cloud = await connectAsync(broker.url, { clientId: `cloud-${Math.random()}`, reconnectPeriod: 0 });
    await publish(cloud, 'update', 'after', 51);
    await until(() => n.mm.store.get('default/service/after') !== undefined, 'object after restart');
    expect(n.hub.stats.disconnects).toBeGreaterThanOrEqual(1);
  }, 40_000);

  it('remote query: a missing key goes up to the cloud and the reply comes back', async () => {
    const name = uniqueNode();
    await cloud.subscribeAsync(topics.up(name), { qos: 1 });
    cloud.on('message', (t, p) => {
      if (t !== topics.up(name)) return;
      const q = fromWire(p);
      if (q.route.operation !== 'query') return;
      const reply = newResponse(q, svc('from-cloud', 60));
      void cloud.publishAsync(topics.down(name), toWire(reply), { qos: 1 });
    });
    const n = await node(name);
    await until(() => n.mm.cloudConnected, 'connected');
    const r = await n.ctx.sendSync(
      'metamanager',
      newMessage(null, { operation: 'query', resource: 'default/service/from-cloud' }),
      5000,
    );
    expect((r.content as any).metadata.name).toBe('from-cloud');
    expect(n.mm.store.get('default/service/from-cloud')?.resourceVersion).toBe(60);
  });

  it('shutdown while a commit is pending completes (the failing commit does not reset the closing link)', async () => {
    // A MetaManager stand-in that never answers: shutdown closes its mailbox, the pending commit
    // fails, and EdgeHub must not end the link under the offline publish it is waiting for.
    const { ChannelContext, Core } = await import('@edgecore/beehive');
    const { EdgeHubModule } = await import('../src');
    const ctx = new ChannelContext();
    const hub = new EdgeHubModule({
      nodeName: uniqueNode(),
      mqtt: { server: broker.url },
      commitTimeoutMs: 20_000,
    });
    const core = new Core(ctx, [hub]);
    let got = 0;
    core.register({
      name: 'mute-meta',
      group: 'meta',
      enable: () => true,
      async start(c) {
        for await (const m of c.receive('mute-meta')) if (m.route.operation !== 'connect') got++;
      },
    });
    await core.start();
    await until(() => hub.cloudConnected, 'connected');
    await publish(cloud, 'update', 'pending-at-shutdown', 3);
    await until(() => got >= 1, 'commit pending');
    await core.shutdown(); // used to hang here now and then (the jest timeout catches a hang)
    expect(hub.cloudConnected).toBe(false);
  }, 20_000);

  it('a write the database fails (transaction rolled back) is not acknowledged: redelivered, then committed', async () => {
    const n = await node();
    await until(() => n.hub.cloudConnected, 'connected');
    // the disk fails: every insert into the store aborts (a real SQLite error, META_DATABASE)
    n.mm.store.db.exec(
      "CREATE TRIGGER disk_on_fire BEFORE INSERT ON meta BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    );
    const resets = n.hub.stats.disconnects;
    await publish(cloud, 'update', 'survivor', 90);
    await until(() => n.hub.stats.disconnects > resets, 'the link reset for redelivery', 10_000);
    expect(n.mm.store.get('default/service/survivor')).toBeUndefined();
    expect(n.logs.some((l) => /resetting the link for redelivery/.test(l.msg ?? ''))).toBe(true);
    // the disk is back: the broker's redelivery is committed
    n.mm.store.db.exec('DROP TRIGGER disk_on_fire');
    await until(
      () => n.mm.store.get('default/service/survivor')?.resourceVersion === 90,
      'committed',
      15_000,
    );
  }, 30_000);

  it('a message whose commit does not come in time is not acknowledged and is redelivered', async () => {
    // A MetaManager stand-in that ignores the first write: EdgeHub must not PUBACK it.
    const { EdgeHubModule } = await import('../src');
    const writes: string[] = [];
    let first = true;
    const dbg = process.env.DEBUG_HUB
      ? { debug: console.log, info: console.log, warn: console.log, error: console.log }
      : undefined;
    const hub = new EdgeHubModule(
      {
        nodeName: uniqueNode(),
        mqtt: { server: broker.url },
        commitTimeoutMs: 300,
        reconnect: { initialMs: 100 },
      },
      dbg,
    );
    const { core } = await fakeMetaNode(hub, (m, c) => {
      const items = m.content as { route: { resource: string } }[];
      writes.push(...items.map((i) => i.route.resource));
      if (first && items.some((i) => i.route.resource === 'default/service/redeliver')) first = false;
      else answerBatch(c, m);
    });
    try {
      await until(() => hub.cloudConnected, 'connected');
      await publish(cloud, 'update', 'redeliver', 70);
      await until(
        () => hub.stats.committed >= 1 && writes.filter((w) => w === 'default/service/redeliver').length >= 2,
        'committed on redelivery',
        15_000,
      );
      expect(writes.filter((w) => w === 'default/service/redeliver').length).toBeGreaterThanOrEqual(2);
    } finally {
      await core.shutdown();
    }
  }, 30_000);
});
