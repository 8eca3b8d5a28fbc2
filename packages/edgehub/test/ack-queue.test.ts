import { AckQueue, AckWriter } from '../src';

describe('AckQueue', () => {
  it('acknowledges in arrival order, each only once its own commit and every earlier one is done', () => {
    const q = new AckQueue();
    const sent: number[] = [];
    const done = [1, 2, 3, 4].map((id) => q.enqueue(() => sent.push(id)));
    done[2](); // 3 first: waits for 1 and 2
    expect(sent).toEqual([]);
    done[0]();
    expect(sent).toEqual([1]);
    done[1]();
    expect(sent).toEqual([1, 2, 3]);
    expect(q.pending).toBe(1);
    q.clear(); // the link went away: 4 is never acknowledged (the broker redelivers it)
    done[3]();
    expect(sent).toEqual([1, 2, 3]);
  });
});

describe('AckWriter', () => {
  const sink = () => {
    const writes: Buffer[] = [];
    return { writes, stream: { write: (b: Buffer) => writes.push(Buffer.from(b)) } };
  };
  const turn = () => new Promise((r) => setImmediate(r));

  it('writes the PUBACKs added in one turn in one write, 4 bytes each, in the order added', async () => {
    const { writes, stream } = sink();
    const w = new AckWriter<string>((l) => (l === 'link' ? stream : undefined));
    w.add(1, 'link');
    await Promise.resolve(); // a reaction later in the same turn joins the write
    w.add(0x1234, 'link');
    w.add(65535, 'link');
    expect(writes).toEqual([]);
    await turn();
    expect(writes).toEqual([Buffer.from([0x40, 2, 0, 1, 0x40, 2, 0x12, 0x34, 0x40, 2, 0xff, 0xff])]);
    w.add(7, 'link'); // the next turn: a write of its own
    await turn();
    expect(writes).toHaveLength(2);
    expect(writes[1]).toEqual(Buffer.from([0x40, 2, 0, 7]));
  });

  it('writes nothing when the link is gone by then, or a new link cleared what was added', async () => {
    const { writes, stream } = sink();
    let live = true;
    const w = new AckWriter<string>(() => (live ? stream : undefined));
    w.add(1, 'link');
    live = false;
    await turn();
    w.add(2, 'link');
    w.clear();
    live = true;
    await turn();
    expect(writes).toEqual([]);
    w.add(3, 'link'); // after the clear: written
    await turn();
    expect(writes).toEqual([Buffer.from([0x40, 2, 0, 3])]);
  });
});
