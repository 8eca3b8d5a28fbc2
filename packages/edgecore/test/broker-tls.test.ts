import { Mosquitto, recordingLogger, testPki, until } from '@edgecore/test-support';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeMeshModule } from '@edgecore/edgemesh-module';
import { EdgeCoreHost, parseConfig } from '../src';
import { check } from '../src/cli/edgecore';
import { edgectl } from '../src/cli/edgectl';

/**
 * mqtts:// with a verified broker certificate: a real mosquitto with a TLS listener only. The
 * right CA connects (edgectl and a node); another CA, or a certificate for another name, is a
 * clear error — and nothing falls back to plain MQTT.
 */
describe('mqtts: the broker certificate is verified, CA and name', () => {
  let dir: string;
  const brokers: Mosquitto[] = [];
  const hosts: EdgeCoreHost[] = [];
  const f = (n: string) => join(dir, n);
  const cfg = (server: string, ca: string, node = 'n1') =>
    parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${f(`${node}.db`)} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { nodeName: ${node}, mqtt: { server: ${server}, tls: { caFile: ${f(ca)} } } }
  metaManager: { metaServer: { enable: false } }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'broker-tls-'));
    await testPki(dir, 'fleet-ca', { good: 'IP:127.0.0.1', elsewhere: 'DNS:broker.example' });
    await testPki(dir, 'other-ca');
    brokers.push(await Mosquitto.start({ tls: { certFile: f('good.crt'), keyFile: f('good.key') } }));
    brokers.push(
      await Mosquitto.start({ tls: { certFile: f('elsewhere.crt'), keyFile: f('elsewhere.key') } }),
    );
  }, 30_000);
  afterAll(async () => {
    for (const h of hosts) await h.stop();
    for (const b of brokers) await b.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the right CA: edgectl publishes over mqtts and a node receives it', async () => {
    const [good] = brokers;
    expect(good.url).toMatch(/^mqtts:/);
    const h = new EdgeCoreHost(cfg(good.url, 'fleet-ca.crt'), { logger: recordingLogger([]) });
    await h.start();
    hosts.push(h);
    const svc = f('svc.yaml');
    writeFileSync(
      svc,
      'apiVersion: v1\nkind: Service\nmetadata: { name: secure }\nspec: { ports: [{ port: 80 }] }\n',
    );
    const out: string[] = [];
    const io = { stdout: (s: string) => out.push(s), stderr: (s: string) => out.push(s), stdin: () => '' };
    expect(await edgectl(['--server', good.url, '--cafile', f('fleet-ca.crt'), 'apply', '-f', svc], io)).toBe(
      0,
    );
    expect(out.join('')).toBe('service/secure created\n');
    const mesh = h.container.get(EdgeMeshModule);
    await until(() => mesh.catalog.services.has('default/secure'), 'the service over mqtts');
  });

  it('another CA, or a certificate for another name: a clear error, retried, never plain MQTT', async () => {
    const [good, elsewhere] = brokers;
    const lines = async (server: string, ca: string) => {
      const l: string[] = [];
      const code = await check(cfg(server, ca, 'probe'), (x) => l.push(x), { environment: false });
      return { code, text: l.join('\n') };
    };
    const wrongCa = await lines(good.url, 'other-ca.crt');
    expect(wrongCa.code).toBe(1);
    expect(wrongCa.text).toMatch(
      /^error +connect: .*(self.signed certificate|unable to verify|certificate)/im,
    );
    const wrongName = await lines(elsewhere.url, 'fleet-ca.crt');
    expect(wrongName.code).toBe(1);
    expect(wrongName.text).toMatch(
      /IP: 127\.0\.0\.1 is not in the cert's list|does not match certificate's altnames/i,
    );
    // a node with the wrong CA keeps trying, says why, and never connects
    const logs: { level: string; obj: any; msg?: string }[] = [];
    const h = new EdgeCoreHost(cfg(good.url, 'other-ca.crt', 'n9'), { logger: recordingLogger(logs) });
    await h.start();
    hosts.push(h);
    await until(
      () => logs.filter((l) => /certificate/i.test(JSON.stringify(l.obj))).length >= 2,
      'two failed tries logged',
      15_000,
      50,
    );
    const m = await (await fetch(`http://${h.observabilityAddress}/metrics`)).text();
    expect(m).toMatch(/^edgecore_edgehub_connected 0$/m);
    const err: string[] = [];
    const code = await edgectl(
      ['--server', good.url, '--cafile', f('other-ca.crt'), 'apply', '-f', f('svc.yaml')],
      {
        stdout: () => undefined,
        stderr: (s) => err.push(s),
        stdin: () => '',
      },
    );
    expect(code).toBe(1);
    expect(err.join('')).toMatch(/^edgectl: .*certificate/i);
  }, 40_000);
});
