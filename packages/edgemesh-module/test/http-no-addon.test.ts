import { Agent, request as httpRequest } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
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
const { HttpProxy, LoadBalancer, RoundRobin, UpstreamPool } = require('../src') as typeof import('../src');

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
  const backends = [{ host: '127.0.0.1', port: h.port, key: `127.0.0.1:${h.port}`, origin: 't' }];
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
