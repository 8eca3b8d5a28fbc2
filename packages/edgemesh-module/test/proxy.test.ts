import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { request as httpRequest, Agent } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { httpBackend, tcpEcho, udpEcho } from './backends';
import { pod, service, startMesh, tmpDir, until, type MeshNode } from './helpers';

const run = promisify(execFile);
const agent = new Agent({ keepAlive: true, maxSockets: 8 });

function get(
  port: number,
  path = '/',
  headers: Record<string, string> = {},
  via: Agent = agent,
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers, agent: via }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Raw bytes in, everything the proxy sends back until it closes or `ms` passes. */
async function raw(port: number, data: string | Buffer, ms = 1500): Promise<string> {
  return (await rawExchange(port, data, ms)).out;
}

/** As `raw`, and whether the proxy closed the connection (rather than `ms` running out). */
function rawExchange(
  port: number,
  data: string | Buffer,
  ms: number,
): Promise<{ out: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(data));
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    const t = setTimeout(() => (s.destroy(), resolve({ out, closed: false })), ms);
    s.on('end', () => (clearTimeout(t), resolve({ out, closed: true })));
    s.on('close', () => (clearTimeout(t), resolve({ out, closed: false })));
    s.on('error', () => undefined);
  });
}

/** MD5 of `count` times `chunk`, and of as many zero bytes (computed once, for both engines). */
let bigDigests: { want: string; wantZeros: string } | undefined;
function digests(chunk: Buffer, count: number): { want: string; wantZeros: string } {
  const h = createHash('md5');
  const zeros = createHash('md5');
  const z = Buffer.alloc(chunk.length);
  for (let i = 0; i < count; i++) {
    h.update(chunk);
    zeros.update(z);
  }
  return { want: h.digest('hex'), wantZeros: zeros.digest('hex') };
}

/** `count` times `chunk` into `w` with back-pressure (waits for 'drain'), then end it. */
function writeChunks(w: Writable, chunk: Buffer, count: number): void {
  let left = count;
  const pump = (): void => {
    while (left > 0) {
      left--;
      if (!w.write(chunk)) return void w.once('drain', pump);
    }
    w.end();
  };
  pump();
}

