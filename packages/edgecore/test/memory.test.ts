import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Phase {
  phase: string;
  heap: number;
  rssAnon: number;
  releases: number;
  releasedBytes: number;
  pauseSeconds: number;
}

/** Run memory-child.ts (a burst of garbage, `busyMs` of a busy loop, then idle); its reports. */
async function child(
  growthMiB: number,
  busyMs = 0,
  idleMs = 1500,
  malloc: '' | 'malloc' = '',
  trim: '' | 'trim' = '',
): Promise<Record<string, Phase>> {
  const { stdout } = await run(process.execPath, [
    '-r',
    'ts-node/register/transpile-only',
    join(__dirname, 'memory-child.ts'),
    String(growthMiB),
    String(busyMs),
    String(idleMs),
    malloc,
    trim,
  ]);
  const out: Record<string, Phase> = {};
  for (const l of stdout.trim().split('\n')) {
    const p = JSON.parse(l) as Phase;
    out[p.phase] = p;
  }
  return out;
}

const MiB = 1024 * 1024;

describe('MemoryReleaser (a real V8 heap in a child process)', () => {
  it('gives back the heap a burst left once the loop is quiet, once', async () => {
    const p = await child(16);
    expect(p.burst.heap).toBeGreaterThan(40 * MiB); // the burst grew the heap
    expect(p.burst.releases).toBe(0);
    expect(p.idle.releases).toBe(1); // one release; the heap it left is the new baseline
    expect(p.idle.heap).toBeLessThan(p.burst.heap - 16 * MiB);
    expect(p.idle.releasedBytes).toBeGreaterThan(16 * MiB);
    expect(p.idle.pauseSeconds).toBeGreaterThan(0);
  });

  it('waits while the loop is busy, and releases when it is quiet again', async () => {
    const p = await child(16, 1200);
    expect(p.busy.releases).toBe(0); // six 200 ms windows at ~90 % busy: none was quiet
    expect(p.idle.releases).toBe(1);
    expect(p.idle.heap).toBeLessThan(p.busy.heap - 16 * MiB);
  });

  it("gives malloc's free pages back too when given the addon's trim", async () => {
    // 64 MiB of 4 KB buffers freed by the release's collection, every 64th still held: glibc keeps
    // the freed pages in its arena (resident) until a trim
    const kept = await child(16, 0, 1500, 'malloc');
    const trimmed = await child(16, 0, 1500, 'malloc', 'trim');
    expect(kept.idle.releases).toBe(1);
    expect(trimmed.idle.releases).toBe(1);
    expect(kept.idle.rssAnon - kept.idle.heap).toBeGreaterThan(48 * MiB); // freed, still resident
    expect(trimmed.idle.rssAnon).toBeLessThan(kept.idle.rssAnon - 40 * MiB);
  });

  it('does nothing when disabled (0) or when the heap grew less than the threshold', async () => {
    const off = await child(0);
    expect(off.idle.releases).toBe(0);
    const high = await child(1024);
    expect(high.idle.releases).toBe(0);
  });
});
