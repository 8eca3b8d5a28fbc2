import { connect, createServer, type AddressInfo } from 'node:net';
import { HttpProxy, LoadBalancer, nativeUnavailable, RoundRobin, UpstreamPool } from '../src';
import { httpBackend } from './backends';

/**
 * Request-head conformance as one table (llhttp's corpus reads the same way), run against both L7
 * engines: what each request is answered with, and whether it reaches the backend at all.
 */
const CASES: { name: string; req: string; status: number; forwarded: boolean }[] = [
  { name: 'a plain GET', req: 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', status: 200, forwarded: true },
  { name: 'HTTP/1.0 without Host', req: 'GET / HTTP/1.0\r\n\r\n', status: 200, forwarded: true },
  {
    name: 'a chunked body',
    req: 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    status: 200,
    forwarded: true,
  },
  {
    name: 'HTTP/1.1 without Host (RFC 9112 §3.2)',
    req: 'GET / HTTP/1.1\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'two Host fields',
    req: 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'Content-Length with Transfer-Encoding (§6.3)',
    req: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'differing Content-Lengths',
    req: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok',
    status: 400,
    forwarded: false,
  },
  {
    name: 'a Content-Length that is not a number',
    req: 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2x\r\n\r\nok',
    status: 400,
    forwarded: false,
  },
  {
    name: 'a transfer coding before chunked (§6.1: 501)',
    req: 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
    status: 501,
    forwarded: false,
  },
  {
    name: 'a request transfer coding not ending in chunked',
    req: 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'obsolete line folding (§5.2)',
    req: 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'a space in a field name',
    req: 'GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'a field line without a colon',
    req: 'GET / HTTP/1.1\r\nHost: a\r\nXA\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'a request line without a version',
    req: 'GET /\r\nHost: a\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'HTTP/2.0 in an HTTP/1 request line',
    req: 'GET / HTTP/2.0\r\nHost: a\r\n\r\n',
    status: 400,
    forwarded: false,
  },
  {
    name: 'a head over maxHeadBytes',
    req: `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'x'.repeat(17 * 1024)}\r\n\r\n`,
    status: 431,
    forwarded: false,
  },
];

/** The status of the first answer to `req` (0: none before the proxy closed or 2 s passed). */
function ask(port: number, req: string): Promise<number> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve(Number(/^HTTP\/1\.1 (\d{3}) /.exec(got)?.[1] ?? 0));
    };
    const t = setTimeout(done, 2000);
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (/\r\n\r\n/.test(got)) done();
    });
    s.on('error', done);
    s.on('close', done);
    s.end(req, 'latin1');
  });
}

const engines =
  process.platform === 'linux' && !nativeUnavailable() ? (['native', 'js'] as const) : (['js'] as const);

describe.each(engines)('request heads, L7 engine %s', (engine) => {
  let backend: Awaited<ReturnType<typeof httpBackend>>;
  let port = 0;
  let close: () => Promise<void>;

  beforeAll(async () => {
    backend = await httpBackend('b1');
    const lb = new LoadBalancer(new RoundRobin());
    const pool = new UpstreamPool();
    const http = new HttpProxy(lb, pool, { engine });
    const route = {
      backends: [{ host: '127.0.0.1', port: backend.port, key: `127.0.0.1:${backend.port}`, origin: 't' }],
      scope: 'cases',
    };
    const server = createServer({ noDelay: true }, (s) => http.handleRoute(s, () => route));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
    close = async () => {
      http.close();
      pool.close();
      await new Promise<void>((r) => server.close(() => r()));
      await backend.close();
    };
  });
  afterAll(() => close());

  it.each(CASES)('$name → $status', async ({ req, status, forwarded }) => {
    const before = backend.hits;
    expect(await ask(port, req)).toBe(status);
    expect(backend.hits - before).toBe(forwarded ? 1 : 0);
  });
});
