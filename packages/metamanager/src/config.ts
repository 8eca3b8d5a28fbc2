/** MetaManager configuration (edgecore.yaml `database` + `modules.metaManager`). */
export const MetaManagerOptions = Symbol.for('edgecore.MetaManagerOptions');
export interface MetaManagerOptions {
  /** SQLite file (edgecore.yaml `database.dataSource`). */
  dataSource: string;
  enable?: boolean;
  /** Seconds to wait for the cloud on a remote query (KubeEdge `remoteQueryTimeout`, default 60). */
  remoteQueryTimeout?: number;
  /** Most messages committed in one transaction (default 1000). */
  batchSize?: number;
  metaServer?: {
    /** Off by default in library use; edgecore turns it on. */
    enable?: boolean;
    /** `host:port`, default `127.0.0.1:10550`. */
    server?: string;
  };
}

export const META_MODULE_NAME = 'metamanager';
/** Resource types forwarded to the `mesh` group after commit (KubeEdge metamanager → edgemesh). */
export const MESH_TYPES: ReadonlySet<string> = new Set(['service', 'endpoints', 'pod']);
