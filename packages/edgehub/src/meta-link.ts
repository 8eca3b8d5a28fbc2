import {
  ChannelContext,
  Group,
  isErrorMessage,
  newMessage,
  Operation,
  type Logger,
  type Message,
} from '@edgecore/beehive';

/** EdgeHub's calls to MetaManager: commit a write from the cloud, read a type's digest or versions. */
export class MetaLink {
  constructor(
    private readonly ctx: () => ChannelContext | undefined,
    private readonly source: string,
    private readonly timeoutMs: number,
    private readonly stats: { committed: number },
    private readonly log: Logger,
  ) {}

  /** Commit a write through MetaManager; a refusal is logged (a stale one is a redelivery). */
  async commit(msg: Message<unknown>, resource: string): Promise<void> {
    const { ctx, meta } = this.target('commit to');
    msg.header.sync = false;
    const reply = await ctx.sendSync(meta, msg, this.timeoutMs);
    if (isErrorMessage(reply) && reply.content.code !== 'META_STALE_RESOURCE_VERSION') {
      this.log.warn(
        { resource, code: reply.content.code, err: reply.content.message },
        'object refused by MetaManager',
      );
    } else {
      this.stats.committed++;
    }
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
