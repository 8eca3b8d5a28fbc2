import { EventEmitter } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { recordingLogger } from '@edgecore/test-support';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { ConnectionBudget, ForwardProxy, LoadBalancer, RoundRobin, UdpProxy, type PortalSpec } from '../src';
import { testPortals } from './helpers';

type LogRecord = { level: string; obj: any; msg?: string };

const spec: PortalSpec = {
  key: 'default/echo:7000/TCP',
  serviceKey: 'default/echo',
  namespace: 'default',
  service: 'echo',
  vip: '198.18.0.1',
  port: 7000,
  transport: 'TCP',
  protocol: 'tcp',
};

/**
 * A client connection and what happens to it: `ended` (its error code, or 'closed'). A reset that
 * comes before Node reports the connect is the same reset (the kernel completed the handshake).
 */
function dial(port: number): { sock: Socket; connected: Promise<void>; ended: Promise<string> } {
  const sock = connect(port, '127.0.0.1');
  const ended = new Promise<string>((r) => {
    sock.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
    sock.on('close', () => r('closed'));
  });
  const connected = new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  connected.catch(() => undefined);
  return { sock, connected, ended };
}

/** A connection that is served: resolves once connected. */
async function open(port: number): Promise<{ sock: Socket }> {
  const c = dial(port);
  await c.connected;
  return c;
}

/** Send a line and read it back (through the portal to the echo backend). */
function echo(sock: Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    sock.once('data', (d) => resolve(d.toString()));
    sock.write(text);
  });
}

/** A UDP socket bound on 127.0.0.1. */
async function bound(): Promise<UdpSocket> {
  const u = createSocket('udp4');
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', () => r()));
  return u;
}

/** A datagram from a client of its own (kept in `clients`) through `portal`: its echo, or '' after 300 ms. */
async function ask(portal: UdpSocket, text: string, clients: UdpSocket[]): Promise<string> {
  const c = await bound();
  clients.push(c);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(''), 300);
    c.once('message', (m) => (clearTimeout(t), resolve(m.toString())));
    c.send(text, portal.address().port, '127.0.0.1');
  });
}

