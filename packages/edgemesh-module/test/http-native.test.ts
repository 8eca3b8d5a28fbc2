import { readdirSync } from 'node:fs';
import { Agent, METHODS, request as httpRequest } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import {
  ConsistentHash,
  ForwardProxy,
  HttpProxy,
  LeastConnections,
  LoadBalancer,
  nativeUnavailable,
  RoundRobin,
  TcpProxy,
  UpstreamPool,
  type Backend,
  type HttpProxyOptions,
  type LbStrategy,
} from '../src';
import { RecordingBackend } from '@edgecore/test-support';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { httpBackend } from './backends';
import { CASES as SMUGGLING } from './corpus/smuggling';

const LLHTTP = JSON.parse(readFileSync(join(__dirname, 'corpus', 'llhttp-requests.json'), 'utf8')) as {
  cases: { input: string }[];
};

/**
 * The native L7 engine (native/http/) on its own: an HttpProxy with `engine: 'native'`
 * behind a listener, real backends on 127.0.0.1, raw client bytes where the exact wire matters.
 */
const linux = process.platform === 'linux';
const d = linux ? describe : describe.skip;

it('the native L7 engine is built on Linux', () => {
  if (linux) expect(nativeUnavailable()).toBeUndefined();
});

const be = (port: number, host = '127.0.0.1'): Backend => ({
  host,
  port,
  key: `${host}:${port}`,
});

interface Front {
  port: number;
  http: HttpProxy;
  lb: LoadBalancer;
  close(): Promise<void>;
}

