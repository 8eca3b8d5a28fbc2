import { readFileSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import { isIPv4 } from 'node:net';
import { Document, isMap, isPair, isScalar, LineCounter, parseDocument, stringify } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../edgecore-errors';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port');
const ipv4 = z.string().refine((s) => isIPv4(s), 'expected an IPv4 address');
const cidr4 = z.string().refine((s) => {
  const [ip, len] = s.split('/');
  return isIPv4(ip) && /^\d{1,2}$/.test(len ?? '') && Number(len) <= 30;
}, 'expected an IPv4 CIDR such as 198.18.0.0/16 (prefix ≤ 30)');
const cidr = z.string().refine((s) => {
  const [ip, len] = s.split('/');
  return isIPv4(ip) && /^\d{1,2}$/.test(len ?? '') && Number(len) <= 32;
}, 'expected an IPv4 CIDR such as 10.0.0.0/8');
const port = z.number().int().min(0).max(65535);
const upstream = z.string().refine((s) => {
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(s);
  return !!m && isIPv4(m[1]) && (m[2] === undefined || Number(m[2]) <= 65535);
}, 'expected IP or IP:PORT');
const url = z
  .string()
  .regex(
    /^(tcp|mqtt|mqtts|ssl|tls|ws|wss):\/\/[^\s]+$/,
    'expected tcp://, mqtt://, mqtts://, ws:// or wss:// URL',
  );

/**
 * edgecore.yaml, KubeEdge's shape (`edgecore.config.kubeedge.io/v1alpha2`). Every object is strict:
 * an unknown key is an error naming it. Defaults live here and nowhere else.
 */
export const EdgeCoreConfigSchema = z.strictObject({
  apiVersion: z.literal('edgecore.config.kubeedge.io/v1alpha2'),
  kind: z.literal('EdgeCore'),
  database: z
    .strictObject({ dataSource: z.string().min(1).default('/var/lib/edgecore/edgecore.db') })
    .prefault({}),
  observability: z
    .strictObject({
      enable: z.boolean().default(true),
      listen: hostPort.default('127.0.0.1:10351'),
    })
    .prefault({}),
  /** Seconds SIGTERM waits for modules to drain. */
  drainSeconds: z.number().min(0).max(600).default(10),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
      format: z.enum(['auto', 'json', 'pretty']).default('auto'),
    })
    .prefault({}),
  modules: z
    .strictObject({
      edgeHub: z
        .strictObject({
          enable: z.boolean().default(true),
          nodeName: z
            .string()
            .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected an RFC 1123 name')
            .optional(),
          nodeIP: ipv4.optional(),
          mqtt: z
            .strictObject({
              server: url.default('tcp://127.0.0.1:1883'),
              username: z.string().optional(),
              password: z.string().optional(),
              tls: z
                .strictObject({
                  caFile: z.string().optional(),
                  certFile: z.string().optional(),
                  keyFile: z.string().optional(),
                })
                .optional(),
              keepalive: z.number().int().min(1).max(3600).default(30),
              embeddedBroker: z
                .strictObject({
                  enable: z.boolean().default(false),
                  listen: hostPort.default('127.0.0.1:1883'),
                })
                .prefault({}),
            })
            .prefault({}),
          /** Object messages committed at once (their PUBACKs wait for the commit, in order). */
          maxInflight: z.number().int().min(1).max(65535).default(1000),
          /** Digest checks against the cloud: a lost message is noticed and read back. */
          sync: z
            .strictObject({
              checkIntervalSeconds: z.number().min(0).max(86400).default(60),
              settleMs: z.number().int().min(0).max(60000).default(100),
            })
            .prefault({}),
        })
        .prefault({}),
      metaManager: z
        .strictObject({
          enable: z.boolean().default(true),
          remoteQueryTimeout: z.number().min(0).default(60),
          metaServer: z
            .strictObject({ enable: z.boolean().default(true), server: hostPort.default('127.0.0.1:10550') })
            .prefault({}),
        })
        .prefault({}),
      edgeMesh: z
        .strictObject({
          enable: z.boolean().default(true),
          mode: z.enum(['auto', 'iptables', 'unprivileged']).default('auto'),
          lbStrategy: z
            .enum(['RoundRobin', 'Random', 'SessionStickiness', 'ConsistentHash', 'LeastConnections'])
            .default('RoundRobin'),
          listenInterface: z
            .string()
            .regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'expected an interface name')
            .default('docker0'),
          subNet: cidr4.default('198.18.0.0/16'),
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
          /** iptables mode, non-HTTP TCP ports: DNAT to our portal, or straight to a backend (kube-proxy style). */
          l4Mode: z.enum(['portal', 'dnat']).default('portal'),
          /** L7 portals: the native engine when built (auto), required (native), or never (js). */
          httpEngine: z.enum(['auto', 'native', 'js']).default('auto'),
          /** Native L7 engine under load: µs a wake-up waits for more events (0: off). */
          httpCoalesceUs: z.number().int().min(0).max(1000).default(15),
          /** Portal listen ports, next-fit: auto (the kernel's ephemeral range), FROM-TO, or 0 (random bind). */
          portalPortRange: z
            .string()
            .refine((s) => {
              if (s === 'auto' || s === '0') return true;
              const m = /^(\d{1,5})-(\d{1,5})$/.exec(s);
              return !!m && Number(m[1]) >= 1 && Number(m[2]) <= 65535 && Number(m[1]) <= Number(m[2]);
            }, 'expected auto, 0 or FROM-TO (ports 1-65535)')
            .default('auto'),
          /** ConsistentHash key header; the client IP when unset. */
          consistentHashHeader: z
            .string()
            .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'expected an HTTP header name')
            .optional(),
          dns: z
            .strictObject({
              listenPort: port.optional(),
              hijack: z.enum(['iptables', 'resolvconf', 'none']).default('iptables'),
              upstreams: z.array(upstream).default([]),
              ttl: z.number().int().min(0).max(86400).default(5),
              /** UDP I/O: native (recvmmsg/sendmmsg addon) when built, else node:dgram. */
              udpBackend: z.enum(['auto', 'native', 'dgram']).default('auto'),
              /** Listen address (default: the listen interface's in iptables mode, 127.0.0.1 otherwise). */
              listenAddress: ipv4.optional(),
              /** Query sources allowed (default: loopback, this node's addresses, the bridge subnet). */
              allowFrom: z.array(cidr).optional(),
              /** Upstream answers cached at most. */
              cacheSize: z.number().int().min(0).max(10_000_000).default(10_000),
              /** Per-upstream timeout of a forwarded query. */
              upstreamTimeoutMs: z.number().int().min(1).max(60_000).default(2000),
              /** Where the host's upstream resolvers are read from (and the resolvconf hijack writes). */
              resolvConf: z.string().min(1).default('/etc/resolv.conf'),
            })
            .prefault({}),
          /** Proxy timeouts, limits and passive health. */
          proxy: z
            .strictObject({
              connectTimeoutMs: z.number().int().min(1).max(600_000).default(5000),
              /** L7: the upstream's time to answer after the request, and the longest a body may stall. */
              responseTimeoutMs: z.number().int().min(1).max(86_400_000).default(60_000),
              headTimeoutMs: z.number().int().min(1).max(600_000).default(10_000),
              maxHeadBytes: z
                .number()
                .int()
                .min(1024)
                .max(1024 * 1024)
                .default(16 * 1024),
              tcpIdleTimeoutMs: z.number().int().min(1).max(86_400_000).default(3_600_000),
              /** L4: the native splice engine when the addon is built. */
              splice: z.boolean().default(true),
              udpIdleTimeoutMs: z.number().int().min(1).max(86_400_000).default(60_000),
              /** Passive health: the first ejection, doubled per consecutive failure up to ejectMaxMs. */
              ejectBaseMs: z.number().int().min(1).max(3_600_000).default(1000),
              ejectMaxMs: z.number().int().min(1).max(86_400_000).default(30_000),
            })
            .prefault({}),
          /** Our value of the service.kubernetes.io/service-proxy-name label. */
          proxyName: z.string().min(1).max(63).default('edgemesh'),
        })
        .prefault({}),
    })
    .prefault({}),
});

