import { capturedIo, Mosquitto, until } from '@edgecore/test-support';
import { brokerAcl } from '@edgecore/edgehub';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import { EdgeMeshModule } from '@edgecore/edgemesh-module';
import type { EdgeCoreHost } from '../src';
import { startUnprivilegedNode } from './unprivileged-node';
import { edgectl } from '../src/cli/edgectl';

/**
 * A cloud link no node can abuse: a real mosquitto with per-node passwords and the ACL
 * `edgectl broker acl` writes. Two nodes and the cloud; node n1's credentials are used to forge.
 */
describe('broker identities and the ACL (mosquitto password_file + acl_file)', () => {
  let broker: Mosquitto;
  let dir: string;
  const hosts: EdgeCoreHost[] = [];
  const pw = { edgectl: 'cloud-secret', n1: 'n1-secret', n2: 'n2-secret' };
  const io = capturedIo;
  const node = async (name: 'n1' | 'n2') => {
    const h = await startUnprivilegedNode({
      dataSource: join(dir, `${name}.db`),
      nodeName: name,
      mqtt: `{ server: ${broker.url}, username: ${name}, password: ${pw[name]} }`,
    });
    hosts.push(h);
    return h.container.get(EdgeMeshModule);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'broker-acl-'));
    const acl = io();
    expect(await edgectl(['broker', 'acl'], acl.io)).toBe(0);
    expect(acl.out.join('')).toBe(brokerAcl());
    broker = await Mosquitto.start({ auth: { passwords: pw, acl: acl.out.join('') } });
  });
  afterAll(async () => {
    for (const h of hosts) await h.stop();
    await broker?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the cloud publishes, every node takes it; a node that forges a service is refused and no catalog changes', async () => {
    const m1 = await node('n1');
    const m2 = await node('n2');
    const f = join(dir, 'svc.yaml');
    writeFileSync(
      f,
      `apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec: { clusterIP: None, ports: [{ name: http, port: 80 }] }
`,
    );
    const a = io();
    expect(
      await edgectl(
        ['--server', broker.url, '--username', 'edgectl', '--password', pw.edgectl, 'apply', '-f', f],
        a.io,
      ),
    ).toBe(0);
    await until(
      () => m1.catalog.services.has('default/web') && m2.catalog.services.has('default/web'),
      'web on both nodes',
    );
    // n1's credentials in a forger's hands: MQTT 5 tells it "not authorized" (135)
    const forger = await connectAsync(broker.url, {
      clientId: 'n1-forger',
      username: 'n1',
      password: pw.n1,
      protocolVersion: 5,
      reconnectPeriod: 0,
    });
    const evil = JSON.stringify({
      header: {
        msg_id: 'x',
        parent_msg_id: '',
        timestamp: Date.now(),
        resourceversion: '99999999999999999',
        sync: false,
      },
      route: { source: 'edgectl', group: 'resource', operation: 'update', resource: 'default/service/web' },
      content: {
        kind: 'Service',
        metadata: { name: 'web', namespace: 'default', resourceVersion: '99999999999999999' },
        spec: { clusterIP: '10.6.6.6', ports: [{ port: 666 }] },
      },
    });
    const refused = await forger
      .publishAsync('edgecore/objects/default/service/web', evil, { qos: 1, retain: true })
      .then(
        (p) => (p as { reasonCode?: number } | undefined)?.reasonCode,
        (e: { code?: number }) => e.code,
      );
    expect(refused).toBe(135);
    // its own topics stay writable: its status
    await forger.publishAsync('edgecore/nodes/n1/status', JSON.stringify({ status: 'online', node: 'n1' }), {
      qos: 1,
      retain: true,
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(m2.catalog.services.get('default/web')?.spec?.clusterIP).toBe('None');
    expect(m1.catalog.services.get('default/web')?.spec?.clusterIP).toBe('None');
    // another node's down topic never reaches it
    const got: string[] = [];
    forger.on('message', (t) => got.push(t));
    await forger.subscribeAsync('edgecore/nodes/n2/down', { qos: 1 });
    const cloud = await connectAsync(broker.url, {
      clientId: 'cloud-x',
      username: 'edgectl',
      password: pw.edgectl,
      reconnectPeriod: 0,
    });
    await cloud.publishAsync('edgecore/nodes/n2/down', 'for n2 only', { qos: 1 });
    await new Promise((r) => setTimeout(r, 500));
    expect(got).toEqual([]);
    await cloud.endAsync();
    await forger.endAsync();
  });

  it('edgectl with wrong credentials fails with a clear message, and publishes nothing', async () => {
    const f = join(dir, 'svc2.yaml');
    writeFileSync(
      f,
      `apiVersion: v1\nkind: Service\nmetadata: { name: other }\nspec: { ports: [{ port: 81 }] }\n`,
    );
    const bad = io();
    const code = await edgectl(
      ['--server', broker.url, '--username', 'edgectl', '--password', 'wrong', 'apply', '-f', f],
      bad.io,
    ).catch((e: Error) => (bad.err.push(e.message), 1));
    expect(code).not.toBe(0);
    expect(bad.err.join('')).toMatch(/Not authorized|Bad user name or password|not authori[sz]ed/i);
    const asNode = io();
    const code2 = await edgectl(
      ['--server', broker.url, '--username', 'n1', '--password', pw.n1, 'apply', '-f', f],
      asNode.io,
    ).catch((e: Error) => (asNode.err.push(e.message), 1));
    expect(code2).not.toBe(0);
    expect(asNode.err.join('')).toMatch(/not authori[sz]ed|refused/i);
  });
});
