import { optionsResolver } from '@edgecore/beehive';
import { isIPv4 } from 'node:net';
import { z } from 'zod/v3';
import { InvalidOptionError } from './edgemesh-errors';

/**
 * EdgeMesh's configuration, stated once: the zod schema of edgecore.yaml's `modules.edgeMesh`
 * (KubeEdge's keys plus `dns` and `proxy`) with every default, and the option schemas of the parts
 * (DNS server, forwarder, proxies, pool, load balancer, iptables), built from the same fields. A
 * part resolves its options here (`resolveMeshOptions`); no class holds a default of its own.
 */

const ms = (max: number) => z.number().int().min(1).max(max);
const cidr = (maxPrefix: number, example: string) =>
  z.string().refine(
    (s) => {
      const [ip, len] = s.split('/');
      return isIPv4(ip) && /^\d{1,2}$/.test(len ?? '') && Number(len) <= maxPrefix;
    },
    `expected an IPv4 CIDR such as ${example}${maxPrefix < 32 ? ` (prefix ≤ ${maxPrefix})` : ''}`,
  );
const ipv4 = z.string().refine((s) => isIPv4(s), 'expected an IPv4 address');
const port = z.number().int().min(0).max(65535);
const upstream = z.string().refine((s) => {
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(s);
  return !!m && isIPv4(m[1]) && (m[2] === undefined || Number(m[2]) <= 65535);
}, 'expected IP or IP:PORT');

/** The fields of `proxy.*`, shared with the parts that take them. */
const proxyFields = {
  connectTimeoutMs: ms(600_000).default(5000),
  /** L7: the upstream's time to answer after the request (504), and the longest a body may stall
   * either way (both connections close) — nginx's proxy_read_timeout and send_timeout. */
  responseTimeoutMs: ms(86_400_000).default(60_000),
  /** A started request head must complete within this (408). */
  headTimeoutMs: ms(600_000).default(10_000),
  /** The largest request head (431 beyond). */
  maxHeadBytes: z
    .number()
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(16 * 1024),
  /** L4 (and upgraded connections): both sockets close after this long without traffic. */
  tcpIdleTimeoutMs: ms(86_400_000).default(3_600_000),
  /** L4: move bytes with the native splice engine when the addon is built. */
  splice: z.boolean().default(true),
  /**
   * Client connections the node holds at once — portals (TCP connections, UDP sessions), the
   * explicit proxy, DNS over TCP; past it a new one is reset at accept (a UDP session takes its
   * portal's oldest one's place). `auto`: what the open-file limit leaves (ConnectionBudget); a
   * number is taken as given.
   */
  maxConnections: z.union([z.literal('auto'), z.number().int().min(1).max(100_000_000)]).default('auto'),
  /** A UDP session ends after this long without packets. */
  udpIdleTimeoutMs: ms(86_400_000).default(60_000),
  /** Passive health: the first ejection, doubled per consecutive failure up to ejectMaxMs. */
  ejectBaseMs: ms(3_600_000).default(1000),
  ejectMaxMs: ms(86_400_000).default(30_000),
  /**
   * Forward request fields whose name has an underscore (`X_Real_IP`); dropped by default, as
   * nginx's `underscores_in_headers off`: some backends read `_` as `-`, so `Content_Length` could
   * frame a body differently there than here.
   */
  underscoresInHeaders: z.boolean().default(false),
  /**
   * HTTP/2 portals: concurrent streams a client connection may open (SETTINGS_MAX_CONCURRENT_STREAMS,
   * nginx's http2_max_concurrent_streams), and at most per upstream connection (another one is
   * opened beyond, or fewer when the backend's SETTINGS say so).
   */
  h2MaxStreams: z.number().int().min(1).max(10_000).default(100),
  /**
   * HTTP/2: a request body is kept up to this many bytes, so the request can go to another backend
   * after a refused stream or a failed connect (beyond it, such a request fails instead).
   */
  h2ReplayBytes: z
    .number()
    .int()
    .min(0)
    .max(16 * 1024 * 1024)
    .default(64 * 1024),
  /** HTTP/2 upstream connections: a PING this often; one not answered within it closes the connection. */
  h2PingIntervalMs: ms(3_600_000).default(30_000),
  /** HTTP/2 connections (client and upstream) with no stream for this long are closed. */
  h2IdleTimeoutMs: ms(86_400_000).default(300_000),
  /** Streams a client may reset per second before its connection ends with GOAWAY (rapid reset). */
  h2MaxResetsPerSecond: z.number().int().min(1).max(100_000).default(200),
  /**
   * The node's retry budget: extra tries at most this share of the requests of the last 10 s
   * (Linkerd's retryRatio), plus `retryBudgetMinPerSecond`.
   */
  retryBudgetPercent: z.number().min(0).max(1000).default(20),
  retryBudgetMinPerSecond: z.number().min(0).max(100_000).default(10),
  /** Active health checks (services that ask for them) this node runs per second at most. */
  healthChecksPerSecond: z.number().int().min(1).max(100_000).default(100),
};

