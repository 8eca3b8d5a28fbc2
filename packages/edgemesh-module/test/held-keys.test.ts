import { BeehiveMetaClient, type MetaClient } from '@edgecore/metamanager';
import { MESH_PACE } from '../src';
import { service, startMesh, tmpDir, until, type MeshNode } from './helpers';

/**
 * EdgeMesh with MetaManager (real SQLite) and a pace lowered so that a burst of 120 services is
 * past what it holds with objects (20): the rest is held by keys and read back from the store —
 * in one request per type (`getMany`), or one `get` per key through a MetaClient without it (an
 * embedder's own). Services deleted and changed while held end as the store has them.
 */
describe('a burst held by keys, read back from MetaManager', () => {
  const saved = { ...MESH_PACE };
  beforeAll(() => Object.assign(MESH_PACE, { burst: 10, maxQueued: 20, quietMs: 300, maxDeferMs: 30_000 }));
  afterAll(() => Object.assign(MESH_PACE, saved));

  it.each([
    ['getMany', (c: BeehiveMetaClient): MetaClient => c],
    [
      'get per key (a MetaClient without getMany)',
      (c: BeehiveMetaClient): MetaClient => ({
        get: (ns, type, name, opts) => c.get(ns, type, name, opts),
        list: (ns, type) => c.list(ns, type),
        put: (ns, type, name, o, rv) => c.put(ns, type, name, o, rv),
        delete: (ns, type, name) => c.delete(ns, type, name),
      }),
    ],
  ])('%s: the catalog ends as the store', async (_name, metaClient) => {
    const tmp = tmpDir('held-keys-');
    let node: MeshNode | undefined;
    try {
      node = await startMesh(tmp.db, {}, undefined, undefined, metaClient);
      const cloud = new BeehiveMetaClient(node.ctx, { source: 'cloud' });
      let rv = Date.now() * 1000;
      const put = (name: string, port = 12345) =>
        cloud.put(
          'default',
          'service',
          name,
          service(name, 'default', { ports: [{ name: 'http-0', port, protocol: 'TCP', targetPort: 80 }] }),
          ++rv,
        );
      const names = Array.from({ length: 120 }, (_, i) => `k-${i}`);
      await Promise.all(names.map((n) => put(n)));
      // within the held burst (300 ms without a change ends it): 10 go, 10 change their port
      await Promise.all(names.slice(100, 110).map((n) => cloud.delete('default', 'service', n)));
      await Promise.all(names.slice(110).map((n) => put(n, 8080)));
      expect(node.mesh.updates.applied).toBeLessThan(60); // held, but for the first few
      await node.settle();
      await until(() => !node!.mesh.applying && node!.mesh.catalog.services.size === 110, 'applied', 10_000);
      const svc = (n: string) => node!.mesh.catalog.services.get(`default/${n}`);
      expect(svc('k-105')).toBeUndefined();
      expect(svc('k-99')?.spec?.ports?.[0]?.port).toBe(12345);
      expect(svc('k-115')?.spec?.ports?.[0]?.port).toBe(8080);
      expect(node.mesh.vips.allocated).toBe(110);
    } finally {
      await node?.stop();
      tmp.cleanup();
    }
  });
});