// Every test runs against both L7 engines: the native one (the default where the addon is built)
// and the JavaScript one (its fallback, and what serves what the native one hands back).
describe.each(['native', 'js'] as const)(
  'EdgeMesh proxy, L7 engine %s (real sockets, node backends, curl)',
  (engine) => {
    let d: ReturnType<typeof tmpDir>;
    let n: MeshNode;
    const backends: Awaited<ReturnType<typeof httpBackend>>[] = [];
    const portal = (svc: string, port = 12345, proto = 'TCP'): number =>
      n.mesh.portals.get(`default/${svc}:${port}/${proto}`)!.listenPort;

    beforeAll(async () => {
      d = tmpDir();
      n = await startMesh(d.db, {
        httpEngine: engine,
        proxy: { responseTimeoutMs: 800, headTimeoutMs: 400, ejectBaseMs: 5000 },
      });
      for (const id of ['b1', 'b2', 'b3']) backends.push(await httpBackend(id));
      await n.put(service('web'));
      for (let i = 0; i < 3; i++) await n.putPod(pod(`web-${i}`, 'web', backends[i].port));
    });
    afterAll(async () => {
      await n.stop();
      for (const b of backends) await b.close();
      d.cleanup();
    });

    it('builds one portal per service port, L7 for http-N names', () => {
      const e = n.mesh.portals.get('default/web:12345/TCP')!;
      expect(e).toMatchObject({
        protocol: 'http',
        vip: n.mesh.vipOf('default/web'),
        listenHost: '127.0.0.1',
      });
      expect(e.listenPort).toBeGreaterThan(0);
    });

    it('L7 portal connections are served by the chosen engine', async () => {
      const before = n.mesh.http.stats.nativeConnections;
      expect((await get(portal('web'), '/', {}, new Agent())).status).toBe(200);
      const native = n.mesh.http.stats.nativeConnections - before;
      expect(native).toBe(engine === 'native' ? 1 : 0);
      expect(!!n.mesh.http.native).toBe(engine === 'native');
    });

    it('RoundRobin: per-request balancing spreads evenly, over keep-alive connections', async () => {
      const seen: Record<string, number> = {};
      for (let i = 0; i < 30; i++) {
        const r = await get(portal('web'));
        expect(r.status).toBe(200);
        const id = JSON.parse(r.body).id;
        seen[id] = (seen[id] ?? 0) + 1;
      }
      expect(seen).toEqual({ b1: 10, b2: 10, b3: 10 });
    });

    it('curl through the explicit proxy by service name (unprivileged mode)', async () => {
      const proxy = n.mesh.forwardProxyAddress!;
      const { stdout } = await run('curl', [
        '-s',
        '-x',
        `http://${proxy}`,
        'http://web.default.svc.cluster.local:12345/hello?x=1',
      ]);
      const body = JSON.parse(stdout);
      expect(body.url).toBe('/hello?x=1');
      expect(body.headers.host).toBe('web.default.svc.cluster.local:12345');
      const vip = n.mesh.vipOf('default/web');
      expect(
        JSON.parse((await run('curl', ['-s', '-x', `http://${proxy}`, `http://${vip}:12345/`])).stdout)
          .method,
      ).toBe('GET');
      const unknown = await run('curl', [
        '-s',
        '-w',
        '%{http_code}',
        '-x',
        `http://${proxy}`,
        'http://nope.default.svc.cluster.local:12345/',
      ]);
      expect(unknown.stdout).toMatch(
        /502 Bad Gateway: unknown service nope\.default\.svc\.cluster\.local:12345/,
      );
      expect(unknown.stdout.endsWith('502')).toBe(true);
    });

    it('explicit proxy: one keep-alive connection, each request routed by its own authority', async () => {
      const api = await httpBackend('a1');
      await n.put(
        service('api', 'default', { ports: [{ name: 'http', port: 8080, protocol: 'TCP', targetPort: 80 }] }),
      );
      await n.putPod(pod('api-0', 'api', api.port));
      const port = Number(n.mesh.forwardProxyAddress!.split(':')[1]);
      const before = n.mesh.http.stats.nativeConnections;
      const req = (target: string, host: string, extra = ''): string =>
        `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
      const out = await raw(
        port,
        req('http://web.default.svc.cluster.local:12345/a?x=1', 'web.default.svc.cluster.local:12345') +
          req('http://api.default.svc.cluster.local:8080?q=2', 'api.default.svc.cluster.local:8080') +
          req('http://nope.default.svc.cluster.local:1/', 'nope.default.svc.cluster.local:1') +
          req('http://API.default.svc.cluster.local:8080/last', 'api', 'Connection: close\r\n'),
        3000,
      );
      const parts = out.split(/(?=HTTP\/1\.1 )/);
      expect(parts).toHaveLength(4);
      expect(parts[0]).toMatch(/^HTTP\/1\.1 200 /);
      expect(parts[0]).toMatch(/"id":"b\d","method":"GET","url":"\/a\?x=1"/);
      expect(parts[1]).toMatch(/"id":"a1","method":"GET","url":"\/\?q=2"/);
      expect(parts[2]).toMatch(/^HTTP\/1\.1 502 /);
      expect(parts[2]).toMatch(/unknown service nope\.default\.svc\.cluster\.local:1 /);
      expect(parts[3]).toMatch(/"id":"a1","method":"GET","url":"\/last"/);
      // the Host sent upstream is the target's authority, not the client's field (RFC 9112 §3.2.2)
      expect(parts[3]).toMatch(/"host":"API\.default\.svc\.cluster\.local:8080"/);
      expect(n.mesh.http.stats.nativeConnections - before).toBe(engine === 'native' ? 1 : 0);
      // origin-form on the same connection (the native engine hands the connection back to
      // JavaScript, which routes by Host from there), then absolute-form again
      const mixed = await raw(
        port,
        req('http://user:pw@web.default.svc.cluster.local:12345/1', 'web') +
          req('/2', 'api.default.svc.cluster.local:8080') +
          req('http://api.default.svc.cluster.local:8080/3', 'api', 'Connection: close\r\n'),
        3000,
      );
      const m = mixed.split(/(?=HTTP\/1\.1 )/);
      expect(m).toHaveLength(3);
      expect(m[0]).toMatch(/"id":"b\d","method":"GET","url":"\/1"/);
      expect(m[0]).toMatch(/"host":"web\.default\.svc\.cluster\.local:12345"/); // userinfo dropped
      expect(m[1]).toMatch(/"host":"api\.default\.svc\.cluster\.local:8080"/); // origin-form: as sent
      expect(m[1]).toMatch(/"id":"a1","method":"GET","url":"\/2"/);
      expect(m[2]).toMatch(/"id":"a1","method":"GET","url":"\/3"/);
      await n.delPod('default', 'api-0');
      await n.del('default', 'api');
      await api.close();
    });

    it('explicit proxy: a client that closes inside its first request head gets a 400, not a silent close', async () => {
      const port = Number(n.mesh.forwardProxyAddress!.split(':')[1]);
      const out = await new Promise<string>((resolve) => {
        const s = connect(port, '127.0.0.1', () =>
          s.end('GET http://web.default.svc.cluster.local:12345/ HTTP/1.1\r\nHo'),
        );
        let b = '';
        s.on('data', (d) => (b += d));
        s.on('close', () => resolve(b));
      });
      expect(out).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
      expect(out).toMatch(/connection closed inside the request head/);
    });

    it('hop-by-hop headers stripped (RFC 9110 §7.6.1), X-Forwarded-For appended', async () => {
      const r = await get(portal('web'), '/', {
        Connection: 'keep-alive, X-Secret',
        'X-Secret': 'hop',
        'Keep-Alive': 'timeout=5',
        'Proxy-Connection': 'x',
        TE: 'trailers',
        'X-Forwarded-For': '203.0.113.9',
        'X-Keep': 'yes',
      });
      const h = JSON.parse(r.body).headers;
      expect(h['x-secret']).toBeUndefined();
      expect(h['keep-alive']).toBeUndefined();
      expect(h['proxy-connection']).toBeUndefined();
      expect(h.te).toBeUndefined();
      expect(h['x-keep']).toBe('yes');
      expect(h['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    });

    it('header bytes beyond ASCII (obs-text, e.g. UTF-8) pass through unchanged, both ways', async () => {
      // a raw backend: answers with the request head's bytes (hex) and a non-ASCII header of its own
      const seen: Buffer[] = [];
      const be = createServer((s) => {
        let buf = Buffer.alloc(0);
        s.on('data', (d) => {
          buf = Buffer.concat([buf, d]);
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          seen.push(buf.subarray(0, end));
          const body = Buffer.from('ok');
          s.end(
            Buffer.concat([
              Buffer.from('HTTP/1.1 200 OK\r\nX-Reply: '),
              Buffer.from('caf\u00e9 \u00fc', 'utf8'),
              Buffer.from(`\r\nContent-Length: ${body.length}\r\n\r\n`),
              body,
            ]),
          );
        });
      });
      await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
      const port = await exposeHttp('rawhead', 8090, (be.address() as { port: number }).port);
      const reply = await new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        const c = connect(port, '127.0.0.1', () =>
          c.write(
            Buffer.concat([
              Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nX-Name: '),
              Buffer.from('Jos\u00e9 \u2603', 'utf8'),
              Buffer.from('\r\nConnection: close\r\n\r\n'),
            ]),
          ),
        );
        c.on('data', (d) => chunks.push(d));
        c.on('close', () => resolve(Buffer.concat(chunks)));
      });
      be.close();
      expect(seen[0].includes(Buffer.from('X-Name: Jos\u00e9 \u2603', 'utf8'))).toBe(true);
      expect(reply.includes(Buffer.from('X-Reply: caf\u00e9 \u00fc', 'utf8'))).toBe(true);
    });

    it('chunked request body and Expect: 100-continue with curl', async () => {
      const { stdout } = await run('curl', [
        '-s',
        '-H',
        'Transfer-Encoding: chunked',
        '-H',
        'Expect: 100-continue',
        '--data-binary',
        'x'.repeat(5000),
        `http://127.0.0.1:${portal('web')}/up`,
      ]);
      expect(JSON.parse(stdout)).toMatchObject({ method: 'POST', bodyBytes: 5000 });
    });

    it('an HTTP/1.0 client never gets a chunked answer (the request goes upstream as HTTP/1.0)', async () => {
      // a backend that streams without a length: chunked to HTTP/1.1, close-delimited to HTTP/1.0
      const streamer = await httpBackend('stream', (req, res) => {
        res.write(`${req.httpVersion} `);
        res.end('streamed');
        return true;
      });
      const port = await exposeHttp('streamer', 8091, streamer.port);
      const out = await raw(port, 'GET / HTTP/1.0\r\nHost: x\r\n\r\n');
      expect(out).not.toMatch(/Transfer-Encoding/i);
      expect(out).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*Connection: close\r\n\r\n1\.0 streamed$/);
      const out11 = await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      expect(out11).toMatch(
        /Transfer-Encoding: chunked\r\n[^]*\r\n\r\n4\r\n1\.1 \r\n8\r\nstreamed\r\n0\r\n\r\n$/,
      );
      await streamer.close();
    });

    it('interim responses go out with our status line and without hop-by-hop fields, and never to an HTTP/1.0 client', async () => {
      // a backend that answers with a 103 written as some servers do (no reason phrase, no space
      // after the code, hop-by-hop fields), then the final answer
      const be = createServer((s) => {
        s.on('error', () => undefined);
        let buf = '';
        s.on('data', (d) => {
          buf += d.toString('latin1');
          if (!buf.includes('\r\n\r\n')) return;
          buf = '';
          s.write(
            'HTTP/1.1 103\r\nLink: </s.css>; rel=preload\r\nConnection: X-Hint\r\nX-Hint: 1\r\nKeep-Alive: timeout=5\r\n\r\n' +
              'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
          );
        });
      });
      await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
      const port = await exposeHttp('hints', 8092, (be.address() as { port: number }).port);
      const out11 = await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      expect(out11).toMatch(
        /^HTTP\/1\.1 103 \r\nLink: <\/s\.css>; rel=preload\r\n\r\nHTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/,
      );
      // RFC 9110 §15.2: a 1xx is never sent to an HTTP/1.0 client
      const out10 = await raw(port, 'GET / HTTP/1.0\r\nHost: x\r\n\r\n');
      expect(out10).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/);
      be.close();
    });

    it('pipelined requests are answered in order', async () => {
      const p = portal('web');
      const reqs = ['/a', '/b', '/c'].map((u) => `GET ${u} HTTP/1.1\r\nHost: x\r\n\r\n`).join('');
      const out = await raw(p, reqs + 'GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 3000);
      const urls = [...out.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1]);
      expect(urls).toEqual(['/a', '/b', '/c', '/d']);
    });

    it('a client that half-closes after its requests (shutdown(SHUT_WR), as `nc -N` does) still gets every answer, then the close', async () => {
      const out = await new Promise<{ out: string; closed: boolean }>((resolve) => {
        const s = connect(portal('web'), '127.0.0.1', () =>
          s.end('GET /h1 HTTP/1.1\r\nHost: x\r\n\r\nGET /h2 HTTP/1.1\r\nHost: x\r\n\r\n'),
        );
        let got = '';
        s.on('data', (d) => (got += d));
        const t = setTimeout(() => (s.destroy(), resolve({ out: got, closed: false })), 3000);
        s.on('close', () => (clearTimeout(t), resolve({ out: got, closed: true })));
        s.on('error', () => undefined);
      });
      expect([...out.out.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1])).toEqual(['/h1', '/h2']);
      expect(out.closed).toBe(true); // closed by the proxy once both were answered
    });

    it.each([
      ['malformed request line', 'GARBAGE\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['bad header', 'GET / HTTP/1.1\r\nBad Header: x\r\n\r\n', /^HTTP\/1\.1 400 /],
      [
        'CL + TE (smuggling)',
        'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
        /^HTTP\/1\.1 400 /,
      ],
      [
        'a request transfer coding other than chunked alone (RFC 9112 §6.1, as nginx)',
        'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
        /^HTTP\/1\.1 501 Not Implemented\r\n[^]*request Transfer-Encoding "gzip, chunked" not implemented/,
      ],
      [
        'chunked applied twice',
        'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
        /^HTTP\/1\.1 501 /,
      ],
      ['oversized head', `GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
      ['HTTP/1.1 without Host (RFC 9112 §3.2)', 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['slow client (head never completes)', 'GET / HTTP/1.1\r\nHost: x\r\n', /^HTTP\/1\.1 408 /],
    ])('%s → error status and the connection closes; others unaffected', async (_n, data, re) => {
      const out = await raw(portal('web'), data, 3000);
      expect(out).toMatch(re);
      expect(out).toMatch(/Connection: close/);
      expect((await get(portal('web'))).status).toBe(200);
    });

    it('a backend refusing connections is ejected and the request retried: no failed idempotent request', async () => {
      const victim = backends[1];
      const statuses: number[] = [];
      const load = (async () => {
        for (let i = 0; i < 120; i++) statuses.push((await get(portal('web'))).status);
      })();
      await until(() => statuses.length >= 10, 'the load to be under way');
      await victim.close(); // killed mid-load
      await load;
      expect(statuses.every((s) => s === 200)).toBe(true);
      expect(n.mesh.lb.stats.ejections).toBeGreaterThanOrEqual(1);
      expect(n.mesh.lb.isEjected(`127.0.0.1:${victim.port}`)).toBe(true);
      backends[1] = await httpBackend('b2-new');
      await n.putPod(pod('web-1', 'web', backends[1].port)); // the pod moved: next request sees it
      const ids = new Set<string>();
      for (let i = 0; i < 9; i++) ids.add(JSON.parse((await get(portal('web'))).body).id);
      expect(ids).toEqual(new Set(['b1', 'b2-new', 'b3']));
    });

    it('no backend → 503; every backend refusing → 502; upstream silent → 504', async () => {
      await n.put(service('empty', 'default', { selector: { app: 'nothing' } }));
      expect((await get(portal('empty'))).status).toBe(503);
      await n.put(service('dead', 'default', { selector: { app: 'dead' } }));
      await n.putPod(pod('dead-0', 'dead', 1)); // port 1: refused
      const r = await get(portal('dead'));
      expect(r.status).toBe(502);
      expect(r.body).toMatch(/ECONNREFUSED/);
      const silent = await httpBackend('silent', () => true); // never answers
      await n.put(service('slow', 'default', { selector: { app: 'slow' } }));
      await n.putPod(pod('slow-0', 'slow', silent.port));
      const t = await get(portal('slow'));
      expect(t.status).toBe(504);
      await silent.close();
    });

    it('an upstream response framed in a way we do not forward → 502 at once, naming it; the backend is not ejected', async () => {
      // as nginx: TE with CL (RFC 9112 §6.3), a coding other than chunked alone (the field is
      // hop-by-hop and we cannot undo gzip), differing Content-Lengths, a negative one
      const canned: Record<string, string> = {
        '/clte': 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
        '/gzip': 'Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
        '/2cl': 'Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
        '/neg': 'Content-Length: -1\r\n\r\nabc',
        '/ok': 'Content-Length: 2\r\n\r\nok',
      };
      const conns = new Set<Socket>();
      const bad = createServer((s) => {
        conns.add(s);
        let buf = '';
        s.on('data', (d) => {
          buf += d;
          for (let i = buf.indexOf('\r\n\r\n'); i >= 0; i = buf.indexOf('\r\n\r\n')) {
            const path = buf.split(' ')[1];
            buf = buf.slice(i + 4);
            s.write(`HTTP/1.1 200 OK\r\n${canned[path] ?? canned['/ok']}`);
          }
        });
        s.on('error', () => undefined);
      });
      await new Promise<void>((r) => bad.listen(0, '127.0.0.1', () => r()));
      const port = (bad.address() as import('node:net').AddressInfo).port;
      await n.put(service('badframe', 'default', { selector: { app: 'badframe' } }));
      await n.putPod(pod('badframe-0', 'badframe', port));
      for (const path of ['/clte', '/gzip', '/2cl', '/neg']) {
        const r = await get(portal('badframe'), path, {}, new Agent());
        expect(r.status).toBe(502);
        expect(r.body).toBe(`502 Bad Gateway: upstream 127.0.0.1:${port} sent a malformed response head\n`);
        expect(n.mesh.lb.isEjected(`127.0.0.1:${port}`)).toBe(false);
      }
      expect(await get(portal('badframe'), '/ok')).toMatchObject({ status: 200, body: 'ok' });
      for (const s of conns) s.destroy(); // the proxy pools its connection to /ok
      await new Promise<void>((r) => bad.close(() => r()));
    });

    it('absolute-form on a portal goes upstream in origin-form with the target as Host; OPTIONS * stays *', async () => {
      const out = await raw(
        portal('web'),
        'GET http://other.example:8080/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n' +
          'GET http://u@other.example?only HTTP/1.1\r\nHost: x\r\n\r\n' +
          'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        3000,
      );
      const seen = [...out.matchAll(/\{"id":[^\n]*?"url":"([^"]*)"[^\n]*?"host":"([^"]*)"/g)].map(
        (m) => `${m[1]} ${m[2]}`,
      );
      expect(seen).toEqual(['/abs?q=1 other.example:8080', '/?only other.example', '* x']);
    });

    it('error answers honour the client: its Connection: close is said and done; a body stalled mid-way still gets the 504', async () => {
      await n.put(service('refuses', 'default', { selector: { app: 'refuses' } }));
      await n.putPod(pod('refuses-0', 'refuses', 1)); // port 1: refused
      const refused = await rawExchange(
        portal('refuses'),
        'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        3000,
      );
      expect(refused.out).toMatch(/^HTTP\/1\.1 502 [^]*Connection: close\r\n\r\n502 Bad Gateway: /);
      expect(refused.closed).toBe(true); // closed by the proxy, not left to an idle timeout
      // the upstream never answers and the client sends 10 of 100 body bytes: 504 all the same
      const silent = await httpBackend('silent2', () => true);
      await n.put(service('stall', 'default', { selector: { app: 'stall' } }));
      await n.putPod(pod('stall-0', 'stall', silent.port));
      const stalled = await raw(
        portal('stall'),
        'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789',
        3000,
      );
      expect(stalled).toMatch(/^HTTP\/1\.1 504 Gateway Timeout\r\n[^]*Connection: close/);
      await silent.close();
    });

    it('a request body that keeps flowing longer than the response timeout (800 ms) is not cut off', async () => {
      // nginx's proxy_read_timeout starts once the request is sent; ours counts from the last
      // request bytes the upstream took. The stalled body above still gets its 504.
      await n.put(service('slowup', 'default', { selector: { app: 'slowup' } }));
      const echo = await httpBackend('slowup');
      backends.push(echo);
      await n.putPod(pod('slowup-0', 'slowup', echo.port));
      const body = await new Promise<string>((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port: portal('slowup'),
            path: '/',
            method: 'POST',
            headers: { 'content-length': '10' },
          },
          (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve(`${res.statusCode} ${b}`));
          },
        );
        req.on('error', reject);
        let i = 0;
        const tick = setInterval(() => {
          req.write(String(i % 10)); // 10 bytes over ~2 s
          if (++i < 10) return;
          clearInterval(tick);
          req.end();
        }, 200);
      });
      expect(body).toMatch(/^200 /);
      expect(JSON.parse(body.slice(4))).toMatchObject({ method: 'POST', bodyBytes: 10 });
    });

    it('a response body that stalls — the upstream sends nothing more, or the client reads nothing — is closed after the response timeout', async () => {
      // nginx: proxy_read_timeout between two reads from the upstream, send_timeout between two
      // writes to the client (both 60 s there; proxy.responseTimeoutMs here, 800 ms in this suite)
      const stalls = await httpBackend('stalls', (req, res) => {
        if (req.url === '/half') {
          res.writeHead(200, { 'content-length': '100' });
          res.write('0123456789'); // and nothing more
          return true;
        }
        res.writeHead(200, { 'content-length': String(64 << 20) });
        writeChunks(res, Buffer.alloc(64 * 1024, 5), 1024); // 64 MiB, as fast as it is taken
        return true;
      });
      backends.push(stalls);
      await n.put(service('stalls', 'default', { selector: { app: 'stalls' } }));
      await n.putPod(pod('stalls-0', 'stalls', stalls.port));
      const half = await rawExchange(portal('stalls'), 'GET /half HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
      expect(half.out).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n0123456789$/);
      expect(half.closed).toBe(true); // by the proxy, well before the 5 s here
      // a client that stops reading: after the timeout the proxy gives up on it
      const got = await new Promise<{ bytes: number; ended: boolean }>((resolve) => {
        const s = connect(portal('stalls'), '127.0.0.1', () =>
          s.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n'),
        );
        let bytes = 0;
        s.on('data', (d) => (bytes += d.length));
        s.pause();
        setTimeout(() => s.resume(), 2500);
        const t = setTimeout(() => (s.destroy(), resolve({ bytes, ended: false })), 15_000);
        s.on('close', () => (clearTimeout(t), resolve({ bytes, ended: true })));
        s.on('error', () => undefined);
      });
      expect(got.ended).toBe(true);
      expect(got.bytes).toBeGreaterThan(0);
      expect(got.bytes).toBeLessThan(64 << 20); // cut short, not the whole body
    }, 30_000);

    it('streams a 1 GiB download and a 1 GiB chunked upload (curl) unchanged, with bounded memory', async () => {
      const GiB = 1024 * 1024 * 1024;
      // 64 KiB of a pattern that is not periodic within a chunk: a byte dropped, doubled or
      // reordered anywhere changes the digest
      const chunk = Buffer.alloc(64 * 1024);
      for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + (i >> 8)) % 251;
      const count = GiB / chunk.length;
      let upload = { bytes: 0, md5: '' };
      const big = await httpBackend('big', (req, res) => {
        if (req.method === 'GET') {
          res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked
          writeChunks(res, chunk, count);
          return true;
        }
        const h = createHash('md5');
        let bytes = 0;
        req.on('data', (d: Buffer) => ((bytes += d.length), h.update(d)));
        req.on('end', () => {
          upload = { bytes, md5: h.digest('hex') };
          res.end('ok');
        });
        return true;
      });
      await n.put(service('big', 'default', { selector: { app: 'big' } }));
      await n.putPod(pod('big-0', 'big', big.port));
      const url = `http://127.0.0.1:${portal('big')}/`;
      const { want, wantZeros } = (bigDigests ??= digests(chunk, count));
      global.gc?.();
      const rss0 = process.memoryUsage().rss;
      let peak = rss0;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
      // the client is curl, in its own process: this process holds the proxy and the backend only
      const down = await run('sh', ['-c', `curl -sS --fail "${url}" | md5sum`], { timeout: 100_000 });
      const up = await run(
        'sh',
        ['-c', `head -c ${GiB} /dev/zero | curl -sS --fail -T - -w ' %{http_code}' "${url}up"`],
        { timeout: 100_000 },
      );
      clearInterval(sampler);
      expect(down.stdout.split(' ')[0]).toBe(want);
      expect(up.stdout).toBe('ok 200');
      expect(upload).toEqual({ bytes: GiB, md5: wantZeros });
      // Bodies flow through; the proxy holds at most a few socket buffers at a time.
      expect(peak - rss0).toBeLessThan(160 * 1024 * 1024);
      await big.close();
    }, 240_000);

    /** A service `name` with an http-0 port, one pod on `backendPort`; returns its portal's port. */
    async function exposeHttp(name: string, port: number, backendPort: number): Promise<number> {
      await n.put(
        service(name, 'default', {
          selector: { app: name },
          ports: [{ name: 'http-0', port, protocol: 'TCP', targetPort: 80 }],
        }),
      );
      await n.putPod(pod(`${name}-0`, name, backendPort));
      return n.mesh.portals.get(`default/${name}:${port}/TCP`)!.listenPort;
    }

    it('Upgrade (WebSocket handshake) becomes an L4 pipe to one backend: echo works', async () => {
      const ws = await httpBackend('ws');
      ws.server.on('upgrade', (req, sock: Socket) => {
        sock.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: ws\r\n\r\n`,
        );
        sock.on('data', (d) => sock.write(Buffer.concat([Buffer.from('echo:'), d])));
        sock.on('end', () => sock.end()); // http sockets are half-open capable: close our side too
      });
      const p = await exposeHttp('ws', 8080, ws.port);
      const out = await new Promise<string>((resolve) => {
        const s = connect(p, '127.0.0.1', () =>
          s.write(
            'GET /chat HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
          ),
        );
        let buf = '';
        s.on('data', (d) => {
          buf += d;
          if (buf.includes('\r\n\r\n') && !buf.includes('echo:')) s.write('ping-frame');
          if (buf.includes('echo:ping-frame')) {
            s.destroy();
            resolve(buf);
          }
        });
      });
      expect(out).toMatch(/^HTTP\/1\.1 101 Switching Protocols/);
      expect(out).toContain('echo:ping-frame');
      await ws.close();
    });

    it('Upgrade with bytes right behind both heads (client frame, server greeting): none lost, through the splice engine on Linux', async () => {
      const ws = await httpBackend('ws2');
      ws.server.on('upgrade', (req, sock: Socket, head: Buffer) => {
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\ngreeting;`);
        let got = head.toString();
        const answer = (): void => void (got.includes('first;') && sock.write(`saw:${got}`));
        answer();
        sock.on('data', (d) => {
          got += d;
          answer();
        });
        sock.on('end', () => sock.end());
      });
      const p = await exposeHttp('ws2', 8081, ws.port);
      const before = n.mesh.http.stats.splicedTunnels;
      const out = await new Promise<string>((resolve) => {
        const s = connect(p, '127.0.0.1', () =>
          s.write('GET /x HTTP/1.1\r\nHost: ws2\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nfirst;'),
        );
        let buf = '';
        s.on('data', (d) => {
          buf += d;
          if (buf.includes('saw:first;')) {
            s.end();
            setTimeout(() => resolve(buf), 20);
          }
        });
      });
      expect(out).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n[^]*\r\n\r\ngreeting;saw:first;$/);
      if (process.platform === 'linux') expect(n.mesh.http.stats.splicedTunnels).toBe(before + 1);
      await ws.close();
    });

    it('portals come and go with their services; live connections of other services, and of a replaced portal, keep going', async () => {
      const echo = await tcpEcho('k4');
      const be = await httpBackend('churn');
      backends.push(be);
      const keep4 = (ports: { name: string; port: number; targetPort: number }[]) =>
        n.put(
          service('keep4', 'default', {
            selector: { app: 'keep4' },
            ports: ports.map((q) => ({ ...q, protocol: 'TCP' })),
          }),
        );
      await keep4([{ name: 'pg', port: 5432, targetPort: 5432 }]);
      await n.putPod(pod('keep4-0', 'keep4', echo.port, { containerPort: 5432 }));
      const p4 = portal('keep4', 5432);
      // a live L4 stream to keep4
      const l4 = connect(p4, '127.0.0.1');
      let l4got = '';
      l4.on('data', (d) => (l4got += d));
      const echoes = async (m: string): Promise<void> => {
        l4.write(m);
        for (let i = 0; i < 200 && !l4got.includes(m); i++) await new Promise((r) => setTimeout(r, 10));
        expect(l4got).toContain(m);
      };
      // live L7 keep-alive connections, one socket each: to web, and to the portal about to change
      const viaOne = (port: number, a: Agent): Promise<string> =>
        new Promise((resolve, reject) => {
          const req = httpRequest({ host: '127.0.0.1', port, path: '/', agent: a }, (res) => {
            const local = res.socket.localPort;
            res.resume();
            res.on('end', () => resolve(`${res.statusCode} ${local}`));
          });
          req.on('error', reject);
          req.end();
        });
      const webAgent = new Agent({ keepAlive: true, maxSockets: 1 });
      const oldAgent = new Agent({ keepAlive: true, maxSockets: 1 });
      const web = await viaOne(portal('web'), webAgent);
      expect(web).toMatch(/^200 /);
      await n.put(service('churn', 'default', { selector: { app: 'churn' } })); // http-0, port 12345
      await n.putPod(pod('churn-0', 'churn', be.port));
      const oldPortal = portal('churn');
      const old = await viaOne(oldPortal, oldAgent);
      expect(old).toMatch(/^200 /);
      const others = async (): Promise<void> => {
        expect(await viaOne(portal('web'), webAgent)).toBe(web); // the same connection
        expect(portal('keep4', 5432)).toBe(p4);
        await echoes(`m${Math.random()};`);
      };
      await echoes('first;');
      // the port becomes plain TCP: its portal is replaced; the old one's connection goes on
      await n.put(
        service('churn', 'default', {
          selector: { app: 'churn' },
          ports: [{ name: 'raw', port: 12345, protocol: 'TCP', targetPort: 80 }],
        }),
      );
      expect(n.mesh.portals.get('default/churn:12345/TCP')!.protocol).toBe('tcp');
      expect(await viaOne(portal('churn'), new Agent())).toMatch(/^200 /); // HTTP over L4 now
      expect(await viaOne(oldPortal, oldAgent)).toBe(old); // the same connection, still L7
      await others();
      // a UDP port added, then the whole service deleted
      await n.put(
        service('churn', 'default', {
          selector: { app: 'churn' },
          ports: [
            { name: 'raw', port: 12345, protocol: 'TCP', targetPort: 80 },
            { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          ],
        }),
      );
      expect(n.mesh.portals.get('default/churn:53/UDP')).toBeDefined();
      await others();
      await n.del('default', 'churn');
      expect(n.mesh.portals.get('default/churn:12345/TCP')).toBeUndefined();
      expect(n.mesh.portals.get('default/churn:53/UDP')).toBeUndefined();
      await others();
      // keep4 itself gains a port: its first portal stays, with its connection
      await keep4([
        { name: 'pg', port: 5432, targetPort: 5432 },
        { name: 'metrics', port: 9187, targetPort: 5432 },
      ]);
      expect(n.mesh.portals.get('default/keep4:9187/TCP')).toBeDefined();
      await others();
      l4.end();
      webAgent.destroy();
      oldAgent.destroy();
      await echo.close();
    });

    it('L4 TCP: per-connection LB, next backend on refusal, half-close propagated; CONNECT tunnels', async () => {
      const e1 = await tcpEcho('t1');
      await n.put(
        service('db', 'default', {
          selector: { app: 'db' },
          ports: [{ name: 'pg', port: 5432, protocol: 'TCP', targetPort: 5432 }],
        }),
      );
      await n.putPod(pod('db-0', 'db', 1, { containerPort: 5432 })); // refuses
      await n.putPod(pod('db-1', 'db', e1.port, { containerPort: 5432 }));
      const p = n.mesh.portals.get('default/db:5432/TCP')!;
      expect(p.protocol).toBe('tcp');
      for (let i = 0; i < 3; i++) {
        const out = await new Promise<string>((resolve) => {
          const s = connect(p.listenPort, '127.0.0.1', () => s.end('data-then-eof'));
          let b = '';
          s.on('data', (d) => (b += d));
          s.on('close', () => resolve(b));
        });
        // the backend saw our EOF (half-close) and could still answer before closing
        expect(out).toBe('hello t1\ndata-then-eofbye t1\n');
      }
      const tunnel = await new Promise<string>((resolve) => {
        const s = connect(Number(n.mesh.forwardProxyAddress!.split(':')[1]), '127.0.0.1', () =>
          s.write('CONNECT db.default.svc.cluster.local:5432 HTTP/1.1\r\nHost: db\r\n\r\n'),
        );
        let b = '';
        s.on('data', (d) => {
          b += d;
          if (b.includes('hello t1') && !s.writableEnded) s.end('x');
        });
        s.on('close', () => resolve(b));
      });
      expect(tunnel).toMatch(/^HTTP\/1\.1 200 Connection Established\r\n\r\nhello t1\nxbye t1\n$/);
      // CONNECT after a request on the same connection: the native engine hands the connection
      // back and it is tunnelled; the JavaScript engine refuses it (never forwarded as a request)
      const late = await raw(
        Number(n.mesh.forwardProxyAddress!.split(':')[1]),
        'GET http://web.default.svc.cluster.local:12345/ HTTP/1.1\r\nHost: web\r\n\r\n' +
          'CONNECT db.default.svc.cluster.local:5432 HTTP/1.1\r\nHost: db\r\n\r\n',
        1500,
      );
      const [first, second] = late.split(/(?=HTTP\/1\.1 )/);
      expect(first).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(second).toMatch(
        engine === 'native'
          ? /^HTTP\/1\.1 200 Connection Established\r\n\r\nhello t1\n/
          : /^HTTP\/1\.1 400 Bad Request\r\n[^]*CONNECT must open its own connection/,
      );
      await e1.close();
    });

    it('UDP: a session per client, replies come back, sessions expire when idle', async () => {
      const u1 = await udpEcho('u1');
      const u2 = await udpEcho('u2');
      await n.put(
        service('dnsish', 'default', {
          selector: { app: 'dnsish' },
          ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 }],
        }),
      );
      await n.putPod(pod('dnsish-0', 'dnsish', u1.port, { containerPort: 53, protocol: 'UDP' }));
      await n.putPod(pod('dnsish-1', 'dnsish', u2.port, { containerPort: 53, protocol: 'UDP' }));
      const p = n.mesh.portals.get('default/dnsish:53/UDP')!;
      expect(p.protocol).toBe('udp');
      const client = async (): Promise<string[]> => {
        const s = createSocket('udp4');
        const got: string[] = [];
        s.on('message', (m) => got.push(m.toString()));
        await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
        for (const m of ['a', 'b', 'c']) s.send(m, p.listenPort, '127.0.0.1');
        await until(() => got.length >= 3, 'three echoes').catch(() => undefined); // asserted below
        s.close();
        return got;
      };
      const one = await client();
      const two = await client();
      expect(one).toHaveLength(3);
      expect(new Set(one.map((x) => x.split(':')[0])).size).toBe(1); // one session → one backend
      expect(two).toHaveLength(3);
      expect(one[0].split(':')[0]).not.toBe(two[0].split(':')[0]); // round robin across sessions
      u1.close();
      u2.close();
    });
  },
);
