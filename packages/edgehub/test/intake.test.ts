import { silentLogger } from '@edgecore/beehive';
import { Mosquitto } from '@edgecore/test-support';
import { connectAsync, type IPublishPacket } from 'mqtt';
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
});
