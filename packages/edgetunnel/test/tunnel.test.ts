import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { newMessage, silentLogger, toWire } from '@edgecore/beehive';
import { Mosquitto } from '@edgecore/test-support';
import { kernelJoiner } from '@edgecore/edgemesh-module/kernel-joiner';
import { connectAsync } from 'mqtt';
import {
  appendRevocation,
  DenyList,
  followRevokedConfigMap,
  parseDenyList,
  caFiles,
  createCa,
  issue,
  loadIdentity,
  loadTlsEngine,
  Relay,
  type RelayOptions,
  TunnelAgent,
  TunnelCode,
  type Identity,
  type TlsEngine,
  type TunnelTargets,
} from '../src';

const dir = mkdtempSync(join(tmpdir(), 'edgetunnel-test-'));
const other = mkdtempSync(join(tmpdir(), 'edgetunnel-other-'));
const cleanup: (() => Promise<void> | void)[] = [];
let echo: Server;
let echoPort: number;
let udpEcho: UdpSocket;
let udpPort: number;
const revoked = join(dir, 'revoked.json');

const node = (name: string, d = dir): Identity =>
  loadIdentity(
    { cert: join(d, `${name}.crt`), key: join(d, `${name}.key`), ca: caFiles(d).cert },
    {
      role: 'node',
      name,
    },
  );

/** Only the echo servers are backends of any node in these tests. */
const targets: TunnelTargets = {
  allows: (host, port, proto) => host === '127.0.0.1' && port === (proto === 'udp' ? udpPort : echoPort),
};

/**
 * How the relays of a test move streams: `spliced` (the default: TCP streams are TLS end to end
 * over the relay's splice port), `kernel` (spliced, the relay joining pairs in EdgeMesh's splice
 * engine), `native` (as kernel, and the nodes run the streams' TLS in EdgeMesh's native TLS pump,
 * as edgecore does) or `relayed` (splicing off: every stream rides the links).
 */
let relayMode: 'spliced' | 'kernel' | 'native' | 'relayed' = 'spliced';

