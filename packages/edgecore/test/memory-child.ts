/**
 * A process that makes a burst (~100 MiB of objects, held until the burst ends: no collection
 * can free them early), then (optionally) keeps its event loop busy for `busyMs`, then drops the
 * burst and idles; its MemoryReleaser (growth `argv[2]` MiB, 200 ms windows) acts on it. Prints
 * one JSON line per phase: the committed heap and the releaser's counts.
 */
import { getHeapStatistics } from 'node:v8';
import { MemoryReleaser } from '../src/memory';

const growthMiB = Number(process.argv[2]);
const busyMs = Number(process.argv[3] ?? 0);
const idleMs = Number(process.argv[4] ?? 1500);
const r = new MemoryReleaser({ growthMiB, quietMs: 200 });
r.start();
const report = (phase: string): void =>
  console.log(JSON.stringify({ phase, heap: getHeapStatistics().total_heap_size, ...r.stats }));

let held: unknown[][] | undefined = [];
for (let k = 0; k < 20; k++) {
  const objs = [];
  for (let i = 0; i < 100_000; i++) objs.push({ i, s: `y${i}` });
  held.push(objs);
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
