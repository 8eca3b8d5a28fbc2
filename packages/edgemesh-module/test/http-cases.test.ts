import { connect, createServer, type AddressInfo } from 'node:net';
import {
  errorResponse,
  failures,
  HttpProxy,
  LoadBalancer,
  nativeUnavailable,
  RoundRobin,
  UpstreamPool,
} from '../src';
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
    name: 'HTTP/2.0 in an HTTP/1 request line (RFC 9110 §15.6.6: 505, as nginx)',
    req: 'GET / HTTP/2.0\r\nHost: a\r\n\r\n',
    status: 505,
    forwarded: false,
  },
  {
    name: 'HTTP/1.2: answered as HTTP/1.1 (RFC 9110 §2.5; nginx and haproxy alike)',
    req: 'GET / HTTP/1.2\r\nHost: a\r\n\r\n',
    status: 200,
    forwarded: true,
  },
  {
    name: 'a head over maxHeadBytes',
    req: `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'x'.repeat(17 * 1024)}\r\n\r\n`,
    status: 431,
    forwarded: false,
  },
];

/** The status of the first answer in `got` (0: none). */
const statusOf = (got: string): number => Number(/^HTTP\/1\.1 (\d{3}) /.exec(got)?.[1] ?? 0);

/** Everything the proxy sends on one connection until it closes (or 3 s pass), `req` written first. */
function exchange(port: number, req: string, end = true): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve(got);
    };
    const t = setTimeout(done, 3000);
    s.on('data', (d) => {
      got += d.toString('latin1');
      // a complete answer that keeps the connection: stop there
      const end = got.indexOf('\r\n\r\n') + 4;
      const head = got.slice(0, end);
      const length = Number(/\r\nContent-Length: (\d+)\r\n/.exec(head)?.[1] ?? NaN);
      if (end > 3 && !/Connection: close/.test(head) && got.length >= end + length) done();
    });
    s.on('error', done);
    s.on('close', done);
    if (end) s.end(req, 'latin1');
    else s.write(req, 'latin1');
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
      backends: [{ host: '127.0.0.1', port: backend.port, key: `127.0.0.1:${backend.port}` }],
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
    expect(statusOf(await exchange(port, req))).toBe(status);
    expect(backend.hits - before).toBe(forwarded ? 1 : 0);
  });
});

describe.each(engines)('our own answers, L7 engine %s: the rulebook words them, byte for byte', (engine) => {
  let http: HttpProxy;
  let pool: UpstreamPool;
  const servers: import('node:net').Server[] = [];
  const ms = 300;

  /** A portal whose backends are `ports` (on 127.0.0.1); its scope is `scope`. */
  async function portal(scope: string, ports: number[]): Promise<number> {
    const route = {
      backends: ports.map((p) => ({ host: '127.0.0.1', port: p, key: `127.0.0.1:${p}` })),
      scope,
    };
    const server = createServer({ noDelay: true }, (s) => http.handleRoute(s, () => route));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return (server.address() as AddressInfo).port;
  }

  /** A TCP server that answers each connection's first bytes with `reply` (undefined: never). */
  async function upstream(reply?: string): Promise<number> {
    const server = createServer((s) => {
      s.on('error', () => undefined);
      s.once('data', () => reply !== undefined && s.write(reply));
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return (server.address() as AddressInfo).port;
  }

  beforeAll(() => {
    pool = new UpstreamPool();
    http = new HttpProxy(new LoadBalancer(new RoundRobin()), pool, {
      engine,
      headTimeoutMs: ms,
      responseTimeoutMs: ms,
    });
  });
  afterAll(async () => {
    http.close();
    pool.close();
    for (const s of servers) {
      s.close();
      (s as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    }
  });

  const GET = 'GET / HTTP/1.1\r\nHost: a\r\n\r\n';

  it('no backend: 503, and the connection goes on', async () => {
    const p = await portal('none', []);
    expect(await exchange(p, GET, false)).toBe(
      errorResponse(503, failures.noBackend('none').message, true).toString('latin1'),
    );
  });

  it('every backend refusing: 502 naming the last failure', async () => {
    const dead = await upstream();
    await new Promise<void>((r) => servers.pop()!.close(() => r())); // its port now refuses
    const p = await portal('dead', [dead]);
    const words = failures.allFailed('dead', `127.0.0.1:${dead} ECONNREFUSED`).message;
    expect(await exchange(p, GET, false)).toBe(errorResponse(502, words, true).toString('latin1'));
  });

  it('an upstream that does not answer in responseTimeoutMs: 504, and the connection closes', async () => {
    const silent = await upstream();
    const p = await portal('silent', [silent]);
    const b = { host: '127.0.0.1', port: silent, key: `127.0.0.1:${silent}` };
    expect(await exchange(p, GET)).toBe(
      errorResponse(504, failures.timeout(b, ms).message, false).toString('latin1'),
    );
  });

  it('a malformed response head: 502 at once, and the connection closes', async () => {
    const bad = await upstream('HTTP/1.1 2000 Nope\r\n\r\n');
    const p = await portal('bad', [bad]);
    const b = { host: '127.0.0.1', port: bad, key: `127.0.0.1:${bad}` };
    expect(await exchange(p, GET)).toBe(
      errorResponse(502, failures.malformed(b).message, false).toString('latin1'),
    );
  });

  it('a request head not complete in headTimeoutMs: 408, and the connection closes', async () => {
    const p = await portal('slow-client', [1]);
    expect(await exchange(p, 'GET / HTTP/1.1\r\nHost:', false)).toBe(
      errorResponse(408, failures.headTimeout(ms).message, false).toString('latin1'),
    );
  });
});
