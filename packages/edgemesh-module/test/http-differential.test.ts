import { ReferenceProxy, RecordingBackend, type Recorded } from '@edgecore/test-support';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { Registry } from 'prom-client';
import { EdgeMeshMetrics } from '../src/metrics';
import {
  ForwardProxy,
  HttpProxy,
  LoadBalancer,
  nativeUnavailable,
  RoundRobin,
  TcpProxy,
  UpstreamPool,
} from '../src';
import { readFileSync } from 'node:fs';
import { CASES, KA, XFF } from './corpus/smuggling';
import { join } from 'node:path';
import { pod, service, startMesh, tmpDir } from './helpers';

const corpus = JSON.parse(readFileSync(join(__dirname, 'corpus', 'llhttp-requests.json'), 'utf8')) as {
  cases: { file: string; title: string; input: string; messages: number }[];
};

/**
 * HTTP/1.1 request parsing, differentially: the same bytes through our L7 proxy (both engines, on a
 * portal and as the explicit proxy) and through nginx and haproxy as reverse proxies, each in front
 * of a recording backend that keeps the exact bytes it was sent (and parses them with node:http,
 * strict llhttp, as a real backend would). Two tables: the request-smuggling and normalization
 * cases, each with what our proxy must answer and forward and what nginx and haproxy do (checked
 * too: that is why we do what we do); and nodejs/llhttp's request corpus (as data,
 * corpus/llhttp-requests.json, imported by scripts/import-llhttp-corpus.js), where what reaches
 * our backend must never be more than a reference found in those bytes, nor anything a strict
 * parser refuses — and, on a portal, never fewer messages than every reference accepted.
 */

const linux = process.platform === 'linux';
const engines = linux && !nativeUnavailable() ? (['native', 'js'] as const) : (['js'] as const);
const HEAD_MS = 300;

interface Outcome {
  /** Statuses the client got, in order. */
  statuses: number[];
  /** No answer and no close within the bound (a proxy waiting on a request it cannot finish). */
  hung: boolean;
  backend: Recorded;
}

/** Write `req` on a new connection; everything back until a close, 250 ms quiet after data, or 900 ms. */
function ask(port: number, req: string): Promise<{ out: string; hung: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    let done = false;
    const finish = (hung: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve({ out, hung });
    };
    let t = setTimeout(() => finish(out === ''), 900);
    s.on('data', (d) => {
      out += d.toString('latin1');
      clearTimeout(t);
      t = setTimeout(() => finish(false), 250);
    });
    s.on('close', () => finish(false));
    s.on('error', () => undefined);
    s.write(Buffer.from(req, 'latin1'));
  });
}

interface Target {
  name: string;
  port: number;
  backend: RecordingBackend;
  close(): Promise<void>;
}

async function ours(engine: 'native' | 'js', explicit: boolean): Promise<Target> {
  const backend = await RecordingBackend.start();
  const lb = new LoadBalancer(new RoundRobin());
  const pool = new UpstreamPool();
  const http = new HttpProxy(lb, pool, {
    engine,
    headTimeoutMs: HEAD_MS,
    keepAliveTimeoutMs: HEAD_MS,
    responseTimeoutMs: 500, // a client that stops inside its body: answered (504) within ask()'s bound
  });
  const route = {
    backends: [{ host: '127.0.0.1', port: backend.port, key: `127.0.0.1:${backend.port}` }],
    scope: 'recorder',
  };
  let server: Server | undefined;
  let fp: ForwardProxy | undefined;
  let port: number;
  if (explicit) {
    // every host name is the recorder's service (the corpus's Host fields name all kinds of hosts)
    fp = new ForwardProxy(http, new TcpProxy(lb), () => route, { headTimeoutMs: HEAD_MS });
    port = (await fp.listen('127.0.0.1', 0)).port;
  } else {
    const s = createServer({ noDelay: true }, (sock) => http.handleRoute(sock, () => route));
    server = s;
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    port = (s.address() as AddressInfo).port;
  }
  return {
    name: `${engine} ${explicit ? 'explicit proxy' : 'portal'}`,
    port,
    backend,
    close: async () => {
      fp?.close();
      server?.close();
      http.close();
      pool.close();
      await backend.close();
    },
  };
}

async function reference(kind: 'nginx' | 'haproxy'): Promise<Target> {
  const backend = await RecordingBackend.start();
  const p = await (kind === 'nginx' ? ReferenceProxy.nginx : ReferenceProxy.haproxy)(backend.port, HEAD_MS);
  return {
    name: kind,
    port: p.port,
    backend,
    close: async () => {
      await p.stop();
      await backend.close();
    },
  };
}