const httpEngine = z.enum(['auto', 'native', 'js']).default('auto');
/** Native L7 engine under load: µs a wake-up waits for more events (0: off). */
const coalesceUs = z.number().int().min(0).max(1000).default(15);
const hashHeader = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'expected an HTTP header name')
  .optional();
const udpBackend = z.enum(['auto', 'native', 'dgram']).default('auto');
/** Answers cached from upstream at most (the oldest goes first). */
const cacheSize = z.number().int().min(0).max(10_000_000).default(10_000);
/** Per-upstream timeout of a forwarded query. */
const upstreamTimeoutMs = ms(60_000).default(2000);
/**
 * Serve-stale (RFC 8767): when no upstream answers (the node is offline), an expired cached answer
 * is served with a short TTL instead of SERVFAIL; after such a failure, stale answers come at once
 * for `recheckSeconds` before the upstreams are tried again.
 */
const serveStale = z
  .strictObject({
    enable: z.boolean().default(true),
    /** How long past its TTL an answer may still be served (RFC 8767 suggests 1–3 days). */
    maxStaleSeconds: z
      .number()
      .int()
      .min(1)
      .max(30 * 86400)
      .default(86400),
    /** The TTL a stale answer carries (RFC 8767 §4: 30 s). */
    answerTtl: z.number().int().min(1).max(3600).default(30),
    /** The failure recheck timer (RFC 8767 §5: 30 s). */
    recheckSeconds: z.number().int().min(0).max(3600).default(30),
  })
  .default({});
/** Ask the upstreams over TCP only (NodeLocal DNSCache's `force_tcp`), e.g. through a UDP-hostile path. */
const upstreamTcp = z.boolean().default(false);
/**
 * Refresh a cached answer asked for in the last tenth of its TTL (unbound's `prefetch`). Off by
 * default: it adds upstream traffic, which an edge site on a metered link pays for.
 */
const prefetch = z.boolean().default(false);
/**
 * TCP clients the DNS server holds at once (BIND's `tcp-clients`, 150 by default); they count in
 * the node's connection limit too (proxy.maxConnections). Past either a new one is reset at accept
 * — BIND leaves it in the listen queue until a client goes, which Node cannot do for one listener.
 */
const tcpClients = z.number().int().min(1).max(1_000_000).default(150);

