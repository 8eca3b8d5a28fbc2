import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const root = join(__dirname, '..', '..', '..');

/**
 * The join-size measurement of bench/join-size.ts, small: 200 services, 1,000 pods over 10 nodes
 * through a real mosquitto and edgectl's publish path. What a fresh node reads is counted from the
 * broker, and must be exactly what the layout promises: before, every service and every pod of the
 * fleet; after, every service, one slice per service (its 5 pods share their ports), and the
 * node's own 100 pods.
 */
describe('what a node receives on a fresh join (bench/join-size.ts)', () => {
  it('before: services + every pod; after: services + their slices + its own pods', async () => {
    const { stdout } = await execFileP(
      join(root, 'node_modules', '.bin', 'ts-node'),
      ['--transpile-only', join(root, 'bench', 'join-size.ts')],
      {
        cwd: root,
        env: { ...process.env, SERVICES: '200', PODS_PER_SERVICE: '5', NODES: '10' },
        timeout: 120_000,
      },
    );
    const row = (label: string) => {
      const m = new RegExp(`^${label}\\s+(\\d+) messages\\s+[\\d.]+ MiB\\s+(.*)$`, 'm').exec(stdout);
      if (!m) throw new Error(`no "${label}" line in:\n${stdout}`);
      const kinds = Object.fromEntries(
        [...m[2].matchAll(/(\w+) (\d+) \(/g)].map((k) => [k[1], Number(k[2])]),
      );
      return { messages: Number(m[1]), kinds };
    };
    expect(row('before')).toEqual({ messages: 1202, kinds: { digest: 2, pod: 1000, service: 200 } });
    expect(row('after')).toEqual({
      messages: 503,
      kinds: { digest: 3, endpointslice: 200, pod: 100, service: 200 },
    });
    expect(stdout).toMatch(/after\/before: messages 0\.418/);
  }, 150_000);
});
