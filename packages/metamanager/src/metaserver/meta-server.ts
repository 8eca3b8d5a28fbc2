import type { z } from 'zod/v3';
import { metaServerSchema, resolveMetaOptions } from '../config';
import { splitHostPort } from '@edgecore/beehive';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MetaChangeEvent, MetaRecord, MetaStore } from '../dao/meta-store';

/** URL plural → store type, and the Kubernetes list kind. */
const RESOURCES: Record<string, { type: string; kind: string; group?: string }> = {
  services: { type: 'service', kind: 'ServiceList' },
  endpoints: { type: 'endpoints', kind: 'EndpointsList' },
  pods: { type: 'pod', kind: 'PodList' },
  endpointslices: { type: 'endpointslice', kind: 'EndpointSliceList', group: 'discovery.k8s.io/v1' },
  destinationrules: {
    type: 'destinationrule',
    kind: 'DestinationRuleList',
    group: 'networking.istio.io/v1beta1',
  },
};

/** `server`: `host:port` (port 0 picks a free one). */
export type MetaServerOptions = Omit<z.input<typeof metaServerSchema>, 'enable'>;

/**
 * MetaServer: a read-only Kubernetes-shaped HTTP API over the local store, offline too.
 * - `GET /api/v1/namespaces/{ns}/{services|endpoints|pods}[/{name}]`
 * - `GET /api/v1/{services|endpoints|pods}` (all namespaces)
 * - `GET /apis/discovery.k8s.io/v1/[namespaces/{ns}/]endpointslices[/{name}]`, and
 *   `/apis/networking.istio.io/v1beta1/…/destinationrules` the same way
 * - `?watch=1`: newline-delimited `{"type":"ADDED|MODIFIED|DELETED","object":{...}}`, current
 *   objects first as ADDED (what `kubectl get -w` shows), then changes as they commit.
 */
export class MetaServer {
  private server?: Server;
  private readonly watchers = new Set<ServerResponse>();

  constructor(
    private readonly store: MetaStore,
    opts: MetaServerOptions = {},
  ) {
    this.server_ = resolveMetaOptions(metaServerSchema, opts).server;
  }

  private readonly server_: string;

  get listening(): boolean {
    return !!this.server?.listening;
  }

  address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  async listen(): Promise<AddressInfo> {
    const [host, port] = splitHostPort(this.server_);
    const server = createServer((req, res) => this.handle(req, res));
    this.server = server;
    server.listen(port, host);
    await once(server, 'listening'); // rejects on 'error'
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    for (const w of this.watchers) w.end();
    this.watchers.clear();
    await new Promise<void>((r) => s.close(() => r()));
    s.closeAllConnections();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    try {
      if (req.method !== 'GET')
        return this.status(
          res,
          405,
          'MethodNotAllowed',
          `method ${req.method} not allowed: the MetaServer is read-only`,
        );
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
        return;
      }
      // core kinds under /api/v1, the others under their group (/apis/discovery.k8s.io/v1/…)
      const m =
        /^\/(?:api\/v1|apis\/([a-z0-9.-]+\/v[0-9a-z]+))\/(?:namespaces\/([^/]+)\/)?([a-z]+)(?:\/([^/]+))?\/?$/.exec(
          url.pathname,
        );
      const found = m && RESOURCES[m[3]];
      const def = found && found.group === m[1] ? found : undefined;
      if (!m || !def) return this.status(res, 404, 'NotFound', `no route for ${url.pathname}`);
      const ns = m[2] ? decodeURIComponent(m[2]) : '*';
      const name = m[4] ? decodeURIComponent(m[4]) : undefined;
      if (name !== undefined && ns === '*')
        return this.status(res, 404, 'NotFound', 'a named object needs a namespace');
      const watch = ['1', 'true'].includes(url.searchParams.get('watch') ?? '');
      if (watch) return this.watch(req, res, ns, def.type, name);
      if (name !== undefined) {
        const value = this.store.getValue(`${ns}/${def.type}/${name}`);
        if (value === undefined)
          return this.status(res, 404, 'NotFound', `${m[3]} "${name}" not found in namespace "${ns}"`);
        res.writeHead(200, { 'content-type': 'application/json' }).end(value);
        return;
      }
      const items = this.store.listValues(ns, def.type);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        `{"kind":"${def.kind}","apiVersion":"${def.group ?? 'v1'}","metadata":{},"items":[${items.join(',')}]}`,
      );
    } catch (e) {
      this.status(res, 500, 'InternalError', (e as Error).message);
    }
  }

  private watch(req: IncomingMessage, res: ServerResponse, ns: string, type: string, name?: string): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // sent now: a watch with nothing to list yet (one name not stored, an empty namespace) had its
    // client wait for the headers until the first change
    res.flushHeaders();
    const match = (r: MetaRecord): boolean =>
      r.type === type && (ns === '*' || r.namespace === ns) && (name === undefined || r.name === name);
    let initial: string[];
    if (name === undefined) initial = this.store.listValues(ns, type);
    else {
      const value = this.store.getValue(`${ns}/${type}/${name}`);
      initial = value === undefined ? [] : [value];
    }
    for (const value of initial) res.write(`{"type":"ADDED","object":${value}}\n`);
    const onChange = (ev: MetaChangeEvent): void => {
      if (match(ev.record)) res.write(`{"type":"${ev.type}","object":${ev.record.value}}\n`);
    };
    this.store.on('change', onChange);
    this.watchers.add(res);
    const done = (): void => {
      this.store.off('change', onChange);
      this.watchers.delete(res);
    };
    req.on('close', done);
    res.on('close', done);
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, message, code }));
  }
}
