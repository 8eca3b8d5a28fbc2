import { BeehiveError } from '@edgecore/beehive';
/** MetaManager errors: one class per failure, each with a stable code carried in `error` replies. */
/** Base of this package's errors: a BeehiveError, so every edgecore error has a stable `code`. */
export class MetaError extends BeehiveError {}

export const MetaCode = {
  InvalidResource: 'META_INVALID_RESOURCE',
  InvalidContent: 'META_INVALID_CONTENT',
  InvalidResourceVersion: 'META_INVALID_RESOURCE_VERSION',
  StaleResourceVersion: 'META_STALE_RESOURCE_VERSION',
  NotFound: 'META_NOT_FOUND',
  UnknownOperation: 'META_UNKNOWN_OPERATION',
  Database: 'META_DATABASE',
  Closed: 'META_CLOSED',
  Remote: 'META_REMOTE',
  InvalidOption: 'META_INVALID_OPTION',
} as const;

export class InvalidMetaResourceError extends MetaError {
  constructor(resource: string, reason: string) {
    super(MetaCode.InvalidResource, `invalid resource "${resource}": ${reason}`);
  }
}

export class InvalidMetaContentError extends MetaError {
  constructor(resource: string, reason: string, options?: { cause?: unknown }) {
    super(MetaCode.InvalidContent, `invalid content for "${resource}": ${reason}`, options);
  }
}

export class InvalidResourceVersionError extends MetaError {
  constructor(resource: string, value: unknown) {
    super(
      MetaCode.InvalidResourceVersion,
      `resourceVersion of "${resource}" must be a non-negative integer, got ${JSON.stringify(value)}`,
    );
  }
}

export class StaleResourceVersionError extends MetaError {
  constructor(
    readonly key: string,
    readonly incoming: number,
    readonly stored: number,
  ) {
    super(
      MetaCode.StaleResourceVersion,
      `"${key}": resourceVersion ${incoming} is older than stored ${stored}`,
    );
  }
}

export class MetaNotFoundError extends MetaError {
  constructor(readonly key: string) {
    super(MetaCode.NotFound, `"${key}" not found`);
  }
}

export class UnknownOperationError extends MetaError {
  constructor(operation: string | undefined) {
    super(MetaCode.UnknownOperation, `unknown operation "${operation ?? ''}"`);
  }
}

export class MetaDatabaseError extends MetaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(MetaCode.Database, message, options);
  }
}
