import { readFileSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import { Document, isMap, isPair, isScalar, LineCounter, parseDocument, stringify } from 'yaml';
import { z } from 'zod/v3';
import { edgeHubConfigSchema } from '@edgecore/edgehub';
import { edgeMeshConfigSchema, LB_STRATEGIES } from '@edgecore/edgemesh-module';
import { edgeTunnelConfigSchema } from '@edgecore/edgetunnel';
import { databaseConfigSchema, metaManagerConfigSchema } from '@edgecore/metamanager';
import { ConfigError } from '../edgecore-errors';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port');

/**
 * edgecore.yaml, KubeEdge's shape (`edgecore.config.kubeedge.io/v1alpha2`). Every object is strict:
 * an unknown key is an error naming it. The host's own keys are here; each module's section is
 * the schema its package exports (defaults and all), composed as it is.
 */
export const EdgeCoreConfigSchema = z.strictObject({
  apiVersion: z.literal('edgecore.config.kubeedge.io/v1alpha2'),
  kind: z.literal('EdgeCore'),
  database: databaseConfigSchema.default({}),
  observability: z
    .strictObject({
      enable: z.boolean().default(true),
      listen: hostPort.default('127.0.0.1:10351'),
    })
    .default({}),
  /** Seconds SIGTERM waits for modules to drain. */
  drainSeconds: z.number().min(0).max(600).default(10),
  memory: z
    .strictObject({
      /**
       * How far V8 lets its heap grow past what survived the last full collection (%): 30 keeps a
       * node's resident memory near its live data (at 10,000 services: 231-266 MiB instead of
       * 289-496 after load and churn, at the same throughput); 0: V8's own factor (up to 4×).
       */
      heapGrowingPercent: z.number().int().min(0).max(400).default(30),
      /**
       * Give back what a burst left (MiB): once V8's heap has grown this far past what the last
       * release left and the node has been quiet for 2 s, one collection that shrinks the heap
       * (what V8 does by itself 30–60 s later); 0: leave it to V8.
       */
      releaseAfterGrowthMiB: z.number().int().min(0).max(4096).default(24),
    })
    .default({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
      format: z.enum(['auto', 'json', 'pretty']).default('auto'),
    })
    .default({}),
  modules: z
    .strictObject({
      edgeHub: edgeHubConfigSchema.default({}),
      metaManager: metaManagerConfigSchema.default({}),
      edgeMesh: edgeMeshConfigSchema
        // this build's strategies: the built-in ones (an embedder may contribute more)
        .superRefine((v, ctx) => {
          if (!(LB_STRATEGIES as readonly string[]).includes(v.lbStrategy))
            ctx.addIssue({
              code: 'custom',
              path: ['lbStrategy'],
              message: `expected one of ${LB_STRATEGIES.join(', ')}`,
            });
        })
        .default({}),
      edgeTunnel: edgeTunnelConfigSchema.default({}),
    })
    .default({}),
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
