import { silentLogger } from '@edgecore/beehive';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mosquitto } from '@edgecore/test-support';
import { EdgeCoreHost, parseConfig } from '../src';

/**
 * dashboards/edgecore.json (Grafana): every metric a panel queries is one a running edgecore
 * serves on /metrics — a renamed metric breaks this test, not a dashboard in the field.
 */
describe('the Grafana dashboard', () => {
  it('queries only metrics that /metrics has', async () => {
    const dash = JSON.parse(
      readFileSync(join(__dirname, '..', '..', '..', 'dashboards', 'edgecore.json'), 'utf8'),
    );
    const exprs: string[] = [];
    for (const p of dash.panels) for (const t of p.targets) exprs.push(t.expr);
    for (const v of dash.templating.list) if (typeof v.query === 'string') exprs.push(v.query);
    const used = new Set(exprs.flatMap((e) => e.match(/edgecore_[a-z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(10);
    const broker = await Mosquitto.start();
    const dir = mkdtempSync(join(tmpdir(), 'dash-'));
    const host = new EdgeCoreHost(
      parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, 'db')} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { nodeName: dash, mqtt: { server: ${broker.url} } }
  metaManager: { metaServer: { enable: false } }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`),
      { logger: silentLogger },
    );
    try {
      await host.start();
      const text = await (await fetch(`http://${host.observabilityAddress}/metrics`)).text();
      const served = new Set<string>();
      for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        served.add(m[1]);
        if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) served.add(m[1] + s);
      }
      expect([...used].filter((n) => !served.has(n))).toEqual([]);
    } finally {
      await host.stop();
      await broker.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
