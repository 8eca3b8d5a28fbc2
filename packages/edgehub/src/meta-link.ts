import {
  ChannelContext,
  type BatchAnswer,
  Group,
  isErrorMessage,
  newMessage,
  Operation,
  type Logger,
  type Message,
} from '@edgecore/beehive';

/** MetaManager's code for a failed transaction (`MetaCode.Database`): nothing of it was written. */
const META_DATABASE = 'META_DATABASE';

/** Writes sent to MetaManager in one `batch` message at most (a broker's in-flight window). */
const MAX_BATCH = 1000;

interface QueuedCommit {
  msg: Message<unknown>;
  resource: string;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * EdgeHub's calls to MetaManager: commit a write from the cloud, read a type's digest or versions.
 * The writes that arrive together (one read from the socket: a burst of the broker's in-flight
 * window) go to MetaManager as one `batch` message — one request, one transaction, one reply —
 * and each resolves when the batch is committed.
 */
export class MetaLink {
  private queue: QueuedCommit[] = [];
  private flushScheduled = false;

  constructor(
    private readonly ctx: () => ChannelContext | undefined,
    private readonly source: string,
    private readonly timeoutMs: number,
    private readonly stats: { committed: number },
    private readonly log: Logger,
  ) {}

  /**
   * Commit a write through MetaManager; resolves once it is committed or refused (a refusal is
   * logged; a stale one is a redelivery), rejects when MetaManager did not answer.
   */
  commit(msg: Message<unknown>, resource: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ msg, resource, resolve, reject });
      if (this.queue.length >= MAX_BATCH) this.flush();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => {
          this.flushScheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    const items = this.queue;
    if (!items.length) return;
    this.queue = [];
    let target: { ctx: ChannelContext; meta: string };
    try {
      target = this.target('commit to');
    } catch (e) {
      for (const it of items) it.reject(e);
      return;
    }
    for (const it of items) it.msg.header.sync = false;
    const batch = newMessage(
      items.map((it) => it.msg),
      { source: this.source, group: Group.Meta, operation: Operation.Batch },
    );
    target.ctx.sendSync(target.meta, batch, this.timeoutMs).then(
      (reply) => {
        if (isErrorMessage(reply)) {
          const e = new Error(`${reply.content.code}: ${reply.content.message}`);
          for (const it of items) it.reject(e);
          return;
        }
        const answers = reply.content as BatchAnswer[];
        items.forEach((it, i) => {
          const a = answers[i];
          // the database failed (its transaction rolled back: disk full, I/O error, locked): not
          // acknowledged, so the broker delivers it again; a refusal of the object itself (it would
          // be refused again) is acknowledged
          if (a !== 'OK' && a?.code === META_DATABASE) {
            it.reject(new Error(`${a.code}: ${a.message}`));
            return;
          }
          if (a === 'OK' || a?.code === 'META_STALE_RESOURCE_VERSION') this.stats.committed++;
          else
            this.log.warn(
              { resource: it.resource, code: a?.code, err: a?.message ?? 'no answer' },
              'object refused by MetaManager',
            );
          it.resolve();
        });
      },
      (e: unknown) => {
        for (const it of items) it.reject(e);
      },
    );
  }

  /** MetaManager's digest or versions of a type (what the state sync compares). */
  async query(type: string, select: 'digest' | 'versions'): Promise<unknown> {
    const { ctx, meta } = this.target('ask');
    const q = newMessage(
      { select },
      { source: this.source, group: Group.Meta, operation: Operation.Query, resource: `*/${type}` },
    );
    const reply = await ctx.sendSync(meta, q, this.timeoutMs);
    if (isErrorMessage(reply)) throw new Error(`${reply.content.code}: ${reply.content.message}`);
    return reply.content;
  }

  private target(what: string): { ctx: ChannelContext; meta: string } {
    const ctx = this.ctx();
    const meta = ctx?.moduleNames(Group.Meta)[0];
    if (!ctx || !meta) throw new Error(`no MetaManager module to ${what}`);
    return { ctx, meta };
  }
}
