import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Mosquitto, Netns, until } from '@edgecore/test-support';
import { connectAsync } from 'mqtt';
import { parseConfig } from '../src';
import { check } from '../src/cli/edgecore';
import { edgectl } from '../src/cli/edgectl';

const execFileP = promisify(execFile);
const quiet = { stdout: () => undefined, stderr: () => undefined, stdin: () => '' };
const BIN = join(__dirname, '..', 'bin', 'edgecore');

function config(server: string) {
  return parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
modules:
  edgeHub: { nodeName: edge-node-check, mqtt: { server: ${server} } }
`);
}

async function run(server: string): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await check(config(server), (l) => lines.push(l), { environment: false });
  return { code, lines };
}

describe('edgecore check: the broker as a node depends on it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edgecore-check-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a stock mosquitto: MQTT 5, retained messages, its queue limit measured (1000), then the cloud digests', async () => {
    const broker = await Mosquitto.start({ stock: true });
    try {
      let r = await run(broker.url);
      expect(r.code).toBe(0);
      expect(r.lines).toContainEqual(expect.stringMatching(/^ok +protocol: MQTT 5/));
      expect(r.lines).toContainEqual(expect.stringMatching(/^ok +retain:/));
      expect(r.lines).toContainEqual(
        expect.stringMatching(/^warn +queue: the broker kept 1000 of 1500 messages/),
      );
      // stock max_inflight_messages: its Receive Maximum paces edgectl (20 on each of its links)
      expect(r.lines).toContainEqual(
        expect.stringMatching(
          /^warn +inflight: the broker takes 20 QoS 1 publishes from a client at a time .*: edgectl applies 640 per round trip \(20 on each of its 32 links\)/,
        ),
      );
      expect(r.lines).toContainEqual(expect.stringMatching(/^warn +digest: no digest/));
      // what the check published is gone again: no retained message of it stays
      const f = join(dir, 'svc.yaml');
      writeFileSync(
        f,
        `apiVersion: v1
kind: Service
metadata: { name: checked, namespace: default }
spec: { clusterIP: None, ports: [{ name: http, port: 80, targetPort: 80 }] }
`,
      );
      expect(await edgectl(['--server', broker.url, 'apply', '-f', f], quiet)).toBe(0);
      r = await run(broker.url);
      expect(r.lines).toContainEqual(expect.stringMatching(/^ok +digest: .*service 1/));
      const reader = await connectAsync(broker.url, { clientId: 'check-reader', reconnectPeriod: 0 });
      const left: string[] = [];
      reader.on('message', (t, p) => p.length && left.push(t));
      await reader.subscribeAsync('edgecore/check/#', { qos: 0 });
      await reader.subscribeAsync('edgecore/digest/+', { qos: 0 }); // this one does come: the proof the read works
      await until(() => left.length > 0, 'the digest read back');
      await new Promise((res) => setTimeout(res, 300));
      await reader.endAsync(true);
      // a service makes edgectl the slice controller: it read (and digests) the slices too
      expect(left.sort()).toEqual(['edgecore/digest/endpointslice', 'edgecore/digest/service']);
    } finally {
      await broker.destroy();
    }
  }, 60_000);

  it('a broker with a larger queue passes; an unreachable one is an error (exit 1), from the command line too', async () => {
    // max_queued_messages 10000, and max_inflight_messages as the README asks of the cloud's broker
    const broker = await Mosquitto.start({ maxInflight: 1000 });
    try {
      const r = await run(broker.url);
      expect(r.lines).toContainEqual(
        expect.stringMatching(/^ok +queue: 1500 messages published while a session was away all came back/),
      );
      expect(r.lines.filter((l) => /^\w+ +inflight:/.test(l))).toEqual([]);
    } finally {
      await broker.destroy();
    }
    const f = join(dir, 'edgecore.yaml');
    writeFileSync(
      f,
      // in the host namespace: unprivileged (no iptables read, no port 53 tried) and a database
      // in the test's own directory, so the environment checks only read
      `apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'cli', 'edgecore.db')} }
modules:
  edgeHub: { nodeName: edge-node-check, mqtt: { server: tcp://127.0.0.1:9 } }
  edgeMesh: { mode: unprivileged }
`,
    );
    const e = await execFileP(process.execPath, [BIN, 'check', '--config', f]).catch(
      (x: { code: number; stdout: string }) => x,
    );
    expect((e as { code: number }).code).toBe(1);
    expect(e.stdout).toMatch(/^error +connect: cannot connect to tcp:\/\/127\.0\.0\.1:9/m);
    const u = await execFileP(process.execPath, [BIN, 'frobnicate']).catch(
      (x: { code: number; stderr: string }) => x,
    );
    expect((u as { code: number }).code).toBe(2);
    expect(u.stderr).toMatch(/unknown command "frobnicate"/);
  }, 60_000);
});

describe('edgecore check: the node environment (in a network namespace of its own)', () => {
  it('ip_forward off, an old EDGE-MESH chain and a missing docker0 are reported with their fix; fixed, they pass', async () => {
    const ns = await Netns.create(`chk${process.pid % 100000}`, 'nameserver 192.0.2.53\n');
    const dir = mkdtempSync(join(tmpdir(), 'edgecore-envcheck-'));
    try {
      const f = join(dir, 'edgecore.yaml');
      writeFileSync(
        f,
        `apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'db', 'edgecore.db')} }
modules:
  edgeHub: { enable: false }
  edgeMesh: { mode: iptables, listenInterface: docker0 }
`,
      );
      await ns.run('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
      await ns.run('iptables', ['-t', 'nat', '-N', 'EDGE-MESH']);
      await ns.run('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-j', 'EDGE-MESH']);
      const bad = await ns.attempt(process.execPath, [BIN, 'check', '--config', f]);
      expect(bad.code).toBe(1);
      expect(bad.stdout).toMatch(
        /^warn +ip_forward: net\.ipv4\.ip_forward = 0: .*fix: sysctl -w net\.ipv4\.ip_forward=1/m,
      );
      expect(bad.stdout).toMatch(
        /^error +old-edgemesh: rules of an old EdgeMesh .*fix: iptables -t nat -D OUTPUT -j EDGE-MESH/m,
      );
      expect(bad.stdout).toMatch(/^error +listenInterface: docker0 does not exist/m);
      expect(bad.stdout).toMatch(/^ok +resolv\.conf: upstreams: 192\.0\.2\.53$/m);
      expect(bad.stdout).toMatch(/^ok +database: .*writable$/m);
      await ns.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
      await ns.run('iptables', ['-t', 'nat', '-D', 'OUTPUT', '-j', 'EDGE-MESH']);
      await ns.run('iptables', ['-t', 'nat', '-X', 'EDGE-MESH']);
      await ns.run('ip', ['link', 'add', 'docker0', 'type', 'bridge']);
      await ns.run('ip', ['addr', 'add', '172.17.0.1/16', 'dev', 'docker0']);
      await ns.run('ip', ['link', 'set', 'docker0', 'up']);
      const good = await ns.attempt(process.execPath, [BIN, 'check', '--config', f]);
      expect(good.stdout).toMatch(/^ok +ip_forward/m);
      expect(good.stdout).toMatch(/^ok +old-edgemesh: no rules of an old EdgeMesh/m);
      expect(good.stdout).toMatch(/^ok +listenInterface: docker0$/m);
      expect(good.stdout).toMatch(/^ok +dns-port: udp 172\.17\.0\.1:53 free$/m);
      expect(good.code).toBe(0);
    } finally {
      await ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
