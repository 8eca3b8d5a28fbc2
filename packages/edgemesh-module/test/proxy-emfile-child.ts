/**
 * For proxy-descriptors.test.ts, under `prlimit --nofile=128:128`: an HTTP portal (engine
 * `argv[2]`: js or native), a TCP and a UDP one in front of backends of this process. A client
 * connection is opened first; then every descriptor is taken and a request sent on it; two are
 * given back and a connection made to the L4 portal (the portal accepts it, its connect to the
 * backend finds none); one given back and a datagram sent to the UDP portal (its socket to the
 * backend finds none); then all are given back and each asked again. Prints one JSON line.
 */
import { closeSync, openSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { HttpProxy, LoadBalancer, RoundRobin, TcpProxy, UdpProxy, UpstreamPool } from '../src';

const listen = (s: { listen: (p: number, h: string, cb: () => void) => void; address: () => unknown }) =>
  new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));

/** Take every descriptor left (into `held`). */
function takeAll(held: number[]): void {
  try {
    for (;;) held.push(openSync('/dev/null', 'r'));
  } catch {
    // none left
  }
}

/** Send a request on `c` and read one response: its status line and body. */
function ask(c: Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d;
      const head = got.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = Number(/content-length: *(\d+)/i.exec(got.slice(0, head))?.[1] ?? 0);
      if (got.length < head + 4 + len) return;
      c.off('data', onData);
      resolve(`${got.split('\r\n')[0]} | ${got.slice(head + 4, head + 4 + len)}`);
    };
    c.on('data', onData);
    c.write('GET / HTTP/1.1\r\nhost: svc\r\n\r\n');
  });
}

async function main(): Promise<void> {
  // every answer closes its upstream connection: each request needs a new one
  const backend = createHttpServer((_, res) =>
    res.writeHead(200, { connection: 'close', 'content-length': 2 }).end('ok'),
  );
  const port = await listen(backend);
  const backends = [{ host: '127.0.0.1', port, key: `127.0.0.1:${port}` }];
  const lb = new LoadBalancer(new RoundRobin());
  const http = new HttpProxy(lb, new UpstreamPool(), { engine: process.argv[2] as 'js' | 'native' });
  const l7 = createServer((s) => http.handleRoute(s, () => ({ backends, scope: 'default/svc:80' })));
  const tcp = new TcpProxy(lb);
  const l4 = createServer((s) => tcp.handle(s, backends, 'default/svc:81'));
  const [p7, p4] = [await listen(l7), await listen(l4)];
  // a UDP echo behind a UDP portal
  const echo = createSocket('udp4').on('message', (m, r) => echo.send(m, r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', () => r()));
  const udpBackends = [
    { host: '127.0.0.1', port: echo.address().port, key: `127.0.0.1:${echo.address().port}` },
  ];
  const u = createSocket('udp4');
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', () => r()));
  const udp = new UdpProxy(u, lb, () => ({ backends: udpBackends, scope: 'default/svc:82' }));
  /** A datagram through the UDP portal from a new client socket: its echo, or '' after 300 ms. */
  const viaUdp = (text: string): Promise<string> =>
    new Promise((resolve) => {
      const c = createSocket('udp4');
      const done = (v: string): void => {
        clearTimeout(t);
        c.close();
        resolve(v);
      };
      const t = setTimeout(() => done(''), 300);
      c.on('message', (m) => done(m.toString()));
      c.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
      c.send(text, u.address().port, '127.0.0.1');
    });
  const c = connect(p7, '127.0.0.1');
  await new Promise((r) => c.once('connect', r));
  const before = await ask(c);
  // the answered request's upstream connection (and the backend's end of it) closed: a close
  // after the descriptors are taken would give one back to the next connect
  await new Promise((r) => setTimeout(r, 200));
  const held: number[] = [];
  takeAll(held);
  const during = await ask(c);
  // two given back: the L4 client's socket and the portal's accepted one; none for its connect to
  // the backend, so the client's connection is reset
  for (const fd of held.splice(0, 2)) closeSync(fd);
  const l4During = await new Promise<string>((resolve) => {
    const c4 = connect(p4, '127.0.0.1');
    c4.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    c4.on('close', () => resolve('closed'));
    c4.on('data', () => resolve('data'));
    setTimeout(() => (resolve('still open after 2 s'), c4.destroy()), 2000);
  });
  // one given back: the UDP client's socket; none for the portal's socket to the backend
  await new Promise((r) => setTimeout(r, 200)); // the reset connections closed
  takeAll(held);
  closeSync(held.pop()!);
  const udpDuring = await viaUdp('during');
  for (const fd of held) closeSync(fd);
  const after = await ask(c);
  const udpAfter = await viaUdp('after');
  console.log(
    JSON.stringify({
      held: held.length,
      before,
      during,
      after,
      l4During,
      udpDuring,
      udpAfter,
      udpSessions: udp.stats.sessions,
      ejections: lb.stats.ejections,
    }),
  );
  process.exit(0);
}

void main();