/** edgecore.yaml `modules.edgeMesh`. Every object is strict: an unknown key is an error naming it. */
export const edgeMeshConfigSchema = z.strictObject({
  enable: z.boolean().default(true),
  mode: z.enum(['auto', 'iptables', 'unprivileged']).default('auto'),
  /** A built-in strategy, or one an embedder contributes (checked when EdgeMesh starts). */
  lbStrategy: z.string().min(1).default('RoundRobin'),
  listenInterface: z
    .string()
    .regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'expected an interface name')
    .default('docker0'),
  /** VIP pool for headless services (RFC 2544 space, never routed on the Internet). */
  subNet: cidr(30, '198.18.0.0/16').default('198.18.0.0/16'),
  /** The explicit proxy of unprivileged mode. */
  listenPort: port.default(40001),
  clusterDomain: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected a DNS domain')
    .default('cluster.local'),
  /** host: backends at hostIP:hostPort (the seed); container: podIP:targetPort. */
  networking: z.enum(['host', 'container']).default('host'),
  /** iptables flavour: the system alternative (auto), nft or legacy. */
  iptablesBackend: z.enum(['auto', 'nft', 'legacy']).default('auto'),
  /** iptables mode: seconds between re-ensures of our rules. */
  iptablesSyncSeconds: z.number().min(1).max(3600).default(30),
  /**
   * iptables mode, TCP ports that are not HTTP: `portal` — DNAT to our L4 portal (per-connection
   * balancing with passive health and every strategy); `dnat` — kube-proxy's iptables mode, DNAT
   * straight to a backend the kernel picks (RoundRobin, Random and SessionStickiness; another
   * strategy keeps the portal). UDP ports too when conntrack-tools is installed.
   */
  l4Mode: z.enum(['portal', 'dnat']).default('portal'),
  /** L7 portals: the native engine when built (auto), required (native), or never (js). */
  httpEngine,
  /** HTTP/2 portals: the native HTTP/2 engine when built (auto), required (native), or never (js). */
  h2Engine: httpEngine,
  httpCoalesceUs: coalesceUs,
  /**
   * Portal listen ports, next-fit (kube-proxy's userspace `--proxy-port-range`): auto (the kernel's
   * ephemeral range), FROM-TO, or 0 (a random bind each: its free-port search grows with the ports
   * in use, 64 µs per listener with none, 690 µs with 10,000 here; a chosen port costs 8–14 µs).
   */
  portalPortRange: z
    .string()
    .refine((s) => {
      if (s === 'auto' || s === '0') return true;
      const m = /^(\d{1,5})-(\d{1,5})$/.exec(s);
      return !!m && Number(m[1]) >= 1 && Number(m[2]) <= 65535 && Number(m[1]) <= Number(m[2]);
    }, 'expected auto, 0 or FROM-TO (ports 1-65535)')
    .default('auto'),
  /** ConsistentHash key header; the client IP when unset. */
  consistentHashHeader: hashHeader,
  dns: z
    .strictObject({
      /** Default: 53 on the listen address in iptables mode, 5353 on 127.0.0.1 otherwise. */
      listenPort: port.optional(),
      /** Listen address (default: the listen interface's in iptables mode, 127.0.0.1 otherwise). */
      listenAddress: ipv4.optional(),
      hijack: z.enum(['iptables', 'resolvconf', 'none']).default('iptables'),
      /**
       * Container bridges besides `listenInterface` whose DNS the iptables hijack takes too (a
       * node on edgemesh0 whose containers sit on a CNI bridge); their subnets may query.
       */
      hijackInterfaces: z
        .array(z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'expected an interface name'))
        .default([]),
      /**
       * The short forms `<svc>.<ns>` and `<svc>.<ns>.svc` (clients without search paths):
       * `fallback` answers them only where the name does not exist upstream (NXDOMAIN) or no
       * upstream answers (offline), so a real name such as `shadow.test` is never shadowed by a
       * service `shadow` in namespace `test`; `always` answers them first (standalone EdgeMesh);
       * `never` forwards them.
       */
      shortNames: z.enum(['fallback', 'always', 'never']).default('fallback'),
      /** `IP` or `IP:PORT`; none: the nameservers of resolvConf minus our own address. */
      upstreams: z.array(upstream).default([]),
      /** TTL of our answers, seconds. */
      ttl: z.number().int().min(0).max(86400).default(5),
      /** UDP I/O: the native recvmmsg/sendmmsg addon when built (auto), or node:dgram. */
      udpBackend,
      /** Query sources allowed (default: loopback, this node's addresses, the bridge subnet). */
      allowFrom: z.array(cidr(32, '10.0.0.0/8')).optional(),
      cacheSize,
      upstreamTimeoutMs,
      serveStale,
      upstreamTcp,
      prefetch,
      tcpClients,
      /** Where the host's upstream resolvers are read from (and the resolvconf hijack writes). */
      resolvConf: z.string().min(1).default('/etc/resolv.conf'),
    })
    .default({}),
  /** Proxy timeouts, limits and passive health. */
  proxy: z.strictObject(proxyFields).default({}),
  /**
   * This node's name (edgecore fills it from `modules.edgeHub.nodeName`): `internalTrafficPolicy:
   * Local` and `PreferSameNode` compare endpoints' `nodeName` with it. Unset: no endpoint is local.
   */
  nodeName: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'expected an RFC 1123 node name')
    .optional(),
  /**
   * This node's `topology.kubernetes.io/zone` (`PreferSameZone`, `PreferClose`, slice hints);
   * edgecore fills it from `modules.edgeHub.nodeLabels` when unset here.
   */
  zone: z.string().min(1).max(63).optional(),
  /** Our value of the service.kubernetes.io/service-proxy-name label. */
  proxyName: z.string().min(1).max(63).default('edgemesh'),
});

