import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** Run a walkthrough script of examples/seed-walkthrough; its output is printed when it fails. */
export async function runWalkthrough(name: string): Promise<{ code: number | null; out: string }> {
  const script = join(__dirname, '..', '..', '..', 'examples', 'seed-walkthrough', name);
  const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn('bash', [script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (c) => resolve({ code: c, out }));
  });
  if (r.code !== 0) console.error(r.out);
  return r;
}
