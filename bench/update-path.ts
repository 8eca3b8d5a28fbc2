/**
 * The cloud → node update path end to end (issue #26): a publisher like edgectl applies 10,000
 * services and 50,000 pods, 1,000 services (+ their 5,000 pods) at a time, to one unprivileged
 * edgecore through a mosquitto with its default queue limits (and the in-flight limit EdgeHub's
 * README asks of the broker edgectl publishes to: BROKER below); each step is timed from its
 * first publish until the node has applied all of it (its /metrics) and its last service answers
 * in DNS and through the explicit proxy (a real backend behind the service's pods). Since #21 the
 * cloud computes EndpointSlices and sends a node its own pods only: a step is its services, their
 * slices and the node's pods (3,000 objects of the 6,000 + 1,000 slices published). Two rates
 * are printed: objects applied per second (the services and pods edgectl applied, 6,000 a step:
 * what the issue counts — each is visible on the node once the step is, a pod of another node as
 * an endpoint of its service's slice), and objects received by the node per second. After each
 * step, single updates (a new service each) are timed from publish to the first DNS answer.
 * Reference in the same run: before each step, the same objects published under another topic
 * prefix to a bare MQTT subscriber that only counts them (the publisher and broker's own ceiling,
 * measured on its own so that it does not take CPU from the node it is compared with). CPU per
 * object of edgecore, mosquitto and this process is printed too. First (printed last), the whole
 * catalog in one apply (what `edgectl apply -f` of it sends, slices along with the services and
 * pods) to a node that has none of it, on a broker of its own (BROKER's settings), with its
 * reference and the resyncs it took (a broker queue that overflowed: the node noticed and read the
 * retained state back) and the node's peak RSS — from one file (each service, then its pods) and
 * from two (every service, then every pod).
 * Goals: ≥ 10,000 objects/s end to end; single-update p99 ≤ 20 ms at
 * 10,000 services; the per-update cost flat from 1,000 to 10,000 services.
 * Run: `npm run bench:update-path` (SERVICES, PODS_PER_SERVICE, SINGLES to change the sizes; SETTLE
 * for the quiet span the settled RSS is taken over; PODS_PER_SERVICE=0: services alone, in DNS
 * only; ONLY=whole for the whole applies alone; SPREAD=off to publish in file order, as edgectl did
 * before its publish order; BROKER=stock or tuned for the broker settings, see below).
 */
import { ObjectPublisher, plannedOrder, publishObjects, SliceController } from '@edgecore/edgecore';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Session } from 'node:inspector';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import {
  cpuSeconds,
  DnsProbe,
  freePort,
  metric,
  pct,
  peakRssMiB,
  rssMiB,
  startCore,
  waitFor,
} from './edgecore-process';

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const PER = Number(process.env.PODS_PER_SERVICE ?? 5);
const STEP = Math.min(1000, SERVICES);
const SINGLES = Number(process.env.SINGLES ?? 100);
const SETTLE = Number(process.env.SETTLE ?? 90);
/**
 * The broker's settings. Default (`inflight`): mosquitto's stock queue limits (max_queued_messages
 * 1000: what a node that falls behind overflows) and max_inflight_messages 1000, what EdgeHub's
 * README asks of the broker edgectl publishes to — mosquitto announces it as its Receive Maximum,
 * which edgectl keeps within as MQTT 5 requires (an MQTT 5 node sets its own window, so this
 * changes nothing on the node's side). `BROKER=stock`: mosquitto's defaults, where edgectl keeps 20
 * publishes in flight on each of 8 links; `BROKER=tuned`: max_queued_messages 100000 as well.
 */
const BROKER = process.env.BROKER ?? 'inflight';
const BROKER_SETTINGS: Record<string, { lines: string[]; says: string }> = {
  stock: { lines: [], says: 'stock mosquitto (max_inflight_messages 20, max_queued_messages 1000)' },
  inflight: {
    lines: ['max_inflight_messages 1000'],
    says: 'mosquitto with max_inflight_messages 1000 (the Receive Maximum edgectl keeps within), max_queued_messages 1000 (stock)',
  },
  tuned: {
    lines: ['max_inflight_messages 1000', 'max_queued_messages 100000'],
    says: 'mosquitto with max_inflight_messages 1000, max_queued_messages 100000',
  },
};
const SETTINGS = BROKER_SETTINGS[BROKER];
if (!SETTINGS) throw new Error(`BROKER=${BROKER}: stock, inflight or tuned`);
const root = join(__dirname, '..');
const W = mkdtempSync(join(tmpdir(), 'bench-update-'));
const children: ChildProcess[] = [];

