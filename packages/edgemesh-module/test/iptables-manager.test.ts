import { join } from 'node:path';
import { Netns } from '@edgecore/test-support';

/**
 * IptablesManager's rule layout and its incremental writes, on both backends, inside a namespace
 * this test creates: DNAT rules live in one chain per VIP /24, jumped to from the top chains; a
 * change writes only the difference; a resync drops empty buckets; a cleanup after a crash finds
 * every chain of ours.
 */
const FIXTURE = join(__dirname, 'fixtures', 'iptables-steps.js');
const RETRY_FIXTURE = join(__dirname, 'fixtures', 'iptables-retry.js');

/** Run a fixture in `ns`: its `{ step, save }` lines (other output, such as logs, skipped). */
async function runSteps(ns: Netns, fixture: string, backend: string): Promise<Record<string, string>> {
  const out = await ns.run(process.execPath, [fixture, backend], 30_000);
  return Object.fromEntries(
    out
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{"step"'))
      .map((l) => JSON.parse(l) as { step: string; save: string })
      .map((s) => [s.step, s.save]),
  );
}

describe.each(['nft', 'legacy'] as const)('IptablesManager on iptables-%s (in a netns)', (backend) => {
  let ns: Netns;
  let steps: Record<string, string>;

  let retry: Record<string, { save: string; syncs: number; retries: number }>;

  beforeAll(async () => {
    ns = await Netns.create(`emipt${process.pid % 100000}${backend[0]}`);
    steps = await runSteps(ns, FIXTURE, backend);
    const out = await ns.run(process.execPath, [RETRY_FIXTURE, backend], 30_000);
    retry = Object.fromEntries(
      out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{"step"'))
        .map((l) => JSON.parse(l))
        .map(({ step, ...rest }) => [step, rest]),
    );
  }, 60_000);

  afterAll(async () => {
    await ns?.destroy();
  });

  const ours = (save: string) =>
    save
      .split('\n')
      .filter((l) => /^-A (EDGEMESH-|PREROUTING|OUTPUT|POSTROUTING)/.test(l))
      .map((l) => l.replace(/"/g, ''))
      .sort();

  it('full write: both top chains jump per VIP /24 to one bucket chain that holds the DNAT rules', () => {
    const r = ours(steps.full);
    expect(r).toContain('-A PREROUTING -j EDGEMESH-PORTALS-CONTAINER');
    expect(r).toContain('-A OUTPUT -j EDGEMESH-PORTALS-HOST');
    expect(r).toContain('-A EDGEMESH-PORTALS-HOST -d 198.18.0.0/24 -j EDGEMESH-B-C61200');
    expect(r).toContain('-A EDGEMESH-PORTALS-CONTAINER -d 198.18.0.0/24 -j EDGEMESH-B-C61200');
    expect(r).toContain('-A EDGEMESH-PORTALS-CONTAINER -d 198.18.1.0/24 -j EDGEMESH-B-C61201');
    expect(r).toContain(
      '-A EDGEMESH-B-C61200 -d 198.18.0.6/32 -p udp -m udp --dport 53 -m comment --comment default/b:53 -j DNAT --to-destination 169.254.96.16:20002',
    );
    // one rule per service port, shared by both sides
    expect(r.filter((l) => l.includes('--comment default/'))).toHaveLength(3);
    // DNS hijack first in the top chains
    const host = steps.full.split('\n').filter((l) => l.startsWith('-A EDGEMESH-PORTALS-HOST'));
    expect(host[0]).toMatch(/--dport 53 .*edgemesh-dns/);
    // our upstream DNS queries leave masqueraded (portal mode too): no resolver routes to edgemesh0
    expect(r).toContain('-A POSTROUTING -j EDGEMESH-POSTROUTING');
    expect(r.filter((l) => l.startsWith('-A EDGEMESH-POSTROUTING'))).toEqual([
      '-A EDGEMESH-POSTROUTING -s 169.254.96.16/32 ! -o edgemesh0 -p tcp -m comment --comment edgemesh-dns-upstream -j MASQUERADE',
      '-A EDGEMESH-POSTROUTING -s 169.254.96.16/32 ! -o edgemesh0 -p udp -m comment --comment edgemesh-dns-upstream -j MASQUERADE',
    ]);
  });

  it('a change writes the difference: moved and new rules, a new bucket, the empty bucket kept until resync', () => {
    const r = ours(steps.incremental);
    const dnat = r.filter((l) => l.includes('--comment default/'));
    expect(dnat).toHaveLength(3);
    expect(dnat.join('\n')).toContain('--comment default/b:53 -j DNAT --to-destination 169.254.96.16:20099');
    expect(dnat.join('\n')).not.toContain('20002');
    expect(dnat.join('\n')).not.toContain('default/c:');
    expect(r).toContain('-A EDGEMESH-PORTALS-HOST -d 10.96.2.0/24 -j EDGEMESH-B-0A6002');
    expect(r).toContain(
      '-A EDGEMESH-B-0A6002 -d 10.96.2.9/32 -p tcp -m tcp --dport 443 -m comment --comment default/d:443 -j DNAT --to-destination 169.254.96.16:20004',
    );
    expect(r).toContain('-A EDGEMESH-PORTALS-HOST -d 198.18.1.0/24 -j EDGEMESH-B-C61201');
  });

  it('a resync rewrites everything and removes the empty bucket chains', () => {
    const r = ours(steps.resync);
    expect(r.filter((l) => l.includes('--comment default/'))).toEqual(
      ours(steps.incremental).filter((l) => l.includes('--comment default/')),
    );
    expect(steps.resync).not.toContain('C61201');
    expect(r.filter((l) => l.startsWith('-A PREROUTING') || l.startsWith('-A OUTPUT'))).toHaveLength(2);
  });

  it('a cleanup by a manager that never wrote (after a crash) removes every chain and jump of ours, also the per-side buckets of earlier versions', () => {
    expect(steps.resync).toContain(':EDGEMESH-C-C61299');
    expect(steps.cleanup).not.toContain('EDGEMESH');
  });

  describe('DNAT mode (l4Mode: dnat)', () => {
    // a port's lines in a chain, in the chain's order (ours() sorts): [comment, what follows it]
    const portLines = (save: string, chain: string, port: number) =>
      save
        .split('\n')
        .map((l) => l.replace(/"/g, ''))
        .filter((l) => l.startsWith(`-A ${chain} `) && l.includes(`--dport ${port} `))
        .map((l) => /--comment (\S+) (.*)$/.exec(l)!.slice(1, 3));
    const actions = (save: string, chain: string, port: number) =>
      portLines(save, chain, port).map(([, a]) => a);

    it('a TCP port with backends: a mark, then 1/3, 1/2 and the rest, each a DNAT to a backend', () => {
      expect(actions(steps['dnat-full'], 'EDGEMESH-B-C61200', 80)).toEqual([
        '-j MARK --set-xmark 0x4000/0x4000',
        '-m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.0.0.1:80',
        '-m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.0.0.2:80',
        '-j DNAT --to-destination 10.0.0.3:80',
      ]);
      // every line carries the port and a hash of its backend list
      const comments = new Set(portLines(steps['dnat-full'], 'EDGEMESH-B-C61200', 80).map(([c]) => c));
      expect([...comments]).toEqual([expect.stringMatching(/^default\/a:80@[0-9a-f]{8}$/)]);
      // a UDP port the same way (the module gives UDP backends only when conntrack is installed)
      expect(actions(steps['dnat-full'], 'EDGEMESH-B-C61200', 53)).toEqual([
        '-j MARK --set-xmark 0x4000/0x4000',
        '-j DNAT --to-destination 10.0.0.4:53',
      ]);
      // a port without backends keeps its portal
      expect(actions(steps['dnat-full'], 'EDGEMESH-B-C61201', 8080)).toEqual([
        '-j DNAT --to-destination 169.254.96.16:20003',
      ]);
    });

    it('masquerades what it DNATs to another host, from POSTROUTING', () => {
      expect(ours(steps['dnat-full'])).toContain('-A POSTROUTING -j EDGEMESH-POSTROUTING');
      expect(
        steps['dnat-full']
          .split('\n')
          .filter((l) => l.startsWith('-A EDGEMESH-POSTROUTING '))
          .map((l) => l.slice('-A EDGEMESH-POSTROUTING '.length).replace(/"/g, '')),
      ).toEqual([
        // our own upstream DNS queries first (hijackDns), then what DNAT mode marked
        '-s 169.254.96.16/32 ! -o edgemesh0 -p udp -m comment --comment edgemesh-dns-upstream -j MASQUERADE',
        '-s 169.254.96.16/32 ! -o edgemesh0 -p tcp -m comment --comment edgemesh-dns-upstream -j MASQUERADE',
        '-m mark ! --mark 0x4000/0x4000 -j RETURN',
        '-m addrtype --dst-type LOCAL -j RETURN',
        '-j MARK --set-xmark 0x4000/0x0', // --xor-mark, as saved
        '-m comment --comment edgemesh-masquerade -j MASQUERADE',
      ]);
    });

    it("a backend change (incremental) replaces all of the port's lines, in order; a port that gains backends gets them", () => {
      // the last line (`-j DNAT … 10.0.0.3:80`) is the same text but for the hash: kept in place
      // while the others were appended after it, it would take every connection
      expect(actions(steps['dnat-change'], 'EDGEMESH-B-C61200', 80)).toEqual([
        '-j MARK --set-xmark 0x4000/0x4000',
        '-m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.0.0.1:80',
        '-j DNAT --to-destination 10.0.0.3:80',
      ]);
      const before = portLines(steps['dnat-full'], 'EDGEMESH-B-C61200', 80)[0][0];
      const after = portLines(steps['dnat-change'], 'EDGEMESH-B-C61200', 80)[0][0];
      expect(after).not.toBe(before);
      expect(actions(steps['dnat-change'], 'EDGEMESH-B-C61201', 8080)).toEqual([
        '-j MARK --set-xmark 0x4000/0x4000',
        '-j DNAT --to-destination 10.0.0.9:8080',
      ]);
    });

    it('no backend left: back to the portal; a resync writes the same; cleanup removes all', () => {
      expect(actions(steps['dnat-empty'], 'EDGEMESH-B-C61200', 80)).toEqual([
        '-j DNAT --to-destination 169.254.96.16:20001',
      ]);
      expect(ours(steps['dnat-resync'])).toEqual(ours(steps['dnat-empty']));
      expect(steps['dnat-cleanup']).not.toContain('EDGEMESH');
    });
  });

  it('a write that failed is tried again a second later (not at the re-ensure, an hour away); none after a cleanup', () => {
    const dnat = (save: string) =>
      save.split('\n').filter((l) => l.includes('-j DNAT --to-destination 169.254.96.16:'));
    expect(retry.failed).toMatchObject({ syncs: 0, retries: 0 });
    expect(dnat(retry.failed.save)).toEqual([]);
    expect(retry.retried).toMatchObject({ syncs: 1, retries: 1 });
    expect(dnat(retry.retried.save)).toHaveLength(1);
    expect(dnat(retry.retried.save)[0]).toContain(
      '--comment "default/a:80" -j DNAT --to-destination 169.254.96.16:20001',
    );
    // the second write failed, the cleanup removed everything and nothing came back
    expect(retry['after-cleanup'].retries).toBe(1);
    expect(ours(retry['after-cleanup'].save)).toEqual([]);
  });
});

/**
 * EdgeMeshModule's side of DNAT mode: a pod that arrives or leaves (as MetaManager sends it) is a
 * rule change, written without a restart; stop removes every rule and chain.
 */
describe('EdgeMeshModule with l4Mode dnat (iptables-nft, in a netns)', () => {
  let ns: Netns;
  let steps: Record<string, string>;

  beforeAll(async () => {
    ns = await Netns.create(`emdnm${process.pid % 100000}`);
    steps = await runSteps(ns, join(__dirname, 'fixtures', 'dnat-module-steps.js'), 'nft');
  }, 40_000);

  afterAll(async () => {
    await ns?.destroy();
  });

  // the backends port 7000 is DNAT'd to
  const targets = (save: string) =>
    [...save.matchAll(/^-A EDGEMESH-B-\S+ .*--dport 7000 .*-j DNAT --to-destination (\S+)$/gm)]
      .map((m) => m[1])
      .sort();

  it("starts with the VIP DNAT'd to its one backend", () => {
    expect(steps.start).toMatch(/-d 198\.18\.0\.10\/32 -p tcp -m tcp --dport 7000 .* -j MARK --set-xmark/);
    expect(targets(steps.start)).toEqual(['10.0.0.1:7000']);
    expect(steps.start).toMatch(/^-A POSTROUTING -j EDGEMESH-POSTROUTING$/m);
  });

  it('a pod added is a second DNAT target at once; both deleted: back to the portal', () => {
    expect(targets(steps.added)).toEqual(['10.0.0.1:7000', '10.0.0.2:7000']);
    expect(steps.added).toContain('--probability 0.50000000000');
    expect(steps.removed).toMatch(/--dport 7000 .* -j DNAT --to-destination 169\.254\.96\.16:\d+/);
    expect(steps.removed).not.toMatch(/--dport 7000 .* -j MARK/);
  });

  it('a burst of 100 pods is one or a few rule writes (not one per pod), with every backend in them', () => {
    expect(targets(steps.burst)).toHaveLength(100);
    const syncs = Number(steps['burst-syncs']);
    expect(syncs).toBeGreaterThanOrEqual(1);
    expect(syncs).toBeLessThan(20);
  });

  it('stop leaves no rule or chain of ours', () => {
    expect(steps.stopped).not.toContain('EDGEMESH');
  });
});

/**
 * DNAT mode with real connections inside one namespace: two backends on the namespace's own
 * addresses, 40 connections to the VIP from the node — spread by RoundRobin/Random's random picks,
 * all to one backend with SessionStickiness (client-IP affinity via `-m recent`).
 */
describe.each(['RoundRobin', 'SessionStickiness'] as const)(
  'DNAT mode with traffic, lbStrategy %s (iptables-nft, in a netns)',
  (strategy) => {
    let ns: Netns;
    let steps: Record<string, string>;

    beforeAll(async () => {
      ns = await Netns.create(`emdnt${process.pid % 100000}${strategy[0]}`);
      steps = await runSteps(ns, join(__dirname, 'fixtures', 'dnat-traffic.js'), strategy);
    }, 40_000);

    afterAll(async () => {
      await ns?.destroy();
    });

    it('every connection is answered by a backend, through the kernel DNAT rules', () => {
      expect(steps.answers).toMatch(/^[ab]{40}$/);
      expect(steps.rules).toMatch(/--dport 7000 .* -j DNAT --to-destination 10\.0\.0\.1:7000/);
    });

    it('UDP: a client keeps its flow to one backend; when that pod goes, its next datagram reaches the other (conntrack forgot the flow)', () => {
      expect(steps.udp).toMatch(/^(a{4}\|b|b{4}\|a)$/);
      expect(steps.rules).toMatch(/--dport 7001 .* -j DNAT --to-destination 10\.0\.0\.1:7001/);
    });

    if (strategy === 'RoundRobin')
      it('spreads: both backends answer (each 1/2 of 40 picks)', () => {
        expect(steps.answers).toContain('a');
        expect(steps.answers).toContain('b');
        expect(steps.rules).not.toContain('-m recent');
      });
    else
      it('sticks: one client, one backend for all 40 (the affinity check renews, 3 h as kube-proxy)', () => {
        expect(new Set(steps.answers).size).toBe(1);
        expect(steps.rules).toMatch(
          /-m recent --update --seconds 10800 --reap --name EM-[0-9a-f]{16} --mask 255\.255\.255\.255 --rsource -j DNAT --to-destination 10\.0\.0\.[12]:7000/,
        );
        expect(steps.rules).toMatch(/-m recent --set --name EM-[0-9a-f]{16} .*-j DNAT/);
      });
  },
);

describe('DNS hijack on more container bridges (dns.hijackInterfaces)', () => {
  it('one DNAT per bridge and protocol; a name that is no interface name never reaches the rule text', async () => {
    const { RuleBuilder } = await import('../src/iptables/rules');
    const { silentLogger } = await import('@edgecore/beehive');
    const text = new RuleBuilder(
      {
        listenIP: '169.254.96.16',
        listenInterface: 'edgemesh0',
        dnsPort: 53,
        hijackDns: true,
        hijackInterfaces: ['cni0', 'br-1.2', 'x; rm -rf /', 'waytoolonginterfacename'],
      },
      silentLogger,
    ).payload([]);
    const dns = text
      .split('\n')
      .filter((l) => l.startsWith('-A EDGEMESH-PORTALS-CONTAINER') && l.includes('edgemesh-dns'));
    expect(dns.map((l) => /-i (\S+) -p (\S+)/.exec(l)!.slice(1).join(' '))).toEqual([
      'edgemesh0 udp',
      'cni0 udp',
      'br-1.2 udp',
      'edgemesh0 tcp',
      'cni0 tcp',
      'br-1.2 tcp',
    ]);
    expect(text).not.toContain('rm -rf');
  });
});
