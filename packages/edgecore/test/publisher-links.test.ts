import { connack5, FakeBroker, Mosquitto, puback, publishId, publishPayload5 } from '@edgecore/test-support';
import type { Socket } from 'node:net';
import { MAX_PUBLISH_LINKS, publishLinksFor } from '@edgecore/edgehub';
import { linkOf, ObjectPublisher } from '../src/edgectl/publisher';

/** A service whose only port carries `version` (what a test reads back to see which one won). */
const svc = (i: number, version: number) => ({
  type: 'service' as const,
  namespace: 'links',
  name: `s${i}`,
  object: {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `s${i}`, namespace: 'links' },
    spec: { clusterIP: 'None', ports: [{ name: 'p', port: version, targetPort: 80 }] },
  },
});

/** Apply every version of every object as fast as the publisher takes them (never awaiting one). */
async function applyAll(pub: ObjectPublisher, objects: number, versions: number): Promise<void> {
  const ps: Promise<void>[] = [];
  for (let v = 1; v <= versions; v++)
    for (let i = 0; i < objects; i++) {
      await pub.room();
      ps.push(pub.apply(svc(i, v)));
    }
  await Promise.all(ps);
}

describe('edgectl over more than one link (a broker whose Receive Maximum is below the window)', () => {
  it('publishLinksFor: enough links to keep the window in flight, at most MAX_PUBLISH_LINKS, at least one', () => {
    expect(publishLinksFor(1000, 20)).toBe(MAX_PUBLISH_LINKS); // stock mosquitto: 32 × 20
    expect(publishLinksFor(1000, 200)).toBe(5);
    expect(publishLinksFor(1000, 125)).toBe(8);
    expect(publishLinksFor(1000, 1000)).toBe(1);
    expect(publishLinksFor(1000, 65_535)).toBe(1); // MQTT 3.1.1: no maximum
    expect(publishLinksFor(12, 3)).toBe(4);
  });

  it('linkOf: the same topic always on the same link, every link used', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const t = `kubeedge/objects/ns/service/s${i}`;
      const l = linkOf(t, 8);
      expect(l).toBe(linkOf(t, 8));
      expect(l).toBeGreaterThanOrEqual(0);
      expect(l).toBeLessThan(8);
      seen.add(l);
    }
    expect(seen.size).toBe(8);
    expect(linkOf('anything', 1)).toBe(0);
  });

  it('a broker announcing 3: window/3 links, never more than 3 awaiting a PUBACK on one, each topic on one link in order', async () => {
    const inflight = new Map<Socket, number>();
    let most = 0;
    const topicsOn = new Map<string, Set<Socket>>();
    const versionsOf = new Map<string, number[]>();
    const broker = new FakeBroker(connack5([0x21, 0, 3]), (s, type, body) => {
      if (type !== 3) return;
      const n = (inflight.get(s) ?? 0) + 1;
      inflight.set(s, n);
      most = Math.max(most, n);
      const topic = body.subarray(2, 2 + body.readUInt16BE(0)).toString();
      (topicsOn.get(topic) ?? topicsOn.set(topic, new Set()).get(topic)!).add(s);
      const msg = JSON.parse(publishPayload5(body).toString());
      (versionsOf.get(topic) ?? versionsOf.set(topic, []).get(topic)!).push(msg.content.spec.ports[0].port);
      // answered a moment later, so that a link has all it may send out at once
      const id = publishId(body);
      setTimeout(() => {
        inflight.set(s, inflight.get(s)! - 1);
        s.write(puback(id));
      }, 2);
    });
    const pub = await ObjectPublisher.connect(await broker.url(), { window: 12 });
    try {
      expect(broker.sockets.length).toBe(4);
      expect(pub.linkCount).toBe(4);
      await applyAll(pub, 21, 3); // 21: no multiple of the links, so a version sent round-robin moves
      await pub.finish();
    } finally {
      await pub.close();
      broker.close();
    }
    expect(most).toBe(3); // filled, never past it
    expect(topicsOn.size).toBe(21);
    for (const [, sockets] of topicsOn) expect(sockets.size).toBe(1);
    expect(new Set([...topicsOn.values()].map((s) => [...s][0])).size).toBeGreaterThan(1);
    for (const [, vs] of versionsOf) expect(vs).toEqual([1, 2, 3]);
  });

  it('stock mosquitto (Receive Maximum 20): MAX_PUBLISH_LINKS links; the broker retains the last version of each object', async () => {
    const broker = await Mosquitto.start();
    try {
      const pub = await ObjectPublisher.connect(broker.url);
      try {
        expect(pub.linkCount).toBe(MAX_PUBLISH_LINKS);
        await pub.begin(['service']);
        await applyAll(pub, 300, 4);
        await pub.finish();
      } finally {
        await pub.close();
      }
      const fresh = await ObjectPublisher.connect(broker.url);
      try {
        await fresh.begin(['service'], { objects: ['service'] });
        const kept = fresh.retained.get('service') ?? [];
        expect(kept.length).toBe(300);
        for (const r of kept) expect(r.object.spec.ports[0].port).toBe(4);
        expect(fresh.digest('service')?.count).toBe(300);
      } finally {
        await fresh.close();
      }
    } finally {
      await broker.destroy();
    }
  });
});
