/**
 * A process that makes a burst (~100 MiB of objects, held until the burst ends: no collection
 * can free them early; with `argv[5]` = `malloc`, also ~64 MiB of small buffers outside V8's
 * heap, every 64th kept for good so malloc cannot give the rest back at its top), then
 * (optionally) keeps its event loop busy for `busyMs`, then drops the burst and idles; its
 * MemoryReleaser (growth `argv[2]` MiB, 200 ms windows; with `argv[6]` = `trim`, the addon's
 * `trimMalloc`) acts on it. Prints one JSON line per phase: the committed heap, the process's
 * anonymous resident memory and the releaser's counts.
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { trimMalloc } from '@edgecore/edgemesh-module';
import { MemoryReleaser } from '../src/memory';

const growthMiB = Number(process.argv[2]);
const busyMs = Number(process.argv[3] ?? 0);
const idleMs = Number(process.argv[4] ?? 1500);
const r = new MemoryReleaser({
  growthMiB,
  quietMs: 200,
  trim: process.argv[6] === 'trim' ? trimMalloc : undefined,
});
r.start();
const rssAnon = (): number =>
  Number(/RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
const report = (phase: string): void =>
  console.log(
    JSON.stringify({ phase, heap: getHeapStatistics().total_heap_size, rssAnon: rssAnon(), ...r.stats }),
  );

let held: unknown[][] | undefined = [];
for (let k = 0; k < 20; k++) {
  const objs = [];
  for (let i = 0; i < 100_000; i++) objs.push({ i, s: `y${i}` });
  held.push(objs);
}
const kept: Buffer[] = [];
if (process.argv[5] === 'malloc')
  for (let i = 0; i < 16_384; i++) {
    const b = Buffer.allocUnsafeSlow(4000).fill(1); // malloc'd (not pooled), its pages touched
    if (i % 64 === 0) kept.push(b);
    else held.push([b]);
  }
report('burst');
// busy: the loop spins 45 of every 50 ms (a node serving hard), bounded by busyMs
const busyUntil = Date.now() + busyMs;
const spin = (): void => {
  if (Date.now() >= busyUntil) {
    report('busy');
    held = undefined; // the burst is over: what it made is garbage now
    setTimeout(() => {
      report('idle');
      r.stop();
    }, idleMs);
    return;
  }
  const t = Date.now() + 45;
  while (Date.now() < t && held);
  setTimeout(spin, 5);
};
spin();
