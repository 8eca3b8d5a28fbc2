import {
  ChannelContext,
  type BatchAnswer,
  isErrorMessage,
  isWriteOperation,
  newMessage,
  Operation,
  parseResource,
  type Message,
} from '@edgecore/beehive';
import type { z } from 'zod/v3';
import { metaClientOptionsSchema, resolveMetaOptions } from '../config';
import { MetaCode, MetaError } from '../metamanager-errors';

/** A change forwarded by MetaManager to the `mesh` group after it committed it. */
export interface MetaChange<T = unknown> {
  operation: 'insert' | 'update' | 'patch' | 'delete';
  namespace: string;
  type: string;
  name: string;
  object: T;
  resourceVersion?: string;
}

/**
 * The typed metadata API other modules use (EdgeMesh uses only this). The default implementation
 * talks to MetaManager over beehive; an embedder can bind its own (Theia style: interface + symbol).
 */
export const MetaClient = Symbol.for('edgecore.MetaClient');
export interface MetaClient {
  /**
   * One object; a miss is asked of the cloud while it is connected (KubeEdge's remote query),
   * unless `local`: then this node's store alone answers.
   */
  get<T = unknown>(
    namespace: string,
    type: string,
    name: string,
    opts?: { local?: boolean },
  ): Promise<T | undefined>;
  list<T = unknown>(namespace: string, type: string): Promise<T[]>;
  /**
   * Objects of one type by `<namespace>/<name>`, as this node stores them (undefined for one it
   * does not; never asked of the cloud), in one request. Optional: without it, `get` with
   * `{local: true}` per object.
   */
  getMany?<T = unknown>(type: string, names: string[]): Promise<(T | undefined)[]>;
  /**
   * Store several objects (unversioned local writes) in one request, one transaction; rejects with
   * the first refusal. Optional: without it, `put` per object.
   */
  putMany?(items: MetaPut[]): Promise<void>;
  /** Delete several objects in one request, one transaction (as `putMany`). Optional: `delete` each. */
  deleteMany?(items: MetaKey[]): Promise<void>;
  /** Store an object (unversioned local write unless resourceVersion is given). */
  put(
    namespace: string,
    type: string,
    name: string,
    object: unknown,
    resourceVersion?: number,
  ): Promise<void>;
  delete(namespace: string, type: string, name: string): Promise<void>;
}

/** Where an object is kept: `<namespace>/<type>/<name>`. */
export interface MetaKey {
  namespace: string;
  type: string;
  name: string;
}

/** One object of a `putMany`. */
export interface MetaPut extends MetaKey {
  object: unknown;
}

/** `putMany` where the client has it (one request), else `put` per object. */
export async function putAll(meta: MetaClient, items: MetaPut[]): Promise<void> {
  if (meta.putMany) await meta.putMany(items);
  else await Promise.all(items.map((w) => meta.put(w.namespace, w.type, w.name, w.object)));
}

/** `deleteMany` where the client has it (one request), else `delete` per object. */
export async function deleteAll(meta: MetaClient, keys: MetaKey[]): Promise<void> {
  if (meta.deleteMany) await meta.deleteMany(keys);
  else await Promise.all(keys.map((k) => meta.delete(k.namespace, k.type, k.name)));
}

/** The calling module's name (route.source); MetaManager's module name; a per-request timeout. */
export type BeehiveMetaClientOptions = { source: string } & z.input<typeof metaClientOptionsSchema>;

export class BeehiveMetaClient implements MetaClient {
  private readonly target: string;
  private readonly timeoutMs: number;

  constructor(
    private readonly ctx: ChannelContext,
    private readonly opts: BeehiveMetaClientOptions,
  ) {
    const o = resolveMetaOptions(metaClientOptionsSchema, opts);
    this.target = o.target;
    this.timeoutMs = o.timeoutMs;
  }

  async get<T = unknown>(
    namespace: string,
    type: string,
    name: string,
    opts: { local?: boolean } = {},
  ): Promise<T | undefined> {
    try {
      return (await this.request(
        Operation.Query,
        `${namespace}/${type}/${name}`,
        opts.local ? { local: true } : undefined,
      )) as T;
    } catch (e) {
      if (e instanceof MetaError && e.code === MetaCode.NotFound) return undefined;
      throw e;
    }
  }

