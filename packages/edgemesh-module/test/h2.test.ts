import * as grpc from '@grpc/grpc-js';
import { splitHostPort } from '@edgecore/beehive';
import { execFile } from 'node:child_process';
import { connect, constants, createServer as createH2, type Http2Server } from 'node:http2';
import { connect as tcpConnect, type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import type { Pod } from '../src';
import { hashHeaderFor } from '../src/lb/service-policy';
import { originating } from '../src/proxy/tls/backend-tls';
import { EdgeMeshMetrics } from '../src/metrics';
import { hostPod, service, startMesh, tmpDir, until, type MeshNode } from './helpers';

const execFileP = promisify(execFile);

/**
 * HTTP/2 portals through real clients and servers: @grpc/grpc-js (unary, server, client and bidi
 * streaming), curl --http2-prior-knowledge, h2load, and raw frames for the floods.
 */

const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const def: grpc.ServiceDefinition = {
  Unary: {
    path: '/test.Echo/Unary',
    requestStream: false,
    responseStream: false,
    requestSerialize: raw.serialize,
    requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize,
    responseDeserialize: raw.deserialize,
  },
  ServerStream: {
    path: '/test.Echo/ServerStream',
    requestStream: false,
    responseStream: true,
    requestSerialize: raw.serialize,
    requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize,
    responseDeserialize: raw.deserialize,
  },
  ClientStream: {
    path: '/test.Echo/ClientStream',
    requestStream: true,
    responseStream: false,
    requestSerialize: raw.serialize,
    requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize,
    responseDeserialize: raw.deserialize,
  },
  Bidi: {
    path: '/test.Echo/Bidi',
    requestStream: true,
    responseStream: true,
    requestSerialize: raw.serialize,
    requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize,
    responseDeserialize: raw.deserialize,
  },
};
const Client = grpc.makeGenericClientConstructor(def, 'Echo');
type EchoClient = InstanceType<typeof Client> & Record<string, any>;
const BIG = 16 * 1024 * 1024;
const channelOptions = { 'grpc.max_receive_message_length': BIG, 'grpc.max_send_message_length': BIG };

interface Backend {
  id: string;
  port: number;
  calls: number;
  server: grpc.Server;
}

async function grpcBackend(id: string): Promise<Backend> {
  const b: Backend = { id, port: 0, calls: 0, server: new grpc.Server(channelOptions) };
  b.server.addService(def, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      b.calls++;
      const req = call.request;
      const delay = Number(call.metadata.get('x-delay-ms')[0] ?? 0);
      const answer = () =>
        cb(
          null,
          req.length > 1024
            ? Buffer.concat([Buffer.from(`${id}:`), req])
            : Buffer.from(`${id}:${req.length}`),
        );
      if (delay) setTimeout(answer, delay);
      else answer();
    },
    ServerStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      b.calls++;
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`${id}:${i}`));
      call.end();
    },
    ClientStream: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      b.calls++;
      let bytes = 0;
      let n = 0;
      call.on('data', (d: Buffer) => ((bytes += d.length), n++));
      call.on('end', () => cb(null, Buffer.from(`${id}:${n}:${bytes}`)));
    },
    Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      b.calls++;
      call.on('data', (d: Buffer) => call.write(Buffer.concat([Buffer.from(`${id}:`), d])));
      call.on('end', () => call.end());
    },
  });
  b.port = await new Promise<number>((res, rej) =>
    b.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? rej(e) : res(p),
    ),
  );
  return b;
}

const pod = (name: string, app: string, port: number): Pod => hostPod(name, app, port, 'grpc');

const unary = (c: EchoClient, req: Buffer, opts: grpc.CallOptions = {}, md = new grpc.Metadata()) =>
  new Promise<Buffer>((res, rej) =>
    c.Unary(req, md, opts, (e: grpc.ServiceError | null, r: Buffer) => (e ? rej(e) : res(r))),
  );

const hashOf = (t: { backends: Parameters<typeof hashHeaderFor>[0] } | undefined) =>
  t && hashHeaderFor(t.backends, undefined);