async function run(t: Target, req: string): Promise<Outcome> {
  await t.backend.reset();
  const { out, hung } = await ask(t.port, req);
  await new Promise((r) => setTimeout(r, 20)); // what the proxy forwarded has reached the recorder
  return {
    statuses: [...out.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1])),
    hung,
    backend: t.backend.take(),
  };
}

const forwarded = (r: Recorded): string => r.connections.join('');

describe('request smuggling and normalization: our proxy beside nginx and haproxy', () => {
  const targets: Target[] = [];
  beforeAll(async () => {
    for (const e of engines) targets.push(await ours(e, false));
    targets.push(await reference('nginx'), await reference('haproxy'));
  }, 30_000);
  afterAll(async () => {
    for (const t of targets) await t.close();
  });

  it.each(CASES)('$name', async (c) => {
    const got = await Promise.all(targets.map((t) => run(t, c.req)));
    const by = new Map(targets.map((t, i) => [t.name, got[i]]));
    for (const ref of ['nginx', 'haproxy'] as const) {
      const o = by.get(ref)!;
      // the reference's own decision, as recorded in the table (why ours is what it is)
      expect([ref, forwarded(o.backend) === '' ? 'refuse' : 'forward']).toEqual([ref, c[ref]]);
    }
    for (const t of targets.filter((x) => x.name.endsWith('portal'))) {
      const o = by.get(t.name)!;
      expect([t.name, o.statuses[0], o.hung]).toEqual([t.name, c.status, false]);
      // exactly these bytes reached the backend (or none), and its strict parser took them
      expect([t.name, forwarded(o.backend)]).toEqual([t.name, c.backend ?? '']);
      expect([t.name, o.backend.errors]).toEqual([t.name, []]);
    }
  });
});

describe('the explicit proxy refuses an https:// target it cannot originate TLS for, and targets of no HTTP form', () => {
  it.each(engines)('%s engine: 400, nothing forwarded; http:// goes on', async (engine) => {
    const t = await ours(engine, true);
    try {
      const https = await run(t, 'GET https://svc/x HTTP/1.1\r\nHost: svc\r\n\r\n');
      expect(https.statuses).toEqual([400]);
      expect(forwarded(https.backend)).toBe('');
      // nor a scheme it does not speak, nor a target without an authority or a leading slash
      for (const target of ['ftp://svc/x', 'http:/x', 'svc:80']) {
        const o = await run(t, `GET ${target} HTTP/1.1\r\nHost: svc\r\n\r\n`);
        expect([target, o.statuses, forwarded(o.backend)]).toEqual([target, [400], '']);
      }
      const http = await run(t, 'GET http://svc/x HTTP/1.1\r\nHost: svc\r\n\r\n');
      expect(http.statuses).toEqual([200]);
      expect(forwarded(http.backend)).toBe(`GET /x HTTP/1.1\r\nHost: svc\r\n${XFF}${KA}`);
    } finally {
      await t.close();
    }
  });
});

describe("nodejs/llhttp's request corpus: nothing reaches a backend that no reference parser found, nothing refused that all accept", () => {
  const targets: Target[] = [];
  beforeAll(async () => {
    for (const e of engines) targets.push(await ours(e, false), await ours(e, true));
    targets.push(await reference('nginx'), await reference('haproxy'));
  }, 30_000);
  afterAll(async () => {
    for (const t of targets) await t.close();
  });

  it.each(corpus.cases.map((c) => [`${c.file}: ${c.title}`, c] as const))('%s', async (_name, c) => {
    const got = await Promise.all(targets.map((t) => run(t, c.input)));
    const by = new Map(targets.map((t, i) => [t.name, got[i]]));
    // the most messages any reference found in these bytes: strict llhttp, nginx's and haproxy's
    // backends (what they forwarded, as a strict parser reads it)
    const refMax = Math.max(
      c.messages,
      by.get('nginx')!.backend.requests.length,
      by.get('haproxy')!.backend.requests.length,
    );
    // the fewest: what every one of them accepted
    const refMin = Math.min(
      c.messages,
      by.get('nginx')!.backend.requests.length,
      by.get('haproxy')!.backend.requests.length,
    );
    // what the references' strict backends refused of what nginx and haproxy forwarded (an
    // extension method node:http does not know, say): a backend's limit, not an ambiguity
    const refErrors = new Set([...by.get('nginx')!.backend.errors, ...by.get('haproxy')!.backend.errors]);
    // the explicit proxy tunnels CONNECT: what follows its head is a byte stream, not HTTP
    const tunnel = c.input.startsWith('CONNECT ');
    for (const t of targets.filter((x) => x.name !== 'nginx' && x.name !== 'haproxy')) {
      if (tunnel && t.name.endsWith('explicit proxy')) continue;
      const o = by.get(t.name)!;
      // an answer or a close: never a client left waiting on a request that cannot be finished
      expect([t.name, o.hung]).toEqual([t.name, false]);
      // nothing a strict backend refuses that it did not refuse behind a reference too, and never
      // more messages than any reference found
      expect([t.name, o.backend.errors.filter((e) => !refErrors.has(e))]).toEqual([t.name, []]);
      expect([t.name, o.backend.requests.length <= refMax]).toEqual([t.name, true]);
      // and on a portal (a reverse proxy, as the references are here) never fewer messages than
      // llhttp, nginx and haproxy all found: what they all accept, we accept (an explicit proxy
      // cannot route a request with no host, which a reverse proxy can)
      if (t.name.endsWith('portal'))
        expect([t.name, 'accepted by all', o.backend.requests.length >= refMin]).toEqual([
          t.name,
          'accepted by all',
          true,
        ]);
    }
  });
});

