/**
 * For proxy-descriptors.test.ts, under `prlimit --nofile=128:128`: TCP health checks of a backend
 * every 50 ms (unhealthy after 3 failures); every descriptor taken for 600 ms, then given back.
 * Prints one JSON line: whether the backend was held unhealthy, and the checks' counts.
 */
import { silentLogger } from '@edgecore/beehive';
import { closeSync, openSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { ActiveHealth } from '../src/health/active-health';
import { connectTo } from '../src/proxy/http/upstream-pool';

async function main(): Promise<void> {
  const backend = createServer((s) => s.destroy());
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
  const port = (backend.address() as AddressInfo).port;
  const b = { host: '127.0.0.1', port, key: `127.0.0.1:${port}` };
  const health = new ActiveHealth({ connect: (x, ms) => connectTo(x, ms) }, silentLogger);
  const spec = { kind: 'tcp' as const, path: '/', intervalMs: 50, timeoutMs: 500, healthy: 2, unhealthy: 3 };
  health.sync('default/svc', spec, [b]);
  await new Promise((r) => setTimeout(r, 200));
  const held: number[] = [];
  try {
    for (;;) held.push(openSync('/dev/null', 'r'));
  } catch {
    // every descriptor taken
  }
  let unhealthy = false;
  const end = Date.now() + 600;
  while (Date.now() < end) {
    unhealthy ||= health.isUnhealthy(b.key);
    await new Promise((r) => setTimeout(r, 10));
  }
  for (const fd of held) closeSync(fd);
  await new Promise((r) => setTimeout(r, 200));
  unhealthy ||= health.isUnhealthy(b.key);
  console.log(JSON.stringify({ held: held.length, unhealthy, stats: health.stats }));
  process.exit(0);
}

void main();
