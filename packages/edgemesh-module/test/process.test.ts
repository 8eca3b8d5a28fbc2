import { ChannelContext, CloudConnected, newMessage, Operation } from '@edgecore/beehive';
import { processMessages, type MeshChanges, type MeshKey } from '../src/process';

const change = (name: string) =>
  newMessage(
    { kind: 'Service', metadata: { name } },
    { operation: Operation.Update, resource: `default/service/${name}` },
  );

describe('EdgeMesh receive loop', () => {
  it('changes already waiting become one batch; a change that comes alone is applied alone, at once', async () => {
    const ctx = new ChannelContext();
    ctx.addModule('edgemesh', 'mesh');
    for (const n of ['a', 'b', 'c']) await ctx.send('edgemesh', change(n));
    await ctx.send(
      'edgemesh',
      newMessage(CloudConnected, { operation: Operation.Connect, resource: 'node/connection' }),
    );
    const batches: string[][] = [];
    const busy: boolean[] = [];
    let connected = false;
    let release!: () => void;
    const firstApplied = new Promise<void>((r) => (release = r));
    const ac = new AbortController();
    const loop = processMessages(ctx, 'edgemesh', ac.signal, {
      onConnection: (up) => (connected = up),
      onBusy: (b) => busy.push(b),
      onChanges: async (b: MeshChanges) => {
        batches.push(b.changes.map((c) => c.name));
        release();
      },
    });
    await firstApplied;
    expect(batches).toEqual([['a', 'b', 'c']]);
    expect(connected).toBe(true);
    await ctx.send('edgemesh', change('d'));
    for (let i = 0; i < 1000 && batches.length < 2; i++) await new Promise((r) => setImmediate(r));
    expect(batches).toEqual([['a', 'b', 'c'], ['d']]);
    expect(busy.at(-1)).toBe(false); // idle again once the last batch is applied
    ac.abort();
    ctx.close();
    await loop;
  });
});

describe('EdgeMesh receive loop during a burst: the intake first', () => {
  const pace = { burst: 10, quietMs: 100, maxDeferMs: 60_000, maxQueued: 1000, maxBatch: 8 };

  /**
   * The loop, started with `first` waiting in its mailbox (a burst that came at once); with
   * `readKeys`, an `onRead` that answers each key with an update (the names asked in `reads`).
   */
  async function run(p: typeof pace, first: string[], readKeys = false) {
    const ctx = new ChannelContext();
    ctx.addModule('edgemesh', 'mesh');
    for (const n of first) await ctx.send('edgemesh', change(n));
    const batches: string[][] = [];
    const reads: string[][] = [];
    const ac = new AbortController();
    const loop = processMessages(
      ctx,
      'edgemesh',
      ac.signal,
      {
        onConnection: () => undefined,
        onChanges: async (b: MeshChanges) => void batches.push(b.changes.map((c) => c.name)),
        ...(readKeys
          ? {
              onRead: async (keys: MeshKey[]) => {
                reads.push(keys.map((k) => k.name));
                return {
                  changes: keys.map((k) => ({ operation: 'update' as const, ...k, object: { read: true } })),
                  timestamps: keys.map((k) => k.timestamp),
                };
              },
            }
          : {}),
      },
      p,
    );
    const stop = async () => {
      ac.abort();
      ctx.close();
      await loop;
    };
    return { ctx, batches, reads, stop };
  }
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const names = (from: number, n: number) => Array.from({ length: n }, (_, i) => `c${from + i}`);

  it('holds a burst back while changes keep coming, then applies it in order, in batches of maxBatch', async () => {
    const { ctx, batches, stop } = await run(pace, names(0, 12)); // past `burst` at once
    // one more every 10 ms for 400 ms: never 100 ms without one
    for (let i = 12; i < 52; i++) {
      await sleep(10);
      await ctx.send('edgemesh', change(`c${i}`));
    }
    expect(batches).toEqual([]); // nothing applied while the burst came in
    const t = Date.now();
    while (batches.flat().length < 52 && Date.now() - t < 5000) await sleep(10);
    expect(batches.flat()).toEqual(names(0, 52));
    expect(Math.max(...batches.map((b) => b.length))).toBe(8);
    await stop();
  });

  it('applies a held burst after maxDeferMs even while changes keep coming, and at once while maxQueued wait', async () => {
    const a = await run({ ...pace, maxDeferMs: 150 }, names(0, 12));
    for (let i = 12; i < 72 && !a.batches.length; i++) {
      await sleep(10);
      await a.ctx.send('edgemesh', change(`c${i}`));
    }
    expect(a.batches.length).toBeGreaterThan(0); // before the changes stopped coming
    expect(a.batches[0]).toEqual(names(0, 8));
    await a.stop();

    const b = await run({ ...pace, quietMs: 60_000, maxQueued: 20 }, names(0, 25));
    const t = Date.now();
    while (!b.batches.length && Date.now() - t < 5000) await sleep(10);
    await sleep(200);
    // no quiet needed while too many wait to hold them: applied until fewer than maxQueued wait
    expect(b.batches).toEqual([names(0, 8)]);
    await b.stop();
  });

  it('past maxQueued, with onRead: holds the rest by keys (each once, in the order of its last change), reads them when applied', async () => {
    const { ctx, batches, reads, stop } = await run(
      { ...pace, maxQueued: 20, quietMs: 400 },
      names(0, 25),
      true,
    );
    // c21 changes again while held by its key, c2 (held with its object) too: both join the keys
    await sleep(30);
    await ctx.send('edgemesh', change('c21'));
    await ctx.send('edgemesh', change('c2'));
    await sleep(60);
    expect(batches).toEqual([]); // more than maxQueued wait, and still held: no quiet span yet
    const t = Date.now();
    while (batches.flat().length < 26 && Date.now() - t < 5000) await sleep(10);
    expect(batches.flat()).toEqual([...names(0, 20), 'c20', 'c22', 'c23', 'c24', 'c21', 'c2']);
    expect(reads).toEqual([['c20', 'c22', 'c23', 'c24', 'c21', 'c2']]);
    // a change after the held burst is applied is held with its object again
    await ctx.send('edgemesh', change('c99'));
    while (batches.length < 5 && Date.now() - t < 5000) await sleep(10);
    expect(batches.at(-1)).toEqual(['c99']);
    expect(reads).toHaveLength(1);
    await stop();
  });
});