/** edgecore.yaml's EdgeMesh section, every default filled in. */
export type EdgeMeshConfig = z.output<typeof edgeMeshConfigSchema>;

/** What an embedder binds: any part of the config, and the modules EdgeMesh waits for. */
export const EdgeMeshOptions = Symbol.for('edgecore.EdgeMeshOptions');
export type EdgeMeshOptions = z.input<typeof edgeMeshConfigSchema> & {
  /** Modules that must be ready first (default ['metamanager']); [] when MetaClient is rebound. */
  dependencies?: string[];
};

/** The options as EdgeMesh runs with them: the config resolved, and its dependencies. */
export const ResolvedEdgeMeshOptions = Symbol.for('edgecore.edgemesh.ResolvedEdgeMeshOptions');
export type ResolvedEdgeMeshOptions = EdgeMeshConfig & { dependencies: string[] };

export function resolveEdgeMeshOptions(o: EdgeMeshOptions = {}): ResolvedEdgeMeshOptions {
  const { dependencies, ...config } = o;
  return {
    ...resolveMeshOptions(edgeMeshConfigSchema, config, 'edgeMesh'),
    dependencies: dependencies ?? ['metamanager'],
  };
}

// The parts' options: each from the fields above where edgecore.yaml sets them.

export const httpProxyOptionsSchema = z.object({
  maxHeadBytes: proxyFields.maxHeadBytes,
  headTimeoutMs: proxyFields.headTimeoutMs,
  /** Idle keep-alive client connections close after this. */
  keepAliveTimeoutMs: ms(86_400_000).default(60_000),
  responseTimeoutMs: proxyFields.responseTimeoutMs,
  connectTimeoutMs: proxyFields.connectTimeoutMs,
  /** Upgraded (WebSocket) connections close after this long without traffic. */
  tunnelIdleMs: proxyFields.tcpIdleTimeoutMs,
  /** Upgraded connections go through the native splice engine when it is built. */
  splice: proxyFields.splice,
  underscoresInHeaders: proxyFields.underscoresInHeaders,
  /** Portal connections: the native L7 engine when built (auto), required (native), never (js). */
  engine: httpEngine,
  /**
   * Native engine, under load (16 or more requests in flight, and more than one event at the last
   * wake-up): a wake-up first waits this many µs (plus the kernel's timer slack) so that it serves
   * a batch of events; 0: off. See the README.
   */
  coalesceUs,
});

export const upstreamPoolOptionsSchema = z.object({
  connectTimeoutMs: proxyFields.connectTimeoutMs,
  /** Idle keep-alive connections kept per backend (LIFO). */
  maxIdle: z.number().int().min(0).max(65535).default(64),
  /** An idle pooled connection closes after this. */
  idleMs: ms(86_400_000).default(30_000),
});

