import { connect } from 'node:net';
import { recordingLogger } from '@edgecore/test-support';
import { defaultListen, type Listen, type PortalSpec } from '../src';
import * as openFiles from '../src/open-files';
import { testPortals } from './helpers';

type LogRecord = { level: string; obj: any; msg?: string };

const spec = (i: number): PortalSpec => ({
  key: `default/s${i}:70${i}/TCP`,
  serviceKey: `default/s${i}`,
  namespace: 'default',
  service: `s${i}`,
  vip: `198.18.0.${i + 1}`,
  port: 7000 + i,
  transport: 'TCP',
  protocol: 'tcp',
});

/**
 * Portals short of file descriptors, with the process's listen wrapped so that it fails as the
 * kernel does when none is left (EMFILE) while `full` says so; the listeners that do open are real.
 */
describe('portals and file descriptors', () => {
  let full = false;
  const real = defaultListen();
  const listen: Listen = (o, target) => {
    if (full)
      return Promise.reject(
        Object.assign(new Error('listen EMFILE: too many open files'), { code: 'EMFILE' }),
      );
    return real(o, target);
  };
  const https: { close(): void }[] = [];
  const make = (records: LogRecord[], onRetry?: () => void) => {
    const made = testPortals(() => [], { listen, log: recordingLogger(records), onRetry, retryMs: 50 });
    https.push(made.http);
    return made.portals;
  };
  afterAll(() => https.forEach((h) => h.close()));

  it('reads the open-file limit at most once a second, however many syncs open portals', async () => {
    const read = jest.spyOn(openFiles, 'openFileLimit');
    const portals = make([]);
    try {
      full = false;
      for (let i = 0; i < 20; i++) await portals.sync(Array.from({ length: i + 1 }, (_, k) => spec(k)));
      expect(portals.size).toBe(20);
      expect(read).toHaveBeenCalledTimes(1);
      await new Promise((r) => setTimeout(r, 1100));
      await portals.sync(Array.from({ length: 21 }, (_, k) => spec(k)));
      expect(read).toHaveBeenCalledTimes(2); // a second later: read again
    } finally {
      read.mockRestore();
      await portals.closeAll();
    }
  });

  it('a portal that finds no descriptor waits; the retry timer asks its owner, and it opens', async () => {
    const records: LogRecord[] = [];
    let retries = 0;
    const portals: PortalManager = make(records, () => {
      retries++;
      void portals.retryUnopened();
    });
    full = false;
    await portals.sync([spec(0)]);
    full = true;
    await portals.sync([spec(0), spec(1), spec(2)]);
    await portals.syncServices(['default/s3'], [spec(3)]);
    expect([portals.size, portals.unopenedCount]).toEqual([1, 3]);
    // one line for the shortage, none per portal, none for the batch that added to it
    expect(
      records.filter((r) => r.level === 'warn').map((r) => [r.msg!.split(':')[0], r.obj.unopened]),
    ).toEqual([['portals not open', 2]]);
    expect(records.filter((r) => r.msg === 'cannot open portal')).toEqual([]);
    // the explicit proxy still knows the port (its spec), the interception table does not
    expect(portals.spec(spec(2).key)).toEqual(spec(2));
    expect(portals.get(spec(2).key)).toBeUndefined();
    // a service that goes while it waits is no longer wanted
    await portals.syncServices(['default/s3'], []);
    expect(portals.unopenedCount).toBe(2);
    await new Promise((r) => setTimeout(r, 200));
    expect(retries).toBeGreaterThan(1); // still short: asked again, quietly
    expect(records.filter((r) => r.level === 'warn')).toHaveLength(1);
    full = false;
    const end = Date.now() + 2000;
    while (portals.unopenedCount && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect([portals.size, portals.unopenedCount]).toEqual([3, 0]);
    expect(records).toContainEqual({
      level: 'info',
      msg: 'portals opened on retry',
      obj: { opened: 2, unopened: 0 },
    });
    // and they listen: a connection is taken (no backend: reset by the L4 proxy), not refused
    const p = portals.get(spec(2).key)!;
    const got = await new Promise<string>((resolve) => {
      const c = connect(p.listenPort, '127.0.0.1', () => (c.destroy(), resolve('connected')));
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    expect(['connected', 'ECONNRESET']).toContain(got);
    const before = retries;
    await new Promise((r) => setTimeout(r, 200));
    expect(retries).toBe(before); // nothing waits: the timer is gone
    await portals.closeAll();
  });

  it('a portal that closes gives its descriptor to the one waiting longest, in the same sync', async () => {
    const records: LogRecord[] = [];
    const portals = make(records); // no owner retry: only a close can open them
    full = false;
    await portals.sync([spec(0)]);
    full = true;
    await portals.sync([spec(0), spec(1), spec(2)]);
    expect(portals.unopenedCount).toBe(2);
    full = false;
    // s0 goes: s1 and s2 (waiting) open along with the sync that closed it
    expect(await portals.syncServices(['default/s0'], [])).toBe(true);
    expect([portals.size, portals.unopenedCount]).toEqual([2, 0]);
    expect(portals.get(spec(1).key)?.listenPort).toBeGreaterThan(0);
    await portals.closeAll();
  });
});
