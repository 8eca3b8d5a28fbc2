import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
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
