import { Agent, request as httpRequest } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { httpBackend } from './backends';

/**
 * Without the native addon (another OS, no compiler): the addon loader is replaced for this file,
 * so `auto` must fall back to the JavaScript engine and `native` must refuse with a clear error.
 */
jest.mock('../src/native', () => ({
  loadNative: () => undefined,
  nativeUnavailable: () => 'not built (test)',
}));

// imported after the mock is in place
// eslint-disable-next-line @typescript-eslint/no-require-imports
const mesh = require('../src') as typeof import('../src');
const { HttpProxy, LoadBalancer, RoundRobin, UpstreamPool, PortalManager, TcpProxy, H2Proxy } = mesh;
const { defaultListen, netListen } = mesh;

it('httpEngine native without the addon: a clear error with a stable code', () => {
  expect(
    () => new HttpProxy(new LoadBalancer(new RoundRobin()), new UpstreamPool(), { engine: 'native' }),
  ).toThrow(
    expect.objectContaining({
      code: 'EDGEMESH_NATIVE_UNAVAILABLE',
      message: expect.stringContaining(
        'proxy httpEngine native: the native addon is not built (not built (test))',
      ),
    }),
  );
});

it('httpEngine auto without the addon: portal connections are served by JavaScript', async () => {
  const h = await httpBackend('js-only');
  const http = new HttpProxy(new LoadBalancer(new RoundRobin()), new UpstreamPool());
  expect(http.native).toBeUndefined();
  const backends = [{ host: '127.0.0.1', port: h.port, key: `127.0.0.1:${h.port}` }];
  const server = createServer((s) => http.handleRoute(s, () => ({ backends, scope: 't' })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const body = await new Promise<string>((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path: '/x', agent: new Agent() }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    })
      .on('error', reject)
      .end();
  });
  expect(JSON.parse(body)).toMatchObject({ id: 'js-only', url: '/x' });
  expect(http.stats.nativeConnections).toBe(0);
  expect(http.stats.requests).toBe(1);
  http.close();
  await new Promise<void>((r) => server.close(() => r()));
  await h.close();
});

it('portals without the addon listen through node:net and serve', async () => {
  expect(defaultListen()).toBe(netListen);
  const echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  const port = (echo.address() as AddressInfo).port;
  const lb = new LoadBalancer(new RoundRobin());
  const http = new HttpProxy(lb, new UpstreamPool());
  const backends = [{ host: '127.0.0.1', port, key: `127.0.0.1:${port}` }];
  const portals = new PortalManager(
    '127.0.0.1',
    http,
    new TcpProxy(lb),
    new H2Proxy(lb, { connect: () => Promise.reject(new Error('not dialed')) }),
    lb,
    () => backends,
  );
  await portals.sync([
    {
      key: 'default/echo:7/TCP',
      serviceKey: 'default/echo',
      namespace: 'default',
      service: 'echo',
      vip: '198.18.0.1',
      port: 7,
      transport: 'TCP',
      protocol: 'tcp',
    },
  ]);
  const p = portals.get('default/echo:7/TCP')!;
  const got = await new Promise<string>((resolve, reject) => {
    const c = connect(p.listenPort, '127.0.0.1', () => c.end('through the portal'));
    let b = '';
    c.on('data', (d) => (b += d));
    c.on('end', () => resolve(b));
    c.on('error', reject);
  });
  expect(got).toBe('through the portal');
  await portals.closeAll();
  http.close();
  await new Promise<void>((r) => echo.close(() => r()));
});
