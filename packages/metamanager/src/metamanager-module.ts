import {
  BeehiveModule,
  ChannelContext,
  isMessageLike,
  MailboxFullError,
  type BatchAnswer,
  type ErrorContent,
  CloudConnected,
  CloudDisconnected,
  ContextClosedError,
  Group,
  isErrorMessage,
  isWriteOperation,
  Logger,
  newError,
  newMessage,
  newResponse,
  Operation,
  parseResource,
  ReadySignal,
  silentLogger,
  type Message,
} from '@edgecore/beehive';
import { inject, injectable, optional } from 'inversify';
import { EventEmitter } from 'node:events';
import {
  FORWARD_GROUPS,
  META_MODULE_NAME,
  MetaManagerOptions,
  metaManagerOptionsSchema,
  resolveMetaOptions,
  type ResolvedMetaManagerOptions,
} from './config';
import { MetaStore, type MetaOpResult } from './dao/meta-store';
import { MetaServer } from './metaserver/meta-server';
import { InvalidMetaContentError, MetaCode } from './metamanager-errors';
import { errorCode, parseWrite, type ParsedWrite } from './process';

/** A commit that starts this soon (ms) after one of BURST_WRITES or more ended is part of a burst. */
const BURST_GAP_MS = 5;
/**
 * The writes of a commit that make a burst: more than one change from the cloud brings about (a
 * service's delete with its VIP's release, then the next service with its VIP: commits of 1-3
 * writes a few ms apart, each of which should go at once); a cloud burst commits 8 or more.
 */
const BURST_WRITES = 4;

/** A write on its way into a transaction, and how its sender hears the outcome. */
interface PendingWrite {
  msg: Message<unknown>;
  parsed: ParsedWrite;
  answer: (a: BatchAnswer) => void;
}

export interface MetaManagerStats {
  applied: number;
  unchanged: number;
  stale: number;
  rejected: number;
  queries: number;
  remoteQueries: number;
  remoteFailures: number;
  batches: number;
}

/** Objects one `{select: 'objects'}` query may name (its answer is built on the event loop). */
export const MAX_SELECTED = 10_000;

/**
 * The MetaManager beehive module (KubeEdge `edge/pkg/metamanager`): commits cloud objects to
 * SQLite, forwards service/endpoints/pod changes to `mesh`, answers queries from SQLite — offline
 * too — and tracks the cloud connection.
 */
@injectable()
export class MetaManagerModule implements BeehiveModule {
  readonly name = META_MODULE_NAME;
  readonly group = Group.Meta;
  readonly stats: MetaManagerStats = {
    applied: 0,
    unchanged: 0,
    stale: 0,
    rejected: 0,
    queries: 0,
    remoteQueries: 0,
    remoteFailures: 0,
    batches: 0,
  };
  /** Emits `connection` (boolean) when the cloud status changes. */
  readonly events = new EventEmitter();
  private connected = false;
  private ctx?: ChannelContext;
  private readonly batchSize: number;
  private readonly options: ResolvedMetaManagerOptions;
  private readonly remoteTimeoutMs: number;
  private readonly readiness = new ReadySignal();
  private readonly inflight = new Set<Promise<void>>();
  /** When the last batch of writes was done (performance.now()), and how many writes it held. */
  private lastCommitEnd = -Infinity;
  private lastCommitWrites = 0;

  constructor(
    @inject(MetaManagerOptions) input: MetaManagerOptions,
    @inject(MetaStore) readonly store: MetaStore,
    @inject(Logger) @optional() private readonly log: Logger = silentLogger,
    @inject(MetaServer) @optional() private readonly metaServer?: MetaServer,
  ) {
    const options = (this.options = resolveMetaOptions(metaManagerOptionsSchema, input));
    this.batchSize = options.batchSize;
    this.remoteTimeoutMs = options.remoteQueryTimeout * 1000;
  }

  get cloudConnected(): boolean {
    return this.connected;
  }

  enable(): boolean {
    return this.options.enable;
  }

  ready(): Promise<void> {
    return this.readiness.promise;
  }

