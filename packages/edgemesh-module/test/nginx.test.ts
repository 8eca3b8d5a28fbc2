import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, request as httpRequest } from 'node:http';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { HttpProxy, LoadBalancer, RoundRobin, UpstreamPool } from '../src';
import { freePort, pod, service, startMesh, tmpDir, type MeshNode } from './helpers';

const run = promisify(execFile);

/** Real nginx (Debian package) as the pod, on 127.0.0.1 and a free port, with its own config. */
async function startNginx(
  dir: string,
  id: string,
): Promise<{ port: number; proc: ChildProcess; stop: () => Promise<void> }> {
  const port = await freePort();
  const root = join(dir, `www-${id}`);
  mkdirSync(root, { recursive: true });
  // nginx workers drop to www-data when started as root: the document root must be readable
  chmodSync(dir, 0o755);
  chmodSync(root, 0o755);
  writeFileSync(
    join(root, 'index.html'),
    `<!DOCTYPE html>\n<title>Welcome to nginx!</title>\n<h1>Welcome to nginx!</h1><p>${id}</p>\n`,
    { mode: 0o644 },
  );
  const conf = join(dir, `nginx-${id}.conf`);
  writeFileSync(
    conf,
    `worker_processes 1;\npid ${dir}/nginx-${id}.pid;\nerror_log ${dir}/nginx-${id}.err;\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/cb-${id};\n  proxy_temp_path ${dir}/pt-${id};\n  fastcgi_temp_path ${dir}/ft-${id};\n  uwsgi_temp_path ${dir}/ut-${id};\n  scgi_temp_path ${dir}/st-${id};\n  server { listen 127.0.0.1:${port}; root ${root}; }\n}\n`,
  );
  const proc = spawn('/usr/sbin/nginx', ['-c', conf, '-g', 'daemon off;'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://127.0.0.1:${port}/`,
    ]).then(
      (r) => r.stdout === '200',
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    proc,
    stop: () =>
      new Promise<void>((r) =>
        proc.exitCode !== null || proc.signalCode !== null
          ? r()
          : (proc.once('exit', () => r()), proc.kill('SIGTERM')),
      ),
  };
}

describe('nginx as the pod (the seed walkthrough, unprivileged)', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  const ngx: Awaited<ReturnType<typeof startNginx>>[] = [];
  beforeAll(async () => {
    d = tmpDir();
    ngx.push(await startNginx(d.dir, 'b'), await startNginx(d.dir, 'c'));
    n = await startMesh(d.db);
    await n.put(service('nginx-svc', 'default', { selector: { app: 'nginx' } }));
    await n.putPod(pod('nginx-b', 'nginx', ngx[0].port));
  });
  afterAll(async () => {
    await n?.stop();
    for (const x of ngx) await x.stop();
    d.cleanup();
  });

  it('curl -x through EdgeMesh by service name returns the nginx welcome page', async () => {
    const { stdout } = await run('curl', [
      '-s',
      '-x',
      `http://${n.mesh.forwardProxyAddress}`,
      'http://nginx-svc.default.svc.cluster.local:12345',
    ]);
    expect(stdout).toContain('<title>Welcome to nginx!</title>');
    expect(stdout).toContain('<p>b</p>');
  });

  it('a second nginx pod: requests spread across both; a removed pod stops getting traffic', async () => {
    await n.putPod(pod('nginx-c', 'nginx', ngx[1].port));
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++)
      seen.add(
        /<p>(\w)<\/p>/.exec(
          (
            await run('curl', [
              '-s',
              '-x',
              `http://${n.mesh.forwardProxyAddress}`,
              'http://nginx-svc.default:12345/',
            ])
          ).stdout,
        )![1],
      );
    expect(seen).toEqual(new Set(['b', 'c']));
    await n.delPod('default', 'nginx-b');
    for (let i = 0; i < 4; i++)
      expect(
        (
          await run('curl', [
            '-s',
            '-x',
            `http://${n.mesh.forwardProxyAddress}`,
            'http://nginx-svc.default:12345/',
          ])
        ).stdout,
      ).toContain('<p>c</p>');
  });

  it('deleting the service closes its portal; the explicit proxy then answers 502', async () => {
    const before = n.mesh.portals.get('default/nginx-svc:12345/TCP');
    expect(before).toBeDefined();
    await n.del('default', 'nginx-svc');
    expect(n.mesh.portals.get('default/nginx-svc:12345/TCP')).toBeUndefined();
    const r = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://127.0.0.1:${before!.listenPort}/`,
    ]).catch((e) => e);
    expect(r.stdout ?? '000').toBe('000'); // nothing listens there any more
    expect(
      (
        await run('curl', [
          '-s',
          '-w',
          '%{http_code}',
          '-o',
          '/dev/null',
          '-x',
          `http://${n.mesh.forwardProxyAddress}`,
          'http://nginx-svc.default:12345/',
        ])
      ).stdout,
    ).toBe('502');
  });
});

