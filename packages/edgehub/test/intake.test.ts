import { silentLogger } from '@edgecore/beehive';
import { freePort, Mosquitto, waitForPort } from '@edgecore/test-support';
import { once } from 'node:events';
import { connect, connectAsync, type IPublishPacket } from 'mqtt';
import { Intake } from '../src';

const until = async (cond: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
};

describe('Intake (real mosquitto)', () => {
  let broker: Mosquitto;
  beforeAll(async () => {
    broker = await Mosquitto.start();
  });
  afterAll(async () => {
    await broker.destroy();
  });

  it('takes QoS 0 messages (a bridged broker’s objects) into the in-flight window, in order, without waiting for each commit', async () => {
    const N = 60;
    const WINDOW = 25;
    const sub = await connectAsync(broker.url, { protocolVersion: 5 });
    const commits: (() => void)[] = [];
    const got: string[] = [];
    const stats = { maxPending: 0 };
    const intake = new Intake(
      WINDOW,
      stats,
      silentLogger,
      (c) => c === sub,
      (p: IPublishPacket) =>
        new Promise<void>((resolve) => {
          got.push(String(p.payload));
          commits.push(resolve);
        }),
    );
    sub.handleMessage = (packet, next) => intake.take(sub, packet, next);
    await sub.subscribeAsync('intake0/#', { qos: 0 });
    const pub = await connectAsync(broker.url, { protocolVersion: 5 });
    for (let i = 0; i < N; i++) await pub.publishAsync(`intake0/${i}`, String(i), { qos: 0 });

    // a whole window is taken while none of its commits is done; the next waits for room
    await until(() => got.length >= WINDOW);
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual(Array.from({ length: WINDOW }, (_, i) => String(i)));
    expect(intake.inflight).toBe(WINDOW);
    commits[0]();
    await until(() => got.length > WINDOW);
    expect(got.length).toBe(WINDOW + 1);

    // the rest commit as they come: every message handled once, in arrival order
    for (let i = 0; i < N; i++) {
      await until(() => commits.length > i);
      if (i > 0) commits[i]();
    }
    await until(() => intake.inflight === 0);
    expect(got).toEqual(Array.from({ length: N }, (_, i) => String(i)));
    expect(intake.inflight).toBe(0);
    expect(stats.maxPending).toBe(WINDOW);
    await sub.endAsync();
    await pub.endAsync();
  });

  it.each([
    [4, 'mqtt'],
    [5, 'mqtt'],
    [5, 'ws'],
  ] as const)(
    'acknowledges QoS 1 messages in the broker’s own terms (MQTT %s over %s): a broker with 5 in flight sends all 300, and a resumed session gets none again',
    async (protocolVersion, scheme) => {
      const wsPort = await freePort();
      const small = await Mosquitto.start({
        maxInflight: 5,
        extra: `listener ${wsPort} 127.0.0.1\nprotocol websockets`,
      });
      try {
        // mosquitto opens its listeners one after the other: the helper waited for the first only
        await waitForPort(wsPort, 10_000);
        const url = scheme === 'ws' ? `ws://127.0.0.1:${wsPort}` : small.url;
        const N = 300;
        const clientId = `intake-q1-${protocolVersion}-${scheme}`;
        const opts = {
          protocolVersion,
          clientId,
          clean: false,
          ...(protocolVersion === 5 ? { properties: { receiveMaximum: 5, sessionExpiryInterval: 60 } } : {}),
        };
        const got: string[] = [];
        // the Intake takes over before the connection is up: a resumed session's redeliveries come
        // right behind its CONNACK
        const attached = async () => {
          const c = connect(url, opts);
          const intake = new Intake(
            100,
            { maxPending: 0 },
            silentLogger,
            (x) => x === c,
            // committed a tick later, as MetaManager answers
            async (p: IPublishPacket) => {
              await new Promise((r) => setImmediate(r));
              got.push(String(p.payload));
            },
          );
          c.handleMessage = (packet, next) => intake.take(c, packet, next);
          await once(c, 'connect');
          return c;
        };
        const sub = await attached();
        await sub.subscribeAsync('intake1/#', { qos: 1 });
        const pub = await connectAsync(small.url, { protocolVersion: 5 });
        for (let i = 0; i < N; i++) await pub.publishAsync(`intake1/${i}`, String(i), { qos: 1 });
        // the broker keeps 5 unacknowledged at most: every PUBACK it did not take would stall it
        await until(() => got.length >= N);
        expect(got).toEqual(Array.from({ length: N }, (_, i) => String(i)));
        await new Promise((r) => setTimeout(r, 100)); // the last PUBACKs on their way
        await sub.endAsync();
        // the session resumed: nothing is redelivered (every message was acknowledged)
        const again = await attached();
        await pub.publishAsync('intake1/last', 'last', { qos: 1 });
        await until(() => got.length > N);
        await new Promise((r) => setTimeout(r, 200));
        expect(got.slice(N)).toEqual(['last']);
        await again.endAsync();
        await pub.endAsync();
      } finally {
        await small.destroy();
      }
    },
  );
});
