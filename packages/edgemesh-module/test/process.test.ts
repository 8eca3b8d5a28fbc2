import { ChannelContext, CloudConnected, newMessage, Operation } from '@edgecore/beehive';
import { processMessages, type MeshChanges } from '../src/process';

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
