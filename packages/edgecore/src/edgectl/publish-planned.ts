import type { Networking } from '@edgecore/edgemesh-module';
import type { PlannedDocument, PlannedObject } from './manifest';
import type { ObjectPublisher } from './publisher';
import { plannedOrder } from './publish-order';
import { SliceController } from './slice-controller';

/**
 * Objects noted between two runs of the slice controller (and it runs once more at the end): a
 * large apply sends slices along with the services and pods they follow from, rather than all of
 * them after the last — 10,000 slices behind 60,000 objects came to a node as one burst that
 * overflowed a stock broker's queue for it (the node then read them back from retained state):
 * 10,595-12,158 objects/s end to end, with a resync in 4 of 6 applies; 10,169-13,809 and none in 7
 * with a run every 600 objects.
 */
export const SLICE_PLAN_EVERY = 600;

/**
 * What `edgectl apply|delete` does with planned documents: publish their objects in
 * `publishOrder` (each node's share spread over the apply; up to the publisher's window at once),
 * run the slice controller over the services and pods they touch and publish its slices (every
 * SLICE_PLAN_EVERY objects, and at the end), then the digests. `report` gets kubectl's line per
 * document, in file order, once all of its objects are acknowledged by the broker (nothing after a
 * failure).
 */
export async function publishPlanned(
  pub: ObjectPublisher,
  planned: PlannedDocument[],
  verb: 'apply' | 'delete',
  networking: Networking,
  report: (line: string) => void = () => undefined,
): Promise<void> {
  // the retained state of every type touched: the digests published after the objects cover it.
  // Services and pods also drive the slice controller, which starts from the retained services,
  // pods and slices (and the nodes' zones).
  const touched = new Set(planned.flatMap((d) => d.objects.map((o) => o.type)));
  const slices = touched.has('service') || touched.has('pod');
  const controlled = ['service', 'pod', 'endpointslice'];
  await pub.begin(slices ? [...touched, 'endpointslice'] : touched, {
    objects: slices ? controlled : [],
    zones: slices,
  });
  const controller = slices ? new SliceController(networking, pub.nodeZones) : undefined;
  if (controller) {
    const of = (t: string): any[] => (pub.retained.get(t) ?? []).map((r) => r.object);
    controller.load(of('service'), of('pod'), of('endpointslice'));
  }
  // publishes overlap (up to the publisher's window); a document is reported once all of its
  // objects are acknowledged by the broker, in file order, and nothing after a failure
  // kubectl's words: created (new to the broker) or configured
  const created = planned.map((d) => d.objects.length > 0 && !d.objects.some((o) => pub.has(o)));
  // every object of the apply (a Deployment's surplus pods included), then spread by destination
  // (publishOrder: a node's services between the other nodes' pods, not as one burst)
  const items: { o: PlannedObject; doc: number; remove: boolean }[] = [];
  planned.forEach((d, doc) => {
    for (const o of d.objects) items.push({ o, doc, remove: verb === 'delete' });
    // a Deployment's pods the broker holds beyond this plan (scaled down; all of them on delete)
    for (const o of surplus(d, verb === 'delete', pub)) items.push({ o, doc, remove: true });
  });
  const objs: Promise<void>[][] = planned.map(() => []);
  const sliceWork: Promise<void>[] = [];
  await publishObjects(pub, plannedOrder(items), controller, (_o, p, item) =>
    item ? objs[item.doc].push(p) : sliceWork.push(p),
  );
  const done = objs.map((ps) => {
    const all = Promise.all(ps);
    all.catch(() => undefined); // the first failure is thrown below; the documents after it say nothing
    return all;
  });
  for (let i = 0; i < planned.length; i++) {
    await done[i];
    const d = planned[i];
    report(
      verb === 'apply'
        ? `${d.display} ${created[i] ? 'created' : 'configured'}\n`
        : `${d.display.split('/')[0]} "${d.display.split('/')[1]}" deleted\n`,
    );
  }
  await Promise.all(sliceWork);
  await pub.finish();
}

/**
 * Publish `items` in this order (up to the publisher's window at once), noting each in the slice
 * controller and publishing its slices every SLICE_PLAN_EVERY objects and after the last (removed
 * slices deleted). `each` gets every publish as it starts: an item's (with the item), or a
 * slice's (without). Resolves once every publish has started; their promises (`each`) carry the
 * answers, and a failure is the caller's to report (each is caught here, so none goes unhandled).
 */
export async function publishObjects<T extends { o: PlannedObject; remove: boolean }>(
  pub: ObjectPublisher,
  items: Iterable<T>,
  controller: SliceController | undefined,
  each: (o: PlannedObject, p: Promise<void>, item?: T) => void,
): Promise<void> {
  const start = (o: PlannedObject, remove: boolean, item?: T): void => {
    const p = remove ? pub.delete(o) : pub.apply(o);
    p.catch(() => undefined);
    each(o, p, item);
  };
  const publishSlices = async (): Promise<void> => {
    if (!controller) return;
    const { apply, remove } = controller.plan();
    for (const o of apply) {
      await pub.room();
      start(o, false);
    }
    for (const o of remove) {
      await pub.room();
      start(o, true);
    }
  };
  let noted = 0;
  for (const item of items) {
    await pub.room();
    start(item.o, item.remove, item);
    controller?.note(item.o, item.remove);
    if (++noted >= SLICE_PLAN_EVERY) {
      noted = 0;
      await publishSlices();
    }
  }
  await publishSlices();
}

/** The retained pods a Deployment document owns that its plan does not have (all, on delete). */
function surplus(d: PlannedDocument, all: boolean, pub: ObjectPublisher): PlannedObject[] {
  const owner = d.owner;
  if (!owner) return [];
  const planned = new Set(all ? [] : d.objects.map((o) => o.name));
  return (pub.retained.get('pod') ?? [])
    .filter(
      (r) =>
        r.namespace === owner.namespace &&
        !planned.has(r.name) &&
        (r.object.metadata?.ownerReferences ?? []).some(
          (ref: { kind?: string; name?: string }) => ref.kind === owner.kind && ref.name === owner.name,
        ),
    )
    .map((r) => ({
      type: 'pod' as const,
      namespace: r.namespace,
      name: r.name,
      node: r.node,
      object: r.object,
    }));
}
