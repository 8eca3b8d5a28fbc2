import { optionsResolver, splitHostPort } from '@edgecore/beehive';
import { z } from 'zod/v3';
import { MetaCode, MetaError } from './metamanager-errors';

/**
 * MetaManager's configuration, stated once: edgecore.yaml's `database` and `modules.metaManager`
 * as zod schemas with every default, and the library's options built from them.
 */

const META_MODULE_NAME_ = 'metamanager';

const hostPort = z.string().refine((s) => {
  try {
    splitHostPort(s);
    return /^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(s);
  } catch {
    return false;
  }
}, 'expected host:port');

/**
 * SQLite's page cache, KiB (`PRAGMA cache_size`). better-sqlite3 builds SQLite with 16 MB, which a
 * node holding 10,000 services filled (14 MiB of its resident memory for pages the kernel's page
 * cache holds anyway); SQLite's own default is 2,000 KiB.
 */
const cacheSizeKiB = z.number().int().min(64).default(2048);

/** edgecore.yaml `database` (KubeEdge's): where the SQLite file lives, and its page cache. */
export const databaseConfigSchema = z.strictObject({
  dataSource: z.string().min(1).default('/var/lib/edgecore/edgecore.db'),
  cacheSizeKiB,
});

/** The MetaServer: the read-only HTTP API over the local store. */
export const metaServerSchema = z.strictObject({
  enable: z.boolean().default(true),
  server: hostPort.default('127.0.0.1:10550'),
});

/** edgecore.yaml `modules.metaManager`. Strict: an unknown key is an error naming it. */
export const metaManagerConfigSchema = z.strictObject({
  enable: z.boolean().default(true),
  /** Seconds to wait for the cloud on a remote query (KubeEdge's `remoteQueryTimeout`). */
  remoteQueryTimeout: z.number().min(0).default(60),
  /**
   * Under a burst of writes — a commit starts less than 5 ms after a commit of 4 or more writes
   * ended — how many milliseconds at most it lingers for more writes to share its transaction, as
   * long as they keep coming (`lingerGapMs`, 2 ms, without one ends it; 0: no lingering). A
   * write that comes alone, from a writer that waits for each commit, or a few ms after a commit
   * of 1-3 writes (single updates: a service and its VIP), is committed at once.
   */
  groupCommitMs: z.number().min(0).max(1000).default(20),
  metaServer: metaServerSchema.default({}),
});

/** The library's options: the module's keys, the SQLite file, and how many writes one commit takes. */
export const metaManagerOptionsSchema = z.object({
  ...metaManagerConfigSchema.shape,
  /** SQLite file (edgecore.yaml `database.dataSource`). */
  dataSource: z.string().min(1),
  /** SQLite's page cache, KiB (edgecore.yaml `database.cacheSizeKiB`). */
  cacheSizeKiB,
  /** Most messages committed in one transaction. */
  batchSize: z.number().int().min(1).max(1_000_000).default(1000),
  /**
   * Under a burst a commit lingers (up to `groupCommitMs`) only while writes keep coming: it goes
   * once none came for this many ms. Writers that each wait for their own commit (EdgeHub's window
   * of unacknowledged messages, a client's writes in flight) are all back by then.
   */
  lingerGapMs: z.number().min(0).max(1000).default(2),
});

export const MetaManagerOptions = Symbol.for('edgecore.MetaManagerOptions');
export type MetaManagerOptions = z.input<typeof metaManagerOptionsSchema>;
export type ResolvedMetaManagerOptions = z.output<typeof metaManagerOptionsSchema>;

/** The store's options: how long a writer or reader waits on a lock before SQLITE_BUSY. */
export const metaStoreOptionsSchema = z.object({
  busyTimeoutMs: z.number().int().min(0).default(5000),
  readonly: z.boolean().default(false),
  /** WAL checkpoints at quiet moments instead of inside a commit (a file database; IdleCheckpointer). */
  idleCheckpoint: z.boolean().default(true),
  cacheSizeKiB,
});

/** The beehive client: MetaManager's module name, and a per-request timeout (a query never hangs past it). */
export const metaClientOptionsSchema = z.object({
  target: z.string().min(1).default(META_MODULE_NAME_),
  timeoutMs: z.number().int().min(1).default(10_000),
});

/** A MetaManager option that is missing or not what its key takes. */
export class InvalidMetaOptionError extends MetaError {
  constructor(
    readonly key: string,
    value: unknown,
    expected: string,
  ) {
    super(
      MetaCode.InvalidOption,
      `option ${key}: ${JSON.stringify(value) ?? 'undefined'} is not valid: ${expected}`,
    );
  }
}

/** `input` parsed by `schema` (beehive's `resolveOptions`), a bad option an `InvalidMetaOptionError`. */
export const resolveMetaOptions = optionsResolver(
  'metaManager',
  (k, v, e) => new InvalidMetaOptionError(k, v, e),
);

export const META_MODULE_NAME = META_MODULE_NAME_;
/** Resource types forwarded to the `mesh` group after commit (KubeEdge metamanager → edgemesh). */
export const MESH_TYPES: ReadonlySet<string> = new Set([
  'service',
  'endpoints',
  'endpointslice',
  'destinationrule',
  'pod',
  'nodestatus',
]);
/**
 * Where a committed change of a type goes: EdgeMesh's types to `mesh`; ConfigMaps to `tunnel`
 * (EdgeTunnel's deny list, `kube-system/configmap/edgetunnel-revoked`, arrives as one).
 */
export const FORWARD_GROUPS: ReadonlyMap<string, string> = new Map([
  ...[...MESH_TYPES].map((t): [string, string] => [t, 'mesh']),
  ['configmap', 'tunnel'],
]);
