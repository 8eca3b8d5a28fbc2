import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MetaStore } from '@edgecore/metamanager';
import { Mosquitto, Netns } from '@edgecore/test-support';
import { edgectl } from '../src/cli/edgectl';

const execFileP = promisify(execFile);
const quiet = { stdout: () => undefined, stderr: () => undefined, stdin: () => '' };

const bin = join(__dirname, '..', 'bin', 'edgecore');
const SERVICES = 400;

/** Services svc-<i> in ns-<i % 4>, one TCP port each (`portName` http: an HTTP portal). */
function manifest(ids: number[], portName = 'tcp'): string {
  return ids
    .map(
      (i) => `apiVersion: v1
kind: Service
metadata: { name: svc-${i}, namespace: ns-${i % 4} }
spec: { ports: [{ name: ${portName}, port: 9000, protocol: TCP }] }
`,
    )
    .join('---\n');
}

/** edgecore's JSON log lines. */
function jsonLines(text: string): { msg: string; [k: string]: any }[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

/** Open and waiting portals, from a /metrics text. */
function portalCounts(text: string): { open: number; unopened: number } {
  const get = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  return { open: get('edgecore_mesh_portals'), unopened: get('edgecore_mesh_portals_unopened') };
}

/** An edgecore.yaml in `dir`: its database there, JSON logs, then `rest` (observability, modules…). */
function writeConfig(dir: string, rest: string): void {
  writeFileSync(
    join(dir, 'edgecore.yaml'),
    `apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'edgecore.db')} }
log: { format: json }
${rest}`,
  );
}

/**
 * Spawn `cmd` (edgecore behind prlimit, maybe behind `ip netns exec`: both exec it, so the pid is
 * edgecore's), handed to `track` at once (to be killed whatever happens) and its output to `sink`;
 * resolves once it says it is ready, rejects if it exits first.
 */
async function startEdgecore(
  cmd: string[],
  sink: (d: string) => void,
  track: (p: ChildProcess) => void,
): Promise<ChildProcess> {
  let out = '';
  const p = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  track(p);
  const take = (d: Buffer): void => {
    out += d;
    sink(d.toString());
  };
  p.stdout!.on('data', take);
  p.stderr!.on('data', take);
  await new Promise<void>((resolve, reject) => {
    const t = setInterval(() => out.includes('edgecore ready') && (clearInterval(t), resolve()), 20);
    p.on('exit', () => (clearInterval(t), reject(new Error(`exited early: ${out}`))));
  });
  return p;
}

/** Polls `f` until `ok` holds or `ms` pass; returns its last value (what an expect then shows). */
async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

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
    writeConfig(
      dir,
      `observability: { listen: 127.0.0.1:0 }
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
    await startEdgecore(
      ['prlimit', `--nofile=${nofile}`, process.execPath, bin, '--config', join(dir, 'edgecore.yaml')],
      (d) => (out += d),
      (p) => (child = p),
    );
    return lines().find((l) => l.msg === 'observability listening').address;
  }

  const lines = (): { msg: string; [k: string]: any }[] => jsonLines(out);

  async function portals(obs: string): Promise<{ open: number; unopened: number }> {
    return portalCounts(await (await fetch(`http://${obs}/metrics`)).text());
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

  it('a flood of clients takes its share of descriptors, not the node’s: past the connection limit they are reset, and the node goes on', async () => {
    // before: connections were accepted until none was left (EMFILE): the observability server,
    // DNS forwarding and the cloud link had no descriptor for their own work
    const obs = await start('256:256');
    await until(
      () => portals(obs),
      (p) => p.open === 128,
      10_000,
    );
    const metric = async (re: RegExp): Promise<number> =>
      Number(re.exec(await (await fetch(`http://${obs}/metrics`)).text())?.[1]);
    // 256 − 64 held before any connection − 128 portals − 32 the node's own, halved
    expect(await metric(/^edgecore_proxy_client_connections\{state="limit"\} (\d+)$/m)).toBe(16);
    const [host, port] = (lines().find((l) => l.msg === 'edgemesh serving')!.proxy as string).split(':');
    const clients = Array.from({ length: 120 }, () => {
      const sock = connect(Number(port), host);
      const ended = new Promise<string>((r) => {
        sock.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
        sock.on('close', () => r('closed'));
      });
      return { sock, ended, done: false };
    });
    for (const c of clients) void c.ended.then(() => (c.done = true));
    try {
      const refused = await until(
        () => metric(/^edgecore_proxy_client_connections_refused_total (\d+)$/m),
        (n) => n === 104,
        10_000,
      );
      // the node answers while the flood holds its share: /metrics (a descriptor of its own), a
      // request of the explicit proxy is refused like the rest
      expect(refused).toBe(104);
      expect(await metric(/^edgecore_proxy_client_connections\{state="open"\} (\d+)$/m)).toBe(16);
      const ends = await Promise.all(clients.filter((c) => c.done).map((c) => c.ended));
      expect(ends.length).toBe(104);
      expect(new Set(ends)).toEqual(new Set(['ECONNRESET']));
      expect(clients.filter((c) => !c.done)).toHaveLength(16);
      const said = lines().filter((l) => /^connection limit reached/.test(l.msg));
      expect(said).toHaveLength(1);
      expect(said[0]).toMatchObject({ open: 16, limit: 16, openFiles: 256 });
    } finally {
      for (const c of clients) c.sock.destroy();
    }
    // the flood gone, the explicit proxy serves (a service without endpoints: its 503)
    await until(
      () => metric(/^edgecore_proxy_client_connections\{state="open"\} (\d+)$/m),
      (n) => n === 0,
      10_000,
    );
    expect(await viaProxy('svc-399.ns-3.svc.cluster.local:9000')).toEqual({
      status: 503,
      body: expect.stringMatching(/ns-3\/svc-399/),
    });
  }, 60_000);

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

/**
 * The same shortage in iptables mode, inside a network namespace this test creates (its broker,
 * edgecore under `prlimit --nofile=256:256` and edgectl all run in it): a portal that waited for a
 * descriptor gets its rule when it opens — written by the retry itself, not by the periodic resync
 * (an hour here), so that a waiting service is not left unreachable for up to `iptablesSyncSeconds`.
 */
describe('a node short of descriptors in iptables mode (network namespace)', () => {
  const ns = `nof${process.pid % 100000}`;
  let A: Netns;
  let dir: string;
  const bg: ChildProcess[] = [];
  let out = '';

  beforeAll(async () => {
    A = await Netns.create(ns);
    // the node's container bridge, where EdgeMesh listens in iptables mode
    await A.run('ip', ['link', 'add', 'docker0', 'type', 'bridge']);
    await A.run('ip', ['addr', 'add', '172.17.0.1/16', 'dev', 'docker0']);
    await A.run('ip', ['link', 'set', 'docker0', 'up']);
    dir = mkdtempSync(join(tmpdir(), 'edgecore-nofile-ipt-'));
    writeFileSync(
      join(dir, 'mosquitto.conf'),
      `listener 1883 127.0.0.1\nallow_anonymous true\nlog_dest none\n${process.getuid?.() === 0 ? 'user root\n' : ''}`,
    );
    bg.push(
      spawn('ip', ['netns', 'exec', ns, '/usr/sbin/mosquitto', '-c', join(dir, 'mosquitto.conf')], {
        stdio: 'ignore',
      }),
    );
    writeConfig(
      dir,
      `observability: { listen: 127.0.0.1:10351 }
drainSeconds: 1
modules:
  edgeHub: { nodeName: edge-node-nofile, mqtt: { server: 'tcp://127.0.0.1:1883' } }
  metaManager: { metaServer: { enable: false } }
  edgeMesh:
    mode: iptables
    listenInterface: docker0
    iptablesSyncSeconds: 3600
    dns: { listenPort: 53, upstreams: [127.0.0.1:9] }
    # a number past what the descriptors allow: the test's client connections take every one (the
    # shortage this test makes), as they could before the connection limit
    proxy: { maxConnections: 100000 }
`,
    );
    await startEdgecore(
      [
        'ip',
        'netns',
        'exec',
        ns,
        'prlimit',
        '--nofile=256:256',
        process.execPath,
        bin,
        '--config',
        join(dir, 'edgecore.yaml'),
      ],
      (d) => (out += d),
      (p) => bg.push(p),
    );
  }, 30_000);

  afterAll(async () => {
    // edgecore first (SIGTERM: it removes its rules), then the broker; then the namespace
    for (const p of bg.reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    await A?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const lines = (): { msg: string; [k: string]: any }[] => jsonLines(out);

  const edgectlIn = (args: string[]): Promise<string> =>
    A.run(
      process.execPath,
      [join(__dirname, '..', 'bin', 'edgectl'), '--server', 'tcp://127.0.0.1:1883', ...args],
      60_000,
    );

  async function portals(): Promise<{ open: number; unopened: number }> {
    return portalCounts(await A.run('curl', ['-s', 'http://127.0.0.1:10351/metrics']));
  }

  /** VIP → the portal its DNAT rule sends port 9000 to, from the namespace's nat table. */
  async function portalRules(): Promise<Map<string, string>> {
    const rules = new Map<string, string>();
    for (const l of (await A.run('iptables-save', ['-t', 'nat'])).split('\n')) {
      const m = /-d (\S+)\/32 -p tcp -m tcp --dport 9000 .*-j DNAT --to-destination (\S+)/.exec(l);
      if (m) rules.set(m[1], m[2]);
    }
    return rules;
  }

  /** The addresses EdgeMesh's DNS gives these services (one dig for all). */
  async function vips(ids: number[]): Promise<Map<number, string>> {
    const names = ids.map((i) => `svc-${i}.ns-${i % 4}.svc.cluster.local`);
    const text = await A.run('dig', ['@172.17.0.1', '+noall', '+answer', ...names.flatMap((n) => [n, 'A'])]);
    const byName = new Map<string, string>();
    for (const l of text.split('\n')) {
      const f = l.trim().split(/\s+/);
      if (f.length >= 5 && f[3] === 'A') byName.set(f[0].replace(/\.$/, ''), f[4]);
    }
    return new Map(ids.map((i, k) => [i, byName.get(names[k])!]));
  }

  /** The HTTP status a GET of the address gets from inside the namespace ('000': no answer). */
  const status = (vip: string): Promise<string> =>
    A.attempt('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '--max-time',
      '2',
      `http://${vip}:9000/`,
    ]).then((r) => r.stdout);

  it('a portal that found no descriptor (EMFILE) gets its rule when the retry opens it, without waiting for the resync', async () => {
    const f = join(dir, 'services.yaml');
    const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);
    writeFileSync(f, manifest(ids(0, 100), 'http'));
    await edgectlIn(['apply', '-f', f]);
    expect(await until(portals, (p) => p.open === 100, 20_000)).toEqual({ open: 100, unopened: 0 });
    // a client holds connections to a portal until the node has 4 descriptors left (each accepted
    // connection is one): room by the count of portals, none in fact
    const first = (await vips([0])).get(0)!;
    const pid = bg[1].pid!; // `ip netns exec` and prlimit exec: edgecore's own pid
    const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
    const hold = 256 - 4 - fds();
    const holder = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        `const net=require('net');const all=[];for(let i=0;i<${hold};i++)all.push(net.connect(9000,'${first}'));` +
          `process.stdin.on('end',()=>process.exit(0));process.stdin.resume();`,
      ],
      { stdio: ['pipe', 'ignore', 'ignore'] },
    );
    try {
      expect(
        await until(
          async () => fds(),
          (n) => n >= 252,
          10_000,
        ),
      ).toBeGreaterThanOrEqual(252);
      // 20 services arrive: a few portals take the last descriptors, the rest fail with EMFILE and wait
      writeFileSync(f, manifest(ids(100, 120), 'http'));
      await edgectlIn(['apply', '-f', f]);
      await until(
        async () => lines().some((l) => /^portals not open/.test(l.msg)),
        (said) => said,
        10_000,
      );
      expect(lines().find((l) => /^portals not open/.test(l.msg))).toMatchObject({ reason: 'EMFILE' });
      const addr = await vips(ids(0, 120));
      expect([...addr.values()].every((v) => /^\d+\.\d+\.\d+\.\d+$/.test(v))).toBe(true);
      const before = await portalRules();
      expect(before.size).toBeGreaterThanOrEqual(100);
      expect(before.size).toBeLessThan(120);
      const waiting = ids(100, 120).filter((i) => !before.has(addr.get(i)!));
      expect(waiting.length).toBeGreaterThan(0);
      const w = addr.get(waiting[0])!;
      // the connections close: the retry (every 5 s) opens the waiting portals, and their rules come with them
      holder.stdin!.end();
      await new Promise((r) => holder.once('exit', r));
      const after = await until(portalRules, (r) => r.size === 120, 15_000);
      expect(new Set(after.keys())).toEqual(new Set(addr.values()));
      expect(await portals()).toEqual({ open: 120, unopened: 0 });
      // the portal answers through its rule: no endpoint behind the service, so 503
      expect(await status(w)).toBe('503');
      // a rule sync that found no descriptor for iptables-restore said so (before: a TypeError)
      expect(out).not.toMatch(/Cannot read properties/);
    } finally {
      if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
    }
  }, 90_000);
});
