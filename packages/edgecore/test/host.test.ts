import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MetricsContribution, silentLogger } from '@edgecore/beehive';
import { Histogram, type Registry } from 'prom-client';
import { MetaStore } from '@edgecore/metamanager';
import { createSocket } from 'node:dgram';
import { createServer, type AddressInfo } from 'node:net';
import { EdgeMeshModule } from '@edgecore/edgemesh-module';
import { DatabaseLockedError, EdgeCoreHost, MODULE_LOADERS, parseConfig } from '../src';

const ROOT = join(__dirname, '..', '..', '..');
const run = promisify(execFile);

function cfg(dir: string): ReturnType<typeof parseConfig> {
  return parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { enable: false }
  edgeMesh: { enable: false }
  metaManager: { metaServer: { enable: true, server: 127.0.0.1:0 } }
`);
}

describe('EdgeCoreHost', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'edgecore-host-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('starts the enabled modules; /healthz, /readyz and /metrics answer; stop releases the lock', async () => {
    const host = new EdgeCoreHost(cfg(dir), { logger: silentLogger });
    await host.start();
    const base = `http://${host.observabilityAddress}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('# TYPE edgecore_metadata_updates_total counter');
    expect(metrics).toContain('edgecore_ready 1');
    expect(metrics).toContain('edgecore_cloud_connected 0');
    expect(existsSync(join(dir, 'edgecore.db.lock'))).toBe(true);
    await host.stop();
    expect(existsSync(join(dir, 'edgecore.db.lock'))).toBe(false);
  });

  it("database.cacheSizeKiB sizes the store's page cache (SQLite's own 2,000 KiB-like default without it)", async () => {
    const c = cfg(dir);
    for (const [size, expected] of [
      [undefined, -2048],
      [4096, -4096],
    ] as const) {
      const host = new EdgeCoreHost(
        { ...c, database: { ...c.database, cacheSizeKiB: size } },
        { logger: silentLogger },
      );
      await host.start();
      try {
        expect(host.container.get(MetaStore).db.pragma('cache_size', { simple: true })).toBe(expected);
      } finally {
        await host.stop();
      }
    }
    expect(() =>
      parseConfig(
        `apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase: { dataSource: ${join(dir, 'x.db')}, cacheSizeKiB: 8 }\n`,
      ),
    ).toThrow(/cacheSizeKiB/);
  });

  it('/metrics is what the loaded packages contribute: another loader binds its own collectors, histograms too', async () => {
    const host = new EdgeCoreHost(cfg(dir), {
      logger: silentLogger,
      loaders: [
        ...MODULE_LOADERS,
        {
          key: 'metaManager', // a second loader under an enabled key: its contribution only
          load: (c) =>
            void c.bind(MetricsContribution).toConstantValue({
              registerMetrics(r: Registry) {
                const h = new Histogram({ name: 'embedder_wait_seconds', help: 'x', registers: [r] });
                h.observe(0.003);
              },
            }),
        },
      ],
    });
    await host.start();
    try {
      const metrics = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
      expect(metrics).toMatch(/^embedder_wait_seconds_bucket\{le="0.005"\} 1$/m);
      expect(metrics).toMatch(/^edgecore_beehive_messages_total \d+$/m); // the bus's own contribution
      expect(metrics).toContain('# TYPE edgecore_metadata_updates_total counter');
    } finally {
      await host.stop();
    }
  });

  it('the host names no module class: it composes config and loads container modules', () => {
    const src = readFileSync(join(__dirname, '..', 'src', 'host.ts'), 'utf8');
    expect(src).not.toMatch(/\b(EdgeMeshModule|EdgeHubModule|MetaManagerModule)\b/);
    expect(src).not.toMatch(/\.stats\b/);
  });

  it('/metrics carries EdgeMesh: DNS queries by rcode, the UDP path, spliced connections, portals', async () => {
    const c = parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { enable: false }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`);
    const host = new EdgeCoreHost(c, { logger: silentLogger });
    await host.start();
    try {
      const mesh = host.container.get(EdgeMeshModule);
      // a plain A query, id 1, built by hand (header, QNAME labels, QTYPE A, QCLASS IN)
      const name = 'nope.default.svc.cluster.local'
        .split('.')
        .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
      const q = Buffer.concat([
        Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        ...name,
        Buffer.from([0, 0, 1, 0, 1]),
      ]);
      const reply = await new Promise<Buffer>((resolve) => {
        const u = createSocket('udp4');
        u.on('message', (m) => (u.close(), resolve(m)));
        u.send(q, mesh.dns!.port, '127.0.0.1');
      });
      expect(reply.readUInt16BE(0)).toBe(1);
      expect(reply[3] & 0xf).toBe(3); // NXDOMAIN
      const metrics = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
      expect(metrics).toMatch(/^edgecore_dns_queries_total 1$/m);
      expect(metrics).toMatch(/^edgecore_dns_responses_total\{rcode="NXDOMAIN"\} 1$/m);
      expect(metrics).toMatch(
        new RegExp(`^edgecore_dns_udp_native ${process.platform === 'linux' ? 1 : 0}$`, 'm'),
      );
      expect(metrics).toMatch(/^edgecore_proxy_spliced_connections_total\{kind="tcp"\} 0$/m);
      expect(metrics).toMatch(/^edgecore_proxy_native_http_connections_total 0$/m);
      expect(metrics).toMatch(/^edgecore_proxy_native_http_coalesced_wakeups_total 0$/m);
      expect(metrics).toMatch(/^edgecore_mesh_portals 0$/m);
    } finally {
      await host.stop();
    }
  });

  it('a second start on the same database is a clear error, and the first keeps working', async () => {
    const first = new EdgeCoreHost(cfg(dir), { logger: silentLogger });
    await first.start();
    const second = new EdgeCoreHost(cfg(dir), { logger: silentLogger });
    const err = await second.start().catch((e) => e);
    expect(err).toBeInstanceOf(DatabaseLockedError);
    expect(err.code).toBe('EDGECORE_DB_LOCKED');
    expect(err.message).toContain(`pid ${process.pid}`);
    expect((await fetch(`http://${first.observabilityAddress}/readyz`)).status).toBe(200);
    await first.stop();
    const store = new MetaStore(join(dir, 'edgecore.db'));
    expect(store.integrityCheck()).toBe('ok');
    store.close();
  });

  it('a module that cannot start (MetaServer port taken) fails start with the reason; the lock is released', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    const c = cfg(dir);
    c.modules.metaManager.metaServer.server = `127.0.0.1:${port}`;
    const host = new EdgeCoreHost(c, { logger: silentLogger });
    await expect(host.start()).rejects.toThrow(/EADDRINUSE/);
    expect(existsSync(join(dir, 'edgecore.db.lock'))).toBe(false);
    blocker.close();
  });

  it('a stale lock left by a dead process is taken over', async () => {
    writeFileSync(join(dir, 'edgecore.db.lock'), '999999\n');
    const host = new EdgeCoreHost(cfg(dir), { logger: silentLogger });
    await host.start();
    await host.stop();
  });
});

