import { get as httpGet, type IncomingMessage } from 'node:http';
import { harness, svc, tmpDb, type Harness } from './helpers';

describe('MetaServer (read-only HTTP over SQLite)', () => {
  let db: ReturnType<typeof tmpDb>;
  let h: Harness;
  let base: string;
  beforeAll(async () => {
    db = tmpDb();
    h = await harness(db.path, { metaServer: { enable: true, server: '127.0.0.1:0' } });
    await h.write('insert', 'default/service/nginx-svc', svc('nginx-svc'), 1);
    await h.write('insert', 'kube-system/service/dns', svc('dns', 'kube-system'), 1);
    await h.write(
      'insert',
      'default/pod/nginx-1',
      { kind: 'Pod', metadata: { name: 'nginx-1', namespace: 'default' } },
      1,
    );
    await h.write(
      'insert',
      'default/endpoints/nginx-svc',
      { kind: 'Endpoints', metadata: { name: 'nginx-svc' }, subsets: [] },
      1,
    );
    const mmAny = h.mm as any;
    const addr = mmAny.metaServer.address();
    base = `http://127.0.0.1:${addr.port}`;
  });
  afterAll(async () => {
    await h.stop();
    db.cleanup();
  });

  it.each([
    [
      '/api/v1/namespaces/default/services',
      200,
      (b: any) => expect(b.items.map((s: any) => s.metadata.name)).toEqual(['nginx-svc']),
    ],
    [
      '/api/v1/services',
      200,
      (b: any) => expect(b.kind).toBe('ServiceList') && expect(b.items).toHaveLength(2),
    ],
    [
      '/api/v1/namespaces/default/services/nginx-svc',
      200,
      (b: any) => expect(b.spec.ports[0].port).toBe(12345),
    ],
    ['/api/v1/namespaces/default/pods', 200, (b: any) => expect(b.items).toHaveLength(1)],
    ['/api/v1/pods', 200, (b: any) => expect(b.kind).toBe('PodList')],
    ['/api/v1/namespaces/default/endpoints/nginx-svc', 200, (b: any) => expect(b.kind).toBe('Endpoints')],
    ['/api/v1/endpoints', 200, (b: any) => expect(b.items).toHaveLength(1)],
    [
      '/api/v1/namespaces/default/services/nope',
      404,
      (b: any) => expect(b).toMatchObject({ kind: 'Status', reason: 'NotFound' }),
    ],
    ['/api/v1/namespaces/default/secrets', 404, (b: any) => expect(b.message).toContain('no route')],
    ['/nothing', 404, (b: any) => expect(b.code).toBe(404)],
  ])('GET %s → %d', async (path, status, check) => {
    const res = await fetch(base + path);
    expect(res.status).toBe(status);
    check(await res.json());
  });

  it('is read-only', async () => {
    const res = await fetch(`${base}/api/v1/services`, { method: 'DELETE' });
    expect(res.status).toBe(405);
  });

  /** A watch's events as they come (`got(n)` waits for n of them), and the response to end it. */
  async function watch(
    path: string,
  ): Promise<{ lines: any[]; got: (n: number) => Promise<void>; res: IncomingMessage }> {
    const lines: any[] = [];
    const got = (n: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const t = setInterval(() => lines.length >= n && (clearInterval(t), clearTimeout(t2), resolve()), 5);
        const t2 = setTimeout(
          () => (clearInterval(t), reject(new Error(`only ${lines.length} events`))),
          5000,
        );
      });
    const res = await new Promise<IncomingMessage>((resolve) => {
      httpGet(`${base}${path}`, (r) => {
        let buf = '';
        r.on('data', (d) => {
          buf += d;
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            lines.push(JSON.parse(buf.slice(0, i)));
            buf = buf.slice(i + 1);
          }
        });
        resolve(r);
      });
    });
    return { lines, got, res };
  }

  it('watch streams current objects as ADDED, then committed changes', async () => {
    const { lines, got, res } = await watch('/api/v1/namespaces/default/services?watch=1');
    await got(1);
    expect(lines[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'nginx-svc' } } });
    await h.write('insert', 'default/service/new', svc('new'), 1);
    await h.write('insert', 'other/service/ignored', svc('ignored', 'other'), 1);
    await h.write('update', 'default/service/new', svc('new', 'default', 2), 2);
    await h.write('delete', 'default/service/new', null, 3);
    await got(4);
    expect(lines.map((l) => `${l.type}:${l.object.metadata.name}`)).toEqual([
      'ADDED:nginx-svc',
      'ADDED:new',
      'MODIFIED:new',
      'DELETED:new',
    ]);
    res.destroy();
  });

  it('a watch of one name: that object as ADDED if it is stored, then its changes only', async () => {
    const held = await watch('/api/v1/namespaces/kube-system/services/dns?watch=1');
    const later = await watch('/api/v1/namespaces/default/services/later?watch=1');
    try {
      await held.got(1);
      expect(held.lines[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'dns' } } });
      await h.write('insert', 'default/service/other', svc('other'), 1);
      await h.write('insert', 'default/service/later', svc('later'), 1);
      await later.got(1);
      expect(later.lines.map((l) => `${l.type}:${l.object.metadata.name}`)).toEqual(['ADDED:later']);
      expect(held.lines).toHaveLength(1);
    } finally {
      held.res.destroy();
      later.res.destroy();
    }
  });
});
