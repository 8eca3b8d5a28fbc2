import { dig } from './dig';
import { service, startMesh, tmpDir } from './helpers';

describe('VIPs', () => {
  it('the same service keeps the same VIP across a restart on the same database (no cloud)', async () => {
    const d = tmpDir();
    let n = await startMesh(d.db);
    for (const s of ['a', 'b', 'c']) await n.put(service(s));
    const before = ['a', 'b', 'c'].map((s) => n.mesh.vipOf(`default/${s}`));
    expect(new Set(before).size).toBe(3);
    await n.stop();
    n = await startMesh(d.db);
    try {
      expect(['a', 'b', 'c'].map((s) => n.mesh.vipOf(`default/${s}`))).toEqual(before);
      expect((await dig(n.port, ['+short', 'b.default.svc.cluster.local'])).trim()).toBe(before[1]);
    } finally {
      await n.stop();
      d.cleanup();
    }
  });

  it('a released VIP is reused only after every other free address (next-fit, persisted cursor)', async () => {
    const d = tmpDir();
    let n = await startMesh(d.db, { subNet: '198.18.7.0/29' }); // 6 usable: .1-.6
    try {
      await n.put(service('s1'));
      await n.put(service('s2'));
      expect(n.mesh.vipOf('default/s1')).toBe('198.18.7.1');
      await n.del('default', 's1');
      await n.put(service('s3'));
      expect(n.mesh.vipOf('default/s3')).toBe('198.18.7.3');
      await n.stop();
      n = await startMesh(d.db, { subNet: '198.18.7.0/29' });
      await n.put(service('s4'));
      await n.put(service('s5'));
      await n.put(service('s6'));
      expect(['s4', 's5', 's6'].map((s) => n.mesh.vipOf(`default/${s}`))).toEqual([
        '198.18.7.4',
        '198.18.7.5',
        '198.18.7.6',
      ]);
      await n.put(service('s7'));
      expect(n.mesh.vipOf('default/s7')).toBe('198.18.7.1'); // wrapped: the freed one, last
    } finally {
      await n.stop();
      d.cleanup();
    }
  });

  it('pool exhaustion: a clear error for that service, the others unaffected', async () => {
    const d = tmpDir();
    const logs: any[] = [];
    const log = {
      debug() {},
      info() {},
      warn() {},
      error: (o: any, m: string) => logs.push({ ...o, m }),
    };
    const n = await startMesh(d.db, { subNet: '198.18.9.0/30' }, log as never); // 2 usable
    try {
      for (const s of ['x1', 'x2', 'x3']) await n.put(service(s));
      expect(n.mesh.vipOf('default/x1')).toBeDefined();
      expect(n.mesh.vipOf('default/x2')).toBeDefined();
      expect(n.mesh.vipOf('default/x3')).toBeUndefined();
      expect(logs).toContainEqual(
        expect.objectContaining({
          service: 'default/x3',
          code: 'EDGEMESH_VIP_EXHAUSTED',
          m: 'no VIP for service',
        }),
      );
      const out = await dig(n.port, ['x3.default.svc.cluster.local']);
      expect(out).toMatch(/status: NOERROR/);
      expect(out).toMatch(/ANSWER: 0/);
      expect((await dig(n.port, ['+short', 'x1.default.svc.cluster.local'])).trim()).toMatch(/^198\.18\.9\./);
    } finally {
      await n.stop();
      d.cleanup();
    }
  });

  it('a VIP whose service was deleted while the node was down is released on start', async () => {
    const d = tmpDir();
    let n = await startMesh(d.db);
    await n.put(service('temp'));
    expect(n.mesh.vipOf('default/temp')).toBeDefined();
    await n.stop();
    // delete behind EdgeMesh's back (as if the change arrived while edgemesh was disabled)
    const { MetaStore } = await import('@edgecore/metamanager');
    const st = new MetaStore(d.db);
    st.apply([
      {
        op: 'delete',
        key: 'default/service/temp',
        namespace: 'default',
        type: 'service',
        name: 'temp',
        resourceVersion: 0,
      },
    ]);
    st.close();
    n = await startMesh(d.db);
    try {
      expect(n.mesh.vips.services()).not.toContain('default/temp');
    } finally {
      await n.stop();
      d.cleanup();
    }
  });
});