describe('edgecore CLI', () => {
  const bin = join(ROOT, 'packages', 'edgecore', 'bin', 'edgecore');

  it('--help, --minconfig, --defaultconfig', async () => {
    expect((await run(process.execPath, [bin, '--help'])).stdout).toContain('--defaultconfig');
    expect((await run(process.execPath, [bin, '--minconfig'])).stdout).toBe(
      'apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\n',
    );
    expect((await run(process.execPath, [bin, '--defaultconfig'])).stdout).toContain(
      'lbStrategy: RoundRobin',
    );
  });

  it('a bad config exits non-zero with the key and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edgecore-cli-'));
    const f = join(dir, 'bad.yaml');
    writeFileSync(
      f,
      'apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n  edgeMesh:\n    lbStrategy: Fastest\n',
    );
    const err = await run(process.execPath, [bin, '--config', f]).catch((e) => e);
    expect(err.code).toBe(1);
    expect(err.stderr).toContain(`${f}:5: modules.edgeMesh.lbStrategy`);
    rmSync(dir, { recursive: true });
  });

  it('a database path where no directory can be made exits non-zero at once, naming it', async () => {
    // before: Node's recursive mkdir looped for good under /proc (mkdir(2) says ENOENT there):
    // edgecore spun at full CPU, said nothing and ignored SIGTERM
    const dir = mkdtempSync(join(tmpdir(), 'edgecore-cli-'));
    const f = join(dir, 'edgecore.yaml');
    writeFileSync(
      f,
      `apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase: { dataSource: /proc/edgecore-test-${process.pid}/edgecore.db }\nobservability: { listen: 127.0.0.1:0 }\nmodules:\n  edgeHub: { enable: false }\n  edgeMesh: { enable: false }\n`,
    );
    const err = await run(process.execPath, [bin, '--config', f], {
      timeout: 15_000,
      killSignal: 'SIGKILL',
    }).catch((e) => e);
    expect(err.signal).toBeNull(); // exited by itself, not killed at the timeout
    expect(err.code).toBe(1);
    expect(err.stderr).toContain(
      `edgecore: ENOENT: no such file or directory, mkdir '/proc/edgecore-test-${process.pid}'`,
    );
    rmSync(dir, { recursive: true });
  }, 30_000);

  it('a listen address in use exits non-zero naming what could not listen (observability, the explicit proxy)', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as AddressInfo).port;
    const dir = mkdtempSync(join(tmpdir(), 'edgecore-cli-'));
    const f = join(dir, 'edgecore.yaml');
    const start = async (extra: string): Promise<{ code: number; stderr: string }> => {
      writeFileSync(
        f,
        `apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase: { dataSource: ${join(dir, 'edgecore.db')} }\n${extra}`,
      );
      return run(process.execPath, [bin, '--config', f], { timeout: 15_000 }).catch((e) => e);
    };
    try {
      const obs = await start(
        `observability: { listen: 127.0.0.1:${port} }\nmodules: { edgeHub: { enable: false }, edgeMesh: { enable: false } }\n`,
      );
      expect(obs.code).toBe(1);
      expect(obs.stderr).toContain(
        `edgecore: observability server cannot listen on 127.0.0.1:${port}: listen EADDRINUSE: address already in use 127.0.0.1:${port} [EDGECORE_OBSERVABILITY_LISTEN]`,
      );
      const proxy = await start(
        `observability: { listen: 127.0.0.1:0 }\nmodules: { edgeHub: { enable: false }, edgeMesh: { mode: unprivileged, listenPort: ${port}, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } } }\n`,
      );
      expect(proxy.code).toBe(1);
      expect(proxy.stderr).toContain(
        `edgecore: explicit proxy cannot listen on 127.0.0.1:${port}: listen EADDRINUSE: address already in use 127.0.0.1:${port} [EDGEMESH_PROXY_LISTEN]`,
      );
    } finally {
      taken.close();
      rmSync(dir, { recursive: true });
    }
  }, 40_000);

  it('runs from a config and exits 0 on SIGTERM after draining', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'edgecore-cli-'));
    const f = join(dir, 'edgecore.yaml');
    writeFileSync(
      f,
      `apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\ndatabase: { dataSource: ${join(dir, 'db', 'edgecore.db')} }\nobservability: { listen: 127.0.0.1:0 }\nlog: { format: json }\nmodules:\n  edgeHub: { enable: false }\n  edgeMesh: { enable: false }\n  metaManager: { metaServer: { enable: false } }\n`,
    );
    const child = spawn(process.execPath, [bin, '--config', f], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => out.includes('edgecore ready') && (clearInterval(t), resolve()), 20);
      child.on('exit', () => (clearInterval(t), reject(new Error(`exited early: ${out}`))));
    });
    // the process's memory release (the CLI's, not an embedded host's) counts on /metrics
    const obsAt = out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .find((l) => l.msg === 'observability listening').address;
    const metrics = await (await fetch(`http://${obsAt}/metrics`)).text();
    expect(metrics).toMatch(/^edgecore_memory_releases_total \d+$/m);
    expect(metrics).toMatch(/^edgecore_memory_release_pause_seconds_total [\d.e-]+$/m);
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.on('exit', (c) => r(c)));
    expect(code).toBe(0);
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining([
        'edgecore ready',
        'signal received, draining',
        'module stopped',
        'edgecore stopped',
      ]),
    );
    expect(existsSync(join(dir, 'db', 'edgecore.db.lock'))).toBe(false);
    rmSync(dir, { recursive: true });
  });
});
