import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { freePort, Mosquitto, waitForPort } from '@edgecore/test-support';
import { connectAsync, type IPublishPacket } from 'mqtt';
import { batchOf, ConnectRefusedError, LinkClosedError, PublishLink, PublishRefusedError } from '../src';
import { connack5, FakeBroker, puback, publishId, publishPayload5 } from './helpers';

/** Read every retained message under `filter` with mqtt.js (an independent client). */
async function retained(url: string, filter: string, expect: number): Promise<Map<string, IPublishPacket>> {
  const c = await connectAsync(url, {
    clientId: `rd-${process.pid}-${Math.random()}`,
    protocolVersion: 5,
    reconnectPeriod: 0,
  });
  const got = new Map<string, IPublishPacket>();
  const all = new Promise<void>((resolve) =>
    c.on('message', (topic, _p, packet) => {
      got.set(topic, packet);
      if (got.size === expect) resolve();
    }),
  );
  await c.subscribeAsync(filter, { qos: 1 });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise((r) => (timer = setTimeout(r, 5_000)))]);
  clearTimeout(timer);
  await c.endAsync();
  return got;
}

describe('PublishLink: a publish-only MQTT client', () => {
  let broker: Mosquitto;
  beforeAll(async () => {
    broker = await Mosquitto.start({ stock: true, persistence: false });
  });
  afterAll(async () => {
    await broker.destroy();
  });

  it('publishes retained QoS 1 messages that a broker keeps byte for byte, MQTT 5 and 3.1.1, and its expiry goes with them', async () => {
    for (const v of [5, 4] as const) {
      const link = await PublishLink.connect(broker.url, {
        clientId: `pl-${v}-${process.pid}`,
        protocolVersion: v,
      });
      const big = Buffer.alloc(200_000, 7); // past the 64 KiB write batch, a 3-byte length
      const sent = new Map<string, Buffer>([
        [`pl${v}/a`, Buffer.from('{"a":1}')],
        [`pl${v}/ünï`, Buffer.from('utf-8 topic')],
        [`pl${v}/big`, big],
      ]);
      for (let i = 0; i < 300; i++) sent.set(`pl${v}/n/${i}`, Buffer.from(`m${i}`));
      await Promise.all(
        [...sent].map(([t, p]) =>
          link.publishAsync(t, p, { retain: true, expirySeconds: t.endsWith('/a') ? 3600 : 0 }),
        ),
      );
      await link.end();
      const got = await retained(broker.url, `pl${v}/#`, sent.size);
      expect(got.size).toBe(sent.size);
      for (const [t, p] of sent) expect(Buffer.compare(got.get(t)!.payload as Buffer, p)).toBe(0);
      const expiry = got.get(`pl${v}/a`)!.properties?.messageExpiryInterval;
      if (v === 5) expect(expiry).toBeGreaterThan(3500);
      else expect(expiry).toBeUndefined();
      // an empty retained payload clears the topic
      const clear = await PublishLink.connect(broker.url, {
        clientId: `pl-c-${v}-${process.pid}`,
        protocolVersion: v,
      });
      await clear.publishAsync(`pl${v}/a`, Buffer.alloc(0), { retain: true });
      await clear.end();
      expect((await retained(broker.url, `pl${v}/#`, sent.size - 1)).has(`pl${v}/a`)).toBe(false);
    }
  });

  it('publishes over many turns, the socket backed up (a chunk serves one write after another): every payload arrives byte for byte, in order', async () => {
    const got: Buffer[] = [];
    const fake = new FakeBroker(connack5([]), (s, type, body) => {
      if (type !== 3) return;
      got.push(Buffer.from(publishPayload5(body)));
      s.write(puback(publishId(body)));
    });
    const link = await PublishLink.connect(await fake.url(), { clientId: 'turns' });
    try {
      fake.sockets[0].pause(); // the broker reads nothing: the writes queue, in the kernel and then in the link's stream
      const N = 3000;
      const payload = (i: number) => Buffer.alloc(4000 + (i % 7), i % 251);
      for (let i = 0; i < N; i++) {
        link.publish(`t/${i}`, payload(i), {}, () => undefined);
        await new Promise((r) => setImmediate(r)); // each publish a turn (a write) of its own
      }
      fake.sockets[0].resume();
      const end = Date.now() + 10_000;
      while (got.length < N && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(got).toHaveLength(N);
      for (let i = 0; i < N; i++) expect(Buffer.compare(got[i], payload(i))).toBe(0);
      await link.end();
    } finally {
      link.destroy();
      fake.close();
    }
  }, 30_000);

  it('never has more publishes awaiting their PUBACK than the broker’s Receive Maximum; the rest go in order', async () => {
    let inflight = 0;
    let most = 0;
    const order: number[] = [];
    const fake = new FakeBroker(connack5([0x21, 0, 3]), (s, type, body) => {
      if (type !== 3) return;
      inflight++;
      most = Math.max(most, inflight);
      order.push(Number(body.subarray(body.length - 4).toString()));
      const id = publishId(body);
      setTimeout(() => {
        inflight--;
        s.write(puback(id));
      }, 2);
    });
    const link = await PublishLink.connect(await fake.url(), { clientId: 'rm' });
    expect(link.receiveMaximum).toBe(3);
    const done: number[] = [];
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        link.publishAsync(`t/${i}`, String(1000 + i), { retain: true }).then(() => done.push(i)),
      ),
    );
    expect(most).toBe(3);
    expect(order).toEqual(Array.from({ length: 40 }, (_, i) => 1000 + i));
    expect(done).toEqual(Array.from({ length: 40 }, (_, i) => i));
    await link.end();
    fake.close();
  });

  it('under a burst, a slot a PUBACK frees is filled when a batch of slots is free or a millisecond has passed, not at once; a publish made in a callback never overtakes one waiting', async () => {
    // only the link's hold timer is fake: sockets, setImmediate (its writes) and the clock are real
    jest.useFakeTimers({
      doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'Date', 'hrtime', 'performance'],
    });
    const realWait = async (ms: number) => {
      const until = Date.now() + ms;
      while (Date.now() < until) await new Promise((r) => setImmediate(r));
    };
    const got: number[] = [];
    const ids: number[] = [];
    let broker: Socket | undefined;
    let autoAck = false;
    const fake = new FakeBroker(connack5([0x21, 0, 20]), (s, type, body) => {
      if (type !== 3) return;
      broker = s;
      got.push(Number(body.subarray(body.length - 4).toString()));
      ids.push(publishId(body));
      if (autoAck) s.write(puback(publishId(body)));
    });
    let link: PublishLink | undefined;
    try {
      link = await PublishLink.connect(await fake.url(), { clientId: 'hold' });
      const l = link;
      expect(l.receiveMaximum).toBe(20);
      expect(batchOf(20)).toBe(5);
      const done: number[] = [];
      const all: Promise<void>[] = [];
      all.push(
        new Promise<void>((resolve) =>
          l.publish('t/0', '1000', { retain: true }, () => {
            done.push(0);
            // synchronously, from the PUBACK's callback, while publishes wait
            all.push(l.publishAsync('t/x', '9999', { retain: true }).then(() => void done.push(99)));
            resolve();
          }),
        ),
      );
      for (let i = 1; i < 30; i++)
        all.push(l.publishAsync(`t/${i}`, String(1000 + i), { retain: true }).then(() => void done.push(i)));
      // at once while the link is under half full or a batch is free: 16 (4 free < 5)
      for (let t = 0; got.length < 16 && t < 500; t++) await realWait(10);
      await realWait(50);
      expect(got.length).toBe(16);
      // a PUBACK frees a fifth slot: a batch, written at once (5 more)
      broker!.write(puback(ids[0]));
      for (let t = 0; got.length < 21 && t < 500; t++) await realWait(10);
      await realWait(50);
      expect(got.length).toBe(21);
      // one more free slot waits for the timer, then goes
      broker!.write(puback(ids[1]));
      await realWait(50);
      expect(got.length).toBe(21);
      jest.advanceTimersByTime(1);
      for (let t = 0; got.length < 22 && t < 500; t++) await realWait(10);
      expect(got.length).toBe(22);
      // the rest answered as they come
      autoAck = true;
      for (const id of ids.slice(2)) broker!.write(puback(id));
      for (let t = 0; done.length < 31 && t < 2_000; t++) {
        jest.advanceTimersByTime(1);
        await realWait(5);
      }
      expect(got).toEqual([...Array.from({ length: 30 }, (_, i) => 1000 + i), 9999]);
      expect(done).toEqual([...Array.from({ length: 30 }, (_, i) => i), 99]);
      await Promise.all(all);
      jest.useRealTimers();
      await link.end();
    } finally {
      jest.useRealTimers();
      link?.destroy(); // a failed step leaves publishes without an answer: end() would wait for them
      fake.close();
    }
  });

  it('a publish larger than the broker’s Maximum Packet Size fails alone, naming its topic; retained or QoS 1 where the broker takes none fails at once; so does a topic no broker takes', async () => {
    // Maximum Packet Size 100, Retain Available 0
    const fake = new FakeBroker(connack5([0x27, 0, 0, 0, 100]), (s, type, body) => {
      if (type === 3) s.write(puback(publishId(body)));
    });
    const link = await PublishLink.connect(await fake.url(), { clientId: 'mps' });
    const big = link.publishAsync('big/one', Buffer.alloc(200));
    const small = link.publishAsync('small/one', Buffer.alloc(10));
    await expect(big).rejects.toMatchObject({
      code: 'HUB_PUBLISH_REFUSED',
      reasonCode: 149,
      topic: 'big/one',
      message: expect.stringMatching(/"big\/one".*Packet too large \(\d+ bytes; the broker takes 100\)/),
    });
    await expect(small).resolves.toBeUndefined();
    // a topic the broker would close the connection over
    for (const bad of ['a/+/b', 'a/#', '', 'nul\0'])
      await expect(link.publishAsync(bad, 'x')).rejects.toMatchObject({ reasonCode: 144, topic: bad });
    expect(fake.packets.filter((p) => p.type === 3)).toHaveLength(1);
    await link.end();
    fake.close();

    const noRetain = new FakeBroker(connack5([0x25, 0]), (s, type, body) => {
      if (type === 3) s.write(puback(publishId(body)));
    });
    const l2 = await PublishLink.connect(await noRetain.url(), { clientId: 'nr' });
    await expect(l2.publishAsync('r/x', 'x', { retain: true })).rejects.toMatchObject({ reasonCode: 154 });
    await expect(l2.publishAsync('r/y', 'y')).resolves.toBeUndefined();
    await l2.end();
    noRetain.close();
  });

  it('a PUBACK with a failure reason fails that publish with the reason and its reason string; the others succeed', async () => {
    // a reason string long enough that the properties' length takes two bytes
    const reason = Buffer.from('acl says no' + '.'.repeat(150));
    const fake = new FakeBroker(connack5(), (s, type, body) => {
      if (type !== 3) return;
      const id = publishId(body);
      const topic = body.subarray(2, 2 + body.readUInt16BE(0)).toString();
      if (topic === 'denied')
        s.write(puback(id, 135, [0x1f, reason.length >> 8, reason.length & 0xff, ...reason]));
      else if (topic === 'nobody')
        s.write(puback(id, 16)); // No matching subscribers: a success
      else s.write(puback(id));
    });
    const link = await PublishLink.connect(await fake.url(), { clientId: 'acl' });
    const results = await Promise.allSettled(
      ['ok', 'denied', 'nobody'].map((t) => link.publishAsync(t, 'x')),
    );
    expect(results[0].status).toBe('fulfilled');
    expect(results[2].status).toBe('fulfilled');
    const err = (results[1] as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(PublishRefusedError);
    expect(err.message).toBe(`broker refused the publish on "denied": Not authorized: ${reason} (135)`);
    await link.end();
    fake.close();
  });

  it('a refused CONNECT is a ConnectRefusedError with the broker’s reason (v5 and 3.1.1 forms)', async () => {
    const v5 = new FakeBroker(Buffer.from([0x20, 3, 0, 134, 0]));
    await expect(
      PublishLink.connect(await v5.url(), { clientId: 'bad', username: 'u', password: 'p' }),
    ).rejects.toMatchObject({
      code: 'HUB_CONNECT_REFUSED',
      reasonCode: 134,
      message: expect.stringContaining('Bad User Name or Password (134)'),
    });
    // the CONNECT carried the credentials (flags 0xc2: user, password, clean start)
    expect(v5.packets[0].body[7]).toBe(0xc2);
    v5.close();
    // a 3.1.1 broker answers a v5 CONNECT with a 3.1.1 CONNACK: unacceptable protocol version
    const old = new FakeBroker(Buffer.from([0x20, 2, 0, 1]));
    const err = await PublishLink.connect(await old.url(), { clientId: 'v5' }).catch((e) => e);
    expect(err).toBeInstanceOf(ConnectRefusedError);
    expect(err.reasonCode).toBe(1);
    expect(err.message).toContain('Unacceptable protocol version');
    old.close();
    // and a real one with a wrong password (mosquitto 2.0 answers Not authorized)
    const secured = await Mosquitto.start({
      persistence: false,
      auth: { passwords: { edgectl: 'right' }, acl: 'user edgectl\ntopic write #\n' },
    });
    try {
      await expect(
        PublishLink.connect(secured.url, { clientId: 'x', username: 'edgectl', password: 'wrong' }),
      ).rejects.toThrow(/refused the connection: (Not authorized \(135\)|Bad User Name or Password \(134\))/);
      const ok = await PublishLink.connect(secured.url, {
        clientId: 'y',
        username: 'edgectl',
        password: 'right',
      });
      await ok.publishAsync('a/b', 'c', { retain: true });
      await ok.end();
    } finally {
      await secured.destroy();
    }
  });

  it('a link that closes fails every publish without an answer (sent and waiting) and every later one; a malformed answer closes it with the reason', async () => {
    const fake = new FakeBroker(connack5([0x21, 0, 2]), (s, type) => {
      if (type === 3 && fake.packets.filter((p) => p.type === 3).length === 2) s.destroy();
    });
    const link = await PublishLink.connect(await fake.url(), { clientId: 'cl' });
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => link.publishAsync(`c/${i}`, 'x')),
    );
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(LinkClosedError);
    }
    await expect(link.publishAsync('c/late', 'x')).rejects.toThrow(/closed: the connection closed/);
    fake.close();

    const liar = new FakeBroker(connack5(), (s, type) => {
      if (type === 3) s.write(puback(4242));
    });
    const l2 = await PublishLink.connect(await liar.url(), { clientId: 'liar' });
    await expect(l2.publishAsync('x', 'y')).rejects.toThrow(
      /malformed packet from the broker: a PUBACK for packet 4242, which is not in flight/,
    );
    liar.close();

    const bye = new FakeBroker(connack5(), (s, type) => {
      if (type === 3) s.write(Buffer.from([0xe0, 2, 139, 0])); // DISCONNECT: Server shutting down
    });
    const l3 = await PublishLink.connect(await bye.url(), { clientId: 'bye' });
    await expect(l3.publishAsync('x', 'y')).rejects.toThrow(
      /the broker disconnected: Server shutting down \(139\)/,
    );
    bye.close();
  });

  it('keeps the broker’s Server Keep Alive: a PINGREQ when idle; no answer to it closes the link', async () => {
    // Server Keep Alive 1 s; the broker answers nothing after the CONNACK
    const fake = new FakeBroker(connack5([0x13, 0, 1]));
    const link = await PublishLink.connect(await fake.url(), { clientId: 'ka', keepaliveSeconds: 60 });
    expect(link.keepaliveSeconds).toBe(1);
    const closed = link.publishAsync('k', 'x').catch((e) => e);
    const err = await closed;
    expect(fake.packets.some((p) => p.type === 12)).toBe(true); // PINGREQ
    expect(err.message).toMatch(/no answer to PINGREQ within 1 s/);
    fake.close();
  });

  it('no CONNACK in time fails the connect with the time it waited', async () => {
    const mute = createServer((s) => s.on('data', () => undefined));
    mute.listen(0, '127.0.0.1');
    await once(mute, 'listening');
    const url = `tcp://127.0.0.1:${(mute.address() as AddressInfo).port}`;
    await expect(PublishLink.connect(url, { clientId: 'm', connectTimeoutMs: 300 })).rejects.toThrow(
      /no CONNACK within 300 ms/,
    );
    mute.close();
    await expect(PublishLink.connect('http://127.0.0.1:1', { clientId: 'h' })).rejects.toMatchObject({
      code: 'HUB_INVALID_OPTION',
      key: 'server',
    });
  });

  it('speaks MQTT over WebSocket (ws://) to a real broker', async () => {
    const wsPort = await freePort();
    const m = await Mosquitto.start({
      persistence: false,
      extra: `listener ${wsPort} 127.0.0.1\nprotocol websockets`,
    });
    try {
      // mosquitto opens its listeners one after the other: the helper waited for the first only
      await waitForPort(wsPort, 10_000);
      const link = await PublishLink.connect(`ws://127.0.0.1:${wsPort}`, { clientId: 'ws' });
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => link.publishAsync(`ws/${i}`, `v${i}`, { retain: true })),
      );
      await link.end();
      const got = await retained(m.url, 'ws/#', 50);
      expect(got.size).toBe(50);
      expect(String(got.get('ws/7')!.payload)).toBe('v7');
    } finally {
      await m.destroy();
    }
  });
});
