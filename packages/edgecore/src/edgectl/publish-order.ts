import { NODE_SCOPED_TYPES } from '@edgecore/edgehub';
import type { PlannedObject } from './manifest';

/**
 * Where an object goes: `''` for a type every node receives (services, slices, ...), `node:NAME`
 * for a node-scoped one (its pods). A node's stream is every fleet-wide object plus its own.
 */
export function destinationOf(o: Pick<PlannedObject, 'type' | 'node'>): string {
  return NODE_SCOPED_TYPES.has(o.type) ? `node:${o.node ?? ''}` : '';
}

/**
 * The order to publish an apply in: each destination's objects spread evenly over the whole
 * apply, each in its file order. A stock broker keeps ~1,000 messages for a node that has not
 * taken them yet and drops the rest; the publisher outruns a node's intake, so a node can afford
 * a burst only as long as its share of the stream is small. A file of services followed by a file
 * of Deployments sent in file order gave every node the 10,000 services at the publisher's full
 * pace — the broker dropped part of them and the nodes read them back from retained state
 * (resyncs, 6,500-7,400 objects/s end to end); spread, each node's share is what it is in a mixed
 * file (its services between the other nodes' pods). Reordering is safe: every object is its own
 * retained topic with its own resourceVersion, and all versions of one object (`keyOf`) stay in
 * one destination's queue in file order — the destination of its first occurrence, so a pod that
 * moves to another node between two documents keeps its order too. What cannot be spread (an
 * apply of services alone) still arrives at the publisher's pace: the digests catch the loss.
 *
 * Each destination's j-th of n objects takes the place (j + ½) / n of the whole; ties keep
 * destinations in the order they first appear. O(N log N).
 */
export function publishOrder<T>(
  items: readonly T[],
  destination: (t: T) => string,
  keyOf: (t: T) => string,
): T[] {
  const destOfKey = new Map<string, string>();
  const queues = new Map<string, number[]>(); // destination → indexes into items, in file order
  items.forEach((t, i) => {
    const k = keyOf(t);
    let d = destOfKey.get(k);
    if (d === undefined) destOfKey.set(k, (d = destination(t)));
    let q = queues.get(d);
    if (!q) queues.set(d, (q = []));
    q.push(i);
  });
  if (queues.size <= 1) return [...items];
  const place = new Float64Array(items.length);
  const rank = new Uint32Array(items.length); // the destination's first appearance
  let r = 0;
  for (const q of queues.values()) {
    for (let j = 0; j < q.length; j++) {
      place[q[j]] = (j + 0.5) / q.length;
      rank[q[j]] = r;
    }
    r++;
  }
  const order = items.map((_, i) => i);
  // a destination's own places increase along its queue, so its file order is kept
  order.sort((a, b) => place[a] - place[b] || rank[a] - rank[b]);
  return order.map((i) => items[i]);
}

/** `publishOrder` of planned objects (the key: namespace, type, name). */
export function plannedOrder<T extends { o: PlannedObject }>(items: readonly T[]): T[] {
  return publishOrder(
    items,
    (t) => destinationOf(t.o),
    (t) => `${t.o.namespace}/${t.o.type}/${t.o.name}`,
  );
}
