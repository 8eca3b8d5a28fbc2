import type { MetaChange } from '@edgecore/metamanager/client';
import { ServiceCatalog } from '../src/catalog/catalog';
import type { NodeStatus, Pod, Service } from '../src/catalog/types';
import { BackendIndex } from '../src/lb/backend-index';
import { resolveBackends } from '../src/lb/backends';
import type { PortalSpec } from '../src/portal-table';
import { publishedBackends } from '../src/lb/published';
import { SitePaths, type MeshTunnel } from '../src/tunnel';

const svc: Service = {
  metadata: { name: 'web', namespace: 'default' },
  spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
};
const pod = (name: string, node: string, ip: string): Pod => ({
  metadata: { name, namespace: 'default', labels: { app: 'web' } },
  spec: { nodeName: node, containers: [{ ports: [{ containerPort: 8080, hostPort: 18080 }] }] },
  status: { phase: 'Running', hostIP: ip, podIP: `10.244.${ip.split('.')[3]}.5` },
});
const status = (name: string, site?: string, relays: string[] = []): NodeStatus => ({
  metadata: { name },
  status: 'online',
  site,
  tunnel: { relays },
});
const tunnel = (site?: string): MeshTunnel => ({
  node: 'a',
  site,
  open: () => Promise.reject(new Error('unused')),
  datagram: () => Promise.reject(new Error('unused')),
});

function catalog(): ServiceCatalog {
  const c = new ServiceCatalog();
  c.load(
    [svc],
    [],
    [
      pod('on-a', 'a', '10.1.0.1'),
      pod('on-b', 'b', '10.2.0.2'),
      pod('on-c', 'c', '10.1.0.3'),
      pod('on-x', 'x', '10.9.0.9'),
    ],
    [status('b', 'site-2', ['relay-1']), status('c', 'site-1'), status('x')],
  );
  return c;
}

describe('path choice (SitePaths)', () => {
  test('a backend on a node of another site goes through the tunnel; same site, unknown or siteless: direct', () => {
    const c = catalog();
    const bs = resolveBackends(c, svc, svc.spec!.ports![0], 'host', {
      paths: new SitePaths(c, tunnel('site-1')),
    });
    const path = Object.fromEntries(bs.map((b) => [b.node, !!b.tunnel]));
    expect(path).toEqual({ a: false, b: true, c: false, x: false });
    expect(bs.find((b) => b.node === 'b')).toMatchObject({ host: '10.2.0.2', port: 18080, tunnel: true });
  });

  test('no tunnel, or no site of our own: everything direct (one site, as before)', () => {
    const c = catalog();
    for (const p of [new SitePaths(c, undefined), new SitePaths(c, tunnel(undefined))])
      expect(resolveBackends(c, svc, svc.spec!.ports![0], 'host', { paths: p }).some((b) => b.tunnel)).toBe(
        false,
      );
  });

  test('the route to a node comes from its last status; a site change re-resolves every service', () => {
    const c = catalog();
    const paths = new SitePaths(c, tunnel('site-1'));
    expect(paths.route('b')).toEqual({ node: 'b', relays: ['relay-1'], address: undefined });
    const d = c.applyBatch([
      {
        operation: 'update',
        type: 'nodestatus',
        namespace: 'kube-node-lease',
        name: 'c',
        object: status('c', 'site-3'),
      },
    ] as never);
    expect(d.backends.has('default/web')).toBe(true);
    expect(paths.tunneled('c')).toBe(true);
    const same = c.applyBatch([
      {
        operation: 'update',
        type: 'nodestatus',
        namespace: 'kube-node-lease',
        name: 'c',
        object: status('c', 'site-3', ['r']),
      },
    ] as never);
    expect(same.backends.size).toBe(0); // relays are read when a stream opens
  });
});

describe('published backends (what the tunnel opens for other nodes)', () => {
  test("a node's own pods at hostIP:hostPort and podIP:containerPort, nothing of other nodes", () => {
    const c = catalog();
    c.apply({
      operation: 'update',
      type: 'endpoints',
      namespace: 'default',
      name: 'ext',
      object: {
        metadata: { name: 'ext', namespace: 'default' },
        subsets: [
          {
            addresses: [
              { ip: '10.2.0.7', nodeName: 'b' },
              { ip: '10.1.0.7', nodeName: 'a' },
            ],
            ports: [{ port: 9000, protocol: 'UDP' }],
          },
        ],
      },
    } as MetaChange);
    const p = publishedBackends(c, 'b');
    expect([...p].sort()).toEqual(['tcp/10.2.0.2:18080', 'tcp/10.244.2.5:8080', 'udp/10.2.0.7:9000']);
    expect(publishedBackends(c, 'nobody').size).toBe(0);
  });
});

describe('backends by path, counted (the edgecore_edgemesh_backends gauge)', () => {
  const spec: PortalSpec = {
    key: 'default/web:80/TCP',
    serviceKey: 'default/web',
    namespace: 'default',
    service: 'web',
    vip: '169.254.1.1',
    port: 80,
    transport: 'TCP',
    protocol: 'tcp',
  };
  const count = (ix: BackendIndex): { direct: number; tunnel: number } => {
    const n = { direct: 0, tunnel: 0 };
    ix.countPaths(spec, n);
    return n;
  };

  test('counted as the lists say, without holding a list; a change is counted again', () => {
    const c = catalog();
    const ix = new BackendIndex(c, 'host', new SitePaths(c, tunnel('site-1')));
    expect(count(ix)).toEqual({ direct: 3, tunnel: 1 });
    // the count did not cache the list: a pod added (its invalidation not yet delivered) is in
    // the first list resolved after the count
    c.apply({
      operation: 'update',
      type: 'pod',
      namespace: 'default',
      name: 'on-c2',
      object: pod('on-c2', 'c', '10.1.0.4'),
    });
    const list = ix.of(spec);
    expect(list.map((b) => `${b.node}:${b.tunnel ? 'tunnel' : 'direct'}`).sort()).toEqual([
      'a:direct',
      'b:tunnel',
      'c:direct',
      'c:direct',
      'x:direct',
    ]);
    expect(ix.of(spec)).toBe(list);
    // with the list cached, counted from it — and both forgotten when the service's backends change
    expect(count(ix)).toEqual({ direct: 4, tunnel: 1 });
    const d = c.applyBatch([
      { operation: 'delete', type: 'pod', namespace: 'default', name: 'on-a', object: null },
      {
        operation: 'update',
        type: 'pod',
        namespace: 'default',
        name: 'on-b2',
        object: pod('on-b2', 'b', '10.2.0.4'),
      },
    ]);
    ix.invalidate(d.backends);
    expect(count(ix)).toEqual({ direct: 3, tunnel: 2 });
    expect(ix.of(spec)).not.toBe(list);
    // a service that is gone: nothing
    ix.invalidate(
      c.applyBatch([
        { operation: 'delete', type: 'service', namespace: 'default', name: 'web', object: null },
      ]).backends,
    );
    expect(count(ix)).toEqual({ direct: 0, tunnel: 0 });
    // and made again: counted afresh (its entry was marked stale in place, not left as 0)
    ix.invalidate(
      c.applyBatch([{ operation: 'update', type: 'service', namespace: 'default', name: 'web', object: svc }])
        .backends,
    );
    expect(count(ix)).toEqual({ direct: 3, tunnel: 2 });
    expect(ix.of(spec)).toHaveLength(5);
  });
});
