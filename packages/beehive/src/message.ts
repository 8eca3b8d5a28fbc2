import { randomUUID } from 'node:crypto';
import { InvalidMessageError } from './beehive-errors';

/**
 * The beehive message, wire-compatible with KubeEdge's `beehive/pkg/core/model.Message` JSON:
 * `{header:{msg_id,parent_msg_id,timestamp,resourceversion,sync,type}, route:{...}, content}`.
 * Fields KubeEdge marks `omitempty` are optional here and omitted by `toWire`.
 */
export interface MessageHeader {
  msg_id: string;
  parent_msg_id?: string;
  /** Milliseconds since the epoch (KubeEdge: time.Now().UnixNano() / 1e6). */
  timestamp: number;
  resourceversion?: string;
  sync?: boolean;
  type?: string;
}

export interface MessageRoute {
  source?: string;
  destination?: string;
  group?: string;
  operation?: string;
  resource?: string;
}

export interface Message<T = unknown> {
  header: MessageHeader;
  route: MessageRoute;
  content: T;
}

/** Operations (KubeEdge model constants). */
export const Operation = {
  Insert: 'insert',
  Update: 'update',
  Patch: 'patch',
  Delete: 'delete',
  Query: 'query',
  Response: 'response',
  Error: 'error',
  Connect: 'connect',
  Keepalive: 'keepalive',
  /**
   * Several write messages in `content` (an array), committed together by MetaManager; the one
   * reply's content lists each write's answer in order: `'OK'` or an ErrorContent. What EdgeHub
   * sends for a burst from the cloud (one request and one transaction instead of one each).
   */
  Batch: 'batch',
} as const;
export type OperationName = (typeof Operation)[keyof typeof Operation];

/** The operations that change an object (what MetaManager commits and forwards). */
export type WriteOperation = 'insert' | 'update' | 'patch' | 'delete';
const WRITE_OPERATIONS: ReadonlySet<string> = new Set<WriteOperation>([
  'insert',
  'update',
  'patch',
  'delete',
]);

export function isWriteOperation(op: string | undefined): op is WriteOperation {
  return op !== undefined && WRITE_OPERATIONS.has(op);
}

/** Module groups (KubeEdge: hub, meta, mesh, user, bus). */
export const Group = {
  Hub: 'hub',
  Meta: 'meta',
  Mesh: 'mesh',
  Tunnel: 'tunnel',
  User: 'user',
  Bus: 'bus',
} as const;

/** Connection status content carried by `connect` messages (KubeEdge connect package). */
export const CloudConnected = 'cloud_connected';
export const CloudDisconnected = 'cloud_disconnected';

export interface NewMessageOptions {
  source?: string;
  destination?: string;
  group?: string;
  operation?: string;
  resource?: string;
  parentId?: string;
  resourceVersion?: string;
  sync?: boolean;
  type?: string;
  msgId?: string;
}

export function newMessageId(): string {
  return randomUUID();
}

export function newMessage<T>(content: T, opts: NewMessageOptions = {}): Message<T> {
  const header: MessageHeader = { msg_id: opts.msgId ?? randomUUID(), timestamp: Date.now() };
  if (opts.parentId) header.parent_msg_id = opts.parentId;
  if (opts.resourceVersion) header.resourceversion = opts.resourceVersion;
  if (opts.sync) header.sync = true;
  if (opts.type) header.type = opts.type;
  return {
    header,
    route: {
      source: opts.source,
      destination: opts.destination,
      group: opts.group,
      operation: opts.operation,
      resource: opts.resource,
    },
    content,
  };
}

/**
 * A response to `req`: parent_msg_id = req.msg_id, operation `response`, same resource, source and
 * destination swapped unless given (KubeEdge `NewRespByMessage`).
 */
export function newResponse<T>(req: Message<unknown>, content: T, source?: string): Message<T> {
  return newMessage(content, {
    parentId: req.header.msg_id,
    operation: Operation.Response,
    resource: req.route.resource,
    source: source ?? req.route.destination,
    destination: req.route.source,
    group: req.route.group,
    sync: req.header.sync,
  });
}

/** The body of an `error` response: a stable code plus a message (both strings, JSON-safe). */
export interface ErrorContent {
  code: string;
  message: string;
}

/** One write's answer in the reply to a `batch`: `'OK'`, or why it was refused. */
export type BatchAnswer = 'OK' | ErrorContent;

/** Whether a value has a message's shape (a header and a route object), e.g. a batch's item. */
export function isMessageLike(v: unknown): v is Message<unknown> {
  const m = v as Partial<Message<unknown>> | null;
  return (
    !!m &&
    typeof m === 'object' &&
    !!m.header &&
    typeof m.header === 'object' &&
    !!m.route &&
    typeof m.route === 'object'
  );
}

export function newError(
  req: Message<unknown>,
  code: string,
  message: string,
  source?: string,
): Message<ErrorContent> {
  const m = newResponse<ErrorContent>(req, { code, message }, source);
  m.route.operation = Operation.Error;
  return m;
}

export function isErrorMessage(m: Message<unknown>): m is Message<ErrorContent> {
  return m.route.operation === Operation.Error;
}

/** Serialise to KubeEdge JSON (drops undefined optional fields). */
export function toWire(m: Message<unknown>): string {
  return JSON.stringify(m);
}

/** Parse and validate KubeEdge JSON; throws InvalidMessageError naming the bad field. */
export function fromWire(data: string | Buffer): Message<unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch (cause) {
    throw new InvalidMessageError('not JSON', { cause });
  }
  if (!raw || typeof raw !== 'object') throw new InvalidMessageError('not an object');
  const o = raw as Record<string, unknown>;
  const header = o.header as Record<string, unknown> | undefined;
  const route = o.route as Record<string, unknown> | undefined;
  if (!header || typeof header !== 'object') throw new InvalidMessageError('missing header');
  if (typeof header.msg_id !== 'string' || header.msg_id === '')
    throw new InvalidMessageError('header.msg_id must be a non-empty string');
  if (header.timestamp !== undefined && typeof header.timestamp !== 'number')
    throw new InvalidMessageError('header.timestamp must be a number');
  for (const k of ['parent_msg_id', 'resourceversion', 'type'] as const) {
    if (header[k] !== undefined && typeof header[k] !== 'string')
      throw new InvalidMessageError(`header.${k} must be a string`);
  }
  if (header.sync !== undefined && typeof header.sync !== 'boolean')
    throw new InvalidMessageError('header.sync must be a boolean');
  if (route !== undefined && (route === null || typeof route !== 'object'))
    throw new InvalidMessageError('route must be an object');
  for (const k of ['source', 'destination', 'group', 'operation', 'resource'] as const) {
    if (route && route[k] !== undefined && typeof route[k] !== 'string')
      throw new InvalidMessageError(`route.${k} must be a string`);
  }
  return {
    header: {
      ...(header as unknown as MessageHeader),
      timestamp: (header.timestamp as number | undefined) ?? 0,
    },
    route: (route ?? {}) as MessageRoute,
    content: o.content,
  };
}
