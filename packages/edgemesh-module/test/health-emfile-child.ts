/**
 * For proxy-descriptors.test.ts, under `prlimit --nofile=128:128`: health checks (`argv[2]`: tcp,
 * http or grpc) of a backend that passes them (the test's, on port `argv[3]`), every 50 ms
 * (unhealthy after 3 failures), each on a connection of its own; every descriptor taken (and taken again as connections close) for 600
 * ms, then given back. Prints one JSON line: whether the backend was
 * held unhealthy, and the checks' counts.
 */
import { silentLogger } from '@edgecore/beehive';
import { closeSync, openSync } from 'node:fs';
import { ActiveHealth } from '../src/health/active-health';
import { connectTo } from '../src/proxy/http/upstream-pool';

async function main(): Promise<void> {
  const kind = process.argv[2] as 'tcp' | 'http' | 'grpc';
  // the backend is the test's, in a process of its own: one in this process would be short of
  // descriptors too, and a check whose connection it could not accept failed on the backend's
  // account (a flake under load)
  const port = Number(process.argv[3]);
  const b = { host: '127.0.0.1', port, key: `127.0.0.1:${port}` };
  const health = new ActiveHealth({ connect: (x, ms) => connectTo(x, ms) }, silentLogger);
  const spec = { kind, path: '/', intervalMs: 50, timeoutMs: 500, healthy: 2, unhealthy: 3 };
  health.sync('default/svc', spec, [b]);
  await new Promise((r) => setTimeout(r, 300));
  const passedBefore = health.stats.checks > 0 && health.stats.failures === 0;
  const held: number[] = [];
  /** Every descriptor taken, again (closing connections give some back meanwhile). */
  const takeAll = (): void => {
    try {
      for (;;) held.push(openSync('/dev/null', 'r'));
    } catch {
      // none left
    }
  };
  let unhealthy = false;
  const end = Date.now() + 600;
  while (Date.now() < end) {
    takeAll();
    unhealthy ||= health.isUnhealthy(b.key);
    await new Promise((r) => setTimeout(r, 5));
  }
  for (const fd of held) closeSync(fd);
  const checks = health.stats.checks;
  await new Promise((r) => setTimeout(r, 300));
  unhealthy ||= health.isUnhealthy(b.key);
  console.log(
    JSON.stringify({
      held: held.length,
      passedBefore,
      unhealthy,
      checkedAfter: health.stats.checks > checks,
      stats: health.stats,
    }),
  );
  process.exit(0);
}

void main();
