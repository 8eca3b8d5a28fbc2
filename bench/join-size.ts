/**
 * What a node receives when it joins a fleet (issue #21): 10,000 services and 50,000 pods (5 per
 * service) over 100 nodes, published twice to one mosquitto —
 *  - before: the round-1 layout, every object on the fleet-wide topics (each node received every
 *    pod of the fleet, since EdgeMesh computed backends from pods at the edge);
 *  - after: edgectl's path today (publishPlanned: the objects, the EndpointSlices its slice
 *    controller computes, the digests), pods on their node's topics.
 * A fresh node (`edge-node-7`) then reads what it subscribes to — retained, the way EdgeHub
 * joins — and the messages and bytes (topic + payload) are counted, per kind.
 * Run: `npm run bench:join-size` (SERVICES, PODS_PER_SERVICE, NODES to change the sizes).
 */
import { newMessage, toWire, TypeDigest } from '@edgecore/beehive';
import { ObjectPublisher, publishPlanned, type PlannedObject } from '@edgecore/edgecore';
import { fleetCatalog } from './fleet-catalog';
import { RetainedReader } from '@edgecore/edgehub';
import { Mosquitto } from '@edgecore/test-support';
import { connectAsync } from 'mqtt';

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const PER = Number(process.env.PODS_PER_SERVICE ?? 5);
const NODES = Number(process.env.NODES ?? 100);
const NODE = 'edge-node-7';
const { namespaces: NAMESPACES, docs } = fleetCatalog({
  services: SERVICES,
  perService: PER,
  nodes: NODES,
  nodeName: (i) => `edge-node-${i}`,
});

/** The round-1 layout: every object retained on `{prefix}/objects/…`, a digest per type after them. */
async function publishBefore(server: string, prefix: string, objs: PlannedObject[]): Promise<void> {
  const c = await connectAsync(server, { clientId: 'bench-before', clean: true });
  const digests = new Map<string, TypeDigest>();
  let rv = Date.now() * 1000;
  const inflight = new Set<Promise<unknown>>();
  for (const o of objs) {
    const v = rv++;
    const content = { ...o.object, metadata: { ...o.object.metadata, resourceVersion: String(v) } };
    const resource = `${o.namespace}/${o.type}/${o.name}`;
    const msg = newMessage(content, {
      source: 'edgectl',
      group: 'resource',
      operation: 'update',
      resource,
      resourceVersion: String(v),
    });
    const p = c.publishAsync(`${prefix}/objects/${resource}`, toWire(msg), { qos: 1, retain: true });
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    if (inflight.size >= 1000) await Promise.race(inflight);
    let d = digests.get(o.type);
    if (!d) digests.set(o.type, (d = new TypeDigest()));
    d.add(o.namespace, resource, v);
  }
  await Promise.all(inflight);
  for (const [type, d] of digests)
    await c.publishAsync(`${prefix}/digest/${type}`, JSON.stringify({ ...d.value, at: Date.now() }), {
      qos: 1,
      retain: true,
    });
  await c.endAsync();
}

interface Count {
  messages: number;
  bytes: number;
  byKind: Map<string, { messages: number; bytes: number }>;
}

/** Read what a node subscribes to, retained, one namespace at a time; count it by kind. */
async function join(server: string, filters: (ns: string) => string[], digests: string[]): Promise<Count> {
  const r = await RetainedReader.open(server, {
    clientId: `bench-join-${Math.random().toString(16).slice(2, 8)}`,
    clean: true,
  });
  const c: Count = { messages: 0, bytes: 0, byKind: new Map() };
  const take = (topic: string, payload: Buffer): void => {
    if (!payload.length) return;
    const kind = topic.includes('/digest/') ? 'digest' : topic.split('/').at(-2)!;
    const bytes = Buffer.byteLength(topic) + payload.length;
    c.messages++;
    c.bytes += bytes;
    const k = c.byKind.get(kind) ?? { messages: 0, bytes: 0 };
    k.messages++;
    k.bytes += bytes;
    c.byKind.set(kind, k);
  };
  try {
    await r.read(digests, `bench/fence/${Math.random()}`, take);
    for (let n = 0; n < NAMESPACES; n++)
      await r.read(filters(`ns-${n}`), `bench/fence/${Math.random()}`, take);
  } finally {
    await r.close();
  }
  return c;
}

function line(label: string, c: Count): string {
  const kinds = [...c.byKind]
    .sort()
    .map(([k, v]) => `${k} ${v.messages} (${(v.bytes / 1048576).toFixed(1)} MiB)`)
    .join(', ');
  return `${label.padEnd(8)} ${String(c.messages).padStart(8)} messages ${(c.bytes / 1048576).toFixed(1).padStart(7)} MiB   ${kinds}`;
}

async function main(): Promise<void> {
  const broker = await Mosquitto.start({ maxQueued: 1_000_000 });
  try {
    const objs = docs.flatMap((d) => d.objects);
    console.log(
      `join size: ${SERVICES} services, ${SERVICES * PER} pods over ${NODES} nodes, ${NAMESPACES} namespaces; a fresh node (${NODE}) reads what it subscribes to`,
    );
    const t0 = Date.now();
    await publishBefore(broker.url, 'before', objs);
    const t1 = Date.now();
    const pub = await ObjectPublisher.connect(broker.url);
    try {
      await publishPlanned(pub, docs, 'apply', 'host');
    } finally {
      await pub.close();
    }
    const t2 = Date.now();
    console.log(
      `published: before ${((t1 - t0) / 1000).toFixed(1)} s, after (edgectl's path, with slices) ${((t2 - t1) / 1000).toFixed(1)} s`,
    );
    const before = await join(broker.url, (ns) => [`before/objects/${ns}/+/+`], ['before/digest/+']);
    const after = await join(
      broker.url,
      (ns) => [`edgecore/objects/${ns}/+/+`, `edgecore/nodes/${NODE}/objects/${ns}/+/+`],
      ['edgecore/digest/+', `edgecore/nodes/${NODE}/digest/+`],
    );
    console.log(line('before', before));
    console.log(line('after', after));
    console.log(
      `after/before: messages ${(after.messages / before.messages).toFixed(3)}, bytes ${(after.bytes / before.bytes).toFixed(3)} ` +
        `(${(before.messages / after.messages).toFixed(1)}x fewer messages, ${(before.bytes / after.bytes).toFixed(1)}x fewer bytes)`,
    );
  } finally {
    await broker.destroy();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