  async start(ctx: ChannelContext, signal: AbortSignal): Promise<void> {
    this.ctx = ctx;
    if (this.metaServer && this.options.metaServer.enable && !this.metaServer.listening) {
      const addr = await this.metaServer.listen();
      this.log.info({ address: `${addr.address}:${addr.port}` }, 'metaserver listening');
    }
    this.readiness.resolve();
    const batch: Message<unknown>[] = [];
    while (!signal.aborted) {
      let first: Message<unknown>;
      try {
        first = await ctx.receiveOne(this.name);
      } catch (e) {
        if (e instanceof ContextClosedError) break;
        throw e;
      }
      batch.length = 0;
      batch.push(first);
      // Group commit: yield one macrotask so a burst that is still being enqueued joins this
      // batch, then take everything queued into the same transaction. Under a burst (the last
      // commit, of BURST_WRITES or more, ended moments ago) linger up to `groupCommitMs` more while
      // writes keep coming: each commit writes its pages to the WAL whatever it holds, and a node
      // taking a cloud burst committed ~8 writes at a time. It goes once none came for
      // `lingerGapMs`: writers that each wait for their own commit (EdgeHub's window, a client's
      // writes in flight) are all back then, and a fixed wait was idle time for them (README:
      // group commit). A writer that waits for each commit (one write a time) never lingers, nor
      // do single updates a few ms apart.
      const op = first.route.operation;
      const writes = isWriteOperation(op) || op === Operation.Batch;
      if (writes) {
        await new Promise<void>((r) => setImmediate(r));
        this.drainInto(ctx, batch);
        const wait = this.options.groupCommitMs;
        if (
          wait > 0 &&
          this.lastCommitWrites >= BURST_WRITES &&
          performance.now() - this.lastCommitEnd < BURST_GAP_MS
        ) {
          const end = performance.now() + wait;
          for (let had = batch.length, left = wait; batch.length < this.batchSize && left > 0;) {
            await new Promise<void>((r) => setTimeout(r, Math.min(this.options.lingerGapMs, left)));
            this.drainInto(ctx, batch);
            if (batch.length === had) break; // none came: the writers wait for this commit
            had = batch.length;
            left = end - performance.now();
          }
        }
      }
      this.drainInto(ctx, batch);
      await this.processBatch(ctx, batch);
      if (writes) {
        this.lastCommitEnd = performance.now();
        this.lastCommitWrites = batch.reduce(
          (n, m) =>
            n + (m.route.operation === Operation.Batch && Array.isArray(m.content) ? m.content.length : 1),
          0,
        );
      }
    }
    await Promise.allSettled([...this.inflight]);
  }

  /** Move what is queued for the module into `batch`, up to the batch size. */
  private drainInto(ctx: ChannelContext, batch: Message<unknown>[]): void {
    while (batch.length < this.batchSize) {
      const m = ctx.poll(this.name);
      if (!m) return;
      batch.push(m);
    }
  }

  async stop(): Promise<void> {
    await this.metaServer?.close();
    this.store.close();
  }

  /**
   * Process messages in order; consecutive writes share one transaction. A `batch` message's
   * writes join them and are answered together, in one reply, once they are committed.
   */
  async processBatch(ctx: ChannelContext, msgs: Message<unknown>[]): Promise<void> {
    let writes: PendingWrite[] = [];
    const batches: { msg: Message<unknown>; answers: BatchAnswer[] }[] = [];
    // a write joins the transaction, or its sender hears why not (parseWrite refuses non-writes too)
    const take = (msg: Message<unknown>, answer: (a: BatchAnswer) => void): void => {
      try {
        writes.push({ msg, parsed: parseWrite(msg), answer });
      } catch (e) {
        answer(this.refusal(msg, e));
      }
    };
    for (const msg of msgs) {
      const op = msg.route.operation ?? '';
      if (op === Operation.Batch) {
        if (!Array.isArray(msg.content)) {
          this.reject(ctx, msg, new InvalidMetaContentError('batch', 'expected an array of write messages'));
          continue;
        }
        const answers: BatchAnswer[] = new Array<BatchAnswer>(msg.content.length);
        batches.push({ msg, answers });
        msg.content.forEach((item: unknown, i) => {
          const answer = (a: BatchAnswer) => (answers[i] = a);
          if (isMessageLike(item)) take(item, answer);
          else answer(this.refusal(msg, new InvalidMetaContentError('batch', `item ${i} is not a message`)));
        });
        continue;
      }
      if (isWriteOperation(op)) {
        take(msg, (a) => this.answer(ctx, msg, a));
        continue;
      }
      if (writes.length) {
        await this.commit(ctx, writes);
        writes = [];
      }
      this.handleOther(ctx, msg);
    }
    if (writes.length) await this.commit(ctx, writes);
    for (const b of batches) this.reply(ctx, b.msg, newResponse(b.msg, b.answers, this.name));
  }

