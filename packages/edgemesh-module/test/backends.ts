import { createServer as createHttp, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTcp, type AddressInfo, type Server as TcpServer } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';

/** An HTTP backend answering `<id>` plus request facts as JSON; `handler` may override. */
export async function httpBackend(
  id: string,
  handler?: (req: IncomingMessage, res: import('node:http').ServerResponse) => boolean | void,
): Promise<{ port: number; server: Server; hits: number; close: () => Promise<void> }> {
  const state = { hits: 0 };
  const server = createHttp((req, res) => {
    state.hits++;
    if (handler?.(req, res)) return;
    let size = 0;
    req.on('data', (d) => (size += d.length));
    req.on('end', () => {
      const body = JSON.stringify({
        id,
        method: req.method,
        url: req.url,
        headers: req.headers,
        bodyBytes: size,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    server,
    get hits() {
      return state.hits;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  } as never;
}

/** TCP echo that also reports its id first; on half-close it answers "bye <id>" then ends. */
export async function tcpEcho(
  id: string,
): Promise<{ port: number; server: TcpServer; close: () => Promise<void> }> {
  const server = createTcp({ allowHalfOpen: true }, (s) => {
    s.write(`hello ${id}\n`);
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end(`bye ${id}\n`));
    s.on('error', () => s.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

export async function udpEcho(id: string): Promise<{ port: number; sock: UdpSocket; close: () => void }> {
  const sock = createSocket('udp4');
  sock.on('message', (m, r) => sock.send(Buffer.concat([Buffer.from(`${id}:`), m]), r.port, r.address));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  return { port: sock.address().port, sock, close: () => sock.close() };
}
