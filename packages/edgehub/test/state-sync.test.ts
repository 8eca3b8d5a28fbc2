import { EMPTY_DIGEST, newMessage, type TypeDigestValue } from '@edgecore/beehive';
import { recordingLogger } from '@edgecore/test-support';
import { StateSync, Topics, type RetainedReader } from '../src';

/**
 * A check that never ends (a read of retained state whose objects' commits never come back) must
 * not hold off every later check: past `maxCheckMs` it is abandoned, its reader closed.
 */
describe('StateSync watchdog', () => {
  it('a stuck check is abandoned after maxCheckMs: its reader is closed and the next check runs', async () => {
    const topics = new Topics('edgecore', 'n1');
    const cloud: TypeDigestValue = { count: 1, hash: '00000000000000ff' };
    let readers = 0;
    let closed = 0;
    const reader = (): RetainedReader => {
      readers++;
      let onClose: (() => void) | undefined;
      return {
        async read(_filter: string | string[], fence: string, onMessage: (t: string, p: Buffer) => unknown) {
          if (fence.endsWith('/digest')) {
            onMessage('edgecore/digest/service', Buffer.from(JSON.stringify(cloud)));
            return 1;
          }
          // the objects' read: one object whose commit never comes back, and no fence until closed
          void onMessage(
            'edgecore/objects/default/service/a',
            Buffer.from(
              JSON.stringify(
                newMessage(
                  { kind: 'Service', metadata: { name: 'a', namespace: 'default' } },
                  {
                    source: 'edgectl',
                    group: 'resource',
                    operation: 'update',
                    resource: 'default/service/a',
                  },
                ),
              ),
            ),
          );
          await new Promise<void>(
            (_, reject) => (onClose = () => reject(new Error('the connection closed'))),
          );
          return 1;
        },
        async close() {
          closed++;
          onClose?.();
        },
      } as unknown as RetainedReader;
    };
    const logs: { level: string; msg?: string }[] = [];
    const sync = new StateSync({
      topics,
      node: 'n1',
      openReader: async () => reader(),
      decode: (_t, p) => JSON.parse(p.toString()),
      commit: () => new Promise<void>(() => undefined), // MetaManager never answers
      localDigest: async () => EMPTY_DIGEST,
      localVersions: async () => new Map(),
      settled: async () => undefined,
      newestReceived: () => 0,
      log: recordingLogger(logs),
      maxCheckMs: 300,
    });
    await expect(sync.check()).rejects.toThrow(/abandoned after 300 ms/);
    expect(sync.stats.abandoned).toBe(1);
    expect(closed).toBe(1);
    expect(logs.some((l) => /abandoning it/.test(l.msg ?? ''))).toBe(true);
    // the next check runs (on a new reader) instead of joining the stuck one
    await expect(sync.check()).rejects.toThrow(/abandoned/);
    expect(sync.stats.checks).toBe(2);
    expect(readers).toBe(2);
    await sync.close();
  });
});
