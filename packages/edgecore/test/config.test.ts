import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, loadConfigFile, parseConfig, configToYaml, MIN_CONFIG } from '../src';

const head = 'apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\n';

describe('edgecore.yaml', () => {
  it('the minimal file gets every default, KubeEdge style', () => {
    const c = parseConfig(head);
    expect(c.database.dataSource).toBe('/var/lib/edgecore/edgecore.db');
    expect(c.modules.edgeMesh).toMatchObject({
      enable: true,
      lbStrategy: 'RoundRobin',
      subNet: '198.18.0.0/16',
      listenPort: 40001,
      clusterDomain: 'cluster.local',
    });
    expect(c.modules.edgeMesh.dns).toEqual({
      hijack: 'iptables',
      hijackInterfaces: [],
      shortNames: 'fallback',
      upstreams: [],
      ttl: 5,
      udpBackend: 'auto',
      cacheSize: 10_000,
      upstreamTimeoutMs: 2000,
      resolvConf: '/etc/resolv.conf',
      serveStale: { enable: true, maxStaleSeconds: 86400, answerTtl: 30, recheckSeconds: 30 },
      upstreamTcp: false,
      prefetch: false,
      tcpClients: 150,
    });
    expect(c.modules.edgeMesh.networking).toBe('host');
    expect(c.modules.edgeMesh.httpEngine).toBe('auto');
    expect(c.modules.edgeMesh.httpCoalesceUs).toBe(15);
    expect(c.modules.metaManager).toEqual({
      enable: true,
      remoteQueryTimeout: 60,
      groupCommitMs: 20,
      metaServer: { enable: true, server: '127.0.0.1:10550' },
    });
    expect(c.modules.edgeHub.mqtt.embeddedBroker).toEqual({ enable: false, listen: '127.0.0.1:1883' });
    expect(c.modules.edgeHub.nodeName).toMatch(/^[a-z0-9]/);
    expect(c.modules.edgeHub.nodeIP).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  });

  it('--defaultconfig output parses back to the same config', () => {
    const d = defaultConfig();
    expect(parseConfig(configToYaml(d))).toEqual(d);
    expect(parseConfig(configToYaml(MIN_CONFIG)).kind).toBe('EdgeCore');
  });

  it('the issue example parses', () => {
    const c = parseConfig(`${head}database:
  dataSource: /var/lib/edgecore/edgecore.db
observability:
  listen: 127.0.0.1:10351
modules:
  edgeHub:
    enable: true
    nodeName: edge-node-a
    nodeIP: 198.51.100.1
    mqtt:
      server: tcp://127.0.0.1:1883
      embeddedBroker: { enable: false, listen: 127.0.0.1:1883 }
  metaManager:
    enable: true
    remoteQueryTimeout: 60
    metaServer: { enable: true, server: 127.0.0.1:10550 }
  edgeMesh:
    enable: true
    mode: auto
    lbStrategy: RoundRobin
    listenInterface: docker0
    subNet: 198.18.0.0/16
    listenPort: 40001
    clusterDomain: cluster.local
    dns: { listenPort: 53, hijack: iptables, upstreams: [], ttl: 5 }
`);
    expect(c.modules.edgeHub.nodeName).toBe('edge-node-a');
    expect(c.modules.edgeMesh.dns.listenPort).toBe(53);
  });

  it.each([
    [
      'unknown key',
      `${head}modules:\n  edgeMesh:\n    lbStrategyy: Random\n`,
      'modules.edgeMesh.lbStrategyy',
      5,
      'unknown key',
    ],
    [
      'wrong type',
      `${head}modules:\n  edgeMesh:\n    listenPort: "40001"\n`,
      'modules.edgeMesh.listenPort',
      5,
      'Expected number, received string',
    ],
    [
      'bad enum',
      `${head}modules:\n  edgeMesh:\n    lbStrategy: Fastest\n`,
      'modules.edgeMesh.lbStrategy',
      5,
      'RoundRobin',
    ],
    [
      'bad CIDR',
      `${head}modules:\n  edgeMesh:\n    subNet: 198.18.0.0\n`,
      'modules.edgeMesh.subNet',
      5,
      'CIDR',
    ],
    [
      'bad upstream',
      `${head}modules:\n  edgeMesh:\n    dns:\n      upstreams: [1.1.1.1, "dns.google"]\n`,
      'modules.edgeMesh.dns.upstreams.1',
      6,
      'IP:PORT',
    ],
    [
      'bad kind',
      'apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: CloudCore\n',
      'kind',
      2,
      'EdgeCore',
    ],
    [
      'unknown L7 engine',
      `${head}modules:\n  edgeMesh:\n    httpEngine: turbo\n`,
      'modules.edgeMesh.httpEngine',
      5,
      'native',
    ],
    [
      'event coalescing past 1 ms',
      `${head}modules:\n  edgeMesh:\n    httpCoalesceUs: 5000\n`,
      'modules.edgeMesh.httpCoalesceUs',
      5,
      '1000',
    ],
    [
      'bad mqtt url',
      `${head}modules:\n  edgeHub:\n    mqtt:\n      server: 127.0.0.1:1883\n`,
      'modules.edgeHub.mqtt.server',
      6,
      'tcp://',
    ],
  ])('%s → error naming the key path and line', (_n, text, keyPath, line, msg) => {
    let err: ConfigError | undefined;
    try {
      parseConfig(text, 'edgecore.yaml');
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err!.code).toBe('EDGECORE_CONFIG');
    expect(err!.keyPath).toBe(keyPath);
    expect(err!.line).toBe(line);
    expect(err!.message).toContain(`edgecore.yaml:${line}: ${keyPath}`);
    expect(err!.message).toContain(msg);
  });

  it('memory.heapGrowingPercent: 30 by default, and bounded', () => {
    expect(parseConfig(head).memory.heapGrowingPercent).toBe(30);
    expect(() => parseConfig(`${head}memory: { heapGrowingPercent: 1000 }\n`, 'f.yaml')).toThrow(
      /memory\.heapGrowingPercent/,
    );
  });

  it('broken YAML names the line', () => {
    expect(() => parseConfig(`${head}modules:\n  edgeMesh: [\n`, 'f.yaml')).toThrow(
      /^f\.yaml:\d+: invalid YAML/,
    );
    expect(() => parseConfig(`${head}kind: EdgeCore\n`, 'f.yaml')).toThrow(/invalid YAML/);
  });

  it('loadConfigFile reports a missing file clearly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    try {
      expect(() => loadConfigFile(join(dir, 'nope.yaml'))).toThrow(/cannot read config/);
      writeFileSync(join(dir, 'ok.yaml'), head);
      expect(loadConfigFile(join(dir, 'ok.yaml')).kind).toBe('EdgeCore');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