type Planned = Parameters<ObjectPublisher['apply']>[0];

/**
 * Publish a step as edgectl apply does (each object a document of its own, in its publish
 * order: each destination spread over the step) — edgectl's own loop, `publishObjects`: a window
 * of publishes in flight, the slices the slice controller computes for them (every
 * SLICE_PLAN_EVERY objects and at the end), then the digests. Returns what a node receives of it
 * (`node`): every service and slice, and its own pods.
 */
async function publishAll(
  pub: ObjectPublisher,
  ctl: SliceController,
  objs: Planned[],
  node: string,
): Promise<number> {
  const ps: Promise<void>[] = [];
  let toNode = 0;
  const items = objs.map((o) => ({ o, remove: false }));
  // SPREAD=off: in file order (what edgectl did before its publish order)
  await publishObjects(pub, process.env.SPREAD === 'off' ? items : plannedOrder(items), ctl, (o, p) => {
    ps.push(p);
    if (o.type !== 'pod' || o.node === node) toNode++;
  });
  await Promise.all(ps);
  await pub.finish();
  return toNode;
}

function service(i: number) {
  return {
    type: 'service' as const,
    namespace: `ns-${i % 50}`,
    name: `svc-${i}`,
    object: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `svc-${i}`, namespace: `ns-${i % 50}` },
      spec: {
        clusterIP: 'None',
        selector: { app: `app-${i}` },
        ports: [{ name: 'http-0', port: 12345, protocol: 'TCP', targetPort: 80 }],
      },
    },
  };
}

function pod(i: number, j: number, backendPort: number) {
  return {
    type: 'pod' as const,
    namespace: `ns-${i % 50}`,
    name: `app-${i}-${j}`,
    node: `edge-node-${j % 100}`,
    object: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `app-${i}-${j}`, namespace: `ns-${i % 50}`, labels: { app: `app-${i}` } },
      spec: {
        nodeName: `edge-node-${j % 100}`,
        containers: [{ name: 'c', ports: [{ containerPort: 80, hostPort: backendPort }] }],
      },
      status: { phase: 'Running', hostIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
    },
  };
}

/**
 * A GET through the node's explicit proxy, as `curl -x` sends it (absolute-form target, a new connection
 * each time): whether the service answers 200. In this process rather than a curl child — the
 * pods' backend lives here, and spawning curl from a process of a few hundred MiB cost 25-30 ms a
 * step, 5 % of the time measured.
 */
function proxied(proxyPort: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: proxyPort,
        path: `http://${host}:12345/`,
        headers: { host: `${host}:12345` },
        agent: false,
        timeout: 2000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200));
        res.on('error', () => resolve(false));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/**
 * PROF=DIR: besides edgecore's own profile, a CPU profile of this process (the publisher, its
 * slice controller and the probes) over each whole apply's measured span, `publisher-whole-N.cpuprofile`.
 */
async function profiled<T>(name: string, run: () => Promise<T>): Promise<T> {
  const dir = process.env.PROF;
  if (!dir) return run();
  const s = new Session();
  s.connect();
  const post = (m: string) => new Promise<unknown>((res, rej) => s.post(m, (e, r) => (e ? rej(e) : res(r))));
  await post('Profiler.enable');
  await post('Profiler.start');
  try {
    return await run();
  } finally {
    const { profile } = (await post('Profiler.stop')) as { profile: unknown };
    writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
    s.disconnect();
  }
}

function trace(what: string): void {
  if (process.env.TRACE) console.error(new Date().toISOString(), what);
}

/** RSS 5 s after a burst: the node's memory release (memory.releaseAfterGrowthMiB) has acted. */
async function rssSoon(pid: number): Promise<number> {
  await new Promise((r) => setTimeout(r, 5000));
  return rssMiB(pid);
}