/** Both engines of the portals: the native one (nghttp2, native/h2/) and Node's HTTP/2. */
const ENGINES = ['native', 'js'] as const;
type Engine = (typeof ENGINES)[number];

/** Which engine served the portal's connections: every one the native engine's when it is on. */
function expectEngine(node: MeshNode, engine: Engine): void {
  const h2 = node.mesh.h2;
  if (engine === 'js') return void expect(h2.native).toBeUndefined();
  expect(h2.native?.adopted).toBeGreaterThan(0);
}

describe.each(ENGINES)('HTTP/2 portals: gRPC and h2c balanced per stream (%s engine)', (engine) => {
  let node: MeshNode;
  const backends: Backend[] = [];
  let dir: { db: string; cleanup: () => void };
  const portalOf = (svc: string): string => {
    const e = node.mesh.portals.table().find((x) => x.service === svc);
    if (!e) throw new Error(`no portal of ${svc}`);
    return `${e.listenHost}:${e.listenPort}`;
  };
  const client = (svc: string) =>
    new Client(portalOf(svc), grpc.credentials.createInsecure(), channelOptions) as EchoClient;

  beforeAll(async () => {
    dir = tmpDir('h2-');
    node = await startMesh(dir.db, { h2Engine: engine });
    for (const id of ['a', 'b', 'c']) backends.push(await grpcBackend(id));
    await node.put(
      service('echo', 'default', { ports: [{ name: 'grpc', port: 50051, targetPort: 'grpc' }] }),
    );
    for (const b of backends) await node.putPod(pod(`echo-${b.id}`, 'echo', b.port));
    await until(
      () => node.mesh.resolveTarget('echo.default.svc.cluster.local', 50051)?.backends.length === 3,
      'three backends',
    );
  });
  afterAll(async () => {
    if (node) expectEngine(node, engine);
    await node?.stop();
    for (const b of backends) b.server.forceShutdown();
    dir?.cleanup();
  });

  it('the calls of ONE client channel spread evenly over three backends (per-request balancing)', async () => {
    const c = client('echo');
    const before = backends.map((b) => b.calls);
    const answers: string[] = [];
    for (let i = 0; i < 30; i++)
      answers.push(
        ...(await Promise.all(Array.from({ length: 10 }, () => unary(c, Buffer.from('hi'))))).map((r) =>
          r.toString(),
        ),
      );
    const spread = backends.map((b, i) => b.calls - before[i]);
    console.log(
      `one gRPC channel, 300 unary calls through the HTTP/2 portal: a ${spread[0]}, b ${spread[1]}, c ${spread[2]}`,
    );
    for (const n of spread) expect(Math.abs(n - 100)).toBeLessThanOrEqual(10);
    expect(new Set(answers.map((a) => a.split(':')[1]))).toEqual(new Set(['2']));
    c.close();
  });

  it('a gRPC channel through the explicit proxy (grpc_proxy: CONNECT, then HTTP/2) is balanced per call', async () => {
    const saved = { grpc_proxy: process.env.grpc_proxy, no_grpc_proxy: process.env.no_grpc_proxy };
    process.env.grpc_proxy = `http://${node.mesh.forwardProxyAddress}`;
    delete process.env.no_grpc_proxy;
    let c: EchoClient | undefined;
    try {
      // the service's name: the proxy resolves it, the client never does
      c = new Client(
        'dns:///echo.default.svc.cluster.local:50051',
        grpc.credentials.createInsecure(),
        channelOptions,
      ) as EchoClient;
      const before = backends.map((b) => b.calls);
      for (let i = 0; i < 6; i++)
        await Promise.all(Array.from({ length: 5 }, () => unary(c!, Buffer.from('via proxy'))));
      const spread = backends.map((b, i) => b.calls - before[i]);
      expect(spread.reduce((a, b) => a + b, 0)).toBe(30);
      for (const n of spread) expect(n).toBeGreaterThanOrEqual(5); // all three, over one channel
    } finally {
      c?.close();
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
  });

  it('server, client and bidirectional streaming, and 8 MiB messages both ways', async () => {
    const c = client('echo');
    const got: string[] = [];
    await new Promise<void>((res, rej) => {
      const s = c.ServerStream(Buffer.from('500'));
      s.on('data', (d: Buffer) => got.push(d.toString()));
      s.on('error', rej);
      s.on('end', () => res());
    });
    expect(got).toHaveLength(500);
    expect(new Set(got.map((g) => g.split(':')[0])).size).toBe(1);
    const total = await new Promise<string>((res, rej) => {
      const s = c.ClientStream((e: grpc.ServiceError | null, r: Buffer) => (e ? rej(e) : res(r.toString())));
      for (let i = 0; i < 200; i++) s.write(Buffer.alloc(1000, i));
      s.end();
    });
    expect(total.split(':').slice(1)).toEqual(['200', '200000']);
    const echoed: string[] = [];
    await new Promise<void>((res, rej) => {
      const s = c.Bidi();
      let i = 0;
      s.on('data', (d: Buffer) => {
        echoed.push(d.toString());
        if (++i < 50) s.write(Buffer.from(`m${i}`));
        else s.end();
      });
      s.on('error', rej);
      s.on('end', () => res());
      s.write(Buffer.from('m0'));
    });
    expect(echoed.map((e) => e.split(':')[1])).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
    const big = Buffer.alloc(8 * 1024 * 1024, 7);
    const r = await unary(c, big);
    expect(r.length).toBe(big.length + 2);
    expect(r.subarray(2).equals(big)).toBe(true);
    c.close();
  });

  it('deadline exceeded: a call slower than its deadline ends DEADLINE_EXCEEDED', async () => {
    const c = client('echo');
    const md = new grpc.Metadata();
    md.set('x-delay-ms', '2000');
    const t0 = Date.now();
    const e = await unary(c, Buffer.from('x'), { deadline: Date.now() + 300 }, md).catch((x) => x);
    expect(e.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(1900);
    c.close();
  });

  it('no backend: UNAVAILABLE (a trailers-only gRPC answer), not an HTTP error page', async () => {
    await node.put(
      service('empty', 'default', { ports: [{ name: 'grpc', port: 50052, targetPort: 'grpc' }] }),
    );
    const c = client('empty');
    const e = await unary(c, Buffer.from('x')).catch((x) => x);
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.details).toMatch(/no backend for default\/empty/);
    c.close();
    const registry = new Registry();
    new EdgeMeshMetrics(node.mesh).registerMetrics(registry);
    const m = await registry.metrics();
    expect(m).toMatch(/edgecore_proxy_grpc_proxy_answers_total\{grpc_status="14"\} [1-9]/);
    expect(m).toMatch(/edgecore_proxy_h2_streams_total\{status="200"\} [1-9]/);
    expect(m).toMatch(/edgecore_proxy_h2_upstream_connections [1-9]/);
  });

  it('retry-on unavailable: a backend answering UNAVAILABLE is passed over; a request timeout of the service bounds a call', async () => {
    const sick = new grpc.Server();
    sick.addService(def, {
      Unary: (_c: unknown, cb: grpc.sendUnaryData<Buffer>) =>
        cb({ code: grpc.status.UNAVAILABLE, details: 'draining' }),
    });
    const port = await new Promise<number>((res, rej) =>
      sick.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
    );
    const svcOf = (name: string, annotations: Record<string, string>) => {
      const s = service(name, 'default', { ports: [{ name: 'grpc', port: 50060, targetPort: 'grpc' }] });
      s.metadata.annotations = annotations;
      return s;
    };
    await node.put(svcOf('retrying', { 'edgecore.io/retry-on': 'unavailable,503' }));
    await node.put(svcOf('plain', {}));
    await node.put(svcOf('bounded', { 'edgecore.io/request-timeout-seconds': '0.3' }));
    for (const n of ['retrying', 'plain']) {
      await node.putPod(pod(`${n}-sick`, n, port));
      await node.putPod(pod(`${n}-a`, n, backends[0].port));
    }
    await node.putPod(pod('bounded-a', 'bounded', backends[0].port));
    await until(
      () => node.mesh.resolveTarget('plain.default.svc.cluster.local', 50060)?.backends.length === 2,
      'plain',
    );
    const calls = async (svc: string) => {
      const c = client(svc);
      const r = await Promise.all(
        Array.from({ length: 20 }, () =>
          unary(c, Buffer.from('x')).then(
            () => 'ok',
            (e: grpc.ServiceError) => String(e.code),
          ),
        ),
      );
      c.close();
      return r;
    };
    expect(new Set(await calls('retrying'))).toEqual(new Set(['ok']));
    expect(
      (await calls('plain')).filter((x) => x === String(grpc.status.UNAVAILABLE)).length,
    ).toBeGreaterThan(0);
    const c = client('bounded');
    const md = new grpc.Metadata();
    md.set('x-delay-ms', '3000');
    const t0 = Date.now();
    const e = await unary(c, Buffer.from('x'), {}, md).catch((x) => x);
    expect(e.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(2000);
    c.close();
    sick.forceShutdown();
  });

  it('a backend killed under load: only calls in flight on it may fail; the rest go on', async () => {
    const extra = await grpcBackend('k');
    await node.putPod(pod('echo-k', 'echo', extra.port));
    await until(
      () => node.mesh.resolveTarget('echo.default.svc.cluster.local', 50051)?.backends.length === 4,
      'four',
    );
    const c = client('echo');
    let failed = 0;
    let ok = 0;
    let inflightAtKill = 0;
    let killed = false;
    let inflight = 0;
    const one = async (): Promise<void> => {
      inflight++;
      const md = new grpc.Metadata();
      md.set('x-delay-ms', '20');
      try {
        await unary(c, Buffer.from('x'), {}, md);
        ok++;
      } catch {
        failed++;
      } finally {
        inflight--;
      }
    };
    const workers = Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 50; i++) {
        if (w === 0 && i === 15 && !killed) {
          killed = true;
          inflightAtKill = inflight;
          extra.server.forceShutdown();
        }
        await one();
      }
    });
    await Promise.all(workers);
    console.log(
      `backend killed under load: ${ok} ok, ${failed} failed (in flight at the kill: ≤ ${inflightAtKill})`,
    );
    expect(ok + failed).toBe(400);
    expect(failed).toBeLessThanOrEqual(inflightAtKill);
    c.close();
  });

  it('a service changes its ConsistentHash header under an open channel: every call is answered, on the same connection', async () => {
    const echo = (hashHeader?: string) => {
      const s = service('echo', 'default', { ports: [{ name: 'grpc', port: 50051, targetPort: 'grpc' }] });
      if (hashHeader) s.metadata.annotations = { 'edgecore.io/consistent-hash-header': hashHeader };
      return s;
    };
    const c = client('echo');
    const calls = () =>
      Promise.all(
        Array.from({ length: 10 }, (_, i) => unary(c, Buffer.from(`h${i}`)).then((b) => b.toString())),
      );
    await calls();
    const adopted = node.mesh.h2.native?.adopted ?? 0;
    await node.put(echo('x-user'));
    await until(
      () => hashOf(node.mesh.resolveTarget('echo.default.svc.cluster.local', 50051)) === 'x-user',
      'the new hash header',
    );
    expect(await calls()).toHaveLength(10);
    await node.put(echo());
    await until(
      () => hashOf(node.mesh.resolveTarget('echo.default.svc.cluster.local', 50051)) === undefined,
      'no hash header',
    );
    expect(await calls()).toHaveLength(10);
    // one connection all along (the native engine reads the new header on it)
    if (engine === 'native') expect(node.mesh.h2.native!.adopted).toBe(adopted);
    c.close();
  });
});

