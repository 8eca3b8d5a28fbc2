/**
 * Beehive bus benchmark (issue #2): async send→receive throughput and sendSync round-trip latency.
 * Goals: ≥ 1,000,000 messages/s; sendSync p50 ≤ 5 µs. Run: `npm run bench:beehive`.
 */
import 'reflect-metadata';
import { ChannelContext, newMessage, newResponse, type Message } from '@edgecore/beehive';

const N_THROUGHPUT = Number(process.env.N ?? 2_000_000);
const N_SYNC = Number(process.env.N_SYNC ?? 200_000);

async function throughput(fresh: boolean): Promise<number> {
  const ctx = new ChannelContext();
  ctx.addModule('producer', 'user');
  ctx.addModule('sink', 'mesh');
  const shared = newMessage(
    { op: 'bench' },
    { source: 'producer', operation: 'update', resource: 'default/pod/p' },
  );
  let got = 0;
  const consumer = (async () => {
    for await (const _m of ctx.receive('sink')) if (++got === N_THROUGHPUT) break;
  })();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N_THROUGHPUT; i++) {
    const m = fresh
      ? newMessage({ i }, { source: 'producer', operation: 'update', resource: 'default/pod/p' })
      : shared;
    await ctx.send('sink', m);
  }
  await consumer;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  ctx.close();
  return N_THROUGHPUT / secs;
}

async function syncLatency(): Promise<{ p50: number; p99: number; rate: number }> {
  const ctx = new ChannelContext();
  ctx.addModule('meta', 'meta');
  void (async () => {
    for await (const m of ctx.receive('meta')) ctx.sendResp(newResponse(m, 'ok'));
  })();
  const samples = new Float64Array(N_SYNC);
  const req: Message<unknown> = newMessage('q', {
    source: 'mesh',
    operation: 'query',
    resource: 'default/service',
  });
  // Warm-up so the JIT settles before sampling.
  for (let i = 0; i < 20_000; i++) {
    req.header.msg_id = `w${i}`;
    await ctx.sendSync('meta', req, 1000);
  }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N_SYNC; i++) {
    req.header.msg_id = `m${i}`;
    const s = process.hrtime.bigint();
    await ctx.sendSync('meta', req, 1000);
    samples[i] = Number(process.hrtime.bigint() - s) / 1000;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  ctx.close();
  samples.sort();
  return {
    p50: samples[Math.floor(N_SYNC * 0.5)],
    p99: samples[Math.floor(N_SYNC * 0.99)],
    rate: N_SYNC / secs,
  };
}

async function main(): Promise<void> {
  await throughput(false); // warm-up
  const rows: [string, string, string, string][] = [];
  for (let run = 1; run <= 2; run++) {
    const shared = await throughput(false);
    const fresh = await throughput(true);
    const sync = await syncLatency();
    rows.push([
      `send→receive, shared message (run ${run})`,
      `${(shared / 1e6).toFixed(2)} M msg/s`,
      '≥ 1.00 M msg/s',
      shared >= 1e6 ? 'ok' : 'MISS',
    ]);
    rows.push([
      `send→receive, newMessage each (run ${run})`,
      `${(fresh / 1e6).toFixed(2)} M msg/s`,
      '(informative)',
      '',
    ]);
    rows.push([
      `sendSync round trip p50 (run ${run})`,
      `${sync.p50.toFixed(2)} µs`,
      '≤ 5 µs',
      sync.p50 <= 5 ? 'ok' : 'MISS',
    ]);
    rows.push([`sendSync round trip p99 (run ${run})`, `${sync.p99.toFixed(2)} µs`, '(informative)', '']);
    rows.push([
      `sendSync sequential rate (run ${run})`,
      `${(sync.rate / 1e3).toFixed(0)} k req/s`,
      '(informative)',
      '',
    ]);
  }
  const w = [0, 1, 2, 3].map((c) =>
    Math.max(...rows.map((r) => r[c].length), ['metric', 'value', 'goal', ''][c].length),
  );
  const line = (r: string[]): string => r.map((x, i) => x.padEnd(w[i])).join(' | ');
  console.log(`beehive bench — node ${process.version}, N=${N_THROUGHPUT}, N_SYNC=${N_SYNC}`);
  console.log(line(['metric', 'value', 'goal', '']));
  console.log(w.map((n) => '-'.repeat(n)).join('-|-'));
  for (const r of rows) console.log(line(r));
}

void main();