describe('proxy.underscoresInHeaders from the module config (nginx: underscores_in_headers)', () => {
  it.each([
    [false, ''],
    [true, 'X_Real_IP: 10.0.0.1\r\n'],
  ])('underscoresInHeaders %s: a field X_Real_IP reaches the pod as %j', async (keep, field) => {
    const d = tmpDir();
    const backend = await RecordingBackend.start();
    const n = await startMesh(d.db, { proxy: { underscoresInHeaders: keep } });
    try {
      await n.put(service('rec-svc', 'default', { selector: { app: 'rec' } }));
      await n.putPod(pod('rec-1', 'rec', backend.port));
      const portal = n.mesh.portals.get('default/rec-svc:12345/TCP')!.listenPort;
      const o = await run(
        { name: 'mesh', port: portal, backend, close: async () => undefined },
        `GET / HTTP/1.1\r\nHost: a\r\nX_Real_IP: 10.0.0.1\r\n\r\n`,
      );
      expect(o.statuses).toEqual([200]);
      expect(forwarded(o.backend)).toBe(`GET / HTTP/1.1\r\nHost: a\r\n${field}${XFF}${KA}`);
    } finally {
      await n.stop();
      await backend.close();
      d.cleanup();
    }
  });
});

describe('every refusal ends its connection and is counted by reason in /metrics (edgecore_proxy_http_rejected_total)', () => {
  it.each(engines)('%s engine', async (engine) => {
    const d = tmpDir();
    const backend = await RecordingBackend.start();
    const n = await startMesh(d.db, { httpEngine: engine });
    try {
      await n.put(service('rec-svc', 'default', { selector: { app: 'rec' } }));
      await n.putPod(pod('rec-1', 'rec', backend.port));
      const port = n.mesh.portals.get('default/rec-svc:12345/TCP')!.listenPort;
      const t = { name: 'mesh', port, backend, close: async () => undefined };
      const refused: [string, string][] = [
        ['bad-target', `GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n`],
        ['bad-target', `GET https:/a/x HTTP/1.1\r\nHost: a\r\n\r\n`],
        ['unsupported-version', `GET / HTTP/2.0\r\nHost: a\r\n\r\n`],
        ['bad-framing', `POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`],
        [
          'bad-chunk',
          `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\x0b\r\nok\r\n0\r\n\r\n`,
        ],
        ['bad-host', `GET / HTTP/1.1\r\n\r\n`],
      ];
      // each refusal ends its connection (as nginx): the valid request pipelined after it is
      // neither answered nor forwarded
      const next = 'GET / HTTP/1.1\r\nHost: a\r\n\r\n';
      for (const [reason, req] of refused) {
        const o = await run(t, req + next);
        expect([reason, o.statuses.length, o.backend.connections]).toEqual([reason, 1, []]);
      }
      const registry = new Registry();
      new EdgeMeshMetrics(n.mesh).registerMetrics(registry);
      const text = await registry.metrics();
      const want = new Map<string, number>();
      for (const [reason] of refused) want.set(reason, (want.get(reason) ?? 0) + 1);
      for (const [reason, count] of want)
        expect(text).toContain(`edgecore_proxy_http_rejected_total{reason="${reason}"} ${count}\n`);
    } finally {
      await n.stop();
      await backend.close();
      d.cleanup();
    }
  });
});
