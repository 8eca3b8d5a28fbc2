import { createServer as createHttpServer } from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { nativeUnavailable } from '../src';
import { underFileLimit } from './helpers';

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

/**
 * A node out of file descriptors, its portals in a process of their own (`prlimit`): a connect to
 * a backend that finds no socket is the node's failure, not the backend's. Before, it ejected the
 * backend (passive health) and tried the next, which failed the same way, until every backend of
 * the service was out: 502 "every backend failed" and a cool-down that outlived the shortage.
 */
describe.each(nativeUnavailable() === undefined ? ['js', 'native'] : ['js'])(
  'portals out of descriptors (%s engine)',
  (engine) => {
    it('503 for the request that found no socket, a reset for the TCP connection, no UDP answer; no ejection, and the next served', async () => {
      const r = await underFileLimit('proxy-emfile-child.ts', 128, [engine]);
      expect(r.held).toBeGreaterThan(0);
      expect(r.before).toBe('HTTP/1.1 200 OK | ok');
      expect(r.during).toMatch(
        /^HTTP\/1\.1 503 Service Unavailable \| .*no socket for a connection to 127\.0\.0\.1:\d+: EMFILE/,
      );
      expect(r.after).toBe('HTTP/1.1 200 OK | ok');
      expect(r.l4During).toBe('ECONNRESET');
      // the UDP portal's session found no socket for the backend: no answer, and none after
      expect([r.udpDuring, r.udpAfter, r.udpSessions]).toEqual(['', 'after', 2]);
      expect(r.ejections).toBe(0);
    }, 40_000);
  },
);

it.each(['tcp', 'http', 'grpc'])(
  'an active %s check the node could not start (out of descriptors) is no verdict on the backend',
  async (kind) => {
    // before: each counted as a failed check, and three took a healthy backend out of the load balancer
    // the backend in this process (not short of descriptors): only the checks are
    const backend = backendFor(kind as 'tcp' | 'http' | 'grpc');
    await new Promise<void>((res) => backend.listen(0, '127.0.0.1', () => res()));
    const port = (backend.address() as AddressInfo).port;
    const r = await underFileLimit('health-emfile-child.ts', 128, [kind, String(port)]).finally(() =>
      backend.close(),
    );
    expect(r.held).toBeGreaterThan(0);
    expect(r.passedBefore).toBe(true);
    expect(r.unhealthy).toBe(false);
    expect(r.stats.localFailures).toBeGreaterThanOrEqual(3);
    expect(r.stats.failures).toBe(0);
    expect(r.checkedAfter).toBe(true);
  },
  40_000,
);
