import { execFile } from 'node:child_process';
import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { promisify } from 'node:util';
import type { Pod } from '../src';
import { dig, status } from './dig';
import { service, startMesh, tmpDir, until, type MeshNode } from './helpers';

const execFileP = promisify(execFile);

/**
 * Headless services keep the seed's VIP for the service name, and each ready endpoint gets its
 * spec name (Kubernetes DNS spec §2.4.1) answered with a VIP of its own, proxied to that endpoint
 * alone: three HTTP servers on 127.0.0.2–4 (one port), three pods of `web`.
 */
describe('headless services: a name and a VIP per ready endpoint', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  const servers: Server[] = [];
  let port = 0;
  const pod = (name: string, hostIP: string, hostname?: string, ready = true): Pod => ({
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app: 'web' } },
    spec: {
      nodeName: 'edge-node-b',
      ...(hostname ? { hostname, subdomain: 'web' } : {}),
      containers: [{ name: 'c', ports: [{ containerPort: 8080, hostPort: port }] }],
    },
    status: {
      phase: 'Running',
      hostIP,
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
    },
  });
  const curl = async (url: string): Promise<string> =>
    (await execFileP('curl', ['-s', '--max-time', '3', '-x', `http://${n.mesh.forwardProxyAddress}`, url]))
      .stdout;

  beforeAll(async () => {
    // one port, three loopback addresses: each answers with its own name
    const first = createServer();
    await new Promise<void>((r) => first.listen(0, '127.0.0.2', () => r()));
    port = (first.address() as AddressInfo).port;
    first.close();
    for (const [ip, who] of [
      ['127.0.0.2', 'web-0'],
      ['127.0.0.3', 'web-1'],
      ['127.0.0.4', 'anonymous'],
    ]) {
      const s = createServer((c) =>
        c.on('data', () =>
          c.end(`HTTP/1.1 200 OK\r\ncontent-length: ${who.length}\r\nconnection: close\r\n\r\n${who}`),
        ),
      );
      await new Promise<void>((r) => s.listen(port, ip, () => r()));
      servers.push(s);
    }
    d = tmpDir();
    n = await startMesh(d.db);
    await n.put(
      service('web', 'default', { ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] }),
    );
    await n.putPod(pod('web-0', '127.0.0.2', 'web-0'));
    await n.putPod(pod('web-1', '127.0.0.3', 'web-1'));
    await n.putPod(pod('web-x', '127.0.0.4')); // no hostname: the dashed address
    await n.put(service('lonely', 'default', { selector: { app: 'nobody' } }));
  });
  afterAll(async () => {
    await n?.stop();
    d?.cleanup();
    for (const s of servers) s.close();
  });

  const A = async (name: string): Promise<string> => (await dig(n.port, ['+short', name])).trim();

  it('each endpoint name answers a VIP of its own; the service keeps its VIP; an unknown label is NXDOMAIN', async () => {
    const svcVip = n.mesh.vipOf('default/web')!;
    const vips = await Promise.all(
      ['web-0', 'web-1', '127-0-0-4'].map((l) => A(`${l}.web.default.svc.cluster.local`)),
    );
    for (const v of vips) expect(v).toMatch(/^198\.18\.\d+\.\d+$/);
    expect(new Set([...vips, svcVip]).size).toBe(4);
    expect(await A('web.default.svc.cluster.local')).toBe(svcVip);
    expect(status(await dig(n.port, ['nope.web.default.svc.cluster.local']))).toBe('NXDOMAIN');
    // PTR of an endpoint VIP: its name
    const ptr = await dig(n.port, ['+short', '-x', vips[0]]);
    expect(ptr.trim()).toBe('web-0.web.default.svc.cluster.local.');
  });

  it('SRV of a named port: one per endpoint, each with its name and its VIP (spec §2.4.2)', async () => {
    const out = await dig(n.port, ['_http._tcp.web.default.svc.cluster.local', 'SRV']);
    const targets = [...out.matchAll(/IN\s+SRV\s+0 100 80 (\S+)/g)].map((m) => m[1]).sort();
    expect(targets).toEqual([
      '127-0-0-4.web.default.svc.cluster.local.',
      'web-0.web.default.svc.cluster.local.',
      'web-1.web.default.svc.cluster.local.',
    ]);
    const vip0 = await A('web-0.web.default.svc.cluster.local');
    expect(out).toMatch(
      new RegExp(`web-0\\.web\\.default\\.svc\\.cluster\\.local\\.\\s+5\\s+IN\\s+A\\s+${vip0}`),
    );
  });

  it('an endpoint name, or its VIP, reaches that endpoint alone — through the explicit proxy and through its portal', async () => {
    for (let i = 0; i < 6; i++)
      expect(await curl('http://web-0.web.default.svc.cluster.local/')).toBe('web-0');
    const vip1 = await A('web-1.web.default.svc.cluster.local');
    for (let i = 0; i < 4; i++) expect(await curl(`http://${vip1}/`)).toBe('web-1');
    // the service name spreads over all three
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) seen.add(await curl('http://web.default.svc.cluster.local/'));
    expect([...seen].sort()).toEqual(['anonymous', 'web-0', 'web-1']);
    // the endpoint's portal (what iptables mode DNATs its VIP:80 to) serves it alone too
    const p = n.mesh.portals.get('default/web.web-0:80/TCP')!;
    expect(p.vip).toBe(await A('web-0.web.default.svc.cluster.local'));
    const body = await new Promise<string>((resolve, reject) => {
      const c = connect(p.listenPort, p.listenHost, () =>
        c.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'),
      );
      let b = '';
      c.on('data', (x) => (b += x));
      c.on('close', () => resolve(b));
      c.on('error', reject);
    });
    expect(body).toMatch(/\r\n\r\nweb-0$/);
  });

  it('an endpoint that stops being ready loses its name, its VIP and its portal', async () => {
    expect(await A('web-1.web.default.svc.cluster.local')).toMatch(/^198\.18\./);
    await n.putPod(pod('web-1', '127.0.0.3', 'web-1', false));
    await until(() => !n.mesh.vipTable.endpointVip('default/web', 'web-1'), 'the endpoint VIP released');
    expect(status(await dig(n.port, ['web-1.web.default.svc.cluster.local']))).toBe('NXDOMAIN');
    expect(n.mesh.portals.get('default/web.web-1:80/TCP')).toBeUndefined();
    expect(n.mesh.portals.get('default/web.web-0:80/TCP')).toBeDefined();
  });

  it('a headless service with no ready endpoint: its name still answers its VIP (the proxy says why), SRV names the service', async () => {
    expect(await A('lonely.default.svc.cluster.local')).toBe(n.mesh.vipOf('default/lonely'));
    const out = await dig(n.port, ['_http-0._tcp.lonely.default.svc.cluster.local', 'SRV']);
    expect(out).toMatch(/IN\s+SRV\s+0 100 12345 lonely\.default\.svc\.cluster\.local\./);
  });
});
