import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { MetaStore } from '../src';
import { tmpDb } from './helpers';

const ROOT = join(__dirname, '..', '..', '..');

function runChildAndKill(dbPath: string, round: number, killAfterMs: number): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['-r', 'ts-node/register/transpile-only', join(__dirname, 'crash-child.ts'), dbPath, String(round)],
      {
        cwd: ROOT,
        env: { ...process.env, TS_NODE_PROJECT: join(__dirname, '..', 'tsconfig.json') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const acked = new Map<string, number>();
    let buf = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'ready') setTimeout(() => child.kill('SIGKILL'), killAfterMs);
        const m = /^ack (\S+) (\d+)$/.exec(line);
        if (m) acked.set(m[1], Math.max(acked.get(m[1]) ?? 0, Number(m[2])));
      }
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(acked);
      else reject(new Error(`child exited ${code}: ${err}`));
    });
  });
}

describe('crash safety (SIGKILL during a stream of acknowledged updates)', () => {
  it('after every kill: integrity_check ok and every acknowledged update present', async () => {
    const db = tmpDb();
    try {
      let total = 0;
      for (let round = 1; round <= 4; round++) {
        const acked = await runChildAndKill(db.path, round, 150 + Math.floor(Math.random() * 400));
        total += acked.size;
        const store = new MetaStore(db.path);
        expect(store.integrityCheck()).toBe('ok');
        for (const [key, rv] of acked) {
          const rec = store.get(key);
          expect({ key, present: !!rec }).toEqual({ key, present: true });
          expect(rec!.resourceVersion).toBeGreaterThanOrEqual(rv);
        }
        store.close();
      }
      expect(total).toBeGreaterThan(0);
    } finally {
      db.cleanup();
    }
  }, 120_000);
});
