import { newMessage } from '@edgecore/beehive';
import { until } from '@edgecore/test-support';
import { EdgeHubModule } from '../src';
import {
  connack5,
  FakeBroker,
  puback,
  publishId,
  publishPayload5,
  uniqueNode,
  fakeMetaNode,
} from './helpers';

/**
 * The node's own QoS 1 publishes (what modules send up, its presence) keep within the broker's
 * Receive Maximum, as MQTT 5 asks of a client (a broker that holds to it closes the connection of
 * one that does not; mosquitto lets it pass, so a broker of the test's own counts).
 */
describe("EdgeHub's publishes to the cloud", () => {
  it("never has more awaiting their PUBACK than the broker's Receive Maximum; the rest go in order", async () => {
    // counted per connection: the node's digest check reads retained state on a link of its own
    const inflight = new Map<object, number>();
    let most = 0;
    const up: number[] = [];
    // Receive Maximum 3; every PUBACK a little late, so a burst finds the window full
    const fake = new FakeBroker(
      connack5([0x21, 0, 3]),
      (s, type, body) => {
        if (type !== 3) return;
        inflight.set(s, (inflight.get(s) ?? 0) + 1);
        most = Math.max(most, inflight.get(s)!);
        const topic = body.subarray(2, 2 + body.readUInt16BE(0)).toString();
        if (topic.endsWith('/up')) up.push(JSON.parse(publishPayload5(body).toString()).content.n);
        const id = publishId(body);
        setTimeout(() => {
          inflight.set(s, inflight.get(s)! - 1);
          s.write(puback(id));
        }, 3);
      },
      true,
    );
    const name = uniqueNode();
    const hub = new EdgeHubModule({ nodeName: name, mqtt: { server: await fake.url(), protocolVersion: 5 } });
    const { ctx, core } = await fakeMetaNode(hub, () => undefined);
    try {
      await until(() => hub.cloudConnected, 'connected');
      for (let n = 0; n < 30; n++)
        ctx.send(
          hub.name,
          newMessage({ n }, { source: 'test', group: 'hub', operation: 'event', resource: 'x/y/z' }),
        );
      await until(
        () => up.length === 30 && [...inflight.values()].every((n) => n === 0),
        'all 30 up and acknowledged',
      );
      expect(up).toEqual(Array.from({ length: 30 }, (_, n) => n));
      expect(most).toBe(3);
      expect(hub.stats.published).toBe(30);
    } finally {
      await core.shutdown();
      fake.close();
    }
  });
});
