import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ResolvConfHijack } from '../src';
import { tmpDir } from './helpers';

describe('dns.hijack: resolvconf (on a file of the test, never the host resolv.conf)', () => {
  it('prepends our nameserver, restores the original on stop, and undoes a crashed run on start', () => {
    const d = tmpDir();
    const path = join(d.dir, 'resolv.conf');
    const orig = 'search example.test\nnameserver 192.0.2.53\noptions ndots:5\n';
    writeFileSync(path, orig);
    const h = new ResolvConfHijack(path, '172.17.0.1');
    h.apply();
    expect(readFileSync(path, 'utf8')).toBe(`nameserver 172.17.0.1 # added by edgemesh\n${orig}`);
    expect(h.original()).toBe(orig);
    h.restore();
    expect(readFileSync(path, 'utf8')).toBe(orig);
    expect(existsSync(h.backupPath)).toBe(false);
    // a run that crashed after apply(): the next start recovers the original first
    new ResolvConfHijack(path, '172.17.0.1').apply();
    const next = new ResolvConfHijack(path, '172.17.0.9');
    next.recover();
    expect(readFileSync(path, 'utf8')).toBe(orig);
    next.apply();
    expect(readFileSync(path, 'utf8').match(/edgemesh/g)).toHaveLength(1);
    next.restore();
    expect(readFileSync(path, 'utf8')).toBe(orig);
    d.cleanup();
  });
});
