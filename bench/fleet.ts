/**
 * A fleet on one machine (issue #25): NODES simulated nodes — each a real MQTT 5 session with a
 * persistent session and EdgeHub's subscriptions and payload validation (`decodePayload`), its
 * "apply" a resourceVersion check in memory — plus the cloud (edgectl's publish path with its
 * slice controller) on one mosquitto, with SERVICES services of PODS_PER_SERVICE pods retained.
 * Measured and printed:
 *  - join: every node subscribes at once (in waves of 50 connects); messages and bytes a node
 *    receives, seconds until every node holds the whole catalog it is sent;
 *  - one service update → seen by every node: p50/p99/max (goal p99 ≤ 1 s);
 *  - broker restart (persistent sessions) → every node back and a fresh update seen by all:
 *    seconds (goal ≤ 60 s), and the broker's CPU seconds over the run.
 * BROKERS=3: the same through a 3-broker bridge — edgectl and the updates on a stock cloud
 * mosquitto, the nodes split over two regional ones bridged to it (`brokerBridge`, what `edgectl
 * broker bridge` prints); the restart is of all three.
 * Run: `npm run bench:fleet` (NODES, SERVICES, PODS_PER_SERVICE, BROKERS to change the sizes).
 */
import { toWire, newMessage } from '@edgecore/beehive';
import { ObjectPublisher, publishPlanned } from '@edgecore/edgecore';
import { fleetCatalog } from './fleet-catalog';
import { brokerBridge, decodePayload, Topics } from '@edgecore/edgehub';
import { Mosquitto } from '@edgecore/test-support';
import { connectAsync, type MqttClient } from 'mqtt';
import { readFileSync } from 'node:fs';

const NODES = Number(process.env.NODES ?? 1000);
const SERVICES = Number(process.env.SERVICES ?? 1000);
const PER = Number(process.env.PODS_PER_SERVICE ?? 2);
const BROKERS = Number(process.env.BROKERS ?? 1);
if (BROKERS !== 1 && BROKERS !== 3)
  throw new Error('BROKERS: 1 (one mosquitto) or 3 (a cloud and two regional)');
const nodeName = (i: number) => `node-${String(i).padStart(4, '0')}`;
const { namespaces: NS, docs: catalog } = fleetCatalog({
  services: SERVICES,
  perService: PER,
  nodes: NODES,
  nodeName,
});

interface SimNode {
  name: string;
  client?: MqttClient;
  objects: number;
  bytes: number;
  messages: number;
  versions: Map<string, number>;
  watch?: { key: string; rv: number; at?: number };
}

/** One simulated node: EdgeHub's session and subscriptions, validation, and an rv-checked apply. */
async function join(server: string, n: SimNode, onObject: () => void): Promise<void> {
  const topics = new Topics('edgecore', n.name);
  const c = await connectAsync(server, {
    clientId: n.name,
    clean: false,
    protocolVersion: 5,
    properties: { receiveMaximum: 65535, sessionExpiryInterval: 0xffffffff },
    reconnectPeriod: 1000,
    connectTimeout: 30_000,
  });
  n.client = c;
  c.on('message', (topic, payload) => {
    n.messages++;
    n.bytes += payload.length + topic.length;
    let msg;
    try {
      msg = decodePayload(topics, topic, payload);
    } catch {
      return;
    }
    const res = msg?.route.resource;
    if (!res || topics.digestType(topic)) return;
    const rv = Number(msg!.header.resourceversion || 0);
    if ((n.versions.get(res) ?? -1) >= rv) return;
    n.versions.set(res, rv);
    n.objects++;
    if (n.watch && res === n.watch.key && rv >= n.watch.rv && n.watch.at === undefined)
      n.watch.at = performance.now();
    onObject();
  });
  await c.subscribeAsync({
    [topics.objects()]: { qos: 1 },
    [topics.digests()]: { qos: 1 },
    [topics.nodeObjects()]: { qos: 1 },
    [topics.nodeDigests()]: { qos: 1 },
    [topics.down(n.name)]: { qos: 1 },
  });
}

const pct = (xs: number[], p: number) =>
  xs.sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const cpuSeconds = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const waitUntil = async (cond: () => boolean, what: string, ms: number) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