  private async commit(ctx: ChannelContext, writes: PendingWrite[]): Promise<void> {
    let results: MetaOpResult[];
    try {
      results = this.store.apply(writes.map((w) => w.parsed.op));
      this.stats.batches++;
    } catch (e) {
      // The transaction rolled back: nothing of the batch is written; every sender hears why.
      this.log.error({ err: e, count: writes.length }, 'metadata batch failed');
      for (const w of writes) w.answer(this.refusal(w.msg, e));
      return;
    }
    const groups = new Map<string, string[]>(); // group → its modules, looked up once per batch
    const modulesOf = (g: string): string[] => {
      let m = groups.get(g);
      if (!m) groups.set(g, (m = ctx.moduleNames(g)));
      return m;
    };
    for (let i = 0; i < writes.length; i++) {
      const { msg, parsed, answer } = writes[i];
      const res = results[i];
      if (res.status === 'stale') {
        this.stats.stale++;
        answer({
          code: MetaCode.StaleResourceVersion,
          message: `"${parsed.op.key}": resourceVersion ${parsed.op.resourceVersion} is older than stored ${res.stored}`,
        });
        continue;
      }
      if (res.status === 'applied') {
        this.stats.applied++;
        const group = FORWARD_GROUPS.get(parsed.op.type);
        const mesh = group ? modulesOf(group) : [];
        if (mesh.length) {
          const fwd = newMessage(parsed.object, {
            source: this.name,
            group: group!,
            operation: msg.route.operation,
            resource: parsed.op.key,
            resourceVersion: parsed.op.resourceVersion ? String(parsed.op.resourceVersion) : undefined,
          });
          // the cloud's publish time travels on (KubeEdge forwards the cloud's message itself), so
          // EdgeMesh can measure publish → applied
          fwd.header.timestamp = msg.header.timestamp;
          for (const m of mesh) {
            try {
              ctx.trySend(m, fwd); // room in the mailbox (the usual case): no wait, in order
            } catch (e) {
              if (!(e instanceof MailboxFullError)) {
                this.log.warn({ err: e, resource: parsed.op.key }, 'forward to mesh failed');
                continue;
              }
              // a full mailbox holds this batch back (and the acknowledgements behind it)
              await ctx
                .send(m, fwd)
                .catch((e2) => this.log.warn({ err: e2, resource: parsed.op.key }, 'forward to mesh failed'));
            }
          }
        }
      } else {
        this.stats.unchanged++;
      }
      answer('OK');
    }
  }

  private handleOther(ctx: ChannelContext, msg: Message<unknown>): void {
    switch (msg.route.operation) {
      case Operation.Query:
        this.query(ctx, msg);
        return;
      case Operation.Connect:
        this.setConnected(msg.content);
        return;
      case Operation.Response:
      case Operation.Error:
      case Operation.Keepalive:
        return; // replies reach waiters through sendResp; strays are harmless
      default:
        this.reject(ctx, msg, {
          code: MetaCode.UnknownOperation,
          message: `unknown operation "${msg.route.operation ?? ''}"`,
        });
    }
  }

  private setConnected(content: unknown): void {
    const status = typeof content === 'string' ? content : (content as { status?: string })?.status;
    let next: boolean;
    if (status === CloudConnected) next = true;
    else if (status === CloudDisconnected) next = false;
    else {
      this.log.warn({ content }, 'unknown connect status');
      return;
    }
    if (next !== this.connected) {
      this.connected = next;
      this.log.info({ status }, 'cloud connection changed');
      this.events.emit('connection', next);
    }
  }

