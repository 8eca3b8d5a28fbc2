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

  it('an embedder contributes its own LB strategy and names it in lbStrategy', async () => {
    const { core, mesh } = await startEmbedded(new StaticMetaSource(), 0, 0);
    try {
      expect(mesh.lb.strategy.name).toBe('PreferFirst');
      const b = ['10.0.0.9', '10.0.0.2', '10.0.0.5'].map((host) => ({
        host,
        port: 80,
        key: `${host}:80`,
      }));
      const picks = new Set(Array.from({ length: 20 }, () => mesh.lb.pick(b, 's', '127.0.0.1')!.key));
      expect([...picks]).toEqual(['10.0.0.2:80']);
    } finally {
      await core.shutdown();
    }
  });

  it('the built-in strategies stay at the contribution point beside it', async () => {
    const { core, mesh } = await startEmbedded(new StaticMetaSource(), 0, 0, 'LeastConnections');
    try {
      expect(mesh.lb.strategy.name).toBe('LeastConnections');
    } finally {
      await core.shutdown();
    }
  });
});
