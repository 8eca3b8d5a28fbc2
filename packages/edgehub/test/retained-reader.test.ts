import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Mosquitto, MqttRelay } from '@edgecore/test-support';
import { connectAsync } from 'mqtt';
import { RetainedReader } from '../src';

/**
 * A read of retained state ends when nothing arrives for its idle timeout, wherever it waits — also
 * for a SUBACK that never comes (a read stuck there used to hold every later digest check).
 */
describe('RetainedReader', () => {
  it('a broker that accepts the connection but never answers the SUBSCRIBE: the read fails on its idle timeout', async () => {
    const sockets: Socket[] = [];
    // CONNACK (3.1.1, accepted) to the CONNECT, then silence
    const server = createServer((s) => {
      sockets.push(s);
      s.once('data', () => s.write(Buffer.from([0x20, 0x02, 0x00, 0x00])));
      s.on('data', () => undefined);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const reader = await RetainedReader.open(
      `tcp://127.0.0.1:${port}`,
      { clientId: 'silent-broker-test', protocolVersion: 4 },
      { idleTimeoutMs: 300 },
    );
    try {
      await expect(
        reader.read('edgecore/objects/+/service/+', 'edgecore/nodes/n/sync/x', () => undefined),
      ).rejects.toThrow(/nothing arrived for 300 ms/);
    } finally {
      await reader.close();
      for (const s of sockets) s.destroy();
      server.close();
    }
  });
});

describe('RetainedReader against mosquitto', () => {
  it('a fence lost on the way: the read publishes it again after a silence and ends with everything, not on its idle timeout', async () => {
    const broker = await Mosquitto.start();
    const relay = new MqttRelay(broker.port, (topic) => {
      // the first fence the reader would get is lost, as a broker drops packets to a slow reader
      if (topic !== 'edgecore/nodes/n/sync/objects' || lostFences) return false;
      lostFences++;
      return true;
    });
    let lostFences = 0;
    const port = await relay.listen();
    const cloud = await connectAsync(broker.url, { clientId: 'fence-test-cloud' });
    let reader: RetainedReader | undefined;
    try {
      for (let i = 0; i < 50; i++)
        await cloud.publishAsync(`edgecore/objects/default/service/s${i}`, `v${i}`, { qos: 1, retain: true });
      reader = await RetainedReader.open(
        `tcp://127.0.0.1:${port}`,
        { clientId: 'fence-test-reader', protocolVersion: 4 },
        { idleTimeoutMs: 20_000, fenceRetryMs: 200 },
      );
      const got: string[] = [];
      const n = await reader.read('edgecore/objects/+/service/+', 'edgecore/nodes/n/sync/objects', (t) => {
        got.push(t);
      });
      expect(n).toBe(50);
      expect(new Set(got).size).toBe(50);
      expect(relay.dropped).toEqual(['edgecore/nodes/n/sync/objects']);
      expect(reader.fencesResent).toBeGreaterThanOrEqual(1);
    } finally {
      await reader?.close();
      await cloud.endAsync(true);
      await relay.close();
      await broker.destroy();
    }
  });
});