/**
 * The lowest RSS of a process over SETTLE (90) seconds without traffic, sampled every 5 s (SETTLE=0
 * when only the throughput is of interest).
 */
async function settledRss(pid: number): Promise<number> {
  let low = rssMiB(pid);
  for (let i = 0; i < SETTLE / 5; i++) {
    await new Promise((r) => setTimeout(r, 5000));
    low = Math.min(low, rssMiB(pid));
  }
  return low;
}

/**
 * Until a node has applied `applied` updates in all and `last` answers in DNS and through its
 * proxy: DNS first (a cheap probe), then the node's count (a scrape costs it a little), then a
 * request through the proxy.
 */
async function untilVisible(
  node: { probe: DnsProbe; obs: string; proxyPort: number },
  last: ReturnType<typeof service>,
  applied: number,
  what: string,
): Promise<void> {
  const host = `${last.name}.${last.namespace}.svc.cluster.local`;
  await waitFor(() => node.probe.ask(host), `last service in DNS (${what})`, 300_000, 5);
  await waitFor(
    async () => (await metric(node.obs, 'edgecore_mesh_updates_applied_total')) >= applied,
    `${what} applied`,
    300_000,
    10,
  );
  // services without pods have no backend to answer through the proxy (PODS_PER_SERVICE=0)
  if (PER > 0) await waitFor(() => proxied(node.proxyPort, host), `last service proxied (${what})`, 30_000);
}

/** SIGTERM, and the process's exit. */
function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  return exited;
}

/** A mosquitto with the settings of BROKER (stock by default). */
async function startBroker(port: number, name: string): Promise<{ proc: ChildProcess; server: string }> {
  writeFileSync(
    join(W, `${name}.conf`),
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'log_dest none',
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      ...SETTINGS.lines,
    ].join('\n') + '\n',
  );
  const proc = spawn('/usr/sbin/mosquitto', ['-c', join(W, `${name}.conf`)], { stdio: 'ignore' });
  children.push(proc);
  await new Promise((r) => setTimeout(r, 300));
  return { proc, server: `tcp://127.0.0.1:${port}` };
}

/**
 * On a broker: the reference — a bare subscriber counting what the broker hands out of the
 * `benchref` prefix that the node would receive (every service and slice, and its own pods), and
 * the publisher of that prefix — and the node's publisher, each having read the retained state.
 */
async function clients(server: string, bareId: string) {
  const bare = await connectAsync(server, { clientId: bareId, clean: true });
  const counted = { n: 0 };
  bare.on('message', () => (counted.n += 1));
  // QoS 0: what the broker can hand out (at QoS 1 a stock queue drops it too)
  for (const f of ['benchref/objects/#', 'benchref/nodes/edge-node-0/objects/#'])
    await bare.subscribeAsync(f, { qos: 0 });
  const refPub = await ObjectPublisher.connect(server, { prefix: 'benchref' });
  await refPub.begin(['service', 'pod', 'endpointslice']);
  const pub = await ObjectPublisher.connect(server);
  await pub.begin(['service', 'pod', 'endpointslice']);
  return { bare, counted, refPub, pub };
}

/**
 * One apply of the whole catalog, as `edgectl apply -f` of it sends it (slices along with the
 * services and pods they follow from), to a node that has none of it, on a broker of its own;
 * the reference first: the same apply to a bare subscriber there. Timed from the first publish until the node
 * has applied all of it, its last service answers in DNS and through the proxy. `files`: one file
 * (each service followed by its pods) or two (every service, then every pod: `-f services.yaml -f
 * deployments.yaml`).
 */
