/**
 * iptables programming benchmark (issue #7), run by bench/iptables.sh inside a network namespace
 * it created: time to program 1,000 and 10,000 service ports in one iptables-restore batch, to
 * apply one change at 10,000, and — for reference — 1,000 rules with one `iptables` call each
 * (kube-proxy's old way). Goals: 10,000 in ≤ 2 s; one change at 10,000 in ≤ 200 ms. Then the same
 * for DNAT mode (`l4Mode: dnat`): plain TCP ports with two backends each (a mark and two DNATs
 * per port), and one backend change at 10,000.
 */
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { iptablesBinaries, IptablesManager, intToIp, run, type PortalEntry } from '@edgecore/edgemesh-module';

const backend = (process.env.IPT_BACKEND ?? 'nft') as 'nft' | 'legacy';
const bin = iptablesBinaries(backend);

function entries(n: number, protocol: 'http' | 'tcp' = 'http'): PortalEntry[] {
  return Array.from({ length: n }, (_, i) => ({
    key: `ns-${i % 50}/svc-${i}:80/TCP`,
    serviceKey: `ns-${i % 50}/svc-${i}`,
    namespace: `ns-${i % 50}`,
    service: `svc-${i}`,
    vip: intToIp(0xc6120000 + 1 + i),
    port: 80,
    transport: 'TCP' as const,
    protocol,
    listenHost: '169.254.96.16',
    listenPort: 20000 + (i % 40000),
  }));
}

/** The rules and chains of an `iptables-save -t nat`: what a whole-table restore writes back. */
function natRules(save: string): string {
  const lines = save.split('\n');
  const rules = lines.filter((l) => l.startsWith('-A ')).length;
  const chains = lines.filter((l) => l.startsWith(':')).length;
  return `${rules.toLocaleString('en')} rules in ${chains} chains`;
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main(): Promise<void> {
  const ns = execFileSync('ip', ['netns', 'identify', String(process.pid)])
    .toString()
    .trim();
  if (!ns) throw new Error('refusing to run outside a network namespace (use bench/iptables.sh)');
  const m = new IptablesManager({
    listenIP: '169.254.96.16',
    listenInterface: 'edgemesh0',
    dnsPort: 53,
    hijackDns: true,
    ...bin,
  });
  const rows: [string, string, string][] = [];
  for (let run_ = 1; run_ <= 2; run_++) {
    await m.cleanup();
    const t1k = await timed(() => m.sync(entries(1000)));
    await m.cleanup();
    const t10k = await timed(() => m.sync(entries(10_000)));
    const changed = entries(10_000);
    changed[5000] = { ...changed[5000], listenPort: 65000 };
    const tChange = await timed(() => m.sync(changed));
    const portalSave = (await run(bin.iptablesSave, ['-t', 'nat'])).stdout;
    const count = portalSave.split('\n').filter((l) => /--comment "?ns-/.test(l)).length;
    if (count !== 10_000) throw new Error(`expected 10000 DNAT rules, found ${count}`);
    const portalRules = natRules(portalSave);
    await m.cleanup();
    // reference: one exec per rule, 1,000 rules (as kube-proxy did before iptables-restore)
    await run(bin.iptables, ['-t', 'nat', '-N', 'BENCH-REF']);
    const tRef = await timed(async () => {
      for (const e of entries(1000)) {
        await run(bin.iptables, [
          '-w',
          '5',
          '-t',
          'nat',
          '-A',
          'BENCH-REF',
          '-d',
          `${e.vip}/32`,
          '-p',
          'tcp',
          '--dport',
          '80',
          '-j',
          'DNAT',
          '--to-destination',
          `${e.listenHost}:${e.listenPort}`,
        ]);
      }
    });
    await run(bin.iptables, ['-t', 'nat', '-F', 'BENCH-REF']);
    await run(bin.iptables, ['-t', 'nat', '-X', 'BENCH-REF']);
    rows.push([`1,000 ports, one batch (run ${run_})`, `${t1k.toFixed(0)} ms`, '']);
    rows.push([
      `10,000 ports, one batch (run ${run_})`,
      `${t10k.toFixed(0)} ms`,
      `${t10k <= 2000 ? 'ok (≤ 2 s)' : 'MISS (≤ 2 s)'}; nat table ${portalRules}`,
    ]);
    rows.push([
      `one change at 10,000 (run ${run_})`,
      `${tChange.toFixed(0)} ms`,
      tChange <= 200 ? 'ok (≤ 200 ms)' : 'MISS (≤ 200 ms)',
    ]);
    rows.push([
      `reference: 1,000 rules, one exec each (run ${run_})`,
      `${tRef.toFixed(0)} ms`,
      `${(tRef / t1k).toFixed(0)}× the batch`,
    ]);
  }
  // DNAT mode: two backends per port; the change moves one backend of one port
  const backends = new Map<string, { host: string; port: number }[]>();
  const targetsOf = (e: PortalEntry) =>
    backends.get(e.key) ?? [
      { host: intToIp(0x0a000000 + 1 + (e.listenPort % 60000)), port: 8080 },
      { host: intToIp(0x0a010000 + 1 + (e.listenPort % 60000)), port: 8080 },
    ];
  const d = new IptablesManager({
    listenIP: '169.254.96.16',
    listenInterface: 'edgemesh0',
    dnsPort: 53,
    hijackDns: true,
    dnatTargets: targetsOf,
    ...bin,
  });
  for (let run_ = 1; run_ <= 2; run_++) {
    backends.clear();
    await d.cleanup();
    const list = entries(10_000, 'tcp');
    const t10k = await timed(() => d.sync(list));
    backends.set(list[5000].key, [{ host: '10.9.9.9', port: 8080 }, ...targetsOf(list[5000]).slice(1)]);
    const tChange = await timed(() => d.sync(list));
    const save = (await run(bin.iptablesSave, ['-t', 'nat'])).stdout;
    // 10,000 ports × 2 backends
    const dnat = save.split('\n').filter((l) => / -j DNAT --to-destination 10\./.test(l)).length;
    if (dnat !== 20_000 || !save.includes('10.9.9.9:8080'))
      throw new Error(`expected 20000 backend DNAT rules and the change, found ${dnat}`);
    await d.cleanup();
    rows.push([
      `DNAT mode: 10,000 ports × 2 backends, one batch (run ${run_})`,
      `${t10k.toFixed(0)} ms`,
      `${t10k <= 2000 ? 'ok (≤ 2 s)' : 'MISS (≤ 2 s)'}; nat table ${natRules(save)}`,
    ]);
    rows.push([
      `DNAT mode: one backend change at 10,000 (run ${run_})`,
      `${tChange.toFixed(0)} ms`,
      tChange <= 200 ? 'ok (≤ 200 ms)' : 'MISS (≤ 200 ms)',
    ]);
  }
  const v = (await run(bin.iptables, ['--version'])).stdout.trim();
  console.log(`iptables bench — inside netns ${ns}, ${v}, node ${process.version}`);
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) console.log(r.map((x, i) => x.padEnd(w[i])).join(' | '));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
