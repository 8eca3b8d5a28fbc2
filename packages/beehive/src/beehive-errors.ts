/**
 * One error taxonomy for the bus (undici style): a base class and a stable `code` per failure,
 * so callers branch on `err.code`, never on message text.
 */
export class BeehiveError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A message was addressed to a module (or group) that is not registered on the context. */
export class UnknownModuleError extends BeehiveError {
  constructor(readonly module: string) {
    super('BEEHIVE_UNKNOWN_MODULE', `unknown module "${module}"`);
  }
}

export class UnknownGroupError extends BeehiveError {
  constructor(readonly group: string) {
    super('BEEHIVE_UNKNOWN_GROUP', `no module in group "${group}"`);
  }
}

/** sendSync / sendToGroupSync got no reply in time. */
export class SyncTimeoutError extends BeehiveError {
  constructor(
    readonly module: string,
    readonly msgId: string,
    readonly timeoutMs: number,
  ) {
    super('BEEHIVE_SYNC_TIMEOUT', `no reply from "${module}" to message ${msgId} within ${timeoutMs} ms`);
  }
}

/** The context (or one module's mailbox) is closed: shutting down or the module was removed. */
export class ContextClosedError extends BeehiveError {
  constructor(what: string) {
    super('BEEHIVE_CONTEXT_CLOSED', `${what} is closed`);
  }
}

/** The destination mailbox is full and the caller asked not to wait. */
export class MailboxFullError extends BeehiveError {
  constructor(
    readonly module: string,
    readonly capacity: number,
  ) {
    super('BEEHIVE_MAILBOX_FULL', `mailbox of "${module}" is full (${capacity} messages)`);
  }
}

export class InvalidResourceError extends BeehiveError {
  constructor(
    readonly resource: string,
    reason: string,
  ) {
    super('BEEHIVE_INVALID_RESOURCE', `invalid resource "${resource}": ${reason}`);
  }
}

export class InvalidMessageError extends BeehiveError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('BEEHIVE_INVALID_MESSAGE', `invalid message: ${reason}`, options);
  }
}

export class DuplicateModuleError extends BeehiveError {
  constructor(readonly module: string) {
    super('BEEHIVE_DUPLICATE_MODULE', `module "${module}" is already registered`);
  }
}

export class DependencyError extends BeehiveError {
  constructor(message: string) {
    super('BEEHIVE_DEPENDENCY', message);
  }
}