describe.each(ENGINES)(
  'HTTP/2 portals: h2c clients, refused and reset streams, floods (%s engine)',
  (engine) => {
    let node: MeshNode;
    let dir: { db: string; cleanup: () => void };
    const servers: Http2Server[] = [];
    const hits = new Map<string, number>();
    const portal = (svc: string): { host: string; port: number } => {
      const e = node.mesh.portals.table().find((x) => x.service === svc)!;
      return { host: e.listenHost, port: e.listenPort };
    };
    /** A plain h2c server: `refuse` resets every stream with REFUSED_STREAM; `cut` resets mid-answer. */
    const h2Backend = async (id: string, mode: 'ok' | 'refuse' | 'cut' = 'ok'): Promise<number> => {
      const s = createH2();
      s.on('stream', (st) => {
        st.on('error', () => undefined);
        hits.set(id, (hits.get(id) ?? 0) + 1);
        if (mode === 'refuse') return st.close(constants.NGHTTP2_REFUSED_STREAM);
        st.respond({ ':status': 200, 'content-type': 'text/plain' });
        if (mode === 'cut') {
          st.write('partial');
          // destroy sends RST_STREAM; Node's close(code) would end the stream first here
          setTimeout(() => st.destroy(new Error('cut')), 50);
          return;
        }
        st.end(`${id}\n`);
      });
      servers.push(s);
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      return (s.address() as AddressInfo).port;
    };
    const h2pod = (name: string, app: string, port: number): Pod => pod(name, app, port);

    beforeAll(async () => {
      dir = tmpDir('h2c-');
      node = await startMesh(dir.db, { h2Engine: engine });
      const web = [await h2Backend('w1'), await h2Backend('w2')];
      await node.put(
        service('web', 'default', {
          ports: [{ name: 'h2c', port: 8080, targetPort: 'grpc', appProtocol: 'kubernetes.io/h2c' }],
        }),
      );
      await node.putPod(h2pod('web-1', 'web', web[0]));
      await node.putPod(h2pod('web-2', 'web', web[1]));
      await node.put(
        service('picky', 'default', { ports: [{ name: 'h2c', port: 8081, targetPort: 'grpc' }] }),
      );
      await node.putPod(h2pod('picky-r', 'picky', await h2Backend('refuser', 'refuse')));
      await node.putPod(h2pod('picky-ok', 'picky', await h2Backend('taker')));
      await node.put(
        service('cutter', 'default', { ports: [{ name: 'h2c', port: 8082, targetPort: 'grpc' }] }),
      );
      await node.putPod(h2pod('cutter-1', 'cutter', await h2Backend('cut', 'cut')));
      await until(
        () => node.mesh.resolveTarget('cutter.default.svc.cluster.local', 8082)?.backends.length === 1,
        'cutter',
      );
    });
    afterAll(async () => {
      if (node) expectEngine(node, engine);
      await node?.stop();
      for (const s of servers) s.close();
      dir?.cleanup();
    });

    it('curl --http2-prior-knowledge is answered, per request balanced; an HTTP/1.1 client gets a 505 saying why, and an HTTP/2 one on an HTTP/1.1 port a GOAWAY', async () => {
      const { host, port } = portal('web');
      const out: string[] = [];
      for (let i = 0; i < 4; i++)
        out.push(
          (
            await execFileP('curl', ['-s', '--http2-prior-knowledge', `http://${host}:${port}/`])
          ).stdout.trim(),
        );
      expect(new Set(out)).toEqual(new Set(['w1', 'w2']));
      const h1 = await execFileP('curl', [
        '-s',
        '-w',
        ' %{http_code}',
        '--http1.1',
        `http://${host}:${port}/`,
      ]);
      expect(h1.stdout).toMatch(/speaks HTTP\/2.* 505$/s);
      // the other way round: an HTTP/2 client on an HTTP/1.1 port gets GOAWAY(HTTP_1_1_REQUIRED)
      await node.put(service('plain', 'default', { ports: [{ name: 'http', port: 80, targetPort: 80 }] }));
      const p = portal('plain');
      const h2 = await execFileP('curl', [
        '-sv',
        '--http2-prior-knowledge',
        `http://${p.host}:${p.port}/`,
      ]).catch((e) => e);
      expect(h2.code).toBe(16);
      expect(h2.stderr).toMatch(/GOAWAY, error=13/);
    });

    it('through the explicit proxy: a CONNECT to an HTTP/2 port is HTTP/2, each stream of one tunnel balanced', async () => {
      const proxy = node.mesh.forwardProxyAddress!;
      const url = 'http://web.default.svc.cluster.local:8080/';
      // curl: CONNECT (-p), then HTTP/2 with prior knowledge inside the tunnel
      const viaProxy = async (): Promise<string> =>
        (
          await execFileP('curl', [
            '-s',
            '--max-time',
            '5',
            '-p',
            '-x',
            `http://${proxy}`,
            '--http2-prior-knowledge',
            url,
          ])
        ).stdout.trim();
      const out: string[] = [];
      for (let i = 0; i < 4; i++) out.push(await viaProxy());
      expect(new Set(out)).toEqual(new Set(['w1', 'w2']));
      // one tunnel, ten streams: both backends answer (balanced per stream, not per connection)
      const [ph, pp] = splitHostPort(proxy);
      const tunnel = await new Promise<import('node:net').Socket>((resolve, reject) => {
        const sock = tcpConnect(pp, ph, () =>
          sock.write(
            'CONNECT web.default.svc.cluster.local:8080 HTTP/1.1\r\nHost: web.default.svc.cluster.local:8080\r\n\r\n',
          ),
        );
        sock.once('error', reject);
        sock.once('data', (d) =>
          /^HTTP\/1\.1 200/.test(d.toString()) ? resolve(sock) : reject(new Error(d.toString())),
        );
      });
      const session = connect('http://web.default.svc.cluster.local:8080', {
        createConnection: () => tunnel,
      });
      const answers = await Promise.all(
        Array.from(
          { length: 10 },
          () =>
            new Promise<string>((resolve, reject) => {
              const st = session.request({ ':path': '/' });
              let body = '';
              st.on('data', (d) => (body += d));
              st.on('end', () => resolve(body.trim()));
              st.on('error', reject);
              st.end();
            }),
        ),
      );
      expect(new Set(answers)).toEqual(new Set(['w1', 'w2']));
      // while that tunnel stays open, more tunnels and portal connections to the same service port:
      // the proxy keeps one route per service port, not one per connection it ever served
      for (let i = 0; i < 5; i++) await viaProxy();
      const routes = (node.mesh.h2 as unknown as { routeGetters: Map<string, unknown> }).routeGetters;
      expect([...routes.keys()].filter((k) => k.startsWith('default/web:')).length).toBe(1);
      session.close();
    });

    it('h2load: 2,000 requests on 10 connections × 10 streams, every one answered', async () => {
      const { host, port } = portal('web');
      const r = await execFileP('h2load', ['-n', '2000', '-c', '10', '-m', '10', `http://${host}:${port}/`], {
        timeout: 60_000,
      });
      expect(r.stdout).toMatch(/requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed/);
      expect(r.stdout).toMatch(/status codes: 2000 2xx/);
    });

    it('a backend that leaves the catalog is drained: its upstream connection closes (GOAWAY), the other backend keeps serving', async () => {
      const open = new Map<string, number>();
      const ports: number[] = [];
      for (const id of ['d1', 'd2']) {
        const srv = createH2();
        srv.on('session', (ss) => {
          open.set(id, (open.get(id) ?? 0) + 1);
          ss.once('close', () => open.set(id, open.get(id)! - 1));
        });
        srv.on('stream', (st) => {
          st.on('error', () => undefined);
          st.respond({ ':status': 200 });
          st.end(`${id}\n`);
        });
        servers.push(srv);
        await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
        ports.push((srv.address() as AddressInfo).port);
      }
      await node.put(
        service('drainee', 'default', { ports: [{ name: 'h2c', port: 8083, targetPort: 'grpc' }] }),
      );
      await node.putPod(h2pod('drainee-1', 'drainee', ports[0]));
      await node.putPod(h2pod('drainee-2', 'drainee', ports[1]));
      await until(
        () => node.mesh.resolveTarget('drainee.default.svc.cluster.local', 8083)?.backends.length === 2,
        'drainee',
      );
      const { host, port } = portal('drainee');
      // two requests on one client connection (curl 7.88 fails its second stream on a reused
      // prior-knowledge connection, whatever the server: "Error in the HTTP2 framing layer")
      const get = async (): Promise<string[]> => {
        const session = connect(`http://${host}:${port}`);
        session.on('error', () => undefined);
        const one = () =>
          new Promise<string>((resolve, reject) => {
            const r = session.request({ ':path': '/' });
            let body = '';
            r.setEncoding('utf8');
            r.on('data', (d: string) => (body += d));
            r.on('end', () => resolve(body.trim()));
            r.on('error', reject);
          });
        try {
          return [await one(), await one()];
        } finally {
          session.close();
        }
      };
      expect(new Set(await get())).toEqual(new Set(['d1', 'd2']));
      expect([open.get('d1'), open.get('d2')]).toEqual([1, 1]);
      await node.delPod('default', 'drainee-2');
      // the proxy's sweep (every 5 s) drains the connection of the backend no route holds
      await until(() => open.get('d2') === 0, 'd2 drained', 12_000);
      expect(await get()).toEqual(['d1', 'd1']);
      expect(open.get('d1')).toBe(1);
    }, 20_000);

    it('a service whose backends must now be reached over TLS: the native engine refuses the next stream and drains its connection, and the next connection is served by JavaScript', async () => {
      const be = await h2Backend('plain');
      const svc = (tls: boolean) => {
        const x = service('handover', 'default', {
          ports: [{ name: 'h2c', port: 8084, targetPort: 'grpc' }],
        });
        if (tls) x.metadata.annotations = { 'edgecore.io/backend-tls': 'true' };
        return x;
      };
      await node.put(svc(false));
      await node.putPod(h2pod('handover-1', 'handover', be));
      await until(
        () => node.mesh.resolveTarget('handover.default.svc.cluster.local', 8084)?.backends.length === 1,
        'handover',
      );
      const { host, port } = portal('handover');
      const ask = (session: ReturnType<typeof connect>) =>
        new Promise<{ status?: number; rst?: number; body: string }>((resolve) => {
          const r = session.request({ ':path': '/' });
          let status: number | undefined;
          let body = '';
          r.on('response', (h) => (status = Number(h[':status'])));
          r.setEncoding('utf8');
          r.on('data', (d: string) => (body += d));
          r.on('error', () => undefined);
          r.on('close', () => resolve({ status, rst: r.rstCode, body }));
        });
      const adopted = node.mesh.h2.native?.adopted ?? 0;
      const first = connect(`http://${host}:${port}`);
      first.on('error', () => undefined);
      let goaway = -1;
      first.on('goaway', (code) => (goaway = code));
      expect((await ask(first)).body).toBe('plain\n');
      await node.put(svc(true));
      await until(
        () =>
          !!originating(
            node.mesh.resolveTarget('handover.default.svc.cluster.local', 8084)?.backends ?? [],
            'h2',
          )[0]?.tls,
        'TLS backends',
      );
      const next = await ask(first);
      if (engine === 'native') {
        // refused, not processed (RFC 9113 §8.7: a client may send it again), and the connection drained
        expect(next.rst).toBe(constants.NGHTTP2_REFUSED_STREAM);
        await until(() => goaway === constants.NGHTTP2_NO_ERROR, 'GOAWAY');
        expect(node.mesh.h2.native!.adopted).toBe(adopted + 1);
      } else expect(next.status).toBe(502); // JavaScript: TLS to a plaintext backend fails
      first.close();
      // a new connection: JavaScript's portal (TLS origination), which fails against this
      // plaintext backend with a 502 that says so
      const second = connect(`http://${host}:${port}`);
      second.on('error', () => undefined);
      const r = await ask(second);
      second.close();
      expect(r.status).toBe(502);
      expect(r.body).toMatch(/TLS/);
      if (engine === 'native') expect(node.mesh.h2.native!.adopted).toBe(adopted + 1);
    });

    it('a REFUSED_STREAM goes to another backend; a reset mid-answer reaches the client as a reset', async () => {
      const { host, port } = portal('picky');
      const s = connect(`http://${host}:${port}`);
      const get = (path: string, on = s) =>
        new Promise<{ status: number; body: string; rst?: number }>((res) => {
          const r = on.request({ ':path': path });
          let status = 0;
          let body = '';
          r.on('response', (h) => (status = Number(h[':status'])));
          r.on('data', (d) => (body += d));
          r.on('error', () => undefined);
          r.on('close', () => res({ status, body, rst: r.rstCode }));
          r.end();
        });
      for (let i = 0; i < 6; i++) expect(await get('/')).toMatchObject({ status: 200, body: 'taker\n' });
      expect(hits.get('refuser')).toBeGreaterThan(0);
      s.close();
      const c = portal('cutter');
      const s2 = connect(`http://${c.host}:${c.port}`);
      const cut = await get('/', s2);
      expect(cut.status).toBe(200);
      expect(cut.body).toBe('partial');
      expect(cut.rst).toBe(constants.NGHTTP2_INTERNAL_ERROR);
      s2.close();
    });

    it('a rapid-reset flood ends that connection with GOAWAY; a CONTINUATION flood is cut; others are served meanwhile', async () => {
      const { host, port } = portal('web');
      const flooder = connect(`http://${host}:${port}`);
      flooder.on('error', () => undefined);
      let goaway = -1;
      flooder.on('goaway', (code) => (goaway = code));
      await new Promise((r) => flooder.once('connect', r));
      for (let i = 0; i < 3000 && !flooder.destroyed && goaway < 0; i++) {
        try {
          const r = flooder.request({ ':path': '/' });
          r.on('error', () => undefined);
          r.close(constants.NGHTTP2_CANCEL);
        } catch {
          break;
        }
        if (i % 100 === 99) await new Promise((r) => setImmediate(r));
      }
      await until(() => goaway >= 0 || flooder.destroyed, 'the flooder cut off', 10_000);
      // CONTINUATION flood: a HEADERS frame without END_HEADERS, then CONTINUATION frames forever
      const sock = tcpConnect(port, host);
      let closed = false;
      sock.on('error', () => undefined);
      sock.on('close', () => (closed = true));
      await new Promise((r) => sock.once('connect', r));
      const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
        const h = Buffer.alloc(9);
        h.writeUIntBE(payload.length, 0, 3);
        h[3] = type;
        h[4] = flags;
        h.writeUInt32BE(stream, 5);
        return Buffer.concat([h, payload]);
      };
      // a literal header field without indexing, new name x-<n>, a 1000-byte value (127 + varint 873)
      const lit = (n: number): Buffer => {
        const name = Buffer.from(`x-${n}`);
        return Buffer.concat([
          Buffer.from([0x00, name.length]),
          name,
          Buffer.from([0x7f, (873 & 0x7f) | 0x80, 873 >> 7]),
          Buffer.alloc(1000, 97),
        ]);
      };
      sock.write(
        Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(4, 0, 0, Buffer.alloc(0))]),
      );
      sock.write(frame(1, 0, 1, Buffer.concat([Buffer.from([0x82, 0x84, 0x86]), lit(0)])));
      for (let i = 1; i < 2000 && !closed; i++) {
        if (!sock.write(frame(9, 0, 1, lit(i)))) await new Promise((r) => setTimeout(r, 1));
        if (i % 50 === 0) await new Promise((r) => setImmediate(r));
      }
      await until(() => closed, 'the CONTINUATION flooder cut off', 10_000);
      // meanwhile (and after), another client is served
      const r = await execFileP('curl', ['-s', '--http2-prior-knowledge', `http://${host}:${port}/`]);
      expect(r.stdout.trim()).toMatch(/^w[12]$/);
      expect(node.mesh.h2.stats.resetFloods + (goaway >= 0 ? 1 : 0)).toBeGreaterThan(0);
      // the native engine counts the flood it cut (nghttp2's own limit is set above ours)
      if (engine === 'native') expect(node.mesh.h2.stats.resetFloods).toBeGreaterThan(0);
    });
  },
);
