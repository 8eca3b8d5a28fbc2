import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { MeshTunnel, TunnelRoute } from '../src';
import { startMesh, tmpDir, until, type MeshNode } from './helpers';

const run = promisify(execFile);

/**
 * EdgeMesh with a tunnel (real sockets; the "tunnel" is a stand-in that opens the stream as a
 * plain TCP connection and records every route): a backend on a node of another site is reached
 * through it — by the L7 portal, by the explicit proxy (several requests on one connection), by
 * the L4 portal — and a backend of our own site is not.
 */
describe.each(['js', 'auto'] as const)('EdgeMesh across sites (L7 engine %s)', (engine) => {
  let n: MeshNode;
  let web: HttpServer;
  let echo: Server;
  let webPort: number;
  let echoPort: number;
  const routes: TunnelRoute[] = [];
  const tunnel: MeshTunnel = {
    node: 'a',
    site: 'site-1',
    open: (r, host, port) =>
      new Promise((resolve, reject) => {
        routes.push(r);
        const s = connect({ host, port, allowHalfOpen: true }, () => resolve(s));
        s.once('error', reject);
      }),
    datagram: () => Promise.reject(new Error('no UDP here')),
  };
  const dir = tmpDir('mesh-tunnel-');
  const pod = (name: string, node: string, app: string, port: number) => ({
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app } },
    spec: { nodeName: node, hostNetwork: true, containers: [{ ports: [{ containerPort: port }] }] },
    status: { phase: 'Running', hostIP: '127.0.0.1' },
  });

  beforeAll(async () => {
    web = httpServer((_q, res) => res.end('hello from b\n'));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    webPort = (web.address() as AddressInfo).port;
    echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as AddressInfo).port;
    n = await startMesh(dir.db, { httpEngine: engine }, undefined, tunnel);
    await n.putObject('kube-node-lease', 'nodestatus', 'b', {
      kind: 'NodeStatus',
      metadata: { name: 'b' },
      site: 'site-2',
      tunnel: { relays: ['relay-1'] },
    });
    await n.putObject('kube-node-lease', 'nodestatus', 'c', {
      kind: 'NodeStatus',
      metadata: { name: 'c' },
      site: 'site-1',
    });
    await n.putPod(pod('web-b', 'b', 'web', webPort) as never);
    await n.putPod(pod('local-c', 'c', 'local', webPort) as never);
    await n.putPod(pod('echo-b', 'b', 'echo', echoPort) as never);
    await n.put({
      kind: 'Service',
      metadata: { name: 'web', namespace: 'default' },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: webPort }] },
    });
    await n.put({
      kind: 'Service',
      metadata: { name: 'local', namespace: 'default' },
      spec: { selector: { app: 'local' }, ports: [{ name: 'http', port: 80, targetPort: webPort }] },
    });
    await n.put({
      kind: 'Service',
      metadata: { name: 'echo', namespace: 'default' },
      spec: { selector: { app: 'echo' }, ports: [{ name: 'tcp', port: 7000, targetPort: echoPort }] },
    });
  });

  afterAll(async () => {
    await n.stop();
    web.close();
    echo.close();
    dir.cleanup();
  });

  test('the paths: web and echo through the tunnel (node b, site-2), local direct (node c, site-1)', () => {
    const paths = Object.fromEntries(n.mesh.backendPaths().map((r) => [r.service, r.path]));
    expect(paths).toEqual({ web: 'tunnel', local: 'direct', echo: 'tunnel' });
  });

  test('explicit proxy: one connection, a same-site service first, then one across sites', async () => {
    const before = routes.length;
    const proxy = `http://${n.mesh.forwardProxyAddress}`;
    const url = 'http://web.default.svc.cluster.local/';
    const local = 'http://local.default.svc.cluster.local/';
    const { stdout } = await run('curl', ['-s', '-x', proxy, local, '-x', proxy, url, '-x', proxy, url]);
    expect(stdout).toBe('hello from b\n'.repeat(3));
    expect(routes.length).toBeGreaterThan(before);
    expect(routes.at(-1)).toEqual({ node: 'b', relays: ['relay-1'], address: undefined });
  });

  test('same site: served directly, no stream opened', async () => {
    const before = routes.length;
    const proxy = `http://${n.mesh.forwardProxyAddress}`;
    const { stdout } = await run('curl', ['-s', '-x', proxy, 'http://local.default.svc.cluster.local/']);
    expect(stdout).toBe('hello from b\n');
    expect(routes.length).toBe(before);
  });

  test('L7 and L4 portals reach the backend on the other site', async () => {
    const portals = n.mesh.portals.table();
    const web80 = portals.find((p) => p.service === 'web')!;
    const { stdout } = await run('curl', ['-s', `http://127.0.0.1:${web80.listenPort}/`]);
    expect(stdout).toBe('hello from b\n');
    const e = portals.find((p) => p.service === 'echo')!;
    const got = await new Promise<string>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: e.listenPort, allowHalfOpen: true }, () => s.end('ping'));
      let out = '';
      s.on('data', (d) => (out += d));
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });
    expect(got).toBe('ping');
  });

  test("L4 portal: a stream that takes the client's connection itself (a native TLS engine's join) gets the bytes read already, is counted and released", async () => {
    const e = n.mesh.portals.table().find((p) => p.service === 'echo')!;
    const plain = tunnel.open;
    let joinedFirst: Buffer | undefined;
    // as EdgeTunnel does with join: the stream owns the client from here (a JavaScript stand-in
    // for the engine moves the bytes) and `open` resolves to the client itself
    tunnel.open = (r, host, port, join) =>
      !join
        ? plain(r, host, port)
        : new Promise((resolve, reject) => {
            const s = connect({ host, port, allowHalfOpen: true }, () => {
              joinedFirst = join.first;
              if (join.first) s.write(join.first);
              join.client.pipe(s);
              s.pipe(join.client);
              join.client.resume();
              resolve(join.client);
            });
            s.once('error', reject);
          });
    const tcp = n.mesh.tcp.stats;
    const before = tcp.tunnelJoined;
    try {
      const got = await new Promise<string>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: e.listenPort, allowHalfOpen: true }, () =>
          s.end('joined'),
        );
        let out = '';
        s.on('data', (d) => (out += d));
        s.on('end', () => resolve(out));
        s.on('error', reject);
      });
      expect(got).toBe('joined');
      expect(joinedFirst).toBeUndefined(); // a plain L4 port reads nothing before choosing
      expect(tcp.tunnelJoined).toBe(before + 1);
      await new Promise((r) => setTimeout(r, 50));
      expect(tcp.active).toBe(0);
    } finally {
      tunnel.open = plain;
    }
  });

  test('L4 portal: a joined stream that ended before its promise came round is released all the same', async () => {
    const e = n.mesh.portals.table().find((p) => p.service === 'echo')!;
    const plain = tunnel.open;
    // the stream took the client and was over (the client closed) by the time `open` resolved
    tunnel.open = (r, host, port, join) =>
      !join
        ? plain(r, host, port)
        : new Promise((resolve) => {
            join.client.once('close', () => resolve(join.client));
            join.client.destroy();
          });
    const tcp = n.mesh.tcp.stats;
    const before = { joined: tcp.tunnelJoined, active: tcp.active };
    try {
      const s = connect({ host: '127.0.0.1', port: e.listenPort });
      s.on('error', () => undefined);
      await new Promise((r) => s.once('close', r));
      await new Promise((r) => setTimeout(r, 50));
      expect(tcp.tunnelJoined).toBe(before.joined + 1);
      expect(tcp.active).toBe(before.active);
    } finally {
      tunnel.open = plain;
    }
  });

  test('a tunnel that cannot open: 502 at once, not a hang', async () => {
    // a backend with no pooled stream yet (another port on node b)
    await n.putPod(pod('web2-b', 'b', 'web2', webPort + 1) as never);
    await n.put({
      kind: 'Service',
      metadata: { name: 'web2', namespace: 'default' },
      spec: { selector: { app: 'web2' }, ports: [{ name: 'http', port: 80, targetPort: webPort + 1 }] },
    });
    const failing = tunnel.open;
    tunnel.open = () =>
      Promise.reject(Object.assign(new Error('no relay or peer link is up'), { code: 'TUNNEL_NO_PATH' }));
    try {
      const proxy = `http://${n.mesh.forwardProxyAddress}`;
      const { stdout } = await run('curl', [
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '-H',
        'Connection: close',
        '-x',
        proxy,
        'http://web2.default.svc.cluster.local/',
      ]);
      expect(stdout).toBe('502');
    } finally {
      tunnel.open = failing;
    }
  });

  test('the /metrics counts by path follow a new backend, a node moving site and a gone service', async () => {
    const counts = () => n.mesh.backendPathCounts();
    const rows = () => {
      const c = { direct: 0, tunnel: 0 };
      for (const r of n.mesh.backendPaths()) c[r.path]++;
      return c;
    };
    await n.settle();
    const before = counts();
    expect(before).toEqual(rows());
    expect(counts()).toEqual(before); // asked again, nothing changed
    // a second backend of `local`, on node b (the other site)
    await n.putPod(pod('local-b', 'b', 'local', webPort) as never);
    await until(() => counts().tunnel === before.tunnel + 1, 'the new backend counted');
    expect(counts()).toEqual(rows());
    // node c moves to site-2: its backend (local-c) is tunneled from now on
    await n.putObject('kube-node-lease', 'nodestatus', 'c', {
      kind: 'NodeStatus',
      metadata: { name: 'c' },
      site: 'site-2',
    });
    await until(() => counts().direct === before.direct - 1, 'local-c through the tunnel');
    expect(counts()).toEqual({ direct: before.direct - 1, tunnel: before.tunnel + 2 });
    expect(counts()).toEqual(rows());
    // `local` gone: its portal and both backends with it
    await n.del('default', 'local');
    await until(() => counts().tunnel === before.tunnel, 'the gone service uncounted');
    expect(counts()).toEqual(rows());
  });
});
