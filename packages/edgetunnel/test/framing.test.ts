import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { Deframer, frame, UDP_STREAM_BUFFER, UdpStream } from '../src';

/**
 * A UDP flow's framing (2-byte length + payload) and the serving end of a flow, UdpStream: a
 * connected UDP socket as a stream of framed datagrams — with real UDP sockets on 127.0.0.1.
 */

const sockets: DgramSocket[] = [];

/** A UDP "backend" that answers each datagram with `echo:` + it, and one connected to it. */
async function backendAndFlow(): Promise<{ backend: DgramSocket; client: DgramSocket }> {
  const backend = createSocket('udp4');
  backend.on('message', (m, r) => backend.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
  await new Promise<void>((r) => backend.bind(0, '127.0.0.1', r));
  const client = createSocket('udp4');
  await new Promise<void>((r) => client.connect(backend.address().port, '127.0.0.1', r));
  sockets.push(backend, client);
  return { backend, client };
}

function deframeAll(s: UdpStream, into: string[]): void {
  const d = new Deframer();
  s.on('data', (c: Buffer) => d.push(c, (g) => into.push(g.toString())));
}

afterEach(() => {
  for (const s of sockets.splice(0))
    try {
      s.close();
    } catch {
      // closed by the test
    }
});

test('frames cut anywhere come back whole; an empty datagram is a datagram; more than 65,535 bytes is refused', () => {
  const stream = Buffer.concat([
    frame(Buffer.from('one')),
    frame(Buffer.alloc(0)),
    frame(Buffer.alloc(1400, 7)),
  ]);
  for (const cut of [1, 2, 3, 5, 700, stream.length - 1]) {
    const got: Buffer[] = [];
    const d = new Deframer();
    d.push(stream.subarray(0, cut), (g) => got.push(Buffer.from(g)));
    d.push(stream.subarray(cut), (g) => got.push(Buffer.from(g)));
    expect(got.map((g) => g.length)).toEqual([3, 0, 1400]);
    expect(got[0].toString()).toBe('one');
  }
  expect(() => frame(Buffer.alloc(65_536))).toThrow(RangeError);
});

test('UdpStream: written frames go out as datagrams, the answers come back framed; its end closes the socket', async () => {
  const { client } = await backendAndFlow();
  const flow = new UdpStream(client, 0);
  const got: string[] = [];
  deframeAll(flow, got);
  // two datagrams in one write, and one cut across two writes
  const two = Buffer.concat([frame(Buffer.from('a')), frame(Buffer.from('b'))]);
  const third = frame(Buffer.from('ccc'));
  flow.write(two);
  flow.write(third.subarray(0, 3));
  flow.write(third.subarray(3));
  await waitFor(() => got.length === 3);
  expect(got.sort()).toEqual(['echo:a', 'echo:b', 'echo:ccc']);
  // the other end is done: the flow ends, and the socket is closed
  const ended = new Promise((r) => flow.once('end', r));
  const closed = new Promise((r) => flow.once('close', r));
  flow.end();
  await ended;
  await closed;
  expect(() => client.send('after')).toThrow(/Not running/);
});

test('UdpStream: no datagram either way for idleMs ends the flow', async () => {
  const { client } = await backendAndFlow();
  const flow = new UdpStream(client, 200);
  const got: string[] = [];
  deframeAll(flow, got);
  flow.write(frame(Buffer.from('x')));
  await waitFor(() => got.length === 1);
  const t0 = Date.now();
  await new Promise((r) => flow.once('close', r));
  expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
  expect(flow.destroyed).toBe(true);
});

test('UdpStream: datagrams for a reader that does not read are dropped past its buffer, not held', async () => {
  const { backend, client } = await backendAndFlow();
  const flow = new UdpStream(client, 0);
  flow.pause(); // nobody reads
  const payload = Buffer.alloc(1200, 1);
  const port = client.address().port;
  // bounded: a few MiB of datagrams, a round at a time (the kernel drops some of them too)
  for (let round = 0; round < 30 && flow.readableLength < UDP_STREAM_BUFFER; round++) {
    for (let i = 0; i < 100; i++) backend.send(payload, port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 10));
  }
  for (let i = 0; i < 500; i++) backend.send(payload, port, '127.0.0.1');
  await new Promise((r) => setTimeout(r, 100));
  expect(flow.readableLength).toBeGreaterThanOrEqual(UDP_STREAM_BUFFER - 2 * (payload.length + 2));
  expect(flow.readableLength).toBeLessThan(UDP_STREAM_BUFFER + payload.length + 2);
  flow.destroy();
});

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