async function main(): Promise<void> {
  // one broker, or a stock cloud broker and two regional ones bridged to it
  const broker = await Mosquitto.start(BROKERS === 1 ? { maxQueued: 1_000_000 } : { stock: true });
  const regional: Mosquitto[] = [];
  for (let i = 0; BROKERS === 3 && i < 2; i++)
    regional.push(
      await Mosquitto.start({
        maxQueued: 1_000_000,
        extra: brokerBridge({ cloud: `127.0.0.1:${broker.port}`, name: `regional-${i}` }),
      }),
    );
  const brokers = [broker, ...regional];
  /** The broker node i links to. */
  const nodeBroker = (i: number) => (regional.length ? regional[i % regional.length] : broker);
  const nodes: SimNode[] = Array.from({ length: NODES }, (_, i) => ({
    name: nodeName(i),
    objects: 0,
    bytes: 0,
    messages: 0,
    versions: new Map(),
  }));
  try {
    console.log(
      `fleet: ${NODES} simulated nodes (MQTT 5 sessions, EdgeHub's subscriptions and validation), ${SERVICES} services × ${PER} pods, ${BROKERS === 1 ? 'one mosquitto' : 'a stock cloud mosquitto and two regional ones bridged to it (nodes split between them)'}`,
    );
    const brokersCpu = () => brokers.reduce((a, b) => a + cpuSeconds(b.pid!), 0);
    let brokerCpu = -brokersCpu();
    const docs = catalog;
    const t0 = performance.now();
    const pub = await ObjectPublisher.connect(broker.url);
    await publishPlanned(pub, docs, 'apply', 'host');
    await pub.close();
    console.log(
      `catalog published (edgectl's path, slices computed): ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    // what each node should end up holding: every service and slice, and its own pods
    const own = new Map<string, number>();
    for (const d of docs)
      for (const o of d.objects) if (o.type === 'pod') own.set(o.node!, (own.get(o.node!) ?? 0) + 1);
    const expected = (n: SimNode) => SERVICES * 2 + (own.get(n.name) ?? 0);
    let complete = 0;
    const j0 = performance.now();
    for (let i = 0; i < nodes.length; i += 50)
      await Promise.all(
        nodes
          .slice(i, i + 50)
          .map((n, k) => join(nodeBroker(i + k).url, n, () => n.objects === expected(n) && complete++)),
      );
    await waitUntil(() => complete >= NODES, 'every node holds its catalog', 900_000);
    const joinS = (performance.now() - j0) / 1000;
    const msgs = nodes.map((n) => n.messages);
    const bytes = nodes.map((n) => n.bytes);
    console.log(
      `join: all ${NODES} nodes hold their catalog after ${joinS.toFixed(1)} s; per node ${pct(msgs, 50)} messages (max ${Math.max(...msgs)}), ${(pct(bytes, 50) / 1048576).toFixed(2)} MiB`,
    );
    // one service update, seen by every node
    const cloud = await connectAsync(broker.url, { clientId: 'bench-cloud', protocolVersion: 5 });
    const update = async (i: number) => {
      const rv = Date.now() * 1000 + 999;
      const key = `ns-${i % NS}/service/svc-${i}`;
      for (const n of nodes) n.watch = { key, rv };
      const content = {
        ...docs[i].objects[0].object,
        metadata: {
          ...docs[i].objects[0].object.metadata,
          resourceVersion: String(rv),
          labels: { touched: String(rv) },
        },
      };
      const msg = newMessage(content, {
        source: 'edgectl',
        group: 'resource',
        operation: 'update',
        resource: key,
        resourceVersion: String(rv),
      });
      const t = performance.now();
      await cloud.publishAsync(`edgecore/objects/${key}`, toWire(msg), { qos: 1, retain: true });
      await waitUntil(
        () => nodes.every((n) => n.watch!.at !== undefined),
        'the update on every node',
        120_000,
      );
      return nodes.map((n) => n.watch!.at! - t);
    };
    const lat = await update(7);
    console.log(
      `one service update → every node: p50 ${pct(lat, 50).toFixed(0)} ms, p99 ${pct(lat, 99).toFixed(0)} ms, max ${Math.max(...lat).toFixed(0)} ms (goal p99 ≤ 1000)`,
    );
    // broker restart: persistent sessions, retained state on disk
    const r0 = performance.now();
    brokerCpu += brokersCpu();
    for (const b of brokers) await b.stop();
    for (const b of brokers) await b.restart();
    await waitUntil(() => nodes.every((n) => n.client!.connected), 'every node reconnected', 300_000);
    await waitUntil(() => cloud.connected, 'the cloud reconnected', 60_000);
    const lat2 = await update(8);
    const restartS = (performance.now() - r0) / 1000;
    console.log(
      `broker restart → every node back and a fresh update on all: ${restartS.toFixed(1)} s (goal ≤ 60); that update p99 ${pct(lat2, 99).toFixed(0)} ms`,
    );
    brokerCpu += brokersCpu();
    console.log(
      `mosquitto CPU over the run (both lives${BROKERS === 3 ? ', the three brokers' : ''}): ${brokerCpu.toFixed(1)} s`,
    );
    await cloud.endAsync(true);
  } finally {
    await Promise.all(nodes.map((n) => n.client?.endAsync(true)));
    for (const b of brokers) await b.destroy();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