async function wholeApply(backendPort: number, files: 1 | 2): Promise<string> {
  const { proc: broker, server } = await startBroker(await freePort(), `mosquitto-whole-${files}`);
  const dir = join(W, `whole-${files}`);
  mkdirSync(dir);
  const node = await startCore(dir, children, server, 'edge-node-0');
  const { bare, counted, refPub, pub } = await clients(server, 'bench-bare-whole');
  const objs: (ReturnType<typeof service> | ReturnType<typeof pod>)[] = [];
  for (let i = 0; i < SERVICES; i++) {
    objs.push(service(i));
    for (let j = 0; j < PER; j++) objs.push(pod(i, j, backendPort));
  }
  if (files === 2) objs.sort((a, b) => (a.type === b.type ? 0 : a.type === 'service' ? -1 : 1));
  const r0 = Date.now();
  const toBare = await publishAll(refPub, new SliceController('host'), objs, 'edge-node-0');
  await waitFor(() => counted.n >= toBare, 'bare subscriber (whole apply)', 120_000, 1);
  const bareMs = Date.now() - r0;

  const probe = new DnsProbe(node.dnsPort);
  const applied0 = await metric(node.obs, 'edgecore_mesh_updates_applied_total');
  const commits0 = await metric(node.obs, 'edgecore_metadata_commits_total');
  const cpu0 = [cpuSeconds(node.proc.pid!), cpuSeconds(broker.pid!), process.cpuUsage()] as const;
  const t0 = Date.now();
  const toNode = await profiled(`publisher-whole-${files}`, async () => {
    const n = await publishAll(pub, new SliceController('host'), objs, 'edge-node-0');
    await untilVisible({ probe, ...node }, service(SERVICES - 1), applied0 + n, 'whole apply');
    return n;
  });
  const ms = Date.now() - t0;
  const own = process.cpuUsage(cpu0[2]);
  const perObject = (s: number) => Math.round((s * 1e6) / toNode);
  const cpu = [
    perObject(cpuSeconds(node.proc.pid!) - cpu0[0]),
    perObject(cpuSeconds(broker.pid!) - cpu0[1]),
    perObject((own.user + own.system) / 1e6),
  ];
  const resyncs = await metric(node.obs, 'edgecore_edgehub_resyncs_total');
  const commits = (await metric(node.obs, 'edgecore_metadata_commits_total')) - commits0;
  const peak = peakRssMiB(node.proc.pid!);
  const links = pub.linkCount;
  probe.close();
  await bare.endAsync(true);
  await refPub.close();
  await pub.close();
  // its portals hold 10,000 ports of the range the next node takes its own from
  await Promise.all([stop(node.proc), stop(broker)]);
  return (
    `one apply of the whole catalog, ${files === 1 ? 'one file' : 'two files (services, then pods)'} (a node that has none of it, a broker of its own, ${BROKER}, edgectl over ${links} link${links > 1 ? 's' : ''}): ${objs.length} objects applied ` +
    `in ${(ms / 1000).toFixed(2)} s = ${Math.round(objs.length / (ms / 1000))} objects/s (goal ≥ 10000); the node received ${toNode}; ` +
    `bare subscriber ${Math.round(objs.length / (bareMs / 1000))} applied objects/s, ratio ${(bareMs / ms).toFixed(2)}; resyncs ${resyncs}; ` +
    `the node's peak RSS ${Math.round(peak)} MiB; its commits ${commits}; CPU per object the node received (µs): edgecore ${cpu[0]}, ` +
    `mosquitto ${cpu[1]}, publisher + probes ${cpu[2]}`
  );
}

