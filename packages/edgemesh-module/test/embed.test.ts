import { startEmbedded, StaticMetaSource } from '../../../examples/embed/embed';
import { dig } from './dig';
import { service } from './helpers';

describe('examples/embed: EdgeMesh in another runtime with its own metadata source', () => {
  it('serves DNS from the bound source and persists VIPs through it', async () => {
    const source = new StaticMetaSource();
    await source.put('default', 'service', 'hello', service('hello'));
    const { core, mesh } = await startEmbedded(source, 0, 0);
    try {
      const vip = mesh.vipOf('default/hello')!;
      expect(vip).toMatch(/^198\.18\./);
      expect((await dig(mesh.dns.port, ['+short', 'hello.default.svc.cluster.local'])).trim()).toBe(vip);
      // VIP allocations went to the embedder's store, not to a database
      expect(await source.list('edgemesh', 'vip')).toEqual([{ service: 'default/hello', ip: vip }]);
    } finally {
      await core.shutdown();
    }
  });
});
