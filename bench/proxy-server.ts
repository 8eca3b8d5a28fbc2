/**
 * The EdgeMesh proxy path alone, for bench/proxy.sh: an L7 portal and an L4 portal in front of one
 * backend, the real HttpProxy/TcpProxy/LoadBalancer. Usage: proxy-server.ts L7PORT L4PORT BACKEND_PORT [L4_BACKEND_PORT]
 */
import 'reflect-metadata';
import { createServer } from 'node:net';
import {
  HttpProxy,
  LoadBalancer,
  RoundRobin,
  TcpProxy,
  UpstreamPool,
  type Backend,
} from '@edgecore/edgemesh-module';

const [l7, l4, be, be4] = process.argv.slice(2).map(Number);
const mk = (port: number): Backend[] => [
  { host: '127.0.0.1', port, key: `127.0.0.1:${port}`, origin: 'bench' },
];
const lb = new LoadBalancer(new RoundRobin());
const http = new HttpProxy(lb, new UpstreamPool());
const tcp = new TcpProxy(lb);
const httpBackends = mk(be);
const tcpBackends = mk(be4 || be);
const s7 = createServer({ noDelay: true }, (s) =>
  http.handleRoute(s, () => ({ backends: httpBackends, scope: 'l7' })),
);
const s4 = createServer({ noDelay: true, allowHalfOpen: true }, (s) => tcp.handle(s, tcpBackends, 'l4'));
s7.listen(l7, '127.0.0.1', () => s4.listen(l4, '127.0.0.1', () => console.log(`ready l7=${l7} l4=${l4}`)));
process.on('SIGINT', () => process.exit(0)); // clean exit (lets --cpu-prof write its profile)
process.on('SIGTERM', () => process.exit(0));
