import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MetaStore } from '@edgecore/metamanager';
import { Mosquitto } from '@edgecore/test-support';
import { edgectl } from '../src/cli/edgectl';

const execFileP = promisify(execFile);
const quiet = { stdout: () => undefined, stderr: () => undefined, stdin: () => '' };

const bin = join(__dirname, '..', 'bin', 'edgecore');
const SERVICES = 400;

/**
 * The open-file limit of a real edgecore process (set with util-linux's `prlimit` at its start, as
 * a systemd unit would): EdgeMesh holds a listening descriptor per service port. The node's
 * database holds 400 services (a port each) and the cloud is not configured: EdgeMesh boots from
 * it, as a node does offline.
 */
describe('a node and its open-file limit', () => {
  let dir: string;
  let child: ChildProcess | undefined;
  let out = '';

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edgecore-nofile-'));
    const store = new MetaStore(join(dir, 'edgecore.db'));
    store.apply(
      Array.from({ length: SERVICES }, (_, i) => {
        const [namespace, name] = [`ns-${i % 4}`, `svc-${i}`];
        const svc = {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name, namespace },
          spec: { ports: [{ name: 'tcp', port: 9000, protocol: 'TCP' }] },
        };
        return {
          op: 'upsert' as const,
          key: `${namespace}/service/${name}`,
          namespace,
          type: 'service',
          name,
          value: JSON.stringify(svc),
          resourceVersion: i + 1,
        };
      }),
    );
    store.close();
    writeFileSync(
      join(dir, 'edgecore.yaml'),
      `apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
observability: { listen: 127.0.0.1:0 }
log: { format: json }
modules:
  edgeHub: { enable: false }
  metaManager: { metaServer: { enable: false } }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`,
    );
    out = '';
  });

  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    }
    child = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  /** edgecore under `prlimit --nofile=SOFT:HARD`; resolves with its /metrics address once ready. */
  async function start(nofile: string): Promise<string> {
    child = spawn(
      'prlimit',
      [`--nofile=${nofile}`, process.execPath, bin, '--config', join(dir, 'edgecore.yaml')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => out.includes('edgecore ready') && (clearInterval(t), resolve()), 20);
      child!.on('exit', () => (clearInterval(t), reject(new Error(`exited early: ${out}`))));
    });
    return lines().find((l) => l.msg === 'observability listening').address;
  }

  const lines = (): { msg: string; [k: string]: any }[] =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));

  async function portals(obs: string): Promise<{ open: number; unopened: number }> {
    const text = await (await fetch(`http://${obs}/metrics`)).text();
    const get = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    return { open: get('edgecore_mesh_portals'), unopened: get('edgecore_mesh_portals_unopened') };
  }

  async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = await f();
      if (ok(v) || Date.now() > end) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('a low soft limit (systemd gives a service 1,024) is raised to the hard one: every portal opens', async () => {
    // Node raises it at start, as Go programs (KubeEdge's edgecore) do: what a node relies on
    const obs = await start('256:4096');
    const limits = readFileSync(`/proc/${child!.pid}/limits`, 'utf8');
    expect(limits).toMatch(/^Max open files\s+4096\s+4096/m);
    expect(
      await until(
        () => portals(obs),
        (p) => p.open === SERVICES,
        10_000,
      ),
    ).toEqual({
      open: SERVICES,
      unopened: 0,
    });
  }, 30_000);

  it('more service ports than descriptors: the node serves, the rest wait (said once) and open as descriptors free up', async () => {
    // before: portals took every descriptor, the explicit proxy could not listen (EMFILE) and
    // edgecore exited; a catalog arriving from the cloud logged a line per portal that could not
    // open, and those never opened
    const broker = await Mosquitto.start({ stock: true });
    try {
      writeFileSync(
        join(dir, 'edgecore.yaml'),
        readFileSync(join(dir, 'edgecore.yaml'), 'utf8').replace(
          'edgeHub: { enable: false }',
          `edgeHub: { nodeName: edge-node-nofile, mqtt: { server: ${broker.url} } }`,
        ),
      );
      rmSync(join(dir, 'edgecore.db')); // the catalog comes from the cloud this time
      const obs = await start('256:256');
      const all = Array.from({ length: SERVICES }, (_, i) => i);
      const f = join(dir, 'services.yaml');
      writeFileSync(f, manifest(all));
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f], quiet)).toBe(0);
      const short = await until(
        () => portals(obs),
        (p) => p.open + p.unopened === SERVICES,
        15_000,
      );
      // 256 less the reserve (64, an eighth but at least 64) and what a node holds besides (64)
      expect(short.open).toBe(128);
      expect(short.unopened).toBe(SERVICES - short.open);
      const said = lines().filter((l) => /^portals not open: out of file descriptors/.test(l.msg));
      expect(said).toHaveLength(1);
      expect(said[0]).toMatchObject({ reason: 'reserve', openFiles: '256 (hard 256)', reserve: 64 });
      expect(lines().filter((l) => l.msg === 'cannot open portal')).toEqual([]);
      // the explicit proxy listens, and knows a service without a portal (no endpoint: 503)
      expect(await viaProxy('svc-399.ns-3.svc.cluster.local:9000')).toEqual({
        status: 503,
        body: expect.stringMatching(/ns-3\/svc-399/),
      });
      // 300 services go (the portals of most that had one close): the waiting ones open
      writeFileSync(f, manifest(all.slice(0, 300)));
      expect(await edgectl(['--server', broker.url, 'delete', '-f', f], quiet)).toBe(0);
      expect(
        await until(
          () => portals(obs),
          (p) => p.open === 100,
          15_000,
        ),
      ).toEqual({ open: 100, unopened: 0 });
    } finally {
      await broker.stop();
    }
  }, 60_000);

  it('edgecore check compares the hard limit with the service ports in the database', async () => {
    const check = (nofile: string) =>
      execFileP('prlimit', [
        `--nofile=${nofile}`,
        process.execPath,
        bin,
        'check',
        '--config',
        join(dir, 'edgecore.yaml'),
      ]);
    const low = await check('256:256');
    expect(low.stdout).toMatch(
      /^warn +open-files: hard limit 256: room for about 128 portals; the database holds 400 service ports — the rest get none .*LimitNOFILE=65536/m,
    );
    const high = await check('4096:4096');
    expect(high.stdout).toMatch(
      /^ok +open-files: hard limit 4096 \(Node raises the soft one to it\): room for about 3520 portals; the database holds 400 service ports$/m,
    );
  }, 30_000);

  /** Services svc-<i> in ns-<i % 4>, one TCP port each. */
  function manifest(ids: number[]): string {
    return ids
      .map(
        (i) => `apiVersion: v1
kind: Service
metadata: { name: svc-${i}, namespace: ns-${i % 4} }
spec: { ports: [{ name: tcp, port: 9000, protocol: TCP }] }
`,
      )
      .join('---\n');
  }

  /** A GET through the explicit proxy, as `curl -x` sends it. */
  function viaProxy(target: string): Promise<{ status?: number; body: string }> {
    const [host, port] = (lines().find((l) => l.msg === 'edgemesh serving')!.proxy as string).split(':');
    return new Promise((resolve, reject) => {
      const req = request(
        { host, port: Number(port), path: `http://${target}/`, headers: { host: target } },
        (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }
});
