import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, configToYaml, defaultConfig, parseConfig } from '../src';

const readme = (pkg: string): string => readFileSync(join(__dirname, '..', '..', pkg, 'README.md'), 'utf8');

/**
 * Key paths of edgecore's README table. A row names one full path, then more keys beside it:
 * `.listen` and `listen` are siblings of the first; `sync.settleMs` hangs below the first's
 * ancestor `…sync`, or beside the first when it has none; `tls.{a,b}` is `tls.a`, `tls.b`.
 */
function tableKeys(md: string): string[] {
  const table = md.slice(md.indexOf('| key | default |'));
  const rows = table.slice(0, table.indexOf('\n\n')).split('\n').slice(2);
  const out: string[] = [];
  for (const row of rows) {
    const cell = row.split(' | ')[0].replace(/^\| /, '');
    const names = [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
    const first = names[0].split('.');
    for (const n of names) {
      let full: string[];
      if (n === names[0]) full = first;
      else {
        const rel = n.replace(/^\./, '').split('.');
        const at = first.lastIndexOf(rel[0], first.length - 2);
        full = at >= 0 ? [...first.slice(0, at), ...rel] : [...first.slice(0, -1), ...rel];
      }
      const path = full.join('.');
      const brace = /^(.*)\.\{([^}]+)\}$/.exec(path);
      if (brace) out.push(...brace[2].split(',').map((k) => `${brace[1]}.${k}`));
      else out.push(path);
    }
  }
  return out;
}

/** The keys EdgeMesh's README says edgecore.yaml sets (its Config section, before "Library-only"). */
function meshKeys(md: string): string[] {
  const sec = md.slice(md.indexOf('## Config (`modules.edgeMesh`)'));
  const list = sec.slice(0, sec.indexOf('Library-only'));
  return [...list.matchAll(/`([a-zA-Z][\w.]*)`/g)]
    .map((m) => m[1])
    .filter((k) => k !== 'modules.edgeMesh')
    .map((k) => `modules.edgeMesh.${k}`);
}

/** The error of setting `path` to a value no key takes, or undefined when it is accepted. */
function probe(path: string): string | undefined {
  const doc: Record<string, unknown> = {
    apiVersion: 'edgecore.config.kubeedge.io/v1alpha2',
    kind: 'EdgeCore',
  };
  let at = doc;
  const parts = path.split('.');
  for (const p of parts.slice(0, -1)) at = (at[p] ??= {}) as Record<string, unknown>;
  at[parts[parts.length - 1]] = { probe: [] };
  try {
    parseConfig(stringify(doc));
    return undefined;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.message;
  }
}

describe('every documented key can be set from edgecore.yaml', () => {
  const keys = [...new Set([...tableKeys(readme('edgecore')), ...meshKeys(readme('edgemesh-module'))])];

  it('the READMEs name the keys (the parsers of their tables work)', () => {
    expect(keys).toEqual(expect.arrayContaining(['database.dataSource', 'modules.edgeHub.mqtt.tls.keyFile']));
    expect(keys).toEqual(
      expect.arrayContaining(['modules.edgeMesh.dns.cacheSize', 'modules.edgeMesh.proxy.splice']),
    );
    expect(keys.length).toBeGreaterThan(60);
  });

  it.each(keys)('%s is a key of the schema', (key) => {
    const err = probe(key);
    // a value of the wrong type is refused naming the key; an unknown key would be refused as such
    expect(err ?? '').not.toMatch(/unknown key/);
    if (err) expect(err).toContain(key);
  });

  it('--defaultconfig prints every documented key that has a default', () => {
    const d = parseConfig(configToYaml(defaultConfig())) as unknown as Record<string, unknown>;
    const optional = new Set([
      'modules.edgeHub.mqtt.username',
      'modules.edgeHub.mqtt.password',
      'modules.edgeHub.mqtt.servers',
      'modules.edgeHub.mqtt.tls.caFile',
      'modules.edgeHub.mqtt.tls.certFile',
      'modules.edgeHub.mqtt.tls.keyFile',
      'modules.edgeMesh.consistentHashHeader',
      'modules.edgeMesh.dns.listenPort',
      'modules.edgeMesh.dns.listenAddress',
      'modules.edgeMesh.dns.allowFrom',
      'modules.edgeMesh.nodeName',
      'modules.edgeMesh.zone',
    ]);
    const missing = keys.filter((k) => {
      if (optional.has(k)) return false;
      let v: unknown = d;
      for (const p of k.split('.')) v = (v as Record<string, unknown> | undefined)?.[p];
      return v === undefined;
    });
    expect(missing).toEqual([]);
  });
});
