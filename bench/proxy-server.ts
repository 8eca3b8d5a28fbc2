/**
 * The EdgeMesh proxy path alone, for bench/proxy.sh: an L7 portal and an L4 portal in front of one
 * backend, the real HttpProxy/TcpProxy/LoadBalancer; with FWDPORT also the explicit forward proxy
 * (unprivileged mode), which knows one service, `web.default.svc.cluster.local:80`.
 * Usage: proxy-server.ts L7PORT L4PORT BACKEND_PORT [L4_BACKEND_PORT [FWDPORT]]
 * (HTTP_ENGINE=js|native|auto picks the L7 engine, default auto; COALESCE_US sets coalesceUs, default 15)
 */
import 'reflect-metadata';
import { createServer } from 'node:net';
import {
  ForwardProxy,
  HttpProxy,
  LoadBalancer,
  RoundRobin,
  TcpProxy,
  UpstreamPool,
  type Backend,
} from '@edgecore/edgemesh-module';

const [l7, l4, be, be4, fwd] = process.argv.slice(2).map(Number);
const mk = (port: number): Backend[] => [{ host: '127.0.0.1', port, key: `127.0.0.1:${port}` }];
const lb = new LoadBalancer(new RoundRobin());
const engine = (process.env.HTTP_ENGINE ?? 'auto') as 'auto' | 'native' | 'js';
const http = new HttpProxy(lb, new UpstreamPool(), {
  engine,
  coalesceUs: Number(process.env.COALESCE_US ?? 15),
});
const tcp = new TcpProxy(lb);
const httpBackends = mk(be);
const tcpBackends = mk(be4 || be);
const s7 = createServer({ noDelay: true }, (s) =>
  http.handleRoute(s, () => ({ backends: httpBackends, scope: 'l7' })),
);
const s4 = createServer({ noDelay: true, allowHalfOpen: true }, (s) => tcp.handle(s, tcpBackends, 'l4'));
const fp = new ForwardProxy(http, tcp, (host, port) =>
  host === 'web.default.svc.cluster.local' && port === 80
    ? { scope: 'fwd', backends: httpBackends }
    : undefined,
);
s7.listen(l7, '127.0.0.1', () =>
  s4.listen(l4, '127.0.0.1', () => {
    const up = fwd ? fp.listen('127.0.0.1', fwd) : Promise.resolve();
    void up.then(() => console.log(`ready l7=${l7} l4=${l4}${fwd ? ` forward=${fwd}` : ''}`));
  }),
);
process.on('SIGINT', () => process.exit(0)); // clean exit (lets --cpu-prof write its profile)
process.on('SIGTERM', () => process.exit(0));
