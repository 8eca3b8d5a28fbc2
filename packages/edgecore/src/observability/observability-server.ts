import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { ObservabilityListenError } from '../edgecore-errors';

/** /healthz (process alive), /readyz (catalog loaded, everything serving), /metrics (Prometheus, from the registry every package contributes to), and JSON views (`/debug/endpoints`: every service port's backends and the path to each; `/debug/explain?service=NS/NAME`: a service's path through the node, step by step). */
export class ObservabilityServer {
  private server?: Server;

  constructor(
    private readonly metrics: Registry,
    private readonly isReady: () => { ready: boolean; reason?: string },
    /**
     * `GET path?query` → JSON of what the function returns (e.g. `/debug/endpoints`); a view that
     * throws an error with `status` answers that status with its message.
     */
    private readonly views: Record<string, (q: URLSearchParams) => unknown> = {},
  ) {}

  async listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const r = this.isReady();
        res
          .writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' })
          .end(r.ready ? 'ok\n' : `not ready: ${r.reason ?? 'starting'}\n`);
      } else if (path === '/metrics') {
        this.metrics.metrics().then(
          (text) => res.writeHead(200, { 'content-type': this.metrics.contentType }).end(text),
          (e: Error) =>
            res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
        );
      } else if (Object.hasOwn(this.views, path)) {
        Promise.resolve()
          .then(() => this.views[path](url.searchParams))
          .then(
            (v) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(v)),
            (e: Error & { status?: number }) =>
              res.writeHead(e.status ?? 500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
          );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    });
    this.server = server;
    server.listen(port, host);
    try {
      await once(server, 'listening'); // rejects on 'error'
    } catch (e) {
      this.server = undefined;
      throw new ObservabilityListenError(`${host}:${port}`, e as Error);
    }
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((r) => s.close(() => r()));
    s.closeAllConnections();
  }
}
