/**
 * For proxy-descriptors.test.ts, under `prlimit --nofile=128:128`: health checks (`argv[2]`: tcp,
 * http or grpc) of a backend that passes them, every 50 ms (unhealthy after 3 failures), each on a
 * connection of its own; every descriptor taken (and taken again as connections close) for 600
 * ms, then given back. Prints one JSON line: whether the backend was
 * held unhealthy, and the checks' counts.
 */
import { silentLogger } from '@edgecore/beehive';
import { closeSync, openSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { ActiveHealth } from '../src/health/active-health';
import { connectTo } from '../src/proxy/http/upstream-pool';

/** A backend that passes a check of this kind. */
function backendFor(kind: 'tcp' | 'http' | 'grpc'): Server {
  if (kind === 'tcp') return createServer((s) => s.destroy());
  // each answer closes its connection: every check needs a new one
  if (kind === 'http')
    return createHttpServer((_, res) => res.writeHead(200, { connection: 'close' }).end('ok'));
  // grpc.health.v1.Health/Check → HealthCheckResponse { status: SERVING }
  const h2 = createH2Server();
  h2.on('stream', (stream) => {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
    });
  });
  return h2 as unknown as Server;
}

async function main(): Promise<void> {
  const kind = process.argv[2] as 'tcp' | 'http' | 'grpc';
  const backend = backendFor(kind);
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
  const port = (backend.address() as AddressInfo).port;
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
