import { isWriteOperation, Operation, parseResource, type Message } from '@edgecore/beehive';
import {
  InvalidMetaContentError,
  InvalidMetaResourceError,
  InvalidResourceVersionError,
  MetaError,
  UnknownOperationError,
} from './metamanager-errors';
import type { MetaOp } from './dao/meta-store';

export interface ParsedWrite {
  op: MetaOp;
  /** The object as parsed (forwarded to mesh, returned in responses). */
  object: unknown;
}

/**
 * Validate an insert/update/patch/delete message into a store operation. Content may be an object
 * or JSON text (KubeEdge sends both). resourceVersion comes from the header, else from
 * `content.metadata.resourceVersion`; absent means 0 (an unversioned local write).
 */
export function parseWrite(msg: Message<unknown>): ParsedWrite {
  const resource = msg.route.resource ?? '';
  let r;
  try {
    r = parseResource(resource);
  } catch (e) {
    throw new InvalidMetaResourceError(
      resource,
      (e as Error).message.replace(/^invalid resource "[^"]*": /, ''),
    );
  }
  if (r.namespace === '*' || r.name === undefined)
    throw new InvalidMetaResourceError(resource, 'a write needs <namespace>/<type>/<name>');
  const op = msg.route.operation;
  if (!isWriteOperation(op)) {
    throw new UnknownOperationError(op);
  }
  let object: unknown = msg.content;
  if (typeof object === 'string' || Buffer.isBuffer(object)) {
    try {
      object = JSON.parse(object.toString());
    } catch (cause) {
      throw new InvalidMetaContentError(resource, 'not valid JSON', { cause });
    }
  }
  if (op !== Operation.Delete && (object === null || typeof object !== 'object')) {
    throw new InvalidMetaContentError(resource, 'expected a JSON object');
  }
  const rvRaw =
    msg.header.resourceversion ||
    (object as { metadata?: { resourceVersion?: unknown } } | null)?.metadata?.resourceVersion;
  let rv = 0;
  if (rvRaw !== undefined && rvRaw !== '') {
    const s = String(rvRaw);
    if (!/^\d{1,16}$/.test(s) || !Number.isSafeInteger(Number(s)))
      throw new InvalidResourceVersionError(resource, rvRaw);
    rv = Number(s);
  }
  const base = { key: resource, namespace: r.namespace, type: r.type, name: r.name, resourceVersion: rv };
  if (op === Operation.Delete) return { op: { op: 'delete', ...base }, object };
  return { op: { op: 'upsert', ...base, value: JSON.stringify(object) }, object };
}

export function errorCode(e: unknown): string {
  if (e instanceof MetaError) return e.code;
  const c = (e as { code?: unknown })?.code;
  return typeof c === 'string' ? c : 'META_INTERNAL';
}