describe('event coalescing (httpCoalesceUs) on the native L7 engine, wrk and nginx in their own processes', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  let ngx: Awaited<ReturnType<typeof startNginx>>;
  let portal: number;
  beforeAll(async () => {
    d = tmpDir();
    ngx = await startNginx(d.dir, 'p');
    n = await startMesh(d.db, { httpCoalesceUs: 15 });
    await n.put(service('nginx-svc', 'default', { selector: { app: 'nginx' } }));
    await n.putPod(pod('nginx-p', 'nginx', ngx.port));
    portal = n.mesh.portals.get('default/nginx-svc:12345/TCP')!.listenPort;
  });
  afterAll(async () => {
    await n?.stop();
    await ngx?.stop();
    d.cleanup();
  });

  /** Waits (at most 10 s) until the engine has no client connection and no exchange in flight. */
  async function settled(native: NonNullable<MeshNode['mesh']['http']['native']>): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      const c = native.counts;
      if (c.clients === 0 && c.upstreams === c.pooled) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`engine did not settle: ${JSON.stringify(native.counts)}`);
  }

  /** `count` requests one after another on one keep-alive connection, each checked. */
  async function sequential(count: number): Promise<void> {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < count; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port: portal, path: '/', agent }, (res) => {
          let b = '';
          res.on('data', (x) => (b += x));
          res.on('end', () => resolve(b));
        });
        req.on('error', reject);
        req.end();
      });
      expect(body).toContain('<p>p</p>');
    }
    agent.destroy();
  }

  it('under load (wrk -c32) wake-ups wait for batches and every request is answered; few clients never wait', async () => {
    const native = n.mesh.http.native!;
    expect(native).toBeDefined();
    const before = native.coalescedWakeups;
    const { stdout } = await run('wrk', ['-t1', '-c32', '-d1s', `http://127.0.0.1:${portal}/`]);
    const total = Number(/(\d+) requests in/.exec(stdout)![1]);
    expect(total).toBeGreaterThan(100);
    expect(stdout).not.toMatch(/Non-2xx|Socket errors/);
    expect(native.coalescedWakeups).toBeGreaterThan(before);
    // wrk has exited, but the engine may still be closing its 32 connections and their exchanges
    // (a slow or loaded machine): the snapshot is taken once nothing is in flight any more
    await settled(native);
    const mid = native.coalescedWakeups;
    await sequential(40);
    expect(native.coalescedWakeups).toBe(mid);
    // four clients: wake-ups see several events, but with so few requests in flight a wait would
    // only add latency
    const c4 = await run('wrk', ['-t1', '-c4', '-d1s', `http://127.0.0.1:${portal}/`]);
    expect(c4.stdout).not.toMatch(/Non-2xx|Socket errors/);
    expect(native.coalescedWakeups).toBe(mid);
  });

  it('many requests held in flight elsewhere: the wake-ups of a lone client still do not wait', async () => {
    const native = n.mesh.http.native!;
    // a pod that takes requests and never answers: 20 exchanges stay in flight
    const held = new Set<Socket>();
    const hold = createServer((s) => (held.add(s), s.on('error', () => undefined)));
    await new Promise<void>((r) => hold.listen(0, '127.0.0.1', () => r()));
    await n.put(
      service('hold-svc', 'default', {
        selector: { app: 'hold' },
        ports: [{ name: 'http-0', port: 12346, protocol: 'TCP', targetPort: 80 }],
      }),
    );
    await n.putPod(pod('hold-1', 'hold', (hold.address() as AddressInfo).port));
    const holdPortal = n.mesh.portals.get('default/hold-svc:12346/TCP')!.listenPort;
    const agent = new Agent({ keepAlive: true, maxSockets: 20 });
    const pending = Array.from(
      { length: 20 },
      () =>
        new Promise<void>((resolve) => {
          const req = httpRequest({ host: '127.0.0.1', port: holdPortal, path: '/', agent }, (res) => {
            res.resume();
            res.on('end', () => resolve());
          });
          req.on('error', () => resolve());
          req.end();
        }),
    );
    for (let i = 0; i < 200 && held.size < 20; i++) await new Promise((r) => setTimeout(r, 10));
    expect(held.size).toBe(20);
    expect(native.counts.upstreams - native.counts.pooled).toBeGreaterThanOrEqual(20);
    const before = native.coalescedWakeups;
    await sequential(40);
    expect(native.coalescedWakeups).toBe(before);
    for (const s of held) s.destroy(); // the held requests end (502), the agent closes
    await Promise.all(pending);
    agent.destroy();
    await new Promise<void>((r) => hold.close(() => r()));
  });

  it('an out-of-range value is refused with its key', () => {
    const lb = new LoadBalancer(new RoundRobin());
    expect(() => new HttpProxy(lb, new UpstreamPool(), { coalesceUs: 5000 })).toThrow(
      expect.objectContaining({
        code: 'EDGEMESH_INVALID_OPTION',
        message: expect.stringContaining('coalesceUs'),
      }),
    );
    expect(() => new HttpProxy(lb, new UpstreamPool(), { coalesceUs: 1.5 })).toThrow(/coalesceUs/);
  });
});