describe('the connection limit: one count for the portals and the explicit proxy', () => {
  let backend: Server;
  const held: Socket[] = [];
  beforeAll(async () => {
    backend = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
  });
  afterAll(() => {
    for (const s of held) s.destroy();
    backend.close();
  });

  it('past the limit a connection is reset at accept, counted and said once; those served go on; a close makes room', async () => {
    const records: LogRecord[] = [];
    const log = recordingLogger(records);
    const budget = new ConnectionBudget({ maxConnections: 3, log });
    const port = (backend.address() as AddressInfo).port;
    const { portals, http, tcp } = testPortals(
      () => [{ host: '127.0.0.1', port, key: `127.0.0.1:${port}` }],
      { log, budget },
    );
    const proxy = new ForwardProxy(http, tcp, () => undefined, { log, budget });
    try {
      await portals.sync([spec]);
      const portal = portals.get(spec.key)!.listenPort;
      const explicit = (await proxy.listen('127.0.0.1', 0)).port;
      // two through the portal (echoed by the backend), one to the explicit proxy (idle in its head)
      for (const p of [portal, portal, explicit]) held.push((await open(p)).sock);
      expect(await echo(held[0], 'one')).toBe('one');
      expect(await echo(held[1], 'two')).toBe('two');
      await new Promise((r) => setTimeout(r, 100));
      expect(budget.open).toBe(3);
      // the fourth and fifth, to either: reset as soon as accepted
      for (const p of [portal, explicit]) {
        expect(await dial(p).ended).toBe('ECONNRESET');
      }
      expect(budget.refused).toBe(2);
      // those served go on
      expect(await echo(held[0], 'still')).toBe('still');
      const said = records.filter((r) => /^connection limit reached/.test(r.msg ?? ''));
      expect(said).toHaveLength(1);
      expect(said[0].obj).toMatchObject({ open: 3, limit: 3 });
      // one closes: the next is served
      held.shift()!.destroy();
      const end = Date.now() + 2000;
      while (budget.open > 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      const next = await open(portal);
      held.push(next.sock);
      expect(await echo(next.sock, 'next')).toBe('next');
      expect(budget.open).toBe(3);
      // every close gives its place back, the explicit proxy's too (held by the native L7 engine
      // where the addon is built: Node's socket is gone, the count went with the connection)
      for (const c of held.splice(0)) c.destroy();
      const end2 = Date.now() + 2000;
      while (budget.open > 0 && Date.now() < end2) await new Promise((r) => setTimeout(r, 10));
      expect(budget.open).toBe(0);
    } finally {
      proxy.close();
      await portals.closeAll();
      http.close();
    }
  });

  it('a UDP session takes a place: at the limit it takes its portal’s oldest session’s, and where the portal has none its datagram is dropped', async () => {
    const echoer = await bound();
    echoer.on('message', (m, r) => echoer.send(m, r.port, r.address));
    const port = echoer.address().port;
    const lb = new LoadBalancer(new RoundRobin());
    const budget = new ConnectionBudget({ maxConnections: 2 });
    const route = (scope: string) => () => ({
      backends: [{ host: '127.0.0.1', port, key: `127.0.0.1:${port}` }],
      scope,
    });
    const [p1, p2] = [await bound(), await bound()];
    const u1 = new UdpProxy(p1, lb, route('default/a:53/UDP'), { budget });
    const u2 = new UdpProxy(p2, lb, route('default/b:53/UDP'), { budget });
    const clients: UdpSocket[] = [];
    try {
      expect(await ask(p1, 'a', clients)).toBe('a');
      expect(await ask(p1, 'b', clients)).toBe('b');
      expect(budget.open).toBe(2);
      // a third session on the same portal takes the oldest's place
      expect(await ask(p1, 'c', clients)).toBe('c');
      expect([budget.open, u1.size, u1.stats.evicted]).toEqual([2, 2, 1]);
      // another portal with no session of its own: nothing to give, the datagram is dropped
      expect(await ask(p2, 'd', clients)).toBe('');
      expect([u2.size, u2.stats.noRoom, budget.refused]).toEqual([0, 1, 1]);
      // sessions that end give their places back
      u1.close();
      expect(budget.open).toBe(0);
      expect(await ask(p2, 'e', clients)).toBe('e');
    } finally {
      u1.close();
      u2.close();
      for (const s of [...clients, p1, p2, echoer]) s.close();
    }
  });

  it('a UDP session through the tunnel takes a place too (a spliced flow holds a connection of its own), and gives it back when it ends', async () => {
    const budget = new ConnectionBudget({ maxConnections: 1 });
    const flows: EventEmitter[] = [];
    // the tunnel's datagram flow: an echo, as a remote backend through a relay would answer
    const dialer = {
      datagram: async () => {
        const ch = Object.assign(new EventEmitter(), {
          send: (d: Buffer) => void setImmediate(() => ch.emit('message', d)),
          close: () => void ch.emit('close'),
        });
        flows.push(ch);
        return ch;
      },
    };
    const portal = await bound();
    const lb = new LoadBalancer(new RoundRobin());
    const route = () => ({
      backends: [{ host: '10.9.9.9', port: 53, key: 'remote', tunnel: true }],
      scope: 'default/remote:53/UDP',
    });
    const u = new UdpProxy(portal, lb, route, { budget, dialer });
    const clients: UdpSocket[] = [];
    try {
      expect(await ask(portal, 'a', clients)).toBe('a');
      expect([budget.open, u.size]).toEqual([1, 1]);
      // the only place is taken: a second client's session takes the oldest's
      expect(await ask(portal, 'b', clients)).toBe('b');
      expect([budget.open, u.size, u.stats.evicted]).toEqual([1, 1, 1]);
      // the flow ends (its stream closed): the place is given back
      flows[1].emit('close');
      expect([budget.open, u.size]).toEqual([0, 0]);
    } finally {
      u.close();
      for (const s of [...clients, portal]) s.close();
    }
  });

  it('auto: what the open-file limit leaves, less the listening portals, the node’s reserve and the splice engine’s pipes, halved', () => {
    let spliced = 0;
    const b = new ConnectionBudget({ fileLimit: 1024, spliced: () => spliced });
    // 1024 − 64 held before any connection − 64 the node's own (half of the portals' reserve of 128)
    expect(b.limit).toBe(448);
    b.listeningFrom(() => 300);
    expect(b.limit).toBe(298);
    spliced = 10; // 6 descriptors each besides the two sockets
    expect(b.limit).toBe(268);
    // a number is the limit as given (nginx's worker_connections), past the descriptors too
    expect(new ConnectionBudget({ fileLimit: 1024, maxConnections: 100, spliced: () => 0 }).limit).toBe(100);
    expect(new ConnectionBudget({ fileLimit: 1024, maxConnections: 5000, spliced: () => 0 }).limit).toBe(
      5000,
    );
    // no limit known (not Linux): only the number
    expect(new ConnectionBudget({ fileLimit: Infinity, spliced: () => 0 }).limit).toBe(Infinity);
    // a portal table that took every descriptor leaves none: every connection refused
    const full = new ConnectionBudget({ fileLimit: 256, spliced: () => 0 });
    full.listeningFrom(() => 200);
    expect(full.limit).toBe(0);
  });
});
