import { AckQueue } from '../src';

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