async function startRelay(
  name: string,
  opts: Pick<RelayOptions, 'spliceTtlMs'> = {},
): Promise<{ relay: Relay; address: string }> {
  const relay = new Relay({
    ...opts,
    splicePort: relayMode === 'relayed' ? false : 0,
    // `kernel`: spliced pairs move in EdgeMesh's splice engine, as edgerelay does when installed
    kernelJoiner: relayMode === 'kernel' || relayMode === 'native' ? joiner() : undefined,
    identity: loadIdentity(
      { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`), ca: caFiles(dir).cert },
      {
        role: 'relay',
        name,
      },
    ),
    host: '127.0.0.1',
    port: 0,
    revokedFile: revoked,
    revokedPollMs: 50,
    pingIntervalMs: 1000,
  });
  const a = await relay.listen();
  cleanup.push(() => relay.close());
  return { relay, address: `127.0.0.1:${a.port}` };
}

async function startAgent(
  id: Identity,
  relays: string[],
  extra: Partial<ConstructorParameters<typeof TunnelAgent>[0]> = {},
) {
  const agent = new TunnelAgent({
    identity: id,
    relays,
    targets,
    pingIntervalMs: 1000,
    reconnectInitialMs: 50,
    reconnectMaxMs: 200,
    openTimeoutMs: 2000,
    revokedFile: revoked,
    revokedPollMs: 50,
    tlsEngine: relayMode === 'native' ? engine() : undefined,
    ...extra,
  });
  const listening = await agent.start();
  cleanup.push(() => agent.stop());
  return { agent, listening };
}

function roundTrip(s: Duplex, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => resolve(Buffer.concat(got)));
    s.on('error', reject);
    s.end(data);
  });
}

beforeAll(async () => {
  await createCa(dir);
  await issue(caFiles(dir), { role: 'relay', name: 'relay-1', altNames: ['127.0.0.1'] });
  await issue(caFiles(dir), { role: 'relay', name: 'relay-2', altNames: ['127.0.0.1'] });
  for (const n of ['a', 'b', 'c', 'd']) await issue(caFiles(dir), { role: 'node', name: n });
  await createCa(other);
  await issue(caFiles(other), { role: 'node', name: 'a' });
  echo = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy()); // a stream reset by a test resets its connection here
    s.pipe(s); // echoes, and ends its side after the client's FIN (half-close)
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as AddressInfo).port;
  udpEcho = createSocket('udp4');
  udpEcho.on('message', (m, r) => udpEcho.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
  await new Promise<void>((r) => udpEcho.bind(0, '127.0.0.1', r));
  udpPort = udpEcho.address().port;
});

afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
  rmSync(revoked, { force: true });
});

afterAll(() => {
  echo.close();
  udpEcho.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(other, { recursive: true, force: true });
});

describe('certificates', () => {
  test('keys and certificates are 0600 and load as the named node', () => {
    expect(statSync(join(dir, 'a.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'a.crt')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'ca.key')).mode & 0o777).toBe(0o600);
    expect(node('a').name).toBe('a');
  });

  test('wrong CA, wrong name, wrong role and expired certificates are clear errors', async () => {
    const files = { cert: join(other, 'a.crt'), key: join(other, 'a.key'), ca: caFiles(dir).cert };
    expect(() => loadIdentity(files, { role: 'node', name: 'a' })).toThrow(
      expect.objectContaining({ code: TunnelCode.CertWrongCa, message: expect.stringContaining('a.crt') }),
    );
    const mine = { cert: join(dir, 'a.crt'), key: join(dir, 'a.key'), ca: caFiles(dir).cert };
    expect(() => loadIdentity(mine, { role: 'node', name: 'b' })).toThrow(
      expect.objectContaining({ code: TunnelCode.CertNameMismatch, message: expect.stringContaining('"b"') }),
    );
    expect(() => loadIdentity(mine, { role: 'relay', name: 'a' })).toThrow(
      expect.objectContaining({ code: TunnelCode.CertNameMismatch }),
    );
    expect(() => loadIdentity({ ...mine, key: join(dir, 'b.key') }, { role: 'node', name: 'a' })).toThrow(
      expect.objectContaining({ code: TunnelCode.CertKeyMismatch }),
    );
    await issue(caFiles(dir), {
      role: 'node',
      name: 'a',
      fileName: 'a-expired',
      notBefore: '20200101000000Z',
      notAfter: '20200102000000Z',
    });
    expect(() =>
      loadIdentity(
        { cert: join(dir, 'a-expired.crt'), key: join(dir, 'a-expired.key'), ca: caFiles(dir).cert },
        {
          role: 'node',
          name: 'a',
        },
      ),
    ).toThrow(
      expect.objectContaining({
        code: TunnelCode.CertExpired,
        message: expect.stringContaining('2020-01-02'),
      }),
    );
    expect(() => loadIdentity({ ...mine, cert: join(dir, 'nope.crt') }, { role: 'node', name: 'a' })).toThrow(
      expect.objectContaining({
        code: TunnelCode.CertUnreadable,
        message: expect.stringContaining('nope.crt'),
      }),
    );
  });

  test('a deny list from the cloud adds to the file; neither replaces the other', () => {
    appendRevocation(revoked, { node: 'c' });
    const d = new DenyList(revoked);
    d.setDistributed(parseDenyList(JSON.stringify({ revoked: [{ fingerprint256: 'ab:cd' }] }), 'cm'));
    expect(d.isRevoked('c', 'XX')).toBe(true); // the file's entry, by name
    expect(d.isRevoked('a', 'AB:CD')).toBe(true); // the cloud's, by fingerprint (any case)
    expect(d.isRevoked('a', 'EF')).toBe(false);
    d.setDistributed([]);
    expect(d.isRevoked('a', 'AB:CD')).toBe(false);
    expect(d.isRevoked('c', 'XX')).toBe(true);
    expect(() => parseDenyList('{"revoked":[{}]}', 'cm')).toThrow(/revoked\[0\]/);
  });

  test('a fleet has one CA: init refuses to overwrite it', async () => {
    await expect(createCa(dir)).rejects.toThrow(/exists/);
  });
});

describe.each(['spliced', 'kernel', 'native', 'relayed'] as const)('streams through a relay (%s)', (mode) => {
  beforeAll(() => (relayMode = mode));
  afterAll(() => (relayMode = 'spliced'));
  const spliced = mode === 'relayed' ? 0 : 1;

  test('TCP: bytes both ways, half-close crosses, nodes never dial each other', async () => {
    const { address } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address])).agent;
    expect(await a.ready()).toBe(true);
    expect(await b.ready()).toBe(true);
    expect(b.reachedBy()).toEqual(['relay-1']);
    const s = await a.open({ node: 'b', relays: b.reachedBy() }, '127.0.0.1', echoPort);
    const payload = Buffer.alloc(3 << 20, 7); // more than one flow-control window
    const back = await roundTrip(s, payload);
    expect(back.equals(payload)).toBe(true);
    expect(a.stats.openedViaRelay).toBe(1);
    expect(a.stats.openedSpliced).toBe(spliced);
    expect(b.stats.served).toBe(1);
    // both ends' TLS in the native pump in that mode, in Node's TLS otherwise
    expect([a.stats.nativeTls, b.stats.nativeTls]).toEqual(mode === 'native' ? [1, 1] : [0, 0]);
  });

  test('back-pressure: a reader that stops holds the sender, memory stays bounded', async () => {
    // a sink that never reads: the stream's windows fill and write() says so
    let held: Socket | undefined;
    const sink = createServer((sock) => (held = sock).pause());
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => sink.close(() => r())));
    const port = (sink.address() as AddressInfo).port;
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address], { targets: { allows: (_h, p) => p === port } })).agent;
    await a.ready();
    await b.ready();
    const s = await a.open({ node: 'b' }, '127.0.0.1', port);
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024);
    while (s.write(chunk) && written < 256 << 20) written += chunk.length;
    await new Promise((r) => setTimeout(r, 300));
    // what the sender could write before being held: the windows of two hops and socket buffers
    expect(written).toBeLessThan(64 << 20);
    expect(relay.stats.active).toBe(1);
    s.destroy();
    // the reset crosses both hops: node b resets its connection to the backend
    held!.on('error', () => undefined).resume();
    await waitFor(() => held!.destroyed);
  });

  test('a backend that speaks first: its greeting waits for a reader that comes later', async () => {
    const banner = createServer((sock) => {
      sock.on('error', () => undefined); // reset when the test's nodes stop with the stream open
      sock.end('220 ready\n');
    });
    await new Promise<void>((r) => banner.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => banner.close(() => r())));
    const port = (banner.address() as AddressInfo).port;
    const { address } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address], { targets: { allows: (_h, p) => p === port } })).agent;
    await a.ready();
    await b.ready();
    const s = await a.open({ node: 'b' }, '127.0.0.1', port);
    await new Promise((r) => setTimeout(r, 100)); // the greeting arrives before anyone reads
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    await new Promise((r) => s.once('end', r));
    expect(Buffer.concat(got).toString()).toBe('220 ready\n');
  });

  test('UDP: datagrams framed both ways — spliced like TCP (TLS end to end), else on the links', async () => {
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address])).agent;
    await a.ready();
    await b.ready();
    const ch = await a.datagram({ node: 'b' }, '127.0.0.1', udpPort);
    const got: string[] = [];
    ch.on('message', (m: Buffer) => got.push(m.toString()));
    for (const w of ['one', 'two', 'x'.repeat(1400)]) ch.send(Buffer.from(w));
    await waitFor(() => got.length === 3);
    expect(got).toEqual(['echo:one', 'echo:two', `echo:${'x'.repeat(1400)}`]);
    expect(a.stats.openedSpliced).toBe(spliced);
    expect(relay.stats.spliced).toBe(spliced);
    expect(b.stats.served).toBe(1);
    expect([a.stats.nativeTls, b.stats.nativeTls]).toEqual(mode === 'native' ? [1, 1] : [0, 0]);
    ch.close();
    // the flow's end crosses: the relay holds no stream of it any more
    await waitFor(() => relay.stats.active === 0);
  });

  test('UDP: a flow with no datagram for udpIdleTimeoutMs ends, at both nodes', async () => {
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address], { udpIdleTimeoutMs: 400 })).agent;
    const b = (await startAgent(node('b'), [address], { udpIdleTimeoutMs: 400 })).agent;
    await a.ready();
    await b.ready();
    const ch = await a.datagram({ node: 'b' }, '127.0.0.1', udpPort);
    const echoed = new Promise<string>((r) => ch.once('message', (m: Buffer) => r(m.toString())));
    ch.send(Buffer.from('ping'));
    expect(await echoed).toBe('echo:ping');
    const t0 = Date.now();
    await new Promise((r) => ch.once('close', r));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    await waitFor(() => relay.stats.active === 0);
  });

  test('a stream to an address the node does not publish is refused and counted', async () => {
    const { address } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address])).agent;
    await a.ready();
    await b.ready();
    await expect(a.open({ node: 'b' }, '127.0.0.1', 22)).rejects.toMatchObject({ code: TunnelCode.Refused });
    await expect(a.open({ node: 'b' }, '10.0.0.1', echoPort)).rejects.toMatchObject({
      code: TunnelCode.Refused,
    });
    expect(b.stats.refused).toBe(2);
  });

  test('a backend that refuses the connection is UNREACHABLE, not a hang', async () => {
    const { address } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const b = (await startAgent(node('b'), [address], { targets: { allows: () => true } })).agent;
    await a.ready();
    await b.ready();
    await expect(a.open({ node: 'b' }, '127.0.0.1', port)).rejects.toMatchObject({
      code: TunnelCode.Unreachable,
      message: expect.stringContaining('ECONNREFUSED'),
    });
  });

  test('no relay up: NO_PATH at once; a node the relay has no link to: NO_PATH', async () => {
    const a0 = (await startAgent(node('a'), [])).agent;
    const t0 = Date.now();
    await expect(a0.open({ node: 'b' }, '127.0.0.1', echoPort)).rejects.toMatchObject({
      code: TunnelCode.NoPath,
    });
    expect(Date.now() - t0).toBeLessThan(1000);
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('c'), [address])).agent;
    await waitFor(() => a.relaysUp().length === 1);
    await expect(a.open({ node: 'b' }, '127.0.0.1', echoPort)).rejects.toMatchObject({
      code: TunnelCode.NoPath,
    });
    expect(relay.stats.noLink).toBe(1);
  });

  test('two relays: with one killed, new streams go through the other', async () => {
    const r1 = await startRelay('relay-1');
    const r2 = await startRelay('relay-2');
    const a = (await startAgent(node('a'), [r1.address, r2.address])).agent;
    const b = (await startAgent(node('b'), [r1.address, r2.address])).agent;
    expect(await a.ready(2)).toBe(true);
    expect(await b.ready(2)).toBe(true);
    expect(b.reachedBy().sort()).toEqual(['relay-1', 'relay-2']);
    const route = { node: 'b', relays: ['relay-1', 'relay-2'] };
    expect((await roundTrip(await a.open(route, '127.0.0.1', echoPort), Buffer.from('hi'))).toString()).toBe(
      'hi',
    );
    expect(r1.relay.stats.streams).toBe(1); // the first listed
    await r1.relay.close();
    await waitFor(() => a.relaysUp().length === 1 && b.reachedBy().length === 1);
    for (let i = 0; i < 5; i++)
      expect((await roundTrip(await a.open(route, '127.0.0.1', echoPort), Buffer.from('x'))).toString()).toBe(
        'x',
      );
    expect(r2.relay.stats.streams).toBe(5);
  });
});

describe('spliced streams in the native TLS engine', () => {
  beforeAll(() => (relayMode = 'native'));
  afterAll(() => (relayMode = 'spliced'));

  /** A connection as EdgeMesh's L4 portal accepts it: [the client's end, the accepted one, paused]. */
  async function accepted(): Promise<[Socket, Socket]> {
    let take!: (s: Socket) => void;
    const got = new Promise<Socket>((r) => (take = r));
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => take(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    const c = connect({
      port: (server.address() as AddressInfo).port,
      host: '127.0.0.1',
      allowHalfOpen: true,
    });
    c.on('error', () => undefined);
    const s = await got;
    s.on('error', () => undefined);
    cleanup.push(() => void (c.destroy(), s.destroy()));
    return [c, s];
  }

  test.each([
    ['a', 'b'],
    ['b', 'a'],
  ])(
    "one end in the engine, the other in Node's TLS (engine on %s): they interoperate",
    async (withEngine) => {
      const { address } = await startRelay('relay-1');
      const opts = (n: string) => (n === withEngine ? {} : { tlsEngine: undefined });
      const a = (await startAgent(node('a'), [address], opts('a'))).agent;
      const b = (await startAgent(node('b'), [address], opts('b'))).agent;
      await a.ready();
      await b.ready();
      const payload = Buffer.alloc(1 << 20, 9);
      const s = await a.open({ node: 'b' }, '127.0.0.1', echoPort);
      expect((await roundTrip(s, payload)).equals(payload)).toBe(true);
      expect([a.stats.nativeTls, b.stats.nativeTls]).toEqual(withEngine === 'a' ? [1, 0] : [0, 1]);
    },
  );

  test("a handshake the serving node's engine fails: the stream is refused and its backend connection closed", async () => {
    let open = 0;
    const counted = createServer((sock) => {
      open++;
      sock.on('error', () => undefined);
      sock.once('close', () => open--);
    });
    await new Promise<void>((r) => counted.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => counted.close(() => r())));
    const port = (counted.address() as AddressInfo).port;
    const { address } = await startRelay('relay-1');
    // a's links use its fleet identity; its spliced streams present a certificate of another CA
    const e = engine();
    const foreign: TlsEngine = {
      context: (_id, alpn, suites) => e.context(node('a', other), alpn, suites),
      start: (...args) => e.start(...args),
    };
    const a = (await startAgent(node('a'), [address], { tlsEngine: foreign })).agent;
    const b = (await startAgent(node('b'), [address], { targets: { allows: (_h, p) => p === port } })).agent;
    await a.ready();
    await b.ready();
    await expect(a.open({ node: 'b' }, '127.0.0.1', port)).rejects.toMatchObject({ code: TunnelCode.NoPath });
    await waitFor(() => open === 0); // b connected its backend for the stream, and closed it
    expect(b.stats.served).toBe(0);
  });

  test("the L4 portal's join: the stream takes the client's connection itself; bytes read already go first; a FIN and a reset cross", async () => {
    let held: Socket | undefined;
    const sink = createServer({ allowHalfOpen: true }, (sock) => {
      held = sock;
      sock.on('error', () => undefined);
      sock.pipe(sock);
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => sink.close(() => r())));
    const port = (sink.address() as AddressInfo).port;
    const { address } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address], { targets: { allows: (_h, p) => p === port } })).agent;
    await a.ready();
    await b.ready();
    const [c, client] = await accepted();
    const st = await a.open({ node: 'b' }, '127.0.0.1', port, 'tcp', {
      client,
      first: Buffer.from('sniffed '),
    });
    expect(st).toBe(client); // joined: nothing for the caller to pipe
    expect(a.stats.nativeTls).toBe(1);
    const back = new Promise<string>((resolve) => {
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString()));
      c.once('end', () => resolve(got));
    });
    c.end('bytes');
    expect(await back).toBe('sniffed bytes'); // the backend echoed and ended after our FIN
    await waitFor(() => client.destroyed);

    // a client that resets: node b resets its connection to the backend
    const [c2, client2] = await accepted();
    expect(await a.open({ node: 'b' }, '127.0.0.1', port, 'tcp', { client: client2 })).toBe(client2);
    const echoed = new Promise((r) => c2.once('data', r));
    c2.write('x');
    await echoed;
    const backend = held!;
    c2.resetAndDestroy();
    await waitFor(() => backend.destroyed);
    expect(b.stats.nativeTls).toBe(2);
  });
});

/** The native TLS pump as a node's TLS engine: the addon is built on Linux (as EdgeMesh's tests require). */
function engine(): TlsEngine {
  const e = loadTlsEngine();
  if (!e) throw new Error('the native addon is not built: no TLS engine');
  return e;
}

/** The splice engine as the relay's joiner: the addon is built on Linux (as EdgeMesh's tests require). */
function joiner(): NonNullable<ReturnType<typeof kernelJoiner>> {
  const j = kernelJoiner();
  if (!j) throw new Error('the native addon is not built: no kernel joiner');
  return j;
}

describe.each(['spliced', 'kernel', 'native'] as const)('spliced streams (%s join)', (mode) => {
  beforeAll(() => (relayMode = mode));
  afterAll(() => (relayMode = 'spliced'));

  test('the relay joins only connections that present a token it issued; the nodes resume TLS', async () => {
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address])).agent;
    await a.ready();
    await b.ready();
    const payload = Buffer.alloc(1 << 20, 3);
    const s1 = await a.open({ node: 'b' }, '127.0.0.1', echoPort);
    // TLS between the nodes, over the relay's splice: in Node's TLS (a TLS socket), or in the
    // native pump (a plain socket of the pump's, the TLS behind it)
    expect((s1 as TLSSocket).encrypted).toBe(mode === 'native' ? undefined : true);
    expect((await roundTrip(s1, payload)).equals(payload)).toBe(true);
    expect(relay.stats.spliced).toBe(1);
    await waitFor(() => relay.stats.bytes > 2 * payload.length); // ciphertext: a little more (a kernel join counts at the end)
    // the second stream to b resumes the first one's TLS session (no certificates exchanged),
    // in Node's TLS and in the native pump alike
    expect(a.stats.resumedSpliced).toBe(0);
    const s2 = (await a.open({ node: 'b' }, '127.0.0.1', echoPort)) as TLSSocket;
    if (mode !== 'native') expect(s2.isSessionReused()).toBe(true);
    expect(a.stats.resumedSpliced).toBe(1);
    expect((await roundTrip(s2, Buffer.from('again'))).toString()).toBe('again');
    // anyone else on the splice port: a token the relay never issued, or no hello at all
    const knock = async (bytes: Buffer): Promise<void> => {
      const c = connect(relay.splicePort!, '127.0.0.1');
      c.on('error', () => undefined);
      c.end(bytes);
      c.resume();
      await new Promise((r) => c.once('close', r));
    };
    await knock(Buffer.from(`ETS1${'0'.repeat(32)}`));
    await knock(Buffer.from('GET / HTTP/1.1\r\nHost: relay\r\n\r\n'));
    expect(relay.stats.spliceRefused).toBe(2);
    expect(relay.stats.spliced).toBe(2);
  });

  test("a revoked node's open spliced stream is cut (the relay and its peer both follow the deny list)", async () => {
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = (await startAgent(node('b'), [address])).agent;
    await a.ready();
    await b.ready();
    const s = await a.open({ node: 'b' }, '127.0.0.1', echoPort);
    expect((await new Promise<Buffer>((r) => (s.once('data', r), s.write('open')))).toString()).toBe('open');
    s.on('error', () => undefined);
    appendRevocation(revoked, { node: 'a', fingerprint256: node('a').fingerprint256 });
    // the cut reaches a as a reset (the relay's abort) or, when b's end of it came first, as the
    // end of the stream (a live Node-TLS stream is aborted with a FIN, see the README) — after
    // which a no longer reads and does not see the reset behind it. Either way the connection is
    // gone, not half-closed: writes after the end fail (TCP answers the first with a reset, the
    // next one fails), and the stream closes.
    await new Promise((r) => (s.once('close', r), s.once('end', r)));
    await waitFor(() => (s.destroyed || s.write('after the cut'), s.destroyed));
    await waitFor(() => relay.stats.active === 0);
  });

  test('a node that does not ask for splicing gets its streams relayed over the links', async () => {
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address], { splice: false })).agent;
    const b = (await startAgent(node('b'), [address])).agent;
    await a.ready();
    await b.ready();
    const s = await a.open({ node: 'b' }, '127.0.0.1', echoPort);
    expect((await roundTrip(s, Buffer.from('links'))).toString()).toBe('links');
    expect(relay.stats.spliced).toBe(0);
    expect(a.stats.openedSpliced).toBe(0);
  });
});

describe('identity', () => {
  test('a node with a certificate of another CA is refused by the relay', async () => {
    const { address, relay } = await startRelay('relay-1');
    const evil: Identity = {
      ...node('a'),
      cert: readFileSync(join(other, 'a.crt')),
      key: readFileSync(join(other, 'a.key')),
    };
    const a = (await startAgent(evil, [address])).agent;
    await waitFor(() => relay.stats.refusedPeers >= 2); // its forward and reverse links
    expect(a.relaysUp()).toEqual([]);
    expect(relay.nodes).toEqual([]);
  });

  test('a revoked node is cut off by the relay, refused when it dials again, and by a peer', async () => {
    const { address, relay } = await startRelay('relay-1');
    const a = (await startAgent(node('a'), [address])).agent;
    const b = await startAgent(node('b'), [address], { listen: { host: '127.0.0.1', port: 0 } });
    await a.ready();
    await b.agent.ready();
    const direct = `127.0.0.1:${b.listening!.port}`;
    expect(
      (await roundTrip(await a.open({ node: 'b' }, '127.0.0.1', echoPort), Buffer.from('1'))).toString(),
    ).toBe('1');
    // revoke a (by its certificate's fingerprint, as `edgectl certs revoke a` does)
    appendRevocation(revoked, { node: 'a', fingerprint256: node('a').fingerprint256 });
    await waitFor(() => !relay.nodes.includes('a') && a.relaysUp().length === 0);
    await new Promise((r) => setTimeout(r, 300)); // its redials are refused too
    expect(a.relaysUp()).toEqual([]);
    expect(relay.stats.refusedPeers).toBeGreaterThan(0);
    await expect(a.open({ node: 'b', address: direct }, '127.0.0.1', echoPort)).rejects.toMatchObject({
      code: TunnelCode.NoPath,
    });
    expect(b.agent.stats.refused).toBeGreaterThan(0);
  });

  test("a relay follows the cloud's deny list (the ConfigMap, over MQTT): a node it names is cut; deleted, it links again", async () => {
    const broker = await Mosquitto.start();
    cleanup.push(() => broker.destroy());
    const { address, relay } = await startRelay('relay-1');
    const feed = await followRevokedConfigMap(relay.denied, { server: broker.url, log: silentLogger });
    cleanup.push(() => feed.endAsync(true));
    const a = (await startAgent(node('a'), [address])).agent;
    await a.ready();
    const topic = 'edgecore/objects/kube-system/configmap/edgetunnel-revoked';
    const cloud = await connectAsync(broker.url, { clientId: 'cloud', reconnectPeriod: 0 });
    cleanup.push(() => cloud.endAsync(true));
    const put = (operation: string, content: unknown) =>
      cloud.publishAsync(
        topic,
        toWire(
          newMessage(content, {
            source: 'edgectl',
            group: 'resource',
            operation,
            resource: 'kube-system/configmap/edgetunnel-revoked',
          }),
        ),
        { qos: 1, retain: true },
      );
    const cm = (revokedJson: string) => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'edgetunnel-revoked', namespace: 'kube-system' },
      data: { 'revoked.json': revokedJson },
    });
    await put(
      'update',
      cm(JSON.stringify({ revoked: [{ node: 'a', fingerprint256: node('a').fingerprint256 }] })),
    );
    await waitFor(() => !relay.nodes.includes('a') && a.relaysUp().length === 0);
    await put('update', cm('{"revoked": [{}]}')); // malformed: the last good list stays
    await new Promise((r) => setTimeout(r, 300));
    expect(relay.denied.isRevoked('a', node('a').fingerprint256)).toBe(true);
    await put('delete', {
      kind: 'ConfigMap',
      metadata: { name: 'edgetunnel-revoked', namespace: 'kube-system' },
    });
    await waitFor(() => relay.nodes.includes('a'));
  });

  test('a node with a reachable address is dialled directly, its certificate checked', async () => {
    const b = await startAgent(node('b'), [], { listen: { host: '127.0.0.1', port: 0 } });
    const a = (await startAgent(node('a'), [])).agent;
    const address = `127.0.0.1:${b.listening!.port}`;
    const s = await a.open({ node: 'b', address }, '127.0.0.1', echoPort);
    expect((await roundTrip(s, Buffer.from('direct'))).toString()).toBe('direct');
    expect(a.stats.openedDirect).toBe(1);
    // the listener is node b's: a route that says it is c's is not believed
    await expect(a.open({ node: 'c', address }, '127.0.0.1', echoPort)).rejects.toMatchObject({
      code: TunnelCode.NoPath,
    });
  });

  test.each(['relayed', 'spliced', 'native'] as const)('1,000 concurrent streams (%s)', async (mode) => {
    relayMode = mode;
    // spliced: 1,000 TLS handshakes, both nodes and the relay in this one process (native: on
    // the pump's thread) — on a loaded host the last pairs came after the relay's 10 s, so its
    // tokens live as long as the nodes wait here
    const { address } = await startRelay('relay-1', { spliceTtlMs: 20_000 });
    const a = (await startAgent(node('a'), [address], { openTimeoutMs: 20_000 })).agent;
    const b = (await startAgent(node('b'), [address], { openTimeoutMs: 20_000 })).agent;
    relayMode = 'spliced';
    await a.ready();
    await b.ready();
    const streams = await Promise.all(
      Array.from({ length: 1000 }, () => a.open({ node: 'b' }, '127.0.0.1', echoPort)),
    );
    const back = await Promise.all(streams.map((s, i) => roundTrip(s, Buffer.from(`s${i}`))));
    expect(back.map((x) => x.toString())).toEqual(streams.map((_s, i) => `s${i}`));
    expect(a.stats.openedSpliced).toBe(mode === 'relayed' ? 0 : 1000);
    expect(a.stats.nativeTls).toBe(mode === 'native' ? 1000 : 0);
  });
});

function waitFor(f: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (f()) {
        clearInterval(t);
        resolve();
      } else if (Date.now() > until) {
        clearInterval(t);
        reject(new Error('condition not met in time'));
      }
    }, 20);
  });
}
