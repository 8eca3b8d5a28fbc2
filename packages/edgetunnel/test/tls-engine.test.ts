import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as tlsServer } from 'node:tls';
import {
  ALPN_SPLICED,
  caFiles,
  createCa,
  issue,
  loadIdentity,
  loadTlsEngine,
  peerOfDer,
  TLS_CIPHERS,
  type Identity,
  type TlsEngine,
} from '../src';

/**
 * The TLS engine a node runs its spliced streams' TLS in (EdgeMesh's native TLS pump), against
 * Node's TLS on the other end: what the agent relies on — the handshake verified against the
 * fleet CA, the peer's certificate for its verdict before a byte moves, plaintext both ways with
 * half-close, resets, a failed handshake that leaves the caller's connection whole.
 */

const dir = mkdtempSync(join(tmpdir(), 'tls-engine-test-'));
const other = mkdtempSync(join(tmpdir(), 'tls-engine-other-'));
const closers: (() => void)[] = [];
let engine: TlsEngine;

const id = (name: string, d = dir): Identity =>
  loadIdentity(
    { cert: join(d, `${name}.crt`), key: join(d, `${name}.key`), ca: caFiles(d).cert },
    { role: 'node', name },
  );

const mtls = (i: Identity) => ({
  key: i.key,
  cert: i.cert,
  ca: i.ca,
  minVersion: 'TLSv1.3' as const,
  ciphers: TLS_CIPHERS,
  ALPNProtocols: [ALPN_SPLICED],
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** A connected TCP pair: [the side we dial, the side accepted] — both paused, nothing read. */
async function tcpPair(): Promise<[Socket, Socket]> {
  let accepted!: (s: Socket) => void;
  const got = new Promise<Socket>((r) => (accepted = r));
  const port = await listen(createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => accepted(s)));
  const dialled = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  dialled.pause();
  await new Promise((r) => dialled.once('connect', r));
  const other = await got;
  for (const s of [dialled, other]) {
    s.on('error', () => undefined);
    closers.push(() => s.destroy());
  }
  return [dialled, other];
}

/** A Node TLS server of `i` (mutual TLS with the fleet CA) that echoes and ends after the client ends. */
async function echoTls(i: Identity): Promise<number> {
  const server = tlsServer(
    { ...mtls(i), requestCert: true, rejectUnauthorized: true, allowHalfOpen: true },
    (t) => {
      t.on('error', () => undefined);
      t.pipe(t);
    },
  );
  server.on('tlsClientError', () => undefined);
  return listen(server);
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.once('end', () => resolve(Buffer.concat(got)));
    s.once('error', reject);
    s.resume();
  });
}

function until<T>(f: (done: (v: T) => void) => void): Promise<T> {
  return new Promise((resolve) => f(resolve));
}

/** The server side of a stream in the pump, between `raw` and `plain`: how it ended. */
function served(
  ctx: object,
  raw: Socket,
  plain: Socket,
  o: { peer?: () => boolean; idleMs?: number } = {},
): Promise<{ reason: string; up: number; down: number; error: string }> {
  return until((d) =>
    engine.start(
      ctx,
      raw,
      plain,
      { server: true, idleMs: o.idleMs ?? 0 },
      { peer: o.peer ?? (() => true), done: (reason, up, down, error) => d({ reason, up, down, error }) },
    ),
  );
}

beforeAll(async () => {
  const e = loadTlsEngine();
  if (!e) throw new Error('the native addon is not built: no TLS engine');
  engine = e;
  await createCa(dir);
  for (const n of ['a', 'b']) await issue(caFiles(dir), { role: 'node', name: n });
  await createCa(other);
  await issue(caFiles(other), { role: 'node', name: 'b' });
});

afterEach(() => {
  while (closers.length) closers.pop()!();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(other, { recursive: true, force: true });
});

