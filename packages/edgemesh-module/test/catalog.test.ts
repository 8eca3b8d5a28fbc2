import type { MetaChange } from '@edgecore/metamanager';
import { createServer, type AddressInfo } from 'node:net';
import {
  portalPortRange,
  resolveBackends,
  ServiceCatalog,
  VipAllocator,
  type Pod,
  type Service,
} from '../src';
import { pod, service, startMesh, tmpDir } from './helpers';

const put = (type: string, o: Service | Pod): MetaChange => ({
  operation: 'update',
  namespace: o.metadata.namespace ?? 'default',
  type,
  name: o.metadata.name,
  object: o,
});
const del = (type: string, ns: string, name: string): MetaChange => ({
  operation: 'delete',
  namespace: ns,
  type,
  name,
  object: null,
});
const hosts = (c: ServiceCatalog, s: string): string[] =>
  resolveBackends(
    c,
    c.services.get(`default/${s}`)!,
    c.services.get(`default/${s}`)!.spec!.ports![0],
    'host',
  ).map((b) => b.key);

describe('ServiceCatalog batches', () => {
  it('a batch says which services it touched and whose backends may have changed', () => {
    const c = new ServiceCatalog();
    c.load([service('web'), service('api'), service('db')], [], [pod('w1', 'web', 9001)]);
    const d = c.applyBatch([
      put('pod', pod('w2', 'web', 9002)),
      put('service', service('new')),
      del('service', 'default', 'db'),
      put('pod', pod('other', 'nobody', 9009)),
      { ...put('pod', pod('x', 'x', 1)), type: 'configmap' }, // not the catalog's
    ]);
    expect(d.applied).toBe(4);
    expect([...d.services.keys()].sort()).toEqual(['default/db', 'default/new']);
    expect(d.services.get('default/db')!.current).toBeUndefined();
    expect(d.services.get('default/new')!.previous).toBeUndefined();
    // the web pod touches web only; the pod no selector picks touches nothing
    expect([...d.backends].sort()).toEqual(['default/db', 'default/new', 'default/web']);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9001', '127.0.0.1:9002']);
  });

  it('pods are found through their labels: relabelled, deleted, in another namespace', () => {
    const c = new ServiceCatalog();
    c.load([service('web'), service('api')], [], [pod('w1', 'web', 9001), pod('w2', 'web', 9002)]);
    const moved = pod('w1', 'api', 9001);
    const d = c.applyBatch([put('pod', moved), put('pod', pod('w3', 'web', 9003, { ns: 'other' }))]);
    expect([...d.backends].sort()).toEqual(['default/api', 'default/web']);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9002']);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:9001']);
    c.applyBatch([del('pod', 'default', 'w2')]);
    expect(hosts(c, 'web')).toEqual([]);
    // a status update with the same labels keeps the pod's place (backend order unchanged)
    c.applyBatch([put('pod', pod('a', 'api', 9100)), put('pod', pod('w1', 'api', 9001))]);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:9001', '127.0.0.1:9100']);
  });

  it('a service deleted and made again in one batch is one change from its first state to its last', () => {
    const c = new ServiceCatalog();
    c.load([service('web')], [], []);
    const again = service('web', 'default', { clusterIP: '10.96.0.10' });
    const d = c.applyBatch([del('service', 'default', 'web'), put('service', again)]);
    expect(d.services.get('default/web')!.previous?.spec?.clusterIP).toBe('None');
    expect(d.services.get('default/web')!.current).toBe(again);
    expect(c.hasNamespace('default')).toBe(true);
  });
});

describe('VipAllocator.allocateMany', () => {
  it('takes every VIP in one pass with one cursor write, and reports the ones the pool cannot serve', async () => {
    const writes: string[] = [];
    const meta = {
      get: async () => undefined,
      list: async () => [],
      put: async (_ns: string, type: string, name: string) => void writes.push(`${type}/${name}`),
      delete: async () => undefined,
    };
    const v = new VipAllocator('198.18.9.0/29', meta); // .1 … .6
    const got = await v.allocateMany(['default/a', 'default/b', 'default/a2']);
    expect(got).toEqual(['198.18.9.1', '198.18.9.2', '198.18.9.3']);
    expect(writes.filter((w) => w.startsWith('vipcursor/'))).toHaveLength(1);
    const more = await v.allocateMany(['x/1', 'x/2', 'x/3', 'x/4', 'default/a']);
    expect(more.slice(0, 3)).toEqual(['198.18.9.4', '198.18.9.5', '198.18.9.6']);
    expect(more[3]).toBeInstanceOf(Error);
    expect((more[3] as Error & { code: string }).code).toBe('EDGEMESH_VIP_EXHAUSTED');
    expect(more[4]).toBe('198.18.9.1'); // already had one
  });
});

describe('portal ports (portalPortRange, next-fit as kube-proxy --proxy-port-range)', () => {
  it('a portal takes its port from the range, skips one in use, and waits for the range to free up', async () => {
    // the test holds the only port of the range: no portal can open until it lets go
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
    const port = (held.address() as AddressInfo).port;
    const d = tmpDir();
    const n = await startMesh(d.db, { portalPortRange: `${port}-${port}` });
    try {
      await n.put(service('first'));
      expect(n.mesh.portals.table()).toEqual([]); // logged 'cannot open portal'; nothing else broke
      await new Promise<void>((r) => held.close(() => r()));
      await n.put(service('second'));
      expect(n.mesh.portals.table().map((p) => [p.service, p.listenPort])).toEqual([['second', port]]);
    } finally {
      held.close();
      await n.stop();
      d.cleanup();
    }
  });

  it.each([
    ['auto', true],
    ['0', false],
    ['2000-2001', true],
  ])('portalPortRange %s', (spec, ranged) => {
    const r = portalPortRange(spec);
    expect(r !== undefined).toBe(ranged);
    if (spec === '2000-2001') expect(r).toEqual({ from: 2000, to: 2001 });
  });

  it('a bad range is a typed error naming the key', () => {
    expect(() => portalPortRange('9-3')).toThrow(
      expect.objectContaining({ code: 'EDGEMESH_INVALID_OPTION' }),
    );
    expect(() => portalPortRange('9-3')).toThrow(/portalPortRange/);
  });
});