export type EdgeCoreConfig = z.output<typeof EdgeCoreConfigSchema>;

/** The smallest valid file: everything else takes its default. */
export const MIN_CONFIG = { apiVersion: 'edgecore.config.kubeedge.io/v1alpha2', kind: 'EdgeCore' } as const;

/** Defaults resolved for this machine (node name = hostname, node IP = first non-loopback IPv4). */
export function defaultConfig(): EdgeCoreConfig {
  const c = EdgeCoreConfigSchema.parse(MIN_CONFIG);
  return resolveHostDefaults(c);
}

export function resolveHostDefaults(c: EdgeCoreConfig): EdgeCoreConfig {
  const hub = c.modules.edgeHub;
  hub.nodeName ??= sanitizeNodeName(hostname());
  hub.nodeIP ??= firstIPv4() ?? '127.0.0.1';
  return c;
}

function sanitizeNodeName(h: string): string {
  const s = h
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '');
  return s || 'edge-node';
}

function firstIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

export function configToYaml(c: unknown): string {
  return stringify(c, { indent: 2 });
}

/** Parse and validate YAML text; errors name the file, key path and line. */
export function parseConfig(text: string, file = '<config>'): EdgeCoreConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const line = lc.linePos(e.pos[0]).line;
    throw new ConfigError(
      `${file}:${line}: invalid YAML: ${e.message.split('\n')[0]}`,
      file,
      undefined,
      line,
    );
  }
  const raw = doc.toJS() ?? {};
  const r = EdgeCoreConfigSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    let path = issue.path.map(String);
    let msg = issue.message;
    if (issue.code === 'unrecognized_keys') {
      path = [...path, issue.keys[0]];
      msg = `unknown key "${issue.keys[0]}"`;
    }
    const keyPath = path.join('.') || '(root)';
    const line = lineOf(doc, lc, path);
    throw new ConfigError(`${file}${line ? `:${line}` : ''}: ${keyPath}: ${msg}`, file, keyPath, line);
  }
  return resolveHostDefaults(r.data);
}

export function loadConfigFile(file: string): EdgeCoreConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config "${file}": ${(e as Error).message}`, file);
  }
  return parseConfig(text, file);
}

/** Line of the key (or of its nearest existing parent) at `path` in the YAML document. */
function lineOf(doc: Document, lc: LineCounter, path: string[]): number | undefined {
  let node: unknown = doc.contents;
  let pos: number | undefined;
  for (const k of path) {
    if (!isMap(node)) break;
    const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === k);
    if (!pair) break;
    pos = (pair.key as { range?: [number, number, number] }).range?.[0];
    node = pair.value;
  }
  return pos === undefined ? undefined : lc.linePos(pos).line;
}
