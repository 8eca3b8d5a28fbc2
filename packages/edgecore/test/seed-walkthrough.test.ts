import { spawn } from 'node:child_process';
import { join } from 'node:path';

/**
 * The seed walkthrough end to end (examples/seed-walkthrough/run.sh): cloud (mosquitto, dnsmasq),
 * three edge nodes and a container in network namespaces the script creates and deletes; edgecore
 * in iptables mode; real nginx, curl, dig and getent; offline restart; two pods; delete.
 */
describe('seed walkthrough (run.sh)', () => {
  it('runs every step and leaves nothing behind', async () => {
    const script = join(__dirname, '..', '..', '..', 'examples', 'seed-walkthrough', 'run.sh');
    const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn('bash', [script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      p.on('close', (c) => resolve({ code: c, out }));
    });
    if (code !== 0) console.error(out);
    expect(code).toBe(0);
    expect(out).toContain('ok: same VIP');
    expect(out).toMatch(
      /served by edge-node-b.*served by edge-node-c|served by edge-node-c.*served by edge-node-b/,
    );
    expect(out).toContain('ALL STEPS PASSED');
  }, 240_000);
});