async function front(
  backends: () => readonly Backend[],
  opts: HttpProxyOptions & { strategy?: LbStrategy; hashHeader?: string } = {},
): Promise<Front> {
  const lb = new LoadBalancer(opts.strategy ?? new RoundRobin(), { baseEjectMs: 5000 });
  const pool = new UpstreamPool();
  const http = new HttpProxy(lb, pool, { engine: 'native', ...opts });
  const server = createServer({ noDelay: true }, (s) =>
    http.handleRoute(s, () => ({ backends: backends(), scope: 't', hashHeader: opts.hashHeader })),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    http,
    lb,
    close: async () => {
      http.close();
      pool.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A raw TCP backend: `onHead(sock, head, n)` for the n-th request head on a connection. */
async function rawBackend(
  onHead: (s: Socket, head: string, n: number, rest: Buffer) => void,
): Promise<{ port: number; server: Server; close(): Promise<void> }> {
  const conns = new Set<Socket>();
  const server = createServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let n = 0;
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const head = buf.subarray(0, i).toString('latin1');
        buf = buf.subarray(i + 4);
        onHead(s, head, ++n, buf);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () =>
      new Promise<void>((r) => {
        for (const c of conns) c.destroy();
        server.close(() => r());
      }),
  };
}

/** Send raw bytes (a string as UTF-8); collect everything until the proxy closes (or `ms`). */
function raw(port: number, data: string | Buffer, ms = 2000): Promise<string> {
  return rawPieces(port, [typeof data === 'string' ? Buffer.from(data) : data], ms);
}

function get(
  port: number,
  opts: {
    path?: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    agent?: Agent;
  } = {},
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        headers: opts.headers,
        agent: opts.agent,
      },
      (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (x) => (body += x));
        res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const fds = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** A seeded xorshift fuzzer: structural mutations of HTTP bytes (the same sequence every run). */
function fuzzer(seed0: number): {
  rnd: (n: number) => number;
  pickOne: <T>(a: readonly T[]) => T;
  mutate: (x: string) => string;
} {
  let seed = seed0;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pickOne = <T>(a: readonly T[]): T => a[rnd(a.length)];
  const SPICE = [
    '\r',
    '\n',
    '\0',
    ' ',
    ':',
    '\t',
    '\r\n',
    '\r\n\r\n',
    ',',
    ';',
    '\x7f',
    '\xff',
    '0',
    'chunked',
  ];
  const mutate = (x: string): string => {
    let b = x;
    for (let k = 1 + rnd(4); k > 0; k--) {
      const at = rnd(b.length + 1);
      switch (rnd(5)) {
        case 0: // replace a byte
          b = b.slice(0, at) + String.fromCharCode(rnd(256)) + b.slice(at + 1);
          break;
        case 1: // insert something structural
          b = b.slice(0, at) + pickOne(SPICE) + b.slice(at);
          break;
        case 2: // delete a run
          b = b.slice(0, at) + b.slice(at + 1 + rnd(8));
          break;
        case 3: // duplicate a run
          b = b.slice(0, at) + b.slice(at, at + rnd(40)) + b.slice(at);
          break;
        default: // truncate
          b = b.slice(0, at);
      }
    }
    return b;
  };
  return { rnd, pickOne, mutate };
}

/** The fuzz corpus of a reverse portal: requests from clients and responses from a backend. */
const FUZZ_REQS = [
  'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  'POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello',
  'POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'GET /a HTTP/1.0\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n',
  'GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
];
const FUZZ_RESPS = [
  'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n',
  'HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil the end',
];

/** What the proxy says to a well-formed answer or a close: an HTTP/1.1 status line, or nothing. */
const wellFormed = (out: string): boolean =>
  out === '' || /^HTTP\/1\.1 \d{3} /.test(out.replace(/<open>$/, ''));

/**
 * Fuzz knobs for long sessions (e.g. under `native/asan.sh`): `EDGEMESH_FUZZ_SEED` changes every
 * fuzzer's sequence, `EDGEMESH_FUZZ_SCALE` multiplies the input counts. Unset: the fixed sequences
 * and counts the suite always runs.
 */
const FUZZ_SEED = Number(process.env.EDGEMESH_FUZZ_SEED ?? 0) >>> 0;
const FUZZ_SCALE = Math.max(1, Math.floor(Number(process.env.EDGEMESH_FUZZ_SCALE ?? 1)) || 1);
const fuzzSeed = (base: number): number => (base ^ FUZZ_SEED) >>> 0 || base;

/** `x` cut at up to five random points, empty pieces dropped. */
function cut(rnd: (n: number) => number, x: string): string[] {
  const at = Array.from({ length: rnd(6) }, () => rnd(x.length + 1)).sort((a, b) => a - b);
  const out: string[] = [];
  let from = 0;
  for (const a of [...at, x.length]) {
    if (a > from) out.push(x.slice(from, a));
    from = Math.max(from, a);
  }
  return out;
}

/**
 * Writes the pieces (strings as latin1: one char, one byte) a millisecond apart (no Nagle: each
 * leaves as its own segment); `done` after the last.
 */
function writePieces(s: Socket, pieces: (string | Buffer)[], done?: () => void): void {
  s.setNoDelay(true);
  const next = (i: number): void => {
    if (s.destroyed) return;
    if (i >= pieces.length) return done?.();
    const p = pieces[i];
    s.write(typeof p === 'string' ? Buffer.from(p, 'latin1') : p);
    setTimeout(() => next(i + 1), 1);
  };
  next(0);
}

/** Writes the pieces (see writePieces); collects everything until the proxy closes (or `ms`). */
function rawPieces(port: number, pieces: (string | Buffer)[], ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => writePieces(s, pieces));
    let out = '';
    s.on('data', (x) => (out += x.toString('latin1')));
    const t = setTimeout(() => (s.destroy(), resolve(out + '<open>')), ms);
    s.on('close', () => (clearTimeout(t), resolve(out)));
    s.on('error', () => undefined);
  });
}

/**
 * Each input (its pieces) on its own connection, 100 at a time; returns the inputs answered otherwise
 * than well-formed (or than `accept` wants), with the answer.
 */
async function sendAll(
  port: number,
  inputs: string[][],
  ms: number,
  accept: (i: number, out: string) => boolean = () => true,
): Promise<string[]> {
  const bad: string[] = [];
  for (let i = 0; i < inputs.length; i += 100) {
    const outs = await Promise.all(inputs.slice(i, i + 100).map((x) => rawPieces(port, x, ms)));
    outs.forEach(
      (o, k) =>
        (!wellFormed(o) || !accept(i + k, o)) && bad.push(JSON.stringify([inputs[i + k], o.slice(0, 80)])),
    );
  }
  return bad;
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  for (const t0 = Date.now(); !cond() && Date.now() - t0 < ms;) await sleep(10);
}