  private query(ctx: ChannelContext, msg: Message<unknown>): void {
    this.stats.queries++;
    const resource = msg.route.resource ?? '';
    let r;
    try {
      r = parseResource(resource);
    } catch (e) {
      this.reject(ctx, msg, { code: MetaCode.InvalidResource, message: (e as Error).message });
      return;
    }
    if (r.name === undefined) {
      // `{select: 'digest'}` / `{select: 'versions'}` on `*/<type>`: what EdgeHub compares with
      // the cloud's digest and resyncs against (see EdgeHub's README)
      const select = (msg.content as { select?: unknown } | null)?.select;
      if (select === 'digest' || select === 'versions') {
        const out =
          select === 'digest' ? this.store.digest(r.type) : [...this.store.versions(r.type).entries()];
        this.reply(ctx, msg, newResponse(msg, out, this.name));
        return;
      }
      // `{select: 'objects', names: ['<ns>/<name>', …]}` on `*/<type>`: those objects as stored
      // here (null for one that is not), in order — never the cloud's (EdgeMesh reading back a
      // burst it held by keys: one message per type and batch, not one per object)
      if (select === 'objects') {
        const raw = (msg.content as { names?: unknown }).names;
        const names = Array.isArray(raw) ? (raw as unknown[]) : undefined;
        const bad = names?.findIndex((n) => typeof n !== 'string' || n.split('/').length !== 2) ?? -1;
        if (!names || bad >= 0 || names.length > MAX_SELECTED) {
          this.reject(
            ctx,
            msg,
            new InvalidMetaContentError(
              resource,
              bad >= 0
                ? `names[${bad}] is not "<namespace>/<name>"`
                : `names must be an array of at most ${MAX_SELECTED} "<namespace>/<name>"`,
            ),
          );
          return;
        }
        const out = (names as string[]).map((n) => {
          const [ns, name] = n.split('/');
          const v = this.store.getValue(`${ns}/${r.type}/${name}`);
          return v !== undefined ? (JSON.parse(v) as unknown) : null;
        });
        this.reply(ctx, msg, newResponse(msg, out, this.name));
        return;
      }
      const items = this.store.listValues(r.namespace, r.type).map((v) => JSON.parse(v) as unknown);
      this.reply(ctx, msg, newResponse(msg, items, this.name));
      return;
    }
    const value = this.store.getValue(resource);
    if (value !== undefined) {
      this.reply(ctx, msg, newResponse(msg, JSON.parse(value) as unknown, this.name));
      return;
    }
    // `{local: true}`: what this node stores, never the cloud's (EdgeMesh reading back a held key)
    const local = (msg.content as { local?: unknown } | null)?.local === true;
    const hub = ctx.moduleNames(Group.Hub)[0];
    if (this.connected && hub && !local) {
      const p = this.remoteQuery(ctx, msg, hub).finally(() => this.inflight.delete(p));
      this.inflight.add(p);
      return;
    }
    this.reply(ctx, msg, newError(msg, MetaCode.NotFound, `"${resource}" not found`, this.name));
  }

  /** Ask the cloud through the hub; on timeout or failure, answer from the local store. */
  private async remoteQuery(ctx: ChannelContext, msg: Message<unknown>, hub: string): Promise<void> {
    this.stats.remoteQueries++;
    const resource = msg.route.resource!;
    try {
      const reply = await ctx.forwardSync(hub, msg, this.remoteTimeoutMs);
      if (!isErrorMessage(reply) && reply.content && typeof reply.content === 'object') {
        const store = newMessage(reply.content, { operation: Operation.Insert, resource });
        const parsed = parseWrite(store);
        const [res] = this.store.apply([parsed.op]);
        if (res.status === 'applied') this.stats.applied++;
        this.reply(ctx, msg, newResponse(msg, reply.content, this.name));
        return;
      }
    } catch (e) {
      this.stats.remoteFailures++;
      this.log.debug({ err: e, resource }, 'remote query failed; answering locally');
    }
    const rec = this.store.isOpen ? this.store.get(resource) : undefined;
    if (rec) this.reply(ctx, msg, newResponse(msg, JSON.parse(rec.value) as unknown, this.name));
    else this.reply(ctx, msg, newError(msg, MetaCode.NotFound, `"${resource}" not found`, this.name));
  }

  private reject(ctx: ChannelContext, msg: Message<unknown>, e: unknown): void {
    this.answer(ctx, msg, this.refusal(msg, e));
  }

  /** A refused message: counted, logged with its resource, and the answer its sender gets. */
  private refusal(msg: Message<unknown>, e: unknown): ErrorContent {
    this.stats.rejected++;
    const code = errorCode(e);
    const message = (e as { message?: string }).message ?? String(e);
    this.log.warn(
      { code, resource: msg.route.resource, operation: msg.route.operation, source: msg.route.source },
      message,
    );
    return { code, message };
  }

  private answer(ctx: ChannelContext, msg: Message<unknown>, a: BatchAnswer): void {
    this.reply(
      ctx,
      msg,
      a === 'OK' ? newResponse(msg, 'OK', this.name) : newError(msg, a.code, a.message, this.name),
    );
  }

  /** Sync requests get sendResp; async ones a message back to the source module, if it exists. */
  private reply(ctx: ChannelContext, req: Message<unknown>, resp: Message<unknown>): void {
    if (req.header.sync) {
      ctx.sendResp(resp);
      return;
    }
    const src = req.route.source;
    if (src && ctx.hasModule(src) && src !== this.name) {
      ctx
        .send(src, resp, { wait: false })
        .catch((e) => this.log.debug({ err: e, module: src }, 'reply dropped'));
    }
  }
}