test('client in the pump, Node TLS serving: the peer is shown before a byte moves; 3 MiB both ways and the half-close cross', async () => {
  const port = await echoTls(id('b'));
  const raw = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => raw.once('connect', r));
  closers.push(() => raw.destroy());
  const ctx = engine.context(id('a'), ALPN_SPLICED, TLS_CIPHERS);
  let peer: ReturnType<typeof peerOfDer> | undefined;
  let ended!: (v: [string, number, number]) => void;
  const done = new Promise<[string, number, number]>((r) => (ended = r));
  const st = engine.start(
    ctx,
    raw,
    undefined,
    { server: false, servername: 'b.test', idleMs: 0 },
    {
      peer: (der) => {
        peer = peerOfDer(der);
        return peer.name === 'b';
      },
      done: (reason, up, down) => ended([reason, up, down]),
    },
  );
  expect(st?.plain).toBeDefined();
  const plain = st!.plain!;
  const payload = Buffer.alloc(3 << 20, 5);
  const back = readAll(plain);
  plain.end(payload); // written before the verdict: it waits in the pair until the peer is let through
  expect((await back).equals(payload)).toBe(true);
  expect(peer).toMatchObject({ role: 'node', name: 'b', fingerprint256: id('b').fingerprint256 });
  expect(await done).toEqual(['eof', payload.length, payload.length]);
});

test("server in the pump between a Node TLS client and a backend: bytes the caller had read go first, the backend's replies and FIN cross", async () => {
  const [backendSide, plain] = await tcpPair(); // plain: the node's connection to its backend
  const [clientRaw, raw] = await tcpPair(); // raw: the connection the relay joined
  backendSide.write('banner\n'); // a backend that speaks first: Node may hold it already
  await new Promise((r) => setTimeout(r, 50));
  const ctx = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  let peerName = '';
  const done = until<string>((d) =>
    engine.start(
      ctx,
      raw,
      plain,
      { server: true, idleMs: 0, first: Buffer.from('first\n') },
      {
        peer: (der) => ((peerName = peerOfDer(der).name), true),
        done: (reason) => d(reason),
      },
    ),
  );
  const t = tlsConnect({
    ...mtls(id('a')),
    socket: clientRaw,
    servername: 'x.splice.edgetunnel',
    checkServerIdentity: () => undefined,
  });
  t.on('error', () => undefined);
  await new Promise((r) => t.once('secureConnect', r));
  expect(t.alpnProtocol).toBe(ALPN_SPLICED);
  const toClient = until<Buffer>((d) => {
    const got: Buffer[] = [];
    t.on('data', (x: Buffer) => got.push(x));
    t.once('end', () => d(Buffer.concat(got)));
  });
  // the backend echoes what comes, then ends after the client's FIN
  const atBackend = readAll(backendSide);
  t.end('ping\n');
  expect((await atBackend).toString()).toBe('ping\n');
  backendSide.end('pong\n');
  expect((await toClient).toString()).toBe('first\nbanner\npong\n');
  expect(peerName).toBe('a');
  expect(await done).toBe('eof');
});

test('a peer of another CA: the handshake fails with the verify error, and the connection given to the pump is back as it was', async () => {
  const port = await echoTls(id('b', other));
  const raw = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => raw.once('connect', r));
  closers.push(() => raw.destroy());
  const [far, plain] = await tcpPair();
  far.write('early'); // read by Node before the pump takes the connection
  await new Promise((r) => setTimeout(r, 50));
  plain.resume();
  plain.pause();
  const ctx = engine.context(id('a'), ALPN_SPLICED, TLS_CIPHERS);
  let asked = false;
  const [reason, error] = await until<[string, string]>((d) =>
    engine.start(
      ctx,
      raw,
      plain,
      { server: false, idleMs: 0 },
      {
        peer: () => (asked = true),
        done: (r, _u, _d, e) => d([r, e]),
      },
    ),
  );
  expect(reason).toBe('error');
  expect(error).toMatch(
    /^TLS handshake: certificate verify failed: self-signed certificate in certificate chain$/,
  );
  expect(asked).toBe(false);
  expect(raw.destroyed).toBe(true);
  // the caller can still use it: what Node held first, then what comes next; and it writes
  const got: Buffer[] = [];
  plain.on('data', (x: Buffer) => got.push(x));
  plain.resume();
  far.write('-late');
  const atFar = until<string>((d) => far.once('data', (x: Buffer) => d(x.toString())).resume());
  plain.write('still here');
  expect(await atFar).toBe('still here');
  await new Promise((r) => setTimeout(r, 50));
  expect(Buffer.concat(got).toString()).toBe('early-late');
});

