import {
  ChannelContext,
  ContextClosedError,
  MailboxFullError,
  newMessage,
  newResponse,
  Operation,
  SyncTimeoutError,
  UnknownGroupError,
  UnknownModuleError,
  type Message,
} from '../src';
import { until } from '@edgecore/test-support';

function ctxWith(...mods: [string, string][]): ChannelContext {
  const ctx = new ChannelContext({ mailboxSize: 8 });
  for (const [n, g] of mods) ctx.addModule(n, g);
  return ctx;
}

/** A responder that answers every sync request on `module` with its content echoed. */
async function echo(
  ctx: ChannelContext,
  module: string,
  delayFor?: (m: Message<unknown>) => number,
): Promise<void> {
  for await (const m of ctx.receive(module)) {
    const d = delayFor?.(m) ?? 0;
    const reply = newResponse(m, { from: module, echo: m.content });
    if (d > 0) setTimeout(() => ctx.sendResp(reply), d);
    else ctx.sendResp(reply);
  }
}

describe('ChannelContext', () => {
  it('send → receive in order', async () => {
    const ctx = ctxWith(['a', 'user']);
    for (let i = 0; i < 5; i++) await ctx.send('a', newMessage(i));
    const got: unknown[] = [];
    for (let i = 0; i < 5; i++) got.push((await ctx.receiveOne('a')).content);
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(ctx.stats.sent).toBe(5);
  });

  it('unknown module and group are errors, not silence', async () => {
    const ctx = ctxWith(['a', 'user']);
    await expect(ctx.send('nope', newMessage(1))).rejects.toBeInstanceOf(UnknownModuleError);
    await expect(ctx.send('nope', newMessage(1))).rejects.toMatchObject({ code: 'BEEHIVE_UNKNOWN_MODULE' });
    expect(() => ctx.trySend('nope', newMessage(1))).toThrow(UnknownModuleError);
    await expect(ctx.sendSync('nope', newMessage(1), 100)).rejects.toBeInstanceOf(UnknownModuleError);
    await expect(ctx.sendToGroup('nogroup', newMessage(1))).rejects.toBeInstanceOf(UnknownGroupError);
    await expect(ctx.sendToGroupSync('nogroup', newMessage(1), 10)).rejects.toMatchObject({
      code: 'BEEHIVE_UNKNOWN_GROUP',
    });
  });

  it('full mailbox: wait:false rejects with MAILBOX_FULL; default send waits for space', async () => {
    const ctx = new ChannelContext({ mailboxSize: 2 });
    ctx.addModule('a', 'user');
    await ctx.send('a', newMessage(1));
    ctx.trySend('a', newMessage(2));
    expect(() => ctx.trySend('a', newMessage(3))).toThrow(MailboxFullError);
    await expect(ctx.send('a', newMessage(3), { wait: false })).rejects.toMatchObject({
      code: 'BEEHIVE_MAILBOX_FULL',
    });
    let delivered = false;
    const p = ctx.send('a', newMessage(3)).then(() => (delivered = true));
    await new Promise((r) => setImmediate(r));
    expect(delivered).toBe(false);
    expect((await ctx.receiveOne('a')).content).toBe(1);
    await p;
    expect(delivered).toBe(true);
    expect(ctx.queued('a')).toBe(2);
  });

  it('sendSync returns the reply matched on parent_msg_id', async () => {
    const ctx = ctxWith(['caller', 'user'], ['meta', 'meta']);
    void echo(ctx, 'meta');
    const req = newMessage('hello', { source: 'caller', operation: Operation.Query });
    const reply = await ctx.sendSync('meta', req, 1000);
    expect(req.header.sync).toBe(true);
    expect(reply.header.parent_msg_id).toBe(req.header.msg_id);
    expect(reply.content).toEqual({ from: 'meta', echo: 'hello' });
    expect(ctx.pendingSync).toBe(0);
    ctx.close();
  });

  it('timeout rejects with BEEHIVE_SYNC_TIMEOUT; the late reply is dropped and counted', async () => {
    const ctx = ctxWith(['meta', 'meta']);
    void echo(ctx, 'meta', () => 80);
    const req = newMessage('slow');
    const err = await ctx.sendSync('meta', req, 20).catch((e) => e);
    expect(err).toBeInstanceOf(SyncTimeoutError);
    expect(err.code).toBe('BEEHIVE_SYNC_TIMEOUT');
    expect(ctx.stats.timeouts).toBe(1);
    // A second request must not receive the first one's late reply.
    const ctx2Reply = ctx.sendSync('meta', newMessage('second'), 1000);
    await until(() => ctx.stats.lateReplies > 0, 'the late reply');
    expect(ctx.stats.lateReplies).toBe(1);
    expect((await ctx2Reply).content).toEqual({ from: 'meta', echo: 'second' });
    ctx.close();
  });

  it('a reply with an unknown parent is counted, never delivered', () => {
    const ctx = ctxWith(['a', 'user']);
    ctx.sendResp(newMessage('x', { parentId: 'nobody' }));
    ctx.sendResp(newMessage('y'));
    expect(ctx.stats.lateReplies).toBe(2);
  });

  it('forwardSync sends under a new id and re-parents the reply to the original', async () => {
    const ctx = ctxWith(['meta', 'meta'], ['hub', 'hub']);
    let seenId = '';
    void (async () => {
      for await (const m of ctx.receive('hub')) {
        seenId = m.header.msg_id;
        ctx.sendResp(newResponse(m, 'from-cloud'));
      }
    })();
    const original = newMessage('q', { operation: 'query', resource: 'default/service/x' });
    const reply = await ctx.forwardSync('hub', original, 1000);
    expect(seenId).not.toBe(original.header.msg_id);
    expect(reply.header.parent_msg_id).toBe(original.header.msg_id);
    expect(reply.content).toBe('from-cloud');
    ctx.close();
  });

  it('sendToGroup fans out to every module of the group only', async () => {
    const ctx = ctxWith(['m1', 'mesh'], ['m2', 'mesh'], ['other', 'meta']);
    await ctx.sendToGroup('mesh', newMessage('hi'));
    expect((await ctx.receiveOne('m1')).content).toBe('hi');
    expect((await ctx.receiveOne('m2')).content).toBe('hi');
    expect(ctx.poll('other')).toBeUndefined();
    expect(ctx.moduleNames('mesh')).toEqual(['m1', 'm2']);
  });

  it('sendToGroupSync waits for one reply per module', async () => {
    const ctx = ctxWith(['m1', 'mesh'], ['m2', 'mesh']);
    void echo(ctx, 'm1');
    void echo(ctx, 'm2', () => 10);
    const replies = await ctx.sendToGroupSync('mesh', newMessage('all'), 1000);
    expect(replies.map((r) => (r.content as { from: string }).from).sort()).toEqual(['m1', 'm2']);
    ctx.close();
  });

  it('sendToGroupSync times out when a member does not answer', async () => {
    const ctx = ctxWith(['m1', 'mesh'], ['m2', 'mesh']);
    void echo(ctx, 'm1');
    await expect(ctx.sendToGroupSync('mesh', newMessage('all'), 30)).rejects.toBeInstanceOf(SyncTimeoutError);
    ctx.close();
  });

  it('closing the context fails pending sync requests and further sends', async () => {
    const ctx = ctxWith(['a', 'user']);
    const p = ctx.sendSync('a', newMessage(1), 5000);
    ctx.close();
    await expect(p).rejects.toBeInstanceOf(ContextClosedError);
    await expect(ctx.send('a', newMessage(2))).rejects.toMatchObject({ code: 'BEEHIVE_CONTEXT_CLOSED' });
    expect(() => ctx.addModule('b')).toThrow(ContextClosedError);
  });

  it('closeModule lets the receiver drain, then the iterator ends', async () => {
    const ctx = ctxWith(['a', 'user']);
    await ctx.send('a', newMessage(1));
    await ctx.send('a', newMessage(2));
    ctx.closeModule('a');
    await expect(ctx.send('a', newMessage(3))).rejects.toBeInstanceOf(ContextClosedError);
    const got: unknown[] = [];
    for await (const m of ctx.receive('a')) got.push(m.content);
    expect(got).toEqual([1, 2]);
    await expect(ctx.receiveOne('a')).rejects.toBeInstanceOf(ContextClosedError);
  });

  it('removeModule forgets the module and its group membership', async () => {
    const ctx = ctxWith(['a', 'g'], ['b', 'g']);
    ctx.removeModule('a');
    expect(ctx.hasModule('a')).toBe(false);
    expect(ctx.moduleNames('g')).toEqual(['b']);
    await expect(ctx.send('a', newMessage(1))).rejects.toBeInstanceOf(UnknownModuleError);
  });

  it('a duplicate pending msg_id is refused instead of crossing replies', async () => {
    const ctx = ctxWith(['a', 'user']);
    const m = newMessage(1);
    const p = ctx.sendSync('a', m, 1000);
    await expect(ctx.sendSync('a', { ...m }, 1000)).rejects.toMatchObject({
      code: 'BEEHIVE_INVALID_MESSAGE',
    });
    ctx.sendResp(newResponse(m, 'ok'));
    expect((await p).content).toBe('ok');
  });

  it('stress: 20,000 concurrent sendSync callers through two responders, no lost or crossed replies', async () => {
    const ctx = new ChannelContext({ mailboxSize: 64 });
    ctx.addModule('r1', 'meta');
    ctx.addModule('r2', 'meta');
    // Responders reply out of order (random small delays) to shake out matching bugs.
    const responder = async (name: string): Promise<void> => {
      for await (const m of ctx.receive(name)) {
        const reply = newResponse(m, { n: (m.content as { n: number }).n, by: name });
        if (Math.random() < 0.3) setTimeout(() => ctx.sendResp(reply), Math.floor(Math.random() * 3));
        else ctx.sendResp(reply);
      }
    };
    void responder('r1');
    void responder('r2');
    const N = 20_000;
    const calls: Promise<Message<unknown>>[] = [];
    for (let n = 0; n < N; n++) calls.push(ctx.sendSync(n % 2 ? 'r1' : 'r2', newMessage({ n }), 20_000));
    const replies = await Promise.all(calls);
    replies.forEach((r, n) => {
      expect((r.content as { n: number }).n).toBe(n);
      expect((r.content as { by: string }).by).toBe(n % 2 ? 'r1' : 'r2');
    });
    expect(ctx.stats.replies).toBe(N);
    expect(ctx.stats.lateReplies).toBe(0);
    expect(ctx.pendingSync).toBe(0);
    ctx.close();
  });
});
