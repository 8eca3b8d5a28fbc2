import { createServer as createHttp, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/** What one connection to a recording backend carried, and what node:http made of it. */
export interface Recorded {
  /** The exact bytes each connection carried to the backend (latin1), in connection order. */
  connections: string[];
  /** The requests the backend's parser (node:http: strict llhttp) completed, in order. */
  requests: { method: string; url: string; headers: string[]; body: string; trailers: string[] }[];
  /** Parse errors of that parser (llhttp's codes): what a backend would have refused. */
  errors: string[];
  /**
   * The same errors with the bytes of the connection each came on (for a message that says why),
   * and where the parser stopped: up to 256 bytes before that point and up to 256 from it.
   */
  failed: { code: string; bytes: string; before: string; after: string }[];
}

/**
 * A backend that keeps the exact bytes that reach it: a TCP tee in front of a node:http server
 * that answers every request it parses `200 ok` (keep-alive). Its view is a real backend's
 * (node:http, strict llhttp), and the raw bytes are what a proxy in front of it forwarded.
 */
export class RecordingBackend {
  private readonly rec: Recorded = { connections: [], requests: [], errors: [], failed: [] };
  /** The inner connection's local port → the index of its connection. */
  private readonly byPort = new Map<number, number>();
  private readonly open = new Set<Socket>();
  /** While `reset` tears connections down, what they cause is not recorded. */
  private resetting = false;
  private readonly inner: HttpServer;
  private readonly front: Server;

  private constructor() {
    this.inner = createHttp((req, res) => {
      const body: Buffer[] = [];
      req.on('data', (d: Buffer) => body.push(d));
      req.on('end', () => {
        this.rec.requests.push({
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.rawHeaders,
          body: Buffer.concat(body).toString('latin1'),
          trailers: req.rawTrailers,
        });
        res.writeHead(200, { 'content-length': 2 }).end('ok');
      });
    });
    this.inner.on(
      'clientError',
      (e: NodeJS.ErrnoException & { bytesParsed?: number; rawPacket?: Buffer }, s: Socket) => {
        if (!this.resetting) {
          const code = e.code ?? e.message;
          const i = this.byPort.get(s.remotePort ?? -1);
          // node:http's parser says where in the packet it stopped
          const raw = e.rawPacket ?? Buffer.alloc(0);
          const at = Math.min(e.bytesParsed ?? 0, raw.length);
          this.rec.errors.push(code);
          this.rec.failed.push({
            code,
            bytes: i === undefined ? '' : (this.rec.connections[i] ?? ''),
            before: raw.subarray(Math.max(0, at - 256), at).toString('latin1'),
            after: raw.subarray(at, at + 256).toString('latin1'),
          });
        }
        s.destroy();
      },
    );
    this.front = createServer({ allowHalfOpen: true }, (c) => {
      const i = this.rec.connections.push('') - 1;
      const innerPort = (this.inner.address() as AddressInfo).port;
      const u = connect(innerPort, '127.0.0.1', () => this.byPort.set(u.localPort!, i));
      this.open.add(c).add(u);
      c.on('data', (d: Buffer) => {
        this.rec.connections[i] += d.toString('latin1');
        u.write(d);
      });
      u.on('data', (d: Buffer) => c.write(d));
      c.on('end', () => u.end());
      u.on('end', () => c.end());
      for (const s of [c, u]) {
        s.on('error', () => (c.destroy(), u.destroy()));
        s.on('close', () => (this.open.delete(s), c.destroy(), u.destroy()));
      }
    });
  }

  static async start(): Promise<RecordingBackend> {
    const b = new RecordingBackend();
    await new Promise<void>((r) => b.inner.listen(0, '127.0.0.1', () => r()));
    await new Promise<void>((r) => b.front.listen(0, '127.0.0.1', () => r()));
    return b;
  }

  get port(): number {
    return (this.front.address() as AddressInfo).port;
  }

  /** What reached the backend since the last `take`, and forget it (open connections stay). */
  take(): Recorded {
    const out: Recorded = {
      connections: this.rec.connections.filter((c) => c !== ''),
      requests: [...this.rec.requests],
      errors: [...this.rec.errors],
      failed: [...this.rec.failed],
    };
    this.rec.connections.fill('');
    this.rec.requests.length = 0;
    this.rec.errors.length = 0;
    this.rec.failed.length = 0;
    return out;
  }

  /**
   * A clean slate between cases: every connection to the backend closed (a proxy's pooled one
   * too: it connects afresh), and what their closing causes forgotten.
   */
  async reset(): Promise<void> {
    this.resetting = true;
    for (const s of this.open) s.destroy();
    await new Promise((r) => setTimeout(r, 30));
    this.take();
    this.resetting = false;
  }

  async close(): Promise<void> {
    for (const s of this.open) s.destroy();
    this.inner.closeAllConnections();
    await Promise.all([
      new Promise<void>((r) => this.front.close(() => r())),
      new Promise<void>((r) => this.inner.close(() => r())),
    ]);
  }
}