test('a peer refused by the verdict: aborted before a byte moves, the TLS connection reset', async () => {
  const [clientRaw, raw] = await tcpPair();
  const [far, plain] = await tcpPair();
  const ctx = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  const done = served(ctx, raw, plain, { peer: () => false }).then((r) => `${r.reason} ${r.error}`);
  const t = tlsConnect({ ...mtls(id('a')), socket: clientRaw, checkServerIdentity: () => undefined });
  const failed = until<string>((d) => t.once('error', (e: NodeJS.ErrnoException) => d(e.code ?? e.message)));
  t.write('secret');
  expect(await done).toBe('aborted refused');
  expect(await failed).toBe('ECONNRESET');
  // nothing reached the backend's side, which is the caller's again
  let leaked = '';
  far.on('data', (x: Buffer) => (leaked += x.toString())).resume();
  await new Promise((r) => setTimeout(r, 50));
  expect(leaked).toBe('');
  expect(plain.destroyed).toBe(false);
});

test('abort mid-stream resets both connections; an idle stream ends by itself', async () => {
  const [clientRaw, raw] = await tcpPair();
  const [far, plain] = await tcpPair();
  const ctx = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  const started = engine.start(
    ctx,
    raw,
    plain,
    { server: true, idleMs: 0 },
    { peer: () => true, done: () => undefined },
  );
  const t = tlsConnect({ ...mtls(id('a')), socket: clientRaw, checkServerIdentity: () => undefined });
  const tlsReset = until<string>((d) =>
    t.once('error', (e: NodeJS.ErrnoException) => d(e.code ?? e.message)),
  );
  const farReset = until<string>((d) =>
    far.once('error', (e: NodeJS.ErrnoException) => d(e.code ?? e.message)),
  );
  const first = until<string>((d) => far.once('data', (x: Buffer) => d(x.toString())).resume());
  t.write('flowing');
  expect(await first).toBe('flowing');
  started!.abort();
  expect(await farReset).toBe('ECONNRESET');
  expect(await tlsReset).toBe('ECONNRESET');

  const [clientRaw2, raw2] = await tcpPair();
  const [, plain2] = await tcpPair();
  const idle = served(ctx, raw2, plain2, { idleMs: 300 }).then((r) => r.reason);
  const t2 = tlsConnect({ ...mtls(id('a')), socket: clientRaw2, checkServerIdentity: () => undefined });
  t2.on('error', () => undefined);
  expect(await idle).toBe('idle');
});

test('a peer that closes without close_notify: in the handshake an error, mid-stream an EOF (as Node takes it)', async () => {
  const ctx = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  // in the handshake: a ClientHello cut short, then a FIN
  const [clientRaw, raw] = await tcpPair();
  const [, plain] = await tcpPair();
  const failed = served(ctx, raw, plain).then((r) => `${r.reason} ${r.error}`);
  clientRaw.end(Buffer.from([0x16, 0x03, 0x01, 0x00]));
  expect(await failed).toBe('error TLS handshake: connection closed');

  // mid-stream: the TLS client's TCP connection ends under it
  const [clientRaw2, raw2] = await tcpPair();
  const [far, plain2] = await tcpPair();
  const done = served(ctx, raw2, plain2).then((r) => `${r.reason} ${r.up} ${r.down}`);
  const t = tlsConnect({ ...mtls(id('a')), socket: clientRaw2, checkServerIdentity: () => undefined });
  t.on('error', () => undefined);
  await new Promise((r) => t.once('secureConnect', r));
  const atFar = readAll(far);
  await new Promise<void>((r) => t.write('cut short', () => r()));
  clientRaw2.end(); // a FIN, no close_notify
  expect((await atFar).toString()).toBe('cut short');
  far.end();
  expect(await done).toBe('eof 0 9');
});

