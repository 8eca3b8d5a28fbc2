import { destinationOf, plannedOrder, publishOrder } from '../src/edgectl/publish-order';
import type { PlannedObject } from '../src/edgectl/manifest';

const svc = (i: number): { o: PlannedObject } => ({
  o: { type: 'service', namespace: 'ns', name: `s${i}`, object: {} },
});
const pod = (i: number, node: string, tag = ''): { o: PlannedObject; tag: string } => ({
  o: { type: 'pod', namespace: 'ns', name: `p${i}`, node, object: {} },
  tag,
});
const name = (t: { o: PlannedObject }) => `${t.o.type}/${t.o.name}@${t.o.node ?? ''}`;

describe('publishOrder', () => {
  it('a destination is the fleet for fleet-wide types and the node for node-scoped ones', () => {
    expect(destinationOf({ type: 'service' })).toBe('');
    expect(destinationOf({ type: 'endpointslice' })).toBe('');
    expect(destinationOf({ type: 'pod', node: 'a' })).toBe('node:a');
    expect(destinationOf({ type: 'pod', node: 'b' })).not.toBe(destinationOf({ type: 'pod', node: 'a' }));
  });

  it('spreads each destination over the whole apply, each in file order', () => {
    // a file of services, then a file of pods on two nodes: what `apply -f svc.yaml -f pods.yaml` plans
    const items = [
      ...Array.from({ length: 300 }, (_, i) => svc(i)),
      ...Array.from({ length: 600 }, (_, i) => pod(i, i % 2 ? 'b' : 'a')),
    ];
    const out = plannedOrder(items);
    expect(out).toHaveLength(items.length);
    expect(new Set(out)).toEqual(new Set(items)); // a permutation
    const queues = new Map<string, string[]>();
    for (const t of items)
      queues.set(destinationOf(t.o), [...(queues.get(destinationOf(t.o)) ?? []), name(t)]);
    for (const [d, q] of queues) expect(out.filter((t) => destinationOf(t.o) === d).map(name)).toEqual(q);
    // in every prefix, each destination has its share of it, within one object
    const seen = new Map<string, number>();
    out.forEach((t, i) => {
      const d = destinationOf(t.o);
      seen.set(d, (seen.get(d) ?? 0) + 1);
      for (const [q, objs] of queues) {
        const share = ((i + 1) * objs.length) / items.length;
        expect(Math.abs((seen.get(q) ?? 0) - share)).toBeLessThanOrEqual(1);
      }
    });
    // what node a receives (every service, its own pods) never holds more than two services in a row
    let run = 0;
    let longest = 0;
    for (const t of out) {
      if (t.o.type === 'service') longest = Math.max(longest, ++run);
      else if (t.o.node === 'a') run = 0;
    }
    expect(longest).toBeLessThanOrEqual(2);
  });

  it('keeps every version of an object in file order, also when a pod moves to another node', () => {
    const items = [
      ...Array.from({ length: 50 }, (_, i) => pod(100 + i, 'a')),
      pod(1, 'a', 'first'), // last of a's objects
      pod(1, 'b', 'moved'), // the same pod, now on b: first of b's objects, still after its first version
      ...Array.from({ length: 50 }, (_, i) => pod(200 + i, 'b')),
      pod(1, 'b', 'again'),
    ];
    const tags = plannedOrder(items)
      .filter((t) => t.o.name === 'p1')
      .map((t) => (t as { tag: string }).tag);
    expect(tags).toEqual(['first', 'moved', 'again']);
  });

  it('one destination, or none: the file order as it is', () => {
    const items = Array.from({ length: 10 }, (_, i) => svc(i));
    expect(plannedOrder(items)).toEqual(items);
    expect(plannedOrder([])).toEqual([]);
    expect(
      publishOrder(
        ['x', 'y', 'z'],
        () => 'd',
        (s) => s,
      ),
    ).toEqual(['x', 'y', 'z']);
  });
});
