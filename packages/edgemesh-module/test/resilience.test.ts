import * as grpc from '@grpc/grpc-js';
import { request } from 'node:http';
import { Registry } from 'prom-client';
import type { Service } from '../src';
import { EdgeMeshMetrics } from '../src/metrics';
import { httpBackend } from './backends';
import { hostPod, service, startMesh, tmpDir, until, type MeshNode } from './helpers';

/**
 * Health and failure handling with real HTTP and gRPC backends through a node's portals, no cloud
 * at all (the node decides alone): outlier detection within maxEjectionPercent, the latency-aware
 * strategy moving traffic off a slow backend, active checks (HTTP, TCP, gRPC) taking a backend out
 * before any request reaches it, and the per-service metrics.
 */

type Http = Awaited<ReturnType<typeof httpBackend>>;

/** A backend handler that answers 503 to everything. */
const fail = (_req: unknown, res: import('node:http').ServerResponse) => (
  (res.statusCode = 503),
  res.end('no'),
  true
);

const svc = (name: string, annotations: Record<string, string>): Service => {
  const s = service(name, 'default', { ports: [{ name: 'http', port: 80, targetPort: 'web' }] });
  s.metadata.annotations = annotations;
  return s;
};

describe('resilience: outliers, latency-aware balancing, active health, per-service metrics', () => {
  let node: MeshNode;
  let dir: { db: string; cleanup: () => void };
  const closers: (() => unknown)[] = [];
  const portal = (name: string) => node.mesh.portals.table().find((e) => e.service === name)!;
  const get = (name: string, path = '/') =>
    new Promise<{ status: number; body: string; ms: number }>((resolve, reject) => {
      const p = portal(name);
      const t0 = performance.now();
      const r = request(
        { host: p.listenHost, port: p.listenPort, path, agent: false, headers: { host: name } },
        (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body, ms: performance.now() - t0 }));
        },
      );
      r.on('error', reject);
      r.end();
    });
  const backend = async (id: string, handler?: Parameters<typeof httpBackend>[1]): Promise<Http> => {
    const b = await httpBackend(id, handler);
    closers.push(() => b.close());
    return b;
  };
  const deploy = async (name: string, annotations: Record<string, string>, bs: { port: number }[]) => {
    await node.put(svc(name, annotations));
    for (const [i, b] of bs.entries()) await node.putPod(hostPod(`${name}-${i}`, name, b.port, 'web'));
    await until(
      () => node.mesh.resolveTarget(`${name}.default.svc.cluster.local`, 80)?.backends.length === bs.length,
      name,
    );
  };
  const load = async (name: string, n: number, concurrency = 4, path = '/') => {
    const out: { status: number; body: string; ms: number }[] = [];
    let i = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (i++ < n) out.push(await get(name, path));
      }),
    );
    return out;
  };

  beforeAll(async () => {
    dir = tmpDir('resilience-');
    node = await startMesh(dir.db);
  });
  afterAll(async () => {
    await node?.stop();
    for (const c of closers) await c();
    dir?.cleanup();
  });

  it('outlier detection: a backend answering 503 is ejected after 3 in a row; never more than maxEjectionPercent at once', async () => {
    const a = await backend('a', fail);
    const b = await backend('b', fail);
    const c = await backend('c');
    const d = await backend('d');
    // 4 backends, 25 %: one may be out at a time
    await deploy(
      'out',
      { 'edgecore.io/outlier-consecutive-5xx': '3', 'edgecore.io/outlier-max-ejection-percent': '25' },
      [a, b, c, d],
    );
    const before = { ...node.mesh.lb.stats };
    const res = await load('out', 200, 1);
    const bad = a.hits + b.hits;
    const ejections = node.mesh.lb.stats.outlierEjections - before.outlierEjections;
    console.log(
      `outliers: a ${a.hits}, b ${b.hits}, c ${c.hits}, d ${d.hits} of 200; ejections ${ejections}, capped ${node.mesh.lb.stats.outlierCapped - before.outlierCapped}`,
    );
    expect(ejections).toBe(1); // the second failing one is kept: 25 % of 4 is one
    expect(node.mesh.lb.stats.outlierCapped - before.outlierCapped).toBeGreaterThan(0);
    // the ejected one took at most its 3 answers; the kept one goes on getting its share
    expect(Math.min(a.hits, b.hits)).toBeLessThanOrEqual(3);
    expect(Math.max(a.hits, b.hits)).toBeGreaterThan(40);
    expect(res.filter((r) => r.status === 503).length).toBe(bad);
  });

  it('HTTP/1 retries on answers (retry-on 503) and a per-service request timeout', async () => {
    const a = await backend('ra', fail);
    const b = await backend('rb');
    const c = await backend('rc');
    await deploy('retry503', { 'edgecore.io/retry-on': '503' }, [a, b, c]);
    await deploy('plain503', {}, [a, b, c]);
    const before = node.mesh.http.stats.retries;
    const res = await load('retry503', 60, 2);
    console.log(
      `retry-on 503: a ${a.hits}, b ${b.hits}, c ${c.hits} of 60; retries ${node.mesh.http.stats.retries - before}`,
    );
    expect(res.every((r) => r.status === 200)).toBe(true);
    expect(a.hits).toBeGreaterThan(0); // it was asked, and its answer went nowhere
    expect(node.mesh.http.stats.retries - before).toBe(a.hits);
    // without the annotation the answer is the client's
    expect((await load('plain503', 30, 1)).filter((r) => r.status === 503).length).toBeGreaterThan(0);
    // a request with a body is not held whole: its 503 is relayed
    const post = (name: string) =>
      new Promise<number>((resolve, reject) => {
        const p = portal(name);
        const r = request(
          {
            host: p.listenHost,
            port: p.listenPort,
            method: 'POST',
            path: '/',
            agent: false,
            headers: { host: name },
          },
          (x) => (x.resume(), x.on('end', () => resolve(x.statusCode!))),
        );
        r.on('error', reject);
        r.end('body');
      });
    const posts: number[] = [];
    for (let i = 0; i < 6; i++) posts.push(await post('retry503'));
    expect(posts).toContain(503);
    // the service's own timeout, far below the node's (60 s): the wait for the answer ends there
    const slow = await backend('slow', (_req, res) => {
      const t = setTimeout(() => res.end('late'), 3000);
      res.on('close', () => clearTimeout(t));
      return true;
    });
    await deploy('bounded', { 'edgecore.io/request-timeout-seconds': '0.3' }, [slow]);
    const r = await get('bounded');
    expect(r.status).toBe(504);
    expect(r.body).toMatch(/300 ms/);
  });

  it('latency-aware (PeakEwma): ≥ 80 % of requests move off a slow backend, and p99 falls', async () => {
    const slowHandler = (_req: unknown, res: import('node:http').ServerResponse) => (
      setTimeout(() => res.end('slow'), 60),
      true
    );
    const fast1 = await backend('f1');
    const fast2 = await backend('f2');
    const slow = await backend('s', slowHandler);
    await deploy('lat', { 'edgecore.io/lb-strategy': 'PeakEwma' }, [fast1, fast2, slow]);
    await deploy('rr', {}, [fast1, fast2, slow]);
    const p99 = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length * 0.99)];
    const s0 = slow.hits;
    const rr = await load('rr', 150);
    const slowRr = slow.hits - s0;
    const s1 = slow.hits;
    const lat = await load('lat', 300);
    const slowShare = (slow.hits - s1) / 300;
    console.log(
      `latency-aware: slow backend got ${(slowShare * 100).toFixed(1)} % under PeakEwma (${slowRr} of 150 under RoundRobin); p99 ${p99(lat.map((r) => r.ms)).toFixed(1)} ms vs ${p99(rr.map((r) => r.ms)).toFixed(1)} ms`,
    );
    expect(slowShare).toBeLessThanOrEqual(0.2);
    expect(p99(lat.map((r) => r.ms))).toBeLessThan(p99(rr.map((r) => r.ms)));
  });

  it('active HTTP checks take a backend out before any request reaches it, and bring it back', async () => {
    let sick = true;
    const health = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      if (req.url !== '/healthz') return false;
      res.statusCode = sick ? 500 : 200;
      res.end();
      return true;
    };
    const x = await backend('x', health);
    const y = await backend('y', health);
    sick = false;
    const hcs = {
      'edgecore.io/health-check': 'http',
      'edgecore.io/health-check-path': '/healthz',
      'edgecore.io/health-check-interval-seconds': '0.1',
      'edgecore.io/health-check-unhealthy-threshold': '2',
      'edgecore.io/health-check-healthy-threshold': '2',
    };
    // x fails its checks from the start: it must be out before the first request
    const xKey = `127.0.0.1:${x.port}`;
    let xSick = true;
    x.server.removeAllListeners('request');
    x.server.on('request', (req, res) => {
      if (req.url === '/healthz') return void ((res.statusCode = xSick ? 500 : 200), res.end());
      res.end('x');
    });
    await deploy('hc', hcs, [x, y]);
    await until(() => node.mesh.health.state(xKey)?.healthy === false, 'x out by its checks', 5000, 20);
    const answers = await load('hc', 40);
    expect(new Set(answers.map((r) => (r.body.startsWith('{') ? JSON.parse(r.body).id : r.body)))).toEqual(
      new Set(['y']),
    );
    xSick = false;
    await until(() => node.mesh.health.state(xKey)?.healthy === true, 'x back', 5000, 20);
    const again = await load('hc', 40);
    expect(again.some((r) => r.body === 'x')).toBe(true);
    expect(node.mesh.health.stats.checks).toBeGreaterThan(4);
  });

  it('active TCP and gRPC checks: a dead port and a NOT_SERVING gRPC backend never see a request', async () => {
    const live = await backend('live');
    const dead = await backend('dead');
    await dead.close();
    await deploy(
      'tcpc',
      {
        'edgecore.io/health-check': 'tcp',
        'edgecore.io/health-check-interval-seconds': '0.1',
        'edgecore.io/health-check-unhealthy-threshold': '1',
      },
      [live, dead],
    );
    await until(
      () => node.mesh.health.state(`127.0.0.1:${dead.port}`)?.healthy === false,
      'dead port out',
      5000,
      20,
    );
    const ej = node.mesh.lb.stats.ejections;
    const r = await load('tcpc', 20);
    expect(r.every((x) => x.status === 200)).toBe(true);
    expect(node.mesh.lb.stats.ejections).toBe(ej); // no request ever tried the dead port
    // gRPC health: grpc.health.v1.Health/Check answering SERVING (08 01) or NOT_SERVING (08 02)
    const raw = (b: Buffer) => b;
    const servers: { port: number; server: grpc.Server }[] = [];
    for (const status of [1, 2]) {
      const server = new grpc.Server();
      server.addService(
        {
          Check: {
            path: '/grpc.health.v1.Health/Check',
            requestStream: false,
            responseStream: false,
            requestSerialize: raw,
            requestDeserialize: raw,
            responseSerialize: raw,
            responseDeserialize: raw,
          },
        },
        { Check: (_c: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from([0x08, status])) },
      );
      const port = await new Promise<number>((res, rej) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
          e ? rej(e) : res(p),
        ),
      );
      servers.push({ port, server });
      closers.push(() => server.forceShutdown());
    }
    const g = service('gh', 'default', { ports: [{ name: 'grpc', port: 50051, targetPort: 'web' }] });
    g.metadata.annotations = {
      'edgecore.io/health-check': 'grpc',
      'edgecore.io/health-check-interval-seconds': '0.1',
      'edgecore.io/health-check-unhealthy-threshold': '1',
    };
    await node.put(g);
    for (const [i, s] of servers.entries()) await node.putPod(hostPod(`gh-${i}`, 'gh', s.port, 'web'));
    await until(
      () => node.mesh.health.state(`127.0.0.1:${servers[1].port}`)?.healthy === false,
      'NOT_SERVING out',
      5000,
      20,
    );
    expect(node.mesh.health.state(`127.0.0.1:${servers[0].port}`)).toMatchObject({ healthy: true });
    expect(node.mesh.health.state(`127.0.0.1:${servers[1].port}`)?.lastError).toMatch(/not SERVING \(0802\)/);
  });

  it('the retry budget holds under a total outage: extra tries ≤ 20 % of requests + 10/s (a 10 s window of it at once)', async () => {
    // a node of its own: the budget counts every request of the node's last 10 s
    const d2 = tmpDir('budget-');
    const main = node;
    const own = await startMesh(d2.db);
    node = own;
    closers.push(() => d2.cleanup());
    closers.unshift(() => own.stop());
    const gone = await Promise.all(['g1', 'g2', 'g3'].map((id) => backend(id)));
    for (const g of gone) await g.close();
    await deploy('down', { 'edgecore.io/retry-attempts': '3' }, gone);
    const r0 = node.mesh.http.stats.retries;
    const e0 = node.mesh.lb.retryBudget.exhausted;
    const t0 = Date.now();
    const res = await load('down', 300, 4);
    const secs = (Date.now() - t0) / 1000;
    const retries = node.mesh.http.stats.retries - r0;
    const allowed = 0.2 * 300 + 10 * 10 + 10 * secs;
    console.log(
      `total outage: 300 requests, ${retries} retries in ${secs.toFixed(2)} s (budget ${allowed.toFixed(0)}), ${node.mesh.lb.retryBudget.exhausted - e0} refused by the budget`,
    );
    expect(res.every((x) => x.status === 502)).toBe(true);
    expect(retries).toBeLessThanOrEqual(allowed);
    expect(node.mesh.lb.retryBudget.exhausted - e0).toBeGreaterThan(0);
    node = main;
  });

  it('per-service metrics: answers by class and a latency histogram per service port', async () => {
    const registry = new Registry();
    new EdgeMeshMetrics(node.mesh).registerMetrics(registry);
    const m = await registry.metrics();
    expect(m).toMatch(
      /edgecore_proxy_service_requests_total\{service="default\/out:80\/TCP",code="5xx"\} [1-9]/,
    );
    expect(m).toMatch(
      /edgecore_proxy_service_requests_total\{service="default\/out:80\/TCP",code="2xx"\} [1-9]/,
    );
    expect(m).toMatch(
      /edgecore_proxy_service_request_duration_seconds_bucket\{service="default\/lat:80\/TCP",le="0.1"\} [1-9]/,
    );
    expect(m).toMatch(
      /edgecore_proxy_service_request_duration_seconds_count\{service="default\/lat:80\/TCP"\} 300/,
    );
  });
});
