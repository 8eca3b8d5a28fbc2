import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { MetaStore } from '../src';
import { tmpDb } from './helpers';

describe('concurrency', () => {
  it('readers during a write burst in another process never see "database is locked"', async () => {
    const db = tmpDb();
    const seed = new MetaStore(db.path); // create the schema before the writer starts
    seed.close();
    const reader = new MetaStore(db.path, { readonly: true });
    const child = spawn(
      process.execPath,
      ['-r', 'ts-node/register/transpile-only', join(__dirname, 'burst-child.ts'), db.path, '400', '500'],
      {
        cwd: join(__dirname, '..', '..', '..'),
        env: { ...process.env, TS_NODE_PROJECT: join(__dirname, '..', 'tsconfig.json') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    let reads = 0;
    let readsDuringBurst = 0;
    const errors: string[] = [];
    let finished = false;
    void exited.then(() => (finished = true));
    const deadline = Date.now() + 60_000;
    while (!finished && Date.now() < deadline) {
      try {
        reader.list('default', 'service');
        reader.get('default/service/s1');
        reads++;
        if (out.includes('start') && !out.includes('done')) readsDuringBurst++;
      } catch (e) {
        errors.push((e as Error).message);
      }
      await new Promise((r) => setImmediate(r));
    }
    expect(await exited).toBe(0);
    expect(err).toBe('');
    expect(errors).toEqual([]);
    expect(readsDuringBurst).toBeGreaterThan(10);
    expect(reads).toBeGreaterThanOrEqual(readsDuringBurst);
    expect(reader.count('service')).toBe(2000);
    reader.close();
    db.cleanup();
  }, 90_000);
});