test('a key that is not the certificate’s, or no CA: the context is refused with the part named', () => {
  const a = id('a');
  const b = id('b');
  expect(() => engine.context({ ...a, key: b.key }, ALPN_SPLICED, TLS_CIPHERS)).toThrow(
    expect.objectContaining({ code: 'EDGEMESH_TLS_PUMP', message: expect.stringContaining('private key') }),
  );
  expect(() => engine.context({ ...a, ca: Buffer.from('no PEM here') }, ALPN_SPLICED, TLS_CIPHERS)).toThrow(
    expect.objectContaining({ code: 'EDGEMESH_TLS_PUMP', message: expect.stringContaining('CA') }),
  );
});

/** One stream from a client in the pump to a server in the pump (each side a socket pair's end). */
async function pumpToPump(
  clientCtx: object,
  serverCtx: object,
  o: { session?: Buffer; clientVerdict?: boolean } = {},
): Promise<{
  resumed: [boolean?, boolean?];
  ticket?: Buffer;
  reason: string;
  echoed: string;
  peer?: string;
}> {
  const [clientRaw, serverRaw] = await tcpPair();
  const out: { resumed: [boolean?, boolean?]; ticket?: Buffer; peer?: string } = { resumed: [] };
  const served = engine.start(
    serverCtx,
    serverRaw,
    undefined,
    { server: true, idleMs: 0 },
    { peer: (_der, resumed) => ((out.resumed[1] = resumed), true), done: () => undefined },
  );
  served!.plain!.on('error', () => undefined); // a refused stream: the pair's end breaks
  served!.plain!.pipe(served!.plain!); // the server echoes
  let ended!: (r: string) => void;
  const done = new Promise<string>((r) => (ended = r));
  const st = engine.start(
    clientCtx,
    clientRaw,
    undefined,
    { server: false, servername: 'b.test', idleMs: 0, session: o.session },
    {
      peer: (der, resumed) => {
        out.resumed[0] = resumed;
        out.peer = peerOfDer(der).name;
        return o.clientVerdict ?? true;
      },
      session: (der) => (out.ticket = der),
      done: (reason) => ended(reason),
    },
  );
  const plain = st!.plain!;
  plain.on('error', () => undefined);
  // what came back once the end closes (a refused stream's end is destroyed, with no 'end')
  const echoed = new Promise<string>((resolve) => {
    let got = '';
    plain.on('data', (x: Buffer) => (got += x.toString()));
    plain.once('close', () => resolve(got));
  });
  plain.end('hello');
  const [text, reason] = [await echoed, await done];
  return { ...out, echoed: text, reason };
}

