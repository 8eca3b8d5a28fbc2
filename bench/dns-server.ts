/**
 * The EdgeMesh DNS path alone, for bench/dns.sh: a catalog of N services in memory, the real
 * ClusterZone + DnsServer, one process. Usage: dns-server.ts PORT SERVICES
 * (DNS_UDP_BACKEND=native|dgram|auto picks the UDP path; default auto)
 */
import 'reflect-metadata';
import {
  ClusterZone,
  DnsServer,
  Forwarder,
  ServiceCatalog,
  intToIp,
  type Service,
} from '@edgecore/edgemesh-module';

const port = Number(process.argv[2] ?? 5353);
const n = Number(process.argv[3] ?? 1);
const catalog = new ServiceCatalog();
const services: Service[] = [];
const vips = new Map<string, string>();
for (let i = 0; i < n; i++) {
  const name = i === 0 ? 'nginx-svc' : `svc-${i}`;
  const ns = i === 0 ? 'default' : `ns-${i % 100}`;
  services.push({
    metadata: { name, namespace: ns },
    spec: { clusterIP: 'None', ports: [{ name: 'http-0', port: 12345 }] },
  });
  vips.set(`${ns}/${name}`, intToIp(0xc6120000 + 1 + i)); // 198.18.0.1 …
}
catalog.load(services, [], []);
const byVip = new Map([...vips].map(([k, v]) => [v, k]));
const zone = new ClusterZone(
  catalog,
  { vipOf: (k) => vips.get(k), serviceOf: (ip) => byVip.get(ip), inPool: () => false },
  { clusterDomain: 'cluster.local', ttl: 5 },
);
const server = new DnsServer(zone, new Forwarder([]), {
  host: '127.0.0.1',
  port,
  allowFrom: ['127.0.0.0/8'],
  udpBackend: (process.env.DNS_UDP_BACKEND ?? 'auto') as 'auto' | 'native' | 'dgram',
});
void server
  .listen()
  .then((a) => console.log(`ready ${a.address}:${a.port} services=${n} udp=${server.udpBackend}`));
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
