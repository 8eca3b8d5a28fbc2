import { join } from 'node:path';
import { Netns } from './netns';

/**
 * IptablesManager's rule layout and its incremental writes, on both backends, inside a namespace
 * this test creates: DNAT rules live in one chain per VIP /24, jumped to from the top chains; a
 * change writes only the difference; a resync drops empty buckets; a cleanup after a crash finds
 * every chain of ours.
 */
const FIXTURE = join(__dirname, 'fixtures', 'iptables-steps.js');

describe.each(['nft', 'legacy'] as const)('IptablesManager on iptables-%s (in a netns)', (backend) => {
  let ns: Netns;
  let steps: Record<string, string>;

  beforeAll(async () => {
    ns = await Netns.create(`emipt${process.pid % 100000}${backend[0]}`);
    const out = await ns.run(process.execPath, [FIXTURE, backend], 30_000);
    steps = Object.fromEntries(
      out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { step: string; save: string })
        .map((s) => [s.step, s.save]),
    );
  }, 40_000);

  afterAll(async () => {
    await ns?.destroy();
  });

  const ours = (save: string) =>
    save
      .split('\n')
      .filter((l) => /^-A (EDGEMESH-|PREROUTING|OUTPUT)/.test(l))
      .map((l) => l.replace(/"/g, ''))
      .sort();

  it('full write: the top chains jump per VIP /24 to bucket chains that hold the DNAT rules', () => {
    const r = ours(steps.full);
    expect(r).toContain('-A PREROUTING -j EDGEMESH-PORTALS-CONTAINER');
    expect(r).toContain('-A OUTPUT -j EDGEMESH-PORTALS-HOST');
    expect(r).toContain('-A EDGEMESH-PORTALS-HOST -d 198.18.0.0/24 -j EDGEMESH-H-C61200');
    expect(r).toContain('-A EDGEMESH-PORTALS-CONTAINER -d 198.18.1.0/24 -j EDGEMESH-C-C61201');
    expect(r).toContain(
      '-A EDGEMESH-H-C61200 -d 198.18.0.6/32 -p udp -m udp --dport 53 -m comment --comment default/b:53 -j DNAT --to-destination 169.254.96.16:20002',
    );
    expect(r.filter((l) => l.includes('--comment default/'))).toHaveLength(6);
    // DNS hijack first in the top chains
    const host = steps.full.split('\n').filter((l) => l.startsWith('-A EDGEMESH-PORTALS-HOST'));
    expect(host[0]).toMatch(/--dport 53 .*edgemesh-dns/);
  });

  it('a change writes the difference: moved and new rules, a new bucket, the empty bucket kept until resync', () => {
    const r = ours(steps.incremental);
    const dnat = r.filter((l) => l.includes('--comment default/'));
    expect(dnat).toHaveLength(6);
    expect(dnat.join('\n')).toContain('--comment default/b:53 -j DNAT --to-destination 169.254.96.16:20099');
    expect(dnat.join('\n')).not.toContain('20002');
    expect(dnat.join('\n')).not.toContain('default/c:');
    expect(r).toContain('-A EDGEMESH-PORTALS-HOST -d 10.96.2.0/24 -j EDGEMESH-H-0A6002');
    expect(r).toContain(
      '-A EDGEMESH-C-0A6002 -d 10.96.2.9/32 -p tcp -m tcp --dport 443 -m comment --comment default/d:443 -j DNAT --to-destination 169.254.96.16:20004',
    );
    expect(r).toContain('-A EDGEMESH-PORTALS-HOST -d 198.18.1.0/24 -j EDGEMESH-H-C61201');
  });

  it('a resync rewrites everything and removes the empty bucket chains', () => {
    const r = ours(steps.resync);
    expect(r.filter((l) => l.includes('--comment default/'))).toEqual(
      ours(steps.incremental).filter((l) => l.includes('--comment default/')),
    );
    expect(steps.resync).not.toContain('C61201');
    expect(r.filter((l) => l.startsWith('-A PREROUTING') || l.startsWith('-A OUTPUT'))).toHaveLength(2);
  });

  it('a cleanup by a manager that never wrote (after a crash) removes every chain and jump of ours', () => {
    expect(steps.cleanup).not.toContain('EDGEMESH');
  });
});