test('sessions: the pump resumes a session it was given (its own peers, Node TLS servers); the certificate the session began with goes to the verdict again', async () => {
  const a = engine.context(id('a'), ALPN_SPLICED, TLS_CIPHERS);
  const b = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  // the first stream: a full handshake, and a ticket for the next
  const first = await pumpToPump(a, b);
  expect(first).toMatchObject({ resumed: [false, false], reason: 'eof', echoed: 'hello', peer: 'b' });
  expect(first.ticket?.length).toBeGreaterThan(0);
  // the next one resumes it, both sides say so; the peer is b's certificate still
  const second = await pumpToPump(a, b, { session: first.ticket });
  expect(second).toMatchObject({ resumed: [true, true], reason: 'eof', echoed: 'hello', peer: 'b' });
  // a verdict that refuses (say, b revoked since) ends a resumed stream before a byte moves
  const refused = await pumpToPump(a, b, { session: second.ticket, clientVerdict: false });
  expect(refused).toMatchObject({ reason: 'aborted', echoed: '' });
  expect(refused.resumed[0]).toBe(true);
  // a server of another context (another node process: its own ticket key) does not take the
  // ticket: a full handshake, not a failure
  const b2 = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  expect(await pumpToPump(a, b2, { session: second.ticket })).toMatchObject({
    resumed: [false, false],
    reason: 'eof',
    echoed: 'hello',
  });
  // bytes that are no session: a full handshake too
  expect(await pumpToPump(a, b, { session: Buffer.from('not a session') })).toMatchObject({
    resumed: [false, false],
    echoed: 'hello',
  });

  // against a Node TLS server: the pump's client resumes its tickets too
  const port = await echoTls(id('b'));
  const viaNode = async (session?: Buffer) => {
    const raw = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => raw.once('connect', r));
    closers.push(() => raw.destroy());
    let resumed: boolean | undefined;
    let ticket: Buffer | undefined;
    const st = engine.start(
      a,
      raw,
      undefined,
      { server: false, servername: 'b.test', idleMs: 0, session },
      { peer: (_d, r) => ((resumed = r), true), session: (t) => (ticket = t), done: () => undefined },
    );
    const back = readAll(st!.plain!);
    st!.plain!.end('x');
    expect((await back).toString()).toBe('x');
    return { resumed, ticket };
  };
  const n1 = await viaNode();
  expect(n1.resumed).toBe(false);
  expect((await viaNode(n1.ticket)).resumed).toBe(true);

  // and a Node TLS client resumes the pump server's tickets
  const nodeClient = async (session?: Buffer) => {
    const [clientRaw, raw] = await tcpPair();
    const served = engine.start(
      b,
      raw,
      undefined,
      { server: true, idleMs: 0 },
      { peer: () => true, done: () => undefined },
    );
    served!.plain!.pipe(served!.plain!);
    const t = tlsConnect({
      ...mtls(id('a')),
      socket: clientRaw,
      session,
      checkServerIdentity: () => undefined,
    });
    t.on('error', () => undefined);
    let ticket: Buffer | undefined;
    t.on('session', (s: Buffer) => (ticket = s));
    await new Promise((r) => t.once('secureConnect', r));
    const reused = t.isSessionReused();
    const back = readAll(t as unknown as Socket);
    t.end('y');
    expect((await back).toString()).toBe('y');
    return { reused, ticket };
  };
  const c1 = await nodeClient();
  expect(c1.reused).toBe(false);
  expect((await nodeClient(c1.ticket)).reused).toBe(true);
});

test('a stream quiet for more than a second (its buffers given back) moves bytes again, both ways', async () => {
  const a = engine.context(id('a'), ALPN_SPLICED, TLS_CIPHERS);
  const b = engine.context(id('b'), ALPN_SPLICED, TLS_CIPHERS);
  const [clientRaw, serverRaw] = await tcpPair();
  const served = engine.start(
    b,
    serverRaw,
    undefined,
    { server: true, idleMs: 0 },
    { peer: () => true, done: () => undefined },
  );
  served!.plain!.pipe(served!.plain!); // echoes
  const done = until<string>((d) => {
    const st = engine.start(
      a,
      clientRaw,
      undefined,
      { server: false, servername: 'b.test', idleMs: 0 },
      { peer: () => true, done: (r, up, down) => d(`${r} ${up} ${down}`) },
    );
    const plain = st!.plain!;
    const chunk = (n: number) => Buffer.alloc(1 << 20, n);
    let got = 0;
    plain.on('data', (x: Buffer) => {
      got += x.length;
      if (got === 1 << 20) setTimeout(() => plain.end(chunk(2)), 2100); // past a second scan at least
    });
    plain.write(chunk(1));
    plain.resume();
  });
  expect(await done).toBe(`eof ${2 << 20} ${2 << 20}`);
});
