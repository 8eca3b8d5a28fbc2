/**
 * MetaManager benchmark (issue #3): apply 10,000 services + 50,000 pods through the module over
 * beehive (as EdgeHub does: sync writes, many in flight, each acknowledged after its commit), then
 * a cold start that loads everything back through MetaClient. Goals: ≥ 20,000 objects/s apply,
 * ≤ 1 s cold load. Run: `npm run bench:metamanager`.
 */
import 'reflect-metadata';
import { ChannelContext, Core, newMessage } from '@edgecore/beehive';
import { BeehiveMetaClient, MetaManagerModule, MetaStore } from '@edgecore/metamanager';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const PODS = Number(process.env.PODS ?? 50_000);
const IN_FLIGHT = 256;

function service(i: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: `svc-${i}`,
      namespace: `ns-${i % 50}`,
      resourceVersion: String(i + 1),
      labels: { app: `app-${i}` },
    },
    spec: {
      clusterIP: 'None',
      selector: { app: `app-${i}` },
      ports: [{ name: 'http-0', port: 12345, protocol: 'TCP', targetPort: 80 }],
    },
  };
}
function pod(i: number): object {
  const s = i % SERVICES;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `pod-${i}`,
      namespace: `ns-${s % 50}`,
      resourceVersion: String(i + 1),
      labels: { app: `app-${s}` },
    },
    spec: {
      nodeName: `edge-node-${i % 20}`,
      containers: [
        { name: 'nginx', image: 'nginx:1.25', ports: [{ containerPort: 80, hostPort: 80 + (i % 100) }] },
      ],
    },
    status: {
      phase: 'Running',
      hostIP: `198.51.100.${i % 250}`,
      podIP: `10.0.${(i >> 8) & 255}.${i & 255}`,
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

async function boot(path: string): Promise<{ ctx: ChannelContext; core: Core; mm: MetaManagerModule }> {
  const ctx = new ChannelContext();
  const mm = new MetaManagerModule({ dataSource: path }, new MetaStore(path));
  const core = new Core(ctx, [mm]);
  await core.start();
  return { ctx, core, mm };
}

async function applyAll(ctx: ChannelContext): Promise<number> {
  const items: [string, object][] = [];
  for (let i = 0; i < SERVICES; i++) items.push([`ns-${i % 50}/service/svc-${i}`, service(i)]);
  for (let i = 0; i < PODS; i++) items.push([`ns-${(i % SERVICES) % 50}/pod/pod-${i}`, pod(i)]);
  let next = 0;
  let failed = 0;
  const t0 = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const [resource, obj] = items[next++];
      const r = await ctx.sendSync(
        'metamanager',
        newMessage(obj, { source: 'edgehub', operation: 'insert', resource }),
        30_000,
      );
      if (r.content !== 'OK') failed++;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (failed) throw new Error(`${failed} writes failed`);
  return items.length / secs;
}

async function main(): Promise<void> {
  const rows: string[][] = [];
  for (let run = 1; run <= 2; run++) {
    const dir = mkdtempSync(join(tmpdir(), 'bench-meta-'));
    const path = join(dir, 'edgecore.db');
    try {
      let n = await boot(path);
      const rate = await applyAll(n.ctx);
      const batches = n.mm.stats.batches;
      await n.core.shutdown();
      const size = statSync(path).size;
      const rssBefore = process.memoryUsage().rss;
      // Cold start: a new store and module on the same file, everything listed back via MetaClient.
      const t0 = process.hrtime.bigint();
      n = await boot(path);
      const client = new BeehiveMetaClient(n.ctx, { source: 'bench', timeoutMs: 60_000 });
      n.ctx.addModule('bench', 'user');
      const [svcs, pods] = await Promise.all([client.listServices(), client.listPods()]);
      const coldMs = Number(process.hrtime.bigint() - t0) / 1e6;
      if (svcs.length !== SERVICES || pods.length !== PODS)
        throw new Error(`loaded ${svcs.length}/${pods.length}`);
      const rss = process.memoryUsage().rss;
      await n.core.shutdown();
      rows.push([
        `run ${run}`,
        `${Math.round(rate).toLocaleString('en')} obj/s`,
        `${batches}`,
        `${coldMs.toFixed(0)} ms`,
        `${(rss / 2 ** 20).toFixed(0)} MiB (${((rss - rssBefore) / 2 ** 20).toFixed(0)} MiB for the load)`,
        `${(size / 2 ** 20).toFixed(1)} MiB`,
        rate >= 20_000 && coldMs <= 1000 ? 'ok' : 'MISS',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(
    `metamanager bench — ${SERVICES} services + ${PODS} pods, ${IN_FLIGHT} sync writers in flight, node ${process.version}`,
  );
  const head = [
    'run',
    'apply (goal ≥ 20,000 obj/s)',
    'transactions',
    'cold load (goal ≤ 1 s)',
    'RSS after load',
    'db file',
    '',
  ];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((x, i) => x.padEnd(w[i])).join(' | ');
  console.log(line(head));
  console.log(w.map((n) => '-'.repeat(n)).join('-|-'));
  rows.forEach((r) => console.log(line(r)));
}

void main();