async function main(): Promise<void> {
  execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore' });
  const mqttPort = await freePort();
  // the pods' backend: one tiny HTTP server
  const backend = createServer((s) =>
    s.on('data', () => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')),
  );
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
  const backendPort = (backend.address() as AddressInfo).port;
  // the whole catalog in one apply first (one file, then two), while this process holds nothing
  // else (printed last); ONLY=whole: those alone
  const whole = [await wholeApply(backendPort, 1), await wholeApply(backendPort, 2)].join('\n');
  if (process.env.ONLY === 'whole') {
    console.log(whole);
    backend.close();
    return;
  }
  const { proc: mosq, server } = await startBroker(mqttPort, 'mosquitto');
  const { proc: core, obs, dnsPort, proxyPort } = await startCore(W, children, server, 'edge-node-0');

  const { bare, counted, refPub, pub } = await clients(server, 'bench-bare');
  const refCtl = new SliceController('host');
  const ctl = new SliceController('host');
  const probe = new DnsProbe(dnsPort);
  const rows: string[] = [];
  let total = 0;
  /** services and pods applied (slices are the cloud's, computed from them) */
  let totalApplied = 0;
  let totalMs = 0;
  let bareMs = 0;
  let single: number[] = [];
  // CPU seconds over the node's steps (not the reference, not the single updates)
  const cpu = { core: 0, broker: 0, bench: 0 };
  const cpuNow = () => {
    const b = process.cpuUsage();
    return { core: cpuSeconds(core.pid!), broker: cpuSeconds(mosq.pid!), bench: (b.user + b.system) / 1e6 };
  };
  console.log(
    `update path: ${SERVICES} services + ${SERVICES * PER} pods in steps of ${STEP} services, ${SETTINGS.says}; edgectl's links to it ${pub.linkCount}`,
  );
  console.log(
    'services  applied  received  step s  applied/s  received/s  bare subscriber applied/s  ratio  single p50 ms  p99 ms  max ms',
  );
  for (let s0 = 0; s0 < SERVICES; s0 += STEP) {
    const objs = [];
    for (let i = s0; i < s0 + STEP; i++) {
      objs.push(service(i));
      for (let j = 0; j < PER; j++) objs.push(pod(i, j, backendPort));
    }
    // the reference first: the same publishes to the bare subscriber alone
    const bare0 = counted.n;
    const r0 = Date.now();
    const toNode = await publishAll(refPub, refCtl, objs, 'edge-node-0');
    await waitFor(() => counted.n - bare0 >= toNode, 'bare subscriber', 60_000, 1);
    const bMs = Date.now() - r0;
    trace('reference done');

    const applied0 = await metric(obs, 'edgecore_mesh_updates_applied_total');
    const c0 = cpuNow();
    const t0 = Date.now();
    await publishAll(pub, ctl, objs, 'edge-node-0');
    trace('published, acknowledged, digests');
    await untilVisible({ probe, obs, proxyPort }, service(s0 + STEP - 1), applied0 + toNode, 'step');
    const ms = Date.now() - t0;
    const c1 = cpuNow();
    for (const k of ['core', 'broker', 'bench'] as const) cpu[k] += c1[k] - c0[k];
    trace('visible');
    total += toNode;
    totalApplied += objs.length;
    totalMs += ms;
    bareMs += bMs;
    // single updates against this catalog: a new service each, publish → first DNS answer
    single = [];
    for (let k = 0; k < SINGLES; k++) {
      const o = service(1_000_000 + s0 + k);
      const name = `${o.name}.${o.namespace}.svc.cluster.local`;
      const t = process.hrtime.bigint();
      await pub.apply(o);
      while (!(await probe.ask(name))) await new Promise((r) => setImmediate(r));
      single.push(Number(process.hrtime.bigint() - t) / 1e6);
      await pub.delete(o);
    }
    await pub.finish();
    rows.push(
      [
        String(s0 + STEP).padStart(8),
        String(objs.length).padStart(8),
        String(toNode).padStart(9),
        (ms / 1000).toFixed(2).padStart(7),
        String(Math.round(objs.length / (ms / 1000))).padStart(10),
        String(Math.round(toNode / (ms / 1000))).padStart(11),
        String(Math.round(objs.length / (bMs / 1000))).padStart(26),
        (bMs / ms).toFixed(2).padStart(6),
        pct(single, 50).toFixed(2).padStart(14),
        pct(single, 99).toFixed(2).padStart(7),
        Math.max(...single)
          .toFixed(2)
          .padStart(7),
      ].join(' '),
    );
    console.log(rows.at(-1));
  }
  const perObject = (sec: number) => ((sec * 1e6) / total).toFixed(0);
  const cpuLine =
    `CPU per object the node received, while it takes the steps (µs): edgecore ${perObject(cpu.core)}, ` +
    `mosquitto ${perObject(cpu.broker)}, publisher + probes ${perObject(cpu.bench)}`;
  const rss = rssMiB(core.pid!);
  const rss5 = await rssSoon(core.pid!);
  // churn: services and the node's own pods changed again and again (a label each time: no slice
  // changes), CHURN updates in steps like the load — an hour of a busy fleet's changes
  const CHURN = Number(process.env.CHURN ?? 20_000);
  const c0 = Date.now();
  let churned = 0;
  for (let k = 0; churned < CHURN; k++) {
    const objs = [];
    for (let i = 0; i < STEP / 2 && churned < CHURN; i++, churned += 2) {
      const n = (k * (STEP / 2) + i) % SERVICES;
      const sv = service(n);
      (sv.object.metadata as Record<string, unknown>).labels = { churn: String(k) };
      const pd = pod(n, 0, backendPort);
      (pd.object.metadata as { labels: Record<string, string> }).labels = {
        ...pd.object.metadata.labels,
        churn: String(k),
      };
      objs.push(sv, pd);
    }
    const applied0 = await metric(obs, 'edgecore_mesh_updates_applied_total');
    const toNode = await publishAll(pub, ctl, objs, 'edge-node-0');
    await waitFor(
      async () => (await metric(obs, 'edgecore_mesh_updates_applied_total')) - applied0 >= toNode,
      'churn step applied',
      300_000,
      10,
    );
  }
  const churnS = (Date.now() - c0) / 1000;
  const rssChurn = rssMiB(core.pid!);
  const rssChurn5 = await rssSoon(core.pid!);
  // and once quiet: the lowest RSS of 90 s without traffic (edgecore's memory release acts within
  // seconds of the quiet; without it, V8's own reducer gave pages back 30-60 s after the burst)
  const rssQuiet = await settledRss(core.pid!);
  const resyncs = await metric(obs, 'edgecore_edgehub_resyncs_total');
  const commits = await metric(obs, 'edgecore_metadata_commits_total');
  const batches = await metric(obs, 'edgecore_mesh_update_batches_total');
  const lagSum = await metric(obs, 'edgecore_mesh_update_lag_seconds_sum');
  const lagCount = await metric(obs, 'edgecore_mesh_update_lag_seconds_count');
  const releases = await metric(obs, 'edgecore_memory_releases_total');
  const pauseMs = (await metric(obs, 'edgecore_memory_release_pause_seconds_total')) * 1000;
  console.log(
    `\nend to end: ${totalApplied} objects applied (services and pods) in ${(totalMs / 1000).toFixed(2)} s = ${Math.round(totalApplied / (totalMs / 1000))} objects/s (goal ≥ 10000); ` +
      `the node received ${total} (services, slices, its own pods) = ${Math.round(total / (totalMs / 1000))} objects/s; ` +
      `bare subscriber ${Math.round(totalApplied / (bareMs / 1000))} applied objects/s, ratio ${(bareMs / totalMs).toFixed(2)}`,
  );
  console.log(
    `single update at ${SERVICES} services (${single.length}): p50 ${pct(single, 50).toFixed(2)} ms, p99 ${pct(single, 99).toFixed(2)} ms (goal ≤ 20)`,
  );
  console.log(
    `edgecore RSS after load: ${rss.toFixed(0)} MiB, 5 s later ${rss5.toFixed(0)}; after ${CHURN} more updates (${churnS.toFixed(1)} s): ${rssChurn.toFixed(0)} MiB, 5 s later ${rssChurn5.toFixed(0)}, settled (${SETTLE} s quiet) ${rssQuiet.toFixed(0)} MiB; memory releases ${releases} (${pauseMs.toFixed(0)} ms of pause in all); resyncs ${resyncs}; mean publish→applied lag ${((lagSum / lagCount) * 1000).toFixed(0)} ms`,
  );
  console.log(cpuLine);
  // a fresh node joins the full catalog: what the node alone applies per second (the broker
  // replays retained state; no publisher to wait for)
  const last = service(SERVICES - 1);
  const joinExpect = SERVICES * 2 + (PER > 1 ? SERVICES : 0); // services, slices, its own pods
  const j0 = Date.now();
  const fresh = await startCore(W, children, server, 'edge-node-1');
  const probe2 = new DnsProbe(fresh.dnsPort);
  // DNS first (a cheap probe), then the node's count (a scrape walks every backend)
  await waitFor(
    () => probe2.ask(`${last.name}.${last.namespace}.svc.cluster.local`),
    'last service in DNS',
    600_000,
    5,
  );
  await waitFor(
    async () => (await metric(fresh.obs, 'edgecore_mesh_updates_applied_total')) >= joinExpect,
    'the fresh node applied the catalog',
    60_000,
    20,
  ).catch(async (e: Error) => {
    const lines = await nodeStory(fresh.obs);
    // KEEP=SECONDS: leave the processes up that long to look at them (curl its /metrics)
    if (process.env.KEEP) {
      console.error(`fresh node metrics at http://${fresh.obs}/metrics; keeping it ${process.env.KEEP} s`);
      await new Promise((r) => setTimeout(r, Number(process.env.KEEP) * 1000));
    }
    throw new Error(`${e.message}\n${lines.join('\n')}`);
  });
  const joinMs = Date.now() - j0;
  probe2.close();
  // a slow join (a read that stalled, a resync): what the node did, to see where the time went
  if (joinMs > 10_000) console.log((await nodeStory(fresh.obs)).map((l) => `  ${l}`).join('\n'));
  const readBack = await metric(fresh.obs, 'edgecore_edgehub_resyncs_total');
  const loaded = await metric(fresh.obs, 'edgecore_edgehub_retained_loads_total');
  const fences = await metric(fresh.obs, 'edgecore_edgehub_retained_fences_resent_total');
  const freshRss = rssMiB(fresh.proc.pid!);
  const freshRss5 = await rssSoon(fresh.proc.pid!);
  console.log(
    `a fresh node joins (process start, connect, ${joinExpect} retained objects applied, in DNS): ${(joinMs / 1000).toFixed(2)} s = ${Math.round(joinExpect / (joinMs / 1000))} objects/s; its RSS ${freshRss.toFixed(0)} MiB, 5 s later ${freshRss5.toFixed(0)}, settled (${SETTLE} s quiet) ${(await settledRss(fresh.proc.pid!)).toFixed(0)} MiB; types loaded from retained state ${loaded}, read back (a loss) ${readBack}, fences resent ${fences}`,
  );
  // KEEP=SECONDS: also after a good join, leave the fresh node up that long to look at it
  if (process.env.KEEP) {
    console.log(
      `fresh node: pid ${fresh.proc.pid}, metrics at http://${fresh.obs}/metrics; keeping it ${process.env.KEEP} s`,
    );
    await new Promise((r) => setTimeout(r, Number(process.env.KEEP) * 1000));
  }
  console.log(
    `MetaManager commits ${commits} (${(lagCount / commits).toFixed(1)} writes each); mesh update batches ${batches} (${(lagCount / batches).toFixed(1)} objects each)`,
  );
  console.log(whole);
  probe.close();
  await bare.endAsync(true);
  await refPub.close();
  await pub.close();
  backend.close();
}

/** The fresh node's counters and what it logged about its link and resyncs (warnings by message). */
async function nodeStory(obs: string): Promise<string[]> {
  const text = await (await fetch(`http://${obs}/metrics`)).text();
  const lines = text
    .split('\n')
    .filter((l) =>
      /^edgecore_(mesh_(updates_applied|services|portals|catalog_objects)|metadata_updates|beehive_(mailbox|sync)|edgehub_(messages|resyncs|digest|orphans|commits|retained))/.test(
        l,
      ),
    );
  // what the node warned about, by message
  const said = new Map<string, number>();
  const first = new Map<string, string>();
  for (const line of readFileSync(join(W, 'edge-node-1.log'), 'utf8').split('\n'))
    try {
      const j = JSON.parse(line) as { level: number; msg: string; time: number } & Record<string, unknown>;
      if (j.level >= 40) {
        said.set(j.msg, (said.get(j.msg) ?? 0) + 1);
        if (!first.has(j.msg))
          first.set(j.msg, JSON.stringify({ ...j, msg: undefined, level: undefined, pid: undefined }));
      } else if (/resync|connected|digest/.test(j.msg))
        lines.push(
          `${new Date(j.time).toISOString()} ${j.msg} ${JSON.stringify({ ...j, msg: undefined, time: undefined, level: undefined, pid: undefined })}`,
        );
    } catch {
      // not a log line
    }
  for (const [m, n] of said) lines.push(`log ×${n}: ${m} (first: ${first.get(m)})`);
  return lines;
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(async () => {
    // SIGTERM, then SIGKILL whatever has not exited after 5 s (edgecore writes its PROF profile on exit)
    const exited = children.map(
      (c) =>
        new Promise<void>((r) =>
          c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()),
        ),
    );
    for (const c of children) c.kill('SIGTERM');
    const t = setTimeout(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, 5000);
    await Promise.all(exited);
    clearTimeout(t);
    rmSync(W, { recursive: true, force: true });
    process.exit();
  });
