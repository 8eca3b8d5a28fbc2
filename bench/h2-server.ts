/**
 * The EdgeMesh HTTP/2 portal alone, for bench/h2.sh: the real H2Proxy (per-stream balancing over
 * shared upstream HTTP/2 connections, the L7 rulebook, the RoundRobin load balancer) in front of
 * h2c backends on 127.0.0.1.
 * Usage: h2-server.ts PORT BACKEND_PORT [BACKEND_PORT…]
 */
import 'reflect-metadata';
import { createServer } from 'node:net';
import {
  BackendDialer,
  H2Proxy,
  LoadBalancer,
  RoundRobin,
  SitePaths,
  ServiceCatalog,
  type Backend,
} from '@edgecore/edgemesh-module';

const [port, ...bes] = process.argv.slice(2).map(Number);
const backends: Backend[] = bes.map((p) => ({
  host: '127.0.0.1',
  port: p,
  key: `127.0.0.1:${p}`,
}));
const lb = new LoadBalancer(new RoundRobin());
const h2 = new H2Proxy(lb, new BackendDialer(new SitePaths(new ServiceCatalog(), undefined), undefined));
const route = () => ({ backends, scope: 'h2' });
createServer({ noDelay: true }, (s) => h2.handlePortal(s, route)).listen(port, '127.0.0.1', () =>
  console.log(`ready h2=${port} → ${bes.join(',')}`),
);
process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
