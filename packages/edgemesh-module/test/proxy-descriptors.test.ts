import { nativeUnavailable } from '../src';
import { underFileLimit } from './helpers';

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
    const r = await underFileLimit('health-emfile-child.ts', 128, [kind]);
    expect(r.held).toBeGreaterThan(0);
    expect(r.passedBefore).toBe(true);
    expect(r.unhealthy).toBe(false);
    expect(r.stats.localFailures).toBeGreaterThanOrEqual(3);
    expect(r.stats.failures).toBe(0);
    expect(r.checkedAfter).toBe(true);
  },
  40_000,
);