export const h2ProxyOptionsSchema = z.object({
  maxStreams: proxyFields.h2MaxStreams,
  /** The largest header list a client may send (SETTINGS_MAX_HEADER_LIST_SIZE). */
  maxHeaderListBytes: proxyFields.maxHeadBytes,
  replayBytes: proxyFields.h2ReplayBytes,
  pingIntervalMs: proxyFields.h2PingIntervalMs,
  idleTimeoutMs: proxyFields.h2IdleTimeoutMs,
  maxResetsPerSecond: proxyFields.h2MaxResetsPerSecond,
  connectTimeoutMs: proxyFields.connectTimeoutMs,
  /** Portal connections: the native HTTP/2 engine when built (auto), required (native), never (js). */
  engine: httpEngine,
  /** Native engine under load: µs a wake-up first waits for more events (0: off). */
  coalesceUs,
  /** A request that is not gRPC waits this long for its response head (504 after). */
  responseTimeoutMs: proxyFields.responseTimeoutMs,
});
export const tcpProxyOptionsSchema = z.object({
  connectTimeoutMs: proxyFields.connectTimeoutMs,
  /** Both sockets close after this long without traffic (0: never). */
  idleTimeoutMs: proxyFields.tcpIdleTimeoutMs.or(z.literal(0)),
  splice: proxyFields.splice,
});

export const udpProxyOptionsSchema = z.object({
  idleTimeoutMs: proxyFields.udpIdleTimeoutMs,
  /** A bounded session table: the least recently active session is evicted. */
  maxSessions: z.number().int().min(1).max(1_000_000).default(10_000),
});

export const healthOptionsSchema = z.object({
  /** First ejection cool-down, doubled per consecutive failure up to maxEjectMs. */
  baseEjectMs: proxyFields.ejectBaseMs,
  maxEjectMs: proxyFields.ejectMaxMs,
  retryBudgetPercent: proxyFields.retryBudgetPercent,
  retryBudgetMinPerSecond: proxyFields.retryBudgetMinPerSecond,
});

export const forwardProxyOptionsSchema = z.object({
  maxHeadBytes: proxyFields.maxHeadBytes,
  headTimeoutMs: proxyFields.headTimeoutMs,
  hashHeader,
});

export const forwarderOptionsSchema = z.object({
  timeoutMs: upstreamTimeoutMs,
  cacheSize,
  /** Source address for upstream queries (so iptables can exclude our own traffic). */
  bindAddress: z.string().optional(),
  /** Cap on cached TTLs, seconds. */
  maxTtl: z.number().int().min(0).max(604_800).default(3600),
  serveStale,
  upstreamTcp,
  prefetch,
  /** The UDP payload size of the OPT added to a cached answer for an EDNS client. */
  ednsUdpSize: z.number().int().min(512).max(65535).default(1232),
});

export const dnsServerOptionsSchema = z.object({
  host: z.string(),
  port,
  /** CIDRs allowed to query; others get REFUSED (not an open resolver). */
  allowFrom: z.array(z.string()),
  /** Our EDNS UDP payload size (the DNS flag day 2020 value). */
  ednsUdpSize: z.number().int().min(512).max(65535).default(1232),
  /** Encoded zone answers cached at most before the cache is reset. */
  answerCacheSize: z.number().int().min(0).max(10_000_000).default(50_000),
  /** TCP: idle timeout per connection (RFC 7766 §6.2.3). */
  tcpIdleMs: ms(3_600_000).default(10_000),
  tcpClients,
  udpBackend,
});

export const iptablesOptionsSchema = z.object({
  /** Re-ensure period: rules deleted by someone else come back. */
  syncIntervalMs: ms(3_600_000).default(30_000),
  iptablesRestore: z.string().default('iptables-restore'),
  iptables: z.string().default('iptables'),
  iptablesSave: z.string().default('iptables-save'),
  conntrack: z.string().default('conntrack'),
});

export const listenInterfaceOptionsSchema = z.object({
  /** The address EdgeMesh gives the interface it creates (`edgemesh0`): link-local, KubeEdge's. */
  createAddress: cidr(32, '169.254.96.16/32').default('169.254.96.16/32'),
});

/** A part's options resolved (beehive's `resolveOptions`), a bad one an `InvalidOptionError`. */
export const resolveMeshOptions = optionsResolver('', (k, v, e) => new InvalidOptionError(k, v, e));

export const MESH_MODULE_NAME = 'edgemesh';
