import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type Server } from 'node:https';
import { connect as h2connect, createSecureServer, type Http2SecureServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import type { Pod } from '../src';
import { EdgeMeshMetrics } from '../src/metrics';
import { clientHello } from '../src/proxy/tls/backend-tls';
import { testPki } from '@edgecore/test-support';
import { hostPod, service, startMesh, tmpDir, until, type MeshNode } from './helpers';

const execFileP = promisify(execFile);

const pod = (name: string, app: string, port: number): Pod => hostPod(name, app, port, 'web');

describe('appProtocol https: TLS origination for plain-HTTP clients, TLS passthrough for TLS ones', () => {
  let node: MeshNode;
  let dir: { dir: string; db: string; cleanup: () => void };
  const servers: Server[] = [];
  const ports: number[] = [];
  let slowPort = 0;
  const h2servers: Http2SecureServer[] = [];
  const h2ports: number[] = [];
  const portal = (svc: string) => node.mesh.portals.table().find((e) => e.service === svc)!;
  const get = (svc: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const p = portal(svc);
      const r = request(
        {
          host: p.listenHost,
          port: p.listenPort,
          path: '/',
          agent: false,
          headers: { host: `${svc}.default` },
        },
        (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        },
      );
      r.on('error', reject);
      r.end();
    });

  beforeAll(async () => {
    dir = tmpDir('tls-svc-');
    await testPki(dir.dir, 'device-ca', { 'device.local': 'DNS:device.local' });
    await testPki(dir.dir, 'other-ca');
    for (const id of ['d1', 'd2']) {
      const s = createServer(
        {
          key: readFileSync(join(dir.dir, 'device.local.key')),
          cert: readFileSync(join(dir.dir, 'device.local.crt')),
        },
        (req, res) => res.end(`secure:${id}:${req.socket.alpnProtocol || 'none'}`),
      );
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      servers.push(s);
      ports.push((s.address() as AddressInfo).port);
    }
    // HTTP/2 backends that speak TLS only (ALPN h2), and one that speaks HTTP/1.1 only
    for (const id of ['h1', 'h2']) {
      const s = createSecureServer(
        {
          key: readFileSync(join(dir.dir, 'device.local.key')),
          cert: readFileSync(join(dir.dir, 'device.local.crt')),
        },
        (req, res) => res.end(`h2-secure:${id}:${req.httpVersion}`),
      );
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      h2servers.push(s);
      h2ports.push((s.address() as AddressInfo).port);
    }
    // a TLS device that answers after 3 s
    const slow = createServer(
      {
        key: readFileSync(join(dir.dir, 'device.local.key')),
        cert: readFileSync(join(dir.dir, 'device.local.crt')),
      },
      (_req, res) => setTimeout(() => res.end('late'), 3000).unref(),
    );
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    servers.push(slow);
    slowPort = (slow.address() as AddressInfo).port;
    node = await startMesh(dir.db);
    const svc = (name: string, annotations: Record<string, string>) => {
      const s = service(name, 'default', {
        ports: [{ name: 'web', port: 443, targetPort: 'web', appProtocol: 'https' }],
      });
      s.metadata.annotations = annotations;
      return s;
    };
    await node.put(
      svc('dev', {
        'edgecore.io/backend-ca-file': join(dir.dir, 'device-ca.crt'),
        'edgecore.io/backend-sni': 'device.local',
      }),
    );
    await node.put(
      svc('wrongca', {
        'edgecore.io/backend-ca-file': join(dir.dir, 'other-ca.crt'),
        'edgecore.io/backend-sni': 'device.local',
      }),
    );
    await node.put(svc('noca', { 'edgecore.io/backend-ca-file': join(dir.dir, 'missing.crt') }));
    for (const s of ['dev', 'wrongca', 'noca'])
      for (let i = 0; i < 2; i++) await node.putPod(pod(`${s}-${i}`, s, ports[i]));
    // backends chosen by SNI: two devices with their own DNS labels (hostname under the service)
    await node.put(
      svc('sni', {
        'edgecore.io/backend-by-sni':
          'PLC-A.devices.test=plc-a, *.b.devices.test=plc-b, ghost.devices.test=plc-z, not a name=plc-a',
      }),
    );
    const h2svc = (name: string, annotations: Record<string, string>) => {
      const s = service(name, 'default', {
        ports: [{ name: 'grpc', port: 50051, targetPort: 'grpc', appProtocol: 'kubernetes.io/h2c' }],
      });
      s.metadata.annotations = annotations;
      return s;
    };
    const deviceTls = {
      'edgecore.io/backend-tls': 'true',
      'edgecore.io/backend-ca-file': join(dir.dir, 'device-ca.crt'),
      'edgecore.io/backend-sni': 'device.local',
    };
    await node.put(
      svc('slowtls', {
        'edgecore.io/backend-ca-file': join(dir.dir, 'device-ca.crt'),
        'edgecore.io/backend-sni': 'device.local',
        'edgecore.io/request-timeout-seconds': '0.3',
      }),
    );
    await node.putPod(pod('slowtls-0', 'slowtls', slowPort));
    await node.put(h2svc('h2tls', deviceTls));
    await node.put(h2svc('h2h1', deviceTls)); // its backend speaks TLS, but not h2
    for (let i = 0; i < 2; i++) await node.putPod(hostPod(`h2tls-${i}`, 'h2tls', h2ports[i], 'grpc'));
    await node.putPod(hostPod('h2h1-0', 'h2h1', ports[0], 'grpc'));
    for (const [i, label] of ['plc-a', 'plc-b'].entries()) {
      const p = pod(`sni-${i}`, 'sni', ports[i]);
      p.spec!.hostname = label;
      p.spec!.subdomain = 'sni';
      await node.putPod(p);
    }
    await until(
      () =>
        node.mesh.resolveTarget('noca.default.svc.cluster.local', 443)?.backends.length === 2 &&
        node.mesh.resolveTarget('sni.default.svc.cluster.local', 443)?.backends.length === 2,
      'backends',
    );
  });
  afterAll(async () => {
    await node?.stop();
    for (const s of servers) s.close();
    for (const s of h2servers) s.close();
    dir?.cleanup();
  });

  it('a plain http:// request is balanced per request and reaches the backend over verified TLS with SNI', async () => {
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await get('dev');
      expect(r.status).toBe(200);
      bodies.push(r.body);
    }
    expect(new Set(bodies)).toEqual(new Set(['secure:d1:http/1.1', 'secure:d2:http/1.1']));
  });

  it("the service's own request timeout holds for requests it originates TLS for", async () => {
    await until(
      () => node.mesh.resolveTarget('slowtls.default.svc.cluster.local', 443)?.backends.length === 1,
      'slow backend',
    );
    const t0 = Date.now();
    const r = await get('slowtls');
    expect(r.status).toBe(504);
    expect(r.body).toMatch(/did not answer in 300 ms/);
    expect(Date.now() - t0).toBeLessThan(2500); // not the device's 3 s
  });

  it('a backend whose certificate does not verify, or a CA file that is missing: 502 that says why', async () => {
    const bad = await get('wrongca');
    expect(bad.status).toBe(502);
    expect(bad.body).toMatch(/TLS UNABLE_TO_VERIFY_LEAF_SIGNATURE|TLS .*self.signed|TLS .*verify/i);
    const none = await get('noca');
    expect(none.status).toBe(502);
    expect(none.body).toMatch(/edgecore\.io\/backend-ca-file .*missing\.crt: ENOENT/);
  });

  it('a TLS client passes through untouched (end-to-end TLS to the device); its SNI and ALPN are read', async () => {
    const p = portal('dev');
    const r = await execFileP('curl', [
      '-s',
      '--cacert',
      join(dir.dir, 'device-ca.crt'),
      '--resolve',
      `device.local:${p.listenPort}:127.0.0.1`,
      `https://device.local:${p.listenPort}/`,
    ]);
    expect(r.stdout).toMatch(/^secure:d[12]:http\/1\.1$/);
    const registry = new Registry();
    new EdgeMeshMetrics(node.mesh).registerMetrics(registry);
    const m = await registry.metrics();
    expect(m).toMatch(/edgecore_proxy_tls_connections_total\{mode="passthrough",alpn="h2"\} 1/);
    expect(m).toMatch(/edgecore_proxy_tls_connections_total\{mode="originate",alpn="http\/1\.1"\} [1-9]/);
  });

  it('edgecore.io/backend-by-sni: the name a TLS client asks for chooses the device; others are balanced', async () => {
    const p = portal('sni');
    const ca = readFileSync(join(dir.dir, 'device-ca.crt'));
    const { request: httpsRequest } = await import('node:https');
    const ask = (servername: string) =>
      new Promise<string>((resolve, reject) => {
        const r = httpsRequest(
          {
            host: p.listenHost,
            port: p.listenPort,
            path: '/',
            servername,
            ca,
            // the devices' certificate names device.local: the chain is what is checked here
            checkServerIdentity: () => undefined,
            agent: false,
          },
          (res) => {
            let body = '';
            res.on('data', (d) => (body += d));
            res.on('end', () => resolve(body));
          },
        );
        r.on('error', reject);
        r.end();
      });
    const seen = async (name: string, n: number) => {
      const out = new Set<string>();
      for (let i = 0; i < n; i++) out.add(await ask(name));
      return out;
    };
    // an exact name (case does not matter), and a wildcard of one label
    expect(await seen('plc-a.devices.test', 6)).toEqual(new Set(['secure:d1:none']));
    expect(await seen('x.b.devices.test', 6)).toEqual(new Set(['secure:d2:none']));
    // *.b.devices.test covers one label only: a deeper name is no route — balanced over both
    expect(await seen('y.x.b.devices.test', 8)).toEqual(new Set(['secure:d1:none', 'secure:d2:none']));
    expect(await seen('other.test', 8)).toEqual(new Set(['secure:d1:none', 'secure:d2:none']));
    // a route to an endpoint the service does not have now: refused, never another device
    await expect(ask('ghost.devices.test')).rejects.toThrow(/ECONNRESET|socket hang up|disconnected/);
    const registry = new Registry();
    new EdgeMeshMetrics(node.mesh).registerMetrics(registry);
    expect(await registry.metrics()).toMatch(/edgecore_proxy_tls_sni_routed_total 13\b/);
  });

  it('edgecore.io/backend-tls on an HTTP/2 port: h2c clients, TLS (ALPN h2) to the backends, each stream balanced', async () => {
    await until(
      () =>
        node.mesh.resolveTarget('h2tls.default.svc.cluster.local', 50051)?.backends.length === 2 &&
        node.mesh.resolveTarget('h2h1.default.svc.cluster.local', 50051)?.backends.length === 1,
      'h2 backends',
    );
    const call = async (svc: string, n: number) => {
      const p = portal(svc);
      const session = h2connect(`http://${p.listenHost}:${p.listenPort}`); // prior knowledge, cleartext
      session.on('error', () => undefined);
      try {
        return await Promise.all(
          Array.from(
            { length: n },
            () =>
              new Promise<string>((resolve, reject) => {
                const st = session.request({ ':path': '/', ':authority': `${svc}.default` });
                let status = 0;
                let body = '';
                st.on('response', (h) => (status = Number(h[':status'])));
                st.on('data', (d) => (body += d));
                st.on('end', () => resolve(`${status} ${body}`));
                st.on('error', reject);
                st.end();
              }),
          ),
        );
      } finally {
        session.close();
      }
    };
    // one client connection, its streams over both TLS backends
    const answers = await call('h2tls', 8);
    expect(new Set(answers)).toEqual(new Set(['200 h2-secure:h1:2.0', '200 h2-secure:h2:2.0']));
    // a backend that does not agree to h2 in ALPN: a failed connect (the portal answers for it)
    const [bad] = await call('h2h1', 1);
    expect(bad).toMatch(/^50[23] /);
  });

  it('clientHello reads SNI and ALPN from a real ClientHello', async () => {
    const { connect: tlsConnect } = await import('node:tls');
    const { createServer: tcp } = await import('node:net');
    const first = await new Promise<Buffer>((resolve) => {
      const srv = tcp((s) => s.once('data', (d) => (resolve(d), s.destroy(), srv.close())));
      srv.listen(0, '127.0.0.1', () => {
        const c = tlsConnect({
          port: (srv.address() as AddressInfo).port,
          host: '127.0.0.1',
          servername: 'plc-7.example',
          ALPNProtocols: ['h2', 'http/1.1'],
        });
        c.on('error', () => undefined);
      });
    });
    expect(clientHello(first)).toEqual({ sni: 'plc-7.example', alpn: ['h2', 'http/1.1'] });
    expect(clientHello(Buffer.from('GET / HTTP/1.1\r\n'))).toBeUndefined();
  });
});