  async list<T = unknown>(namespace: string, type: string): Promise<T[]> {
    return (await this.request(Operation.Query, `${namespace}/${type}`)) as T[];
  }

  async getMany<T = unknown>(type: string, names: string[]): Promise<(T | undefined)[]> {
    const out = (await this.request(Operation.Query, `*/${type}`, {
      select: 'objects',
      names,
    })) as (T | null)[];
    return out.map((o) => o ?? undefined);
  }

  async put(
    namespace: string,
    type: string,
    name: string,
    object: unknown,
    resourceVersion?: number,
  ): Promise<void> {
    await this.request(Operation.Update, `${namespace}/${type}/${name}`, object, resourceVersion);
  }

  async delete(namespace: string, type: string, name: string): Promise<void> {
    await this.request(Operation.Delete, `${namespace}/${type}/${name}`, null);
  }

  async putMany(items: MetaPut[]): Promise<void> {
    await this.batch(items.map((it) => [Operation.Update, it, it.object]));
  }

  async deleteMany(items: MetaKey[]): Promise<void> {
    await this.batch(items.map((it) => [Operation.Delete, it, null]));
  }

  /** One `batch` message: its writes share a transaction and one reply (one answer per write). */
  private async batch(writes: [string, MetaKey, unknown][]): Promise<void> {
    if (!writes.length) return;
    const msgs = writes.map(([operation, k, content]) => {
      const resource = `${k.namespace}/${k.type}/${k.name}`;
      parseResource(resource);
      return newMessage(content, { source: this.opts.source, group: 'meta', operation, resource });
    });
    const answers = (await this.request(Operation.Batch, undefined, msgs)) as BatchAnswer[];
    const refused = answers.find((a) => a !== 'OK');
    if (refused) throw new MetaError(refused.code, refused.message);
  }

  listServices<T = unknown>(namespace = '*'): Promise<T[]> {
    return this.list<T>(namespace, 'service');
  }
  getService<T = unknown>(namespace: string, name: string): Promise<T | undefined> {
    return this.get<T>(namespace, 'service', name);
  }
  listEndpoints<T = unknown>(namespace = '*'): Promise<T[]> {
    return this.list<T>(namespace, 'endpoints');
  }
  getEndpoints<T = unknown>(namespace: string, name: string): Promise<T | undefined> {
    return this.get<T>(namespace, 'endpoints', name);
  }
  listPods<T = unknown>(namespace = '*'): Promise<T[]> {
    return this.list<T>(namespace, 'pod');
  }
  getPod<T = unknown>(namespace: string, name: string): Promise<T | undefined> {
    return this.get<T>(namespace, 'pod', name);
  }

  private async request(
    operation: string,
    resource: string | undefined,
    content?: unknown,
    rv?: number,
  ): Promise<unknown> {
    if (resource !== undefined) parseResource(resource);
    const msg = newMessage(content, {
      source: this.opts.source,
      destination: this.target,
      group: 'meta',
      operation,
      resource,
      resourceVersion: rv ? String(rv) : undefined,
    });
    const reply = await this.ctx.sendSync(this.target, msg, this.timeoutMs);
    if (isErrorMessage(reply)) throw new MetaError(reply.content.code, reply.content.message);
    return reply.content;
  }
}

/**
 * Subscribing to changes: MetaManager forwards each committed service/endpoints/pod change to the
 * `mesh` group; a module decodes the messages of its own receive loop with this.
 */
export function decodeChange<T = unknown>(msg: Message<unknown>): MetaChange<T> | undefined {
  const op = msg.route.operation;
  if (!isWriteOperation(op)) return undefined;
  let r;
  try {
    r = parseResource(msg.route.resource ?? '');
  } catch {
    return undefined;
  }
  if (r.name === undefined || r.namespace === '*') return undefined;
  return {
    operation: op,
    namespace: r.namespace,
    type: r.type,
    name: r.name,
    object: msg.content as T,
    resourceVersion: msg.header.resourceversion,
  };
}