d('native L7 engine', () => {
  it('a pooled connection the backend had closed: the request goes again on a fresh one; a request whose body was sent gets 502', async () => {
    // the backend answers the first request of each connection, then drops the connection at the second
    const b = await rawBackend((s, head, n) => {
      if (n === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      else s.destroy();
    });
    const f = await front(() => [be(b.port)]);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    expect((await get(f.port, { agent })).status).toBe(200);
    const again = await get(f.port, { agent }); // reuses the pooled connection, which the backend drops
    expect(again).toMatchObject({ status: 200, body: 'ok' });
    const post = await get(f.port, { agent, method: 'POST', body: 'abc' });
    expect(post.status).toBe(502);
    expect(post.body).toMatch(/closed the connection/);
    expect(f.http.stats.byStatus.get(502)).toBe(1);
    agent.destroy();
    await f.close();
    await b.close();
  });

  it('response framings: chunked, HEAD, 204, 304, then close-delimited (HTTP/1.0 backend) — pipelined, in order', async () => {
    const b = await rawBackend((s, head) => {
      const path = head.split(' ')[1];
      if (path === '/chunked')
        s.write(
          'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
        );
      else if (path === '/head') s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      else if (path === '/204') s.write('HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n');
      else if (path === '/304') s.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n');
      else if (path === '/eof') s.end('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end');
    });
    const f = await front(() => [be(b.port)]);
    const out = await raw(
      f.port,
      ['GET /chunked', 'HEAD /head', 'GET /204', 'GET /304', 'GET /eof']
        .map((l) => `${l} HTTP/1.1\r\nHost: x\r\n\r\n`)
        .join(''),
    );
    expect(out).toBe(
      'HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' +
        'HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n' +
        'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end',
    );
    await f.close();
    await b.close();
  });

  it('HTTP/1.0 client: keep-alive when asked (and said so), closed otherwise', async () => {
    const b = await rawBackend((s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const f = await front(() => [be(b.port)]);
    const keep = await raw(f.port, 'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', 300);
    expect(keep).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok<open>');
    const close = await raw(f.port, 'GET / HTTP/1.0\r\n\r\n');
    expect(close).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    await f.close();
    await b.close();
  });

  it('pipelined POSTs with Content-Length and chunked bodies reach the backend whole and in order', async () => {
    const bodies: string[] = [];
    const h = await httpBackend('echo', (req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (x) => (body += x));
      req.on('end', () => {
        bodies.push(`${req.url}=${body}`);
        res.end(`${req.url}:${body.length}`);
      });
      return true;
    });
    const f = await front(() => [be(h.port)]);
    const out = await raw(
      f.port,
      'POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
        'POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n' +
        'GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    expect(bodies).toEqual(['/1=hello', '/2=abcde', '/3=']);
    expect([...out.matchAll(/\r\n\r\n(\/\d:\d)/g)].map((m) => m[1])).toEqual(['/1:5', '/2:5', '/3:0']);
    await f.close();
    await h.close();
  });

  it('a malformed chunk in a request body → 400 and the connection closes', async () => {
    const b = await rawBackend(() => undefined); // never answers
    const f = await front(() => [be(b.port)]);
    const out = await raw(f.port, 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
    expect(out).toMatch(
      /^HTTP\/1\.1 400 Bad Request\r\n[^]*Connection: close\r\n\r\n400 Bad Request: bad chunk/,
    );
    await f.close();
    await b.close();
  });

  it('an early answer while the upload still runs: the client gets it, then the connection closes', async () => {
    const b = await rawBackend((s) =>
      s.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig'),
    );
    const f = await front(() => [be(b.port)]);
    const out = await raw(
      f.port,
      `PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n${'x'.repeat(1000)}`,
    );
    expect(out).toBe('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig');
    await f.close();
    await b.close();
  });

  it('ConsistentHash on a header: each key sticks to the backend the strategy itself picks', async () => {
    const hs = await Promise.all(['h1', 'h2', 'h3'].map((id) => httpBackend(id)));
    const list = hs.map((h) => be(h.port));
    const f = await front(() => list, { strategy: new ConsistentHash(), hashHeader: 'X-User' });
    const ref = new ConsistentHash();
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
      const want = ref.pick(list, { clientIp: '127.0.0.1', hashKey: user, active: new Map(), scope: 't' });
      const ids = new Set<string>();
      for (let i = 0; i < 4; i++)
        ids.add(JSON.parse((await get(f.port, { agent, headers: { 'X-User': user } })).body).id);
      expect([...ids]).toEqual([['h1', 'h2', 'h3'][list.indexOf(want)]]);
    }
    agent.destroy();
    await f.close();
    for (const h of hs) await h.close();
  });

  it('LeastConnections sees requests in flight: a busy backend gets no second request while another is free', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = await httpBackend('slow', (req, res) => {
      void held.then(() => res.end('slow'));
      return true;
    });
    const fast = await httpBackend('fast', (req, res) => {
      res.end('fast');
      return true;
    });
    const f = await front(() => [be(slow.port), be(fast.port)], { strategy: new LeastConnections() });
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 8; i++) {
      const p = get(f.port, { agent: new Agent() });
      pending.push(p);
      await Promise.race([p, sleep(100)]); // the one the slow backend holds stays in flight
    }
    expect(slow.hits).toBe(1);
    expect(fast.hits).toBe(7);
    release();
    await Promise.all(pending);
    await until(() => f.lb.active.size === 0);
    expect(f.lb.active.size).toBe(0); // every acquire released
    await f.close();
    await slow.close();
    await fast.close();
  });

  it('no descriptor or connection outlives its client (clients reset mid-response, 100 connections)', async () => {
    const big = await httpBackend('big', (req, res) => {
      res.writeHead(200, { 'content-length': String(64 * 1024 * 1024) });
      res.write(Buffer.alloc(1024 * 1024));
      res.on('close', () => undefined);
      return true;
    });
    const h = await httpBackend('ok');
    const list = [be(h.port), be(big.port)]; // round robin: every other request never completes
    const f = await front(() => list);
    await get(f.port, { agent: new Agent() }); // warm: lazily created handles
    await until(() => f.http.native!.counts.clients === 0);
    const before = fds();
    await Promise.all(
      Array.from({ length: 100 }, () => {
        return new Promise<void>((resolve) => {
          const s = connect(f.port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
          s.once('data', () => s.resetAndDestroy());
          s.on('close', () => resolve());
          s.on('error', () => undefined);
        });
      }),
    );
    await until(
      () =>
        f.http.native!.counts.clients === 0 &&
        f.http.native!.counts.upstreams <= f.http.native!.counts.pooled,
    );
    expect(f.http.native!.counts.clients).toBe(0);
    expect(f.http.stats.activeConnections).toBe(0);
    f.http.native!.closeAll(); // pooled ones too
    expect(f.http.native!.counts).toEqual({ clients: 0, upstreams: 0, pooled: 0 });
    await until(() => fds() <= before);
    expect(fds()).toBeLessThanOrEqual(before);
    expect(f.lb.active.size).toBe(0);
    await f.close();
    await big.close();
    await h.close();
  });

  it('closeAll ends live native connections; idle keep-alive connections close after keepAliveTimeoutMs', async () => {
    const h = await httpBackend('ok');
    const f = await front(() => [be(h.port)], { keepAliveTimeoutMs: 300 });
    const t0 = Date.now();
    const idle = await raw(f.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 3000);
    expect(idle).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(idle.endsWith('<open>')).toBe(false); // closed by the proxy
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    const live = raw(f.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 3000);
    await until(() => f.http.stats.requests >= 2);
    await sleep(50);
    f.http.closeAll();
    expect((await live).endsWith('<open>')).toBe(false);
    await f.close();
    await h.close();
  });

  it('a backend given by host name: the engine hands the connection to JavaScript, which serves it', async () => {
    const h = await httpBackend('named');
    const f = await front(() => [be(h.port, 'localhost')]);
    const r = await get(f.port, { agent: new Agent() });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).id).toBe('named');
    expect(f.http.stats.nativeConnections).toBe(1);
    await f.close();
    await h.close();
  });

  /**
   * Mutated requests from clients, then mutated responses from a backend, through one portal. With
   * `split`, every input is written in up to six pieces a millisecond apart (each read on its own:
   * the engine's incremental paths — a head, a chunk-size line, a body cut anywhere), and a quarter
   * of the inputs are left whole and valid, which must then be answered with a success.
   */
  async function fuzzReverse(
    seed: number,
    requests: number,
    responses: number,
    split: boolean,
  ): Promise<void> {
    const { rnd, pickOne, mutate } = fuzzer(fuzzSeed(seed));
    const input = (x: string): { pieces: string[]; valid: boolean } => {
      const valid = split && rnd(4) === 0;
      const y = valid ? x : mutate(x);
      return { pieces: split ? cut(rnd, y) : [y], valid };
    };
    const h = await httpBackend('ok');
    let next: { pieces: string[]; valid: boolean } = { pieces: [], valid: false };
    // each answer's backend connection is closed (both ends) before the next request: a broken
    // answer's bytes still arriving on a connection the proxy had already pooled and reused would
    // be read as the next answer — the keep-alive race every proxy has with a backend that sends
    // past its framing, not what this test is about
    let closed = Promise.resolve();
    const b = await rawBackend((sock) => {
      closed = new Promise((r) => sock.once('close', () => r()));
      writePieces(sock, next.pieces, () => sock.end());
    });
    const list = [be(h.port)];
    const f = await front(() => list, {
      headTimeoutMs: 300,
      keepAliveTimeoutMs: 300,
      responseTimeoutMs: 300,
    });
    const reqs = Array.from({ length: requests }, () => input(pickOne(FUZZ_REQS)));
    // a whole valid request is answered, each request of the pipelined one too
    const answers = (x: string): number => x.split(/\r\n\r\n(?=[A-Z])/).length;
    const bad = await sendAll(
      f.port,
      reqs.map((r) => r.pieces),
      1500,
      (i, o) =>
        !reqs[i].valid || (o.match(/HTTP\/1\.1 200 /g) ?? []).length === answers(reqs[i].pieces.join('')),
    );
    // the response side: a backend that answers mutated responses, one connection each
    list[0] = be(b.port);
    for (let i = 0; i < responses; i++) {
      next = input(pickOne(FUZZ_RESPS));
      const o = await raw(f.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 1500);
      if (!wellFormed(o) || (next.valid && !/^HTTP\/1\.1 [12]\d\d /.test(o)))
        bad.push(JSON.stringify([next, o.slice(0, 160)]));
      await Promise.race([closed, sleep(2000)]);
    }
    expect(bad).toEqual([]);
    list[0] = be(h.port);
    expect((await get(f.port, { agent: new Agent() })).status).toBe(200);
    await until(() => f.http.native!.counts.clients === 0);
    expect(f.http.native!.counts.clients).toBe(0);
    expect(f.http.stats.activeConnections).toBe(0);
    expect(f.lb.active.size).toBe(0);
    await f.close();
    await h.close();
    await b.close();
  }

  it(
    'fuzz: 1,200 mutated requests and 400 mutated responses — every answer well-formed or a close, nothing left behind, others still served',
    async () => {
      await fuzzReverse(0x9e3779b9, 1200 * FUZZ_SCALE, 400 * FUZZ_SCALE, false);
    },
    120_000 * FUZZ_SCALE,
  );

  it(
    'fuzz, split delivery: 800 requests and 300 responses written in pieces (a quarter valid: answered) — every answer well-formed or a close, nothing left behind',
    async () => {
      await fuzzReverse(0x6c8e9cf5, 800 * FUZZ_SCALE, 300 * FUZZ_SCALE, true);
    },
    120_000 * FUZZ_SCALE,
  );

  it(
    "fuzz seeded with the smuggling cases and llhttp's corpus, both engines: answers well-formed or a close, nothing a strict backend refuses but an unknown method or an unfinished message, nothing left behind",
    async () => {
      const { rnd, pickOne, mutate } = fuzzer(fuzzSeed(0x1b873593));
      const seeds = [...SMUGGLING.map((c) => c.req), ...LLHTTP.cases.map((c) => c.input)];
      const backend = await RecordingBackend.start();
      // a failed assertion must not leave the backend or the proxy open (Jest would wait on them)
      try {
        for (const engine of ['native', 'js'] as const) {
          const f = await front(() => [be(backend.port)], {
            engine,
            headTimeoutMs: 300,
            keepAliveTimeoutMs: 300,
            responseTimeoutMs: 300,
          });
          try {
            const inputs = Array.from({ length: 400 * FUZZ_SCALE }, () => {
              const x = pickOne(seeds);
              return rnd(5) === 0 ? [x] : [mutate(x)];
            });
            const bad = await sendAll(f.port, inputs, 1000);
            expect([engine, bad]).toEqual([engine, []]);
            // what a strict backend (node:http) refused of what we forwarded: only methods it does not
            // know (valid extension methods: any token, RFC 9110 §9.1) and messages we cut short (a
            // bad body after its head)
            const TCHAR = "[!#$%&'*+.^_`|~0-9A-Za-z-]";
            // where the backend's parser stopped: on a request line whose method it does not know
            const unknownMethod = (x: { before: string; after: string }): boolean => {
              const line = new RegExp(`(${TCHAR}+) \\S+ HTTP\\/1\\.[01]\\r\\n`, 'g');
              for (const m of (x.before + x.after).matchAll(line)) {
                const at = x.before.length;
                if (m.index <= at && at <= m.index + m[0].length) return !METHODS.includes(m[1]);
              }
              return false;
            };
            // a raw byte over 0x7f in a target: strict llhttp refuses it, nginx and haproxy forward it
            // (the differential test holds that), as we do
            const rawTarget = (bytes: string): boolean => / \S*[\x80-\xff]\S* HTTP\/1\.[01]\r$/m.test(bytes);
            const refused = backend
              .take()
              .failed.filter(
                (x) =>
                  x.code !== 'HPE_INVALID_EOF_STATE' &&
                  !(['HPE_INVALID_METHOD', 'HPE_INVALID_CONSTANT'].includes(x.code) && unknownMethod(x)) &&
                  !(x.code === 'HPE_INVALID_URL' && rawTarget(x.bytes)),
              );
            expect([engine, refused]).toEqual([engine, []]);
            await until(
              () => (f.http.native?.counts.clients ?? 0) === 0 && f.http.stats.activeConnections === 0,
            );
            expect(f.http.stats.activeConnections).toBe(0);
            expect(f.lb.active.size).toBe(0);
          } finally {
            await f.close();
          }
        }
      } finally {
        await backend.close();
      }
    },
    120_000 * FUZZ_SCALE,
  );

  it(
    'fuzz, forward mode (the explicit proxy): 600 mutated absolute-form requests — every answer well-formed or a close, nothing left behind',
    async () => {
      const { pickOne, mutate } = fuzzer(fuzzSeed(0x2545f491));
      const h = await httpBackend('ok');
      const lb = new LoadBalancer(new RoundRobin());
      const pool = new UpstreamPool();
      const http = new HttpProxy(lb, pool, {
        engine: 'native',
        headTimeoutMs: 300,
        keepAliveTimeoutMs: 300,
        responseTimeoutMs: 300,
      });
      const tcp = new TcpProxy(lb, { idleTimeoutMs: 300 });
      const fp = new ForwardProxy(
        http,
        tcp,
        (host, port) =>
          host === 'svc' && (port === 80 || port === 8080)
            ? { scope: 'svc', backends: [be(h.port)] }
            : undefined,
        { headTimeoutMs: 300 }, // as the engine's: an incomplete head ends within the test's 1 s
      );
      const { port } = await fp.listen('127.0.0.1', 0);
      const REQS = [
        'GET http://svc/ HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n',
        'GET http://svc:8080?q=1 HTTP/1.1\r\nHost: svc\r\n\r\nGET http://nope/ HTTP/1.1\r\nHost: nope\r\nConnection: close\r\n\r\n',
        'POST http://SVC:80/p HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello',
        'GET http://u@svc/1 HTTP/1.1\r\nHost: svc\r\n\r\nGET /2 HTTP/1.1\r\nHost: svc:8080\r\nConnection: close\r\n\r\n',
        'GET http://[::1]:80/ HTTP/1.0\r\n\r\n',
      ];
      const bad = await sendAll(
        port,
        Array.from({ length: 600 * FUZZ_SCALE }, () => [mutate(pickOne(REQS))]),
        1000,
      );
      expect(bad).toEqual([]);
      expect(http.stats.nativeConnections).toBe(600 * FUZZ_SCALE); // every connection went to the engine first
      const ok = await raw(port, REQS[0], 2000);
      expect(ok).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*"id":"ok"/);
      await until(() => http.native!.counts.clients === 0 && http.stats.activeConnections === 0);
      expect(http.native!.counts.clients).toBe(0);
      expect(http.stats.activeConnections).toBe(0);
      expect(lb.active.size).toBe(0);
      fp.close();
      http.close();
      pool.close();
      await h.close();
    },
    60_000 * FUZZ_SCALE,
  );

  it('a head of 15 KiB passes; one past maxHeadBytes gets 431 (JavaScript answers what the engine hands back)', async () => {
    const h = await httpBackend('ok');
    const f = await front(() => [be(h.port)]);
    const ok = await get(f.port, { agent: new Agent(), headers: { 'X-Big': 'a'.repeat(15 * 1024) } });
    expect(ok.status).toBe(200);
    expect((JSON.parse(ok.body).headers as Record<string, string>)['x-big'].length).toBe(15 * 1024);
    const big = await raw(f.port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    await f.close();
    await h.close();
  });
});
