import { BeehiveError } from '@edgecore/beehive';
/** edgecore host errors, each with a stable code. */
/** Base of this package's errors: a BeehiveError, so every edgecore error has a stable `code`. */
export class EdgeCoreError extends BeehiveError {}

/** A config file that cannot be used: names the file, the key path and the line. */
export class ConfigError extends EdgeCoreError {
  constructor(
    message: string,
    readonly file?: string,
    readonly keyPath?: string,
    readonly line?: number,
  ) {
    super('EDGECORE_CONFIG', message);
  }
}

/** Another edgecore already runs on this database. */
export class DatabaseLockedError extends EdgeCoreError {
  constructor(
    readonly dataSource: string,
    readonly pid: number,
  ) {
    super(
      'EDGECORE_DB_LOCKED',
      `database "${dataSource}" is in use by another edgecore (pid ${pid}); stop it first or use another database.dataSource`,
    );
  }
}

/** The observability server (`observability.listen`) cannot listen: the port is taken, say. */
export class ObservabilityListenError extends EdgeCoreError {
  constructor(address: string, cause: Error) {
    super(
      'EDGECORE_OBSERVABILITY_LISTEN',
      `observability server cannot listen on ${address}: ${cause.message}`,
      {
        cause,
      },
    );
  }
}
