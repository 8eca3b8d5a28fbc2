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
 *  - BROKERS=3 also: the cloud broker alone restarted while the nodes stay on their regional
 *    brokers (each bridge reads the catalog again and passes it on): seconds until a fresh
 *    update is on all, messages per node, the brokers' CPU.
 * BROKERS=3: the same through a 3-broker bridge — edgectl and the updates on a stock cloud
 * mosquitto, the nodes split over two regional ones bridged to it (`brokerBridge`, what `edgectl
 * broker bridge` prints); the restart is of all three.
 * FULL (default 2) full edgecore processes (unprivileged, their own SQLite) join beside the
 * simulated nodes once those hold the catalog: seconds until each answers the last service in DNS
 * and holds every service, its RSS; after each restart, seconds until a service created then
 * answers in DNS on every one of them.
 * Run: `npm run bench:fleet` (NODES, SERVICES, PODS_PER_SERVICE, BROKERS, FULL to change the sizes).
 */
import { ObjectPublisher, publishPlanned } from '@edgecore/edgecore';
import { fleetCatalog } from './fleet-catalog';
import { brokerBridge, decodePayload, Topics } from '@edgecore/edgehub';
import { Mosquitto } from '@edgecore/test-support';
import { connectAsync, type MqttClient } from 'mqtt';
import { type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import {
  cpuSeconds,
  DnsProbe,
  metric,
  pct,
  rssMiB,
  startCore,
  waitFor,
  type CoreProcess,
} from './edgecore-process';

const NODES = Number(process.env.NODES ?? 1000);
const SERVICES = Number(process.env.SERVICES ?? 1000);
const PER = Number(process.env.PODS_PER_SERVICE ?? 2);
const BROKERS = Number(process.env.BROKERS ?? 1);
const FULL = Number(process.env.FULL ?? 2);
const W = mkdtempSync(joinPath(tmpdir(), 'bench-fleet-'));
const children: ChildProcess[] = [];
if (BROKERS !== 1 && BROKERS !== 3)
  throw new Error('BROKERS: 1 (one mosquitto) or 3 (a cloud and two regional)');
const nodeName = (i: number) => `node-${String(i).padStart(4, '0')}`;
const { docs: catalog } = fleetCatalog({
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
    // a broker's CPU over its lives: what its stopped processes used, banked before each stop
    const banked = new Map<Mosquitto, number>();
    const cpuOf = (b: Mosquitto) => (banked.get(b) ?? 0) + cpuSeconds(b.pid!);
    const brokersCpu = () => brokers.reduce((a, b) => a + cpuOf(b), 0);
    const restart = async (bs: Mosquitto[]) => {
      for (const b of bs) {
        banked.set(b, cpuOf(b));
        await b.stop();
      }
      for (const b of bs) await b.restart();
    };
    const cpu0 = brokersCpu();
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
    await waitFor(() => complete >= NODES, 'every node holds its catalog', 900_000, 20);
    const joinS = (performance.now() - j0) / 1000;
    const msgs = nodes.map((n) => n.messages);
    const bytes = nodes.map((n) => n.bytes);
    console.log(
      `join: all ${NODES} nodes hold their catalog after ${joinS.toFixed(1)} s; per node ${pct(msgs, 50)} messages (max ${Math.max(...msgs)}), ${(pct(bytes, 50) / 1048576).toFixed(2)} MiB`,
    );
    // full edgecore processes join the fleet in place
    const full: (CoreProcess & { dns: DnsProbe; name: string })[] = [];
    const last = docs[docs.length - 1].objects[0];
    const lastName = `${last.name}.${last.namespace}.svc.cluster.local`;
    for (let i = 0; i < FULL; i++) {
      const f0 = performance.now();
      const c = await startCore(W, children, nodeBroker(i).url, `full-${i}`);
      const dns = new DnsProbe(c.dnsPort);
      full.push({ ...c, dns, name: `full-${i}` });
      await waitFor(
        async () => (await metric(c.obs, 'edgecore_mesh_services')) >= SERVICES && (await dns.ask(lastName)),
        `full-${i} holds the catalog`,
        600_000,
        20,
      );
      console.log(
        `full edgecore full-${i} (${nodeBroker(i) === broker ? 'the cloud broker' : 'a regional broker'}): holds every service and answers the last in DNS ${((performance.now() - f0) / 1000).toFixed(1)} s after its start; RSS ${rssMiB(c.proc.pid!).toFixed(0)} MiB`,
      );
    }
    /** A new service, published as edgectl does: seconds until every full edgecore answers it. */
    let created = 0;
    const newServiceOnFull = async (since: number): Promise<string> => {
      if (!full.length) return '';
      const name = `svc-new-${created++}`;
      const p = await ObjectPublisher.connect(broker.url);
      try {
        await p.begin(['service']);
        await p.apply({
          ...last,
          name,
          object: { ...last.object, metadata: { name, namespace: last.namespace } },
        });
        await p.finish();
      } finally {
        await p.close();
      }
      const host = `${name}.${last.namespace}.svc.cluster.local`;
      await waitFor(
        async () => (await Promise.all(full.map((f) => f.dns.ask(host)))).every(Boolean),
        `${name} on the full edgecores`,
        300_000,
        20,
      );
      return `; a service created with that update answers in DNS on the ${full.length} full edgecores ${((performance.now() - since) / 1000).toFixed(1)} s after the restart began`;
    };
    // one service update, seen by every node
    const cloud = await connectAsync(broker.url, { clientId: 'bench-cloud', protocolVersion: 5 });
    /** One service's labels changed, published as edgectl does (its digest too): ms until each node has it. */
    const update = async (i: number) => {
      const o = docs[i].objects[0];
      const key = `${o.namespace}/service/${o.name}`;
      const p = await ObjectPublisher.connect(broker.url);
      try {
        await p.begin(['service']);
        for (const n of nodes) n.watch = { key, rv: (n.versions.get(key) ?? 0) + 1 };
        const object = {
          ...o.object,
          metadata: { ...o.object.metadata, labels: { touched: String(Date.now()) } },
        };
        const t = performance.now();
        await p.apply({ ...o, object });
        await p.finish();
        await waitFor(
          () => nodes.every((n) => n.watch!.at !== undefined),
          'the update on every node',
          120_000,
          20,
        );
        return nodes.map((n) => n.watch!.at! - t);
      } finally {
        await p.close();
      }
    };
    const lat = await update(7);
    console.log(
      `one service update → every node: p50 ${pct(lat, 50).toFixed(0)} ms, p99 ${pct(lat, 99).toFixed(0)} ms, max ${Math.max(...lat).toFixed(0)} ms (goal p99 ≤ 1000)`,
    );
    // broker restart: persistent sessions, retained state on disk
    const r0 = performance.now();
    await restart(brokers);
    await waitFor(() => nodes.every((n) => n.client!.connected), 'every node reconnected', 300_000, 20);
    await waitFor(() => cloud.connected, 'the cloud reconnected', 60_000, 20);
    const [lat2, fullBack] = await Promise.all([update(8), newServiceOnFull(r0)]);
    const restartS = (performance.now() - r0) / 1000;
    console.log(
      `broker restart → every node back and a fresh update on all: ${restartS.toFixed(1)} s (goal ≤ 60); that update p99 ${pct(lat2, 99).toFixed(0)} ms${fullBack}`,
    );
    if (regional.length) {
      // the cloud broker alone: the nodes stay linked to their regional brokers, and each bridge
      // reads the whole retained catalog again and passes it on to the nodes linked there
      const before = nodes.reduce((a, n) => a + n.messages, 0);
      const s0 = brokersCpu();
      const c0 = performance.now();
      await restart([broker]);
      await waitFor(() => cloud.connected, 'the cloud reconnected', 60_000, 20);
      const [lat3, fullBack3] = await Promise.all([update(9), newServiceOnFull(c0)]);
      const cloudS = (performance.now() - c0) / 1000;
      const per = (nodes.reduce((a, n) => a + n.messages, 0) - before) / NODES;
      const cpuS = brokersCpu() - s0;
      console.log(
        `cloud broker restart (nodes stay on their regional brokers) → a fresh update on all: ${cloudS.toFixed(1)} s; that update p99 ${pct(lat3, 99).toFixed(0)} ms; ${per.toFixed(0)} messages per node (the bridges' replay); mosquitto CPU ${cpuS.toFixed(1)} s${fullBack3}`,
      );
    }
    console.log(
      `mosquitto CPU over the run (every life${BROKERS === 3 ? ', the three brokers' : ''}): ${(brokersCpu() - cpu0).toFixed(1)} s`,
    );
    await cloud.endAsync(true);
    for (const f of full)
      console.log(`full edgecore ${f.name}: RSS at the end ${rssMiB(f.proc.pid!).toFixed(0)} MiB`);
    for (const f of full) f.dns.close();
  } finally {
    for (const c of children) c.kill('SIGKILL');
    rmSync(W, { recursive: true, force: true });
    await Promise.all(nodes.map((n) => n.client?.endAsync(true)));
    for (const b of brokers) await b.destroy();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
