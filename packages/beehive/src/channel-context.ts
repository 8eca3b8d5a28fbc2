import { inject, injectable, optional } from 'inversify';
import { randomUUID } from 'node:crypto';
import {
  ContextClosedError,
  InvalidMessageError,
  SyncTimeoutError,
  UnknownGroupError,
  UnknownModuleError,
} from './beehive-errors';
import { Mailbox } from './mailbox';
import { BeehiveOptions, beehiveOptionsSchema, resolveOptions } from './options';
import type { Message } from './message';

export interface SendOptions {
  /** Wait for mailbox space (default true). With false, a full mailbox rejects with MailboxFullError. */
  wait?: boolean;
}

export interface ContextStats {
  /** Messages accepted into mailboxes. */
  sent: number;
  /** Replies delivered to a sendSync waiter. */
  replies: number;
  /** Replies that found no waiter (timed out or never asked): dropped, never misdelivered. */
  lateReplies: number;
  /** sendSync calls that timed out. */
  timeouts: number;
}

interface ModuleEntry {
  name: string;
  group: string;
  mailbox: Mailbox<Message<unknown>>;
}

interface Waiter {
  module: string;
  expected: number;
  replies: Message<unknown>[];
  resolve: (m: Message<unknown>[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * In-process channel context (KubeEdge `beehive/pkg/core/context` channel type): a mailbox per
 * module, group fan-out, and synchronous request/response matched on `parent_msg_id`.
 */
@injectable()
export class ChannelContext {
  readonly mailboxSize: number;
  readonly syncTimeoutMs: number;
  readonly stats: ContextStats = { sent: 0, replies: 0, lateReplies: 0, timeouts: 0 };
  private readonly modules = new Map<string, ModuleEntry>();
  private readonly groups = new Map<string, ModuleEntry[]>();
  private readonly waiters = new Map<string, Waiter>();
  private closed = false;

  constructor(@inject(BeehiveOptions) @optional() options?: BeehiveOptions) {
    const o = resolveOptions(beehiveOptionsSchema, options, 'beehive');
    this.mailboxSize = o.mailboxSize;
    this.syncTimeoutMs = o.syncTimeoutMs;
  }

  /** Register a module's mailbox. Idempotent for the same name and group. */
  addModule(name: string, group = '', opts: { mailboxSize?: number } = {}): void {
    if (this.closed) throw new ContextClosedError('context');
    const existing = this.modules.get(name);
    if (existing) {
      if (existing.group !== group)
        throw new InvalidMessageError(`module "${name}" already in group "${existing.group}"`);
      return;
    }
    const entry: ModuleEntry = {
      name,
      group,
      mailbox: new Mailbox(name, opts.mailboxSize ?? this.mailboxSize),
    };
    this.modules.set(name, entry);
    if (group) {
      const list = this.groups.get(group) ?? [];
      list.push(entry);
      this.groups.set(group, list);
    }
  }

  hasModule(name: string): boolean {
    return this.modules.has(name);
  }

  moduleNames(group?: string): string[] {
    if (group === undefined) return [...this.modules.keys()];
    return (this.groups.get(group) ?? []).map((e) => e.name);
  }

  /** Stop accepting messages for `name`; what is queued can still be received (drain). */
  closeModule(name: string): void {
    this.modules.get(name)?.mailbox.close();
  }

  /** Remove a module entirely; queued messages are discarded. */
  removeModule(name: string): void {
    const e = this.modules.get(name);
    if (!e) return;
    e.mailbox.close();
    e.mailbox.clear();
    this.modules.delete(name);
    if (e.group) {
      const list = (this.groups.get(e.group) ?? []).filter((x) => x !== e);
      if (list.length) this.groups.set(e.group, list);
      else this.groups.delete(e.group);
    }
  }

  /** Queue depth of a module's mailbox (for metrics). */
  queued(name: string): number {
    return this.entry(name).mailbox.size;
  }

  /** Deliver asynchronously; waits for mailbox space unless `{ wait: false }`. */
  send(module: string, msg: Message<unknown>, opts?: SendOptions): Promise<void> {
    let mb: Mailbox<Message<unknown>>;
    try {
      mb = this.entry(module).mailbox;
      if (opts?.wait === false) {
        mb.offerOrThrow(msg);
        this.stats.sent++;
        return Promise.resolve();
      }
    } catch (e) {
      return Promise.reject(e);
    }
    this.stats.sent++;
    return mb.put(msg);
  }

  /** Deliver without waiting; throws MailboxFullError / UnknownModuleError / ContextClosedError. */
  trySend(module: string, msg: Message<unknown>): void {
    this.entry(module).mailbox.offerOrThrow(msg);
    this.stats.sent++;
  }

  /** The module's messages as an async iterator; ends once the module is closed and drained. */
  receive(module: string): AsyncIterableIterator<Message<unknown>> {
    const mb = this.entry(module).mailbox;
    const it: AsyncIterableIterator<Message<unknown>> = {
      next: () => mb.next(),
      return: () => Promise.resolve({ done: true, value: undefined }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** One message (KubeEdge `Receive`); rejects with ContextClosedError once closed and drained. */
  async receiveOne(module: string): Promise<Message<unknown>> {
    const r = await this.entry(module).mailbox.next();
    if (r.done) throw new ContextClosedError(`mailbox of "${module}"`);
    return r.value;
  }

  /** Non-blocking receive: a queued message or undefined. */
  poll(module: string): Message<unknown> | undefined {
    return this.entry(module).mailbox.poll();
  }

  /**
   * Send and wait for the reply whose parent_msg_id equals this message's msg_id
   * (KubeEdge `SendSync`). The timeout covers waiting for mailbox space too.
   */
  async sendSync(module: string, msg: Message<unknown>, timeoutMs?: number): Promise<Message<unknown>> {
    const [reply] = await this.request([this.entry(module)], module, msg, timeoutMs ?? this.syncTimeoutMs);
    return reply;
  }

  /**
   * Forward a sync request to another module under a new msg_id and re-parent the reply to the
   * original request, so the original caller's waiter matches it.
   */
  async forwardSync(
    module: string,
    original: Message<unknown>,
    timeoutMs?: number,
  ): Promise<Message<unknown>> {
    const fwd: Message<unknown> = {
      header: { ...original.header, msg_id: randomUUID(), parent_msg_id: undefined, sync: true },
      route: { ...original.route },
      content: original.content,
    };
    const reply = await this.sendSync(module, fwd, timeoutMs);
    return { ...reply, header: { ...reply.header, parent_msg_id: original.header.msg_id } };
  }

  /** Complete a sync request. A reply nobody waits for is counted and dropped. */
  sendResp(msg: Message<unknown>): void {
    const parent = msg.header.parent_msg_id;
    const w = parent === undefined ? undefined : this.waiters.get(parent);
    if (!w) {
      this.stats.lateReplies++;
      return;
    }
    w.replies.push(msg);
    this.stats.replies++;
    if (w.replies.length >= w.expected) {
      this.waiters.delete(parent!);
      clearTimeout(w.timer);
      w.resolve(w.replies);
    }
  }

  /** Deliver to every module of `group` (a shared message object: treat it as read-only). */
  async sendToGroup(group: string, msg: Message<unknown>, opts?: SendOptions): Promise<void> {
    const list = this.groupEntries(group);
    await Promise.all(list.map((e) => this.send(e.name, msg, opts)));
  }

  /** Deliver to every module of `group` and wait for one reply from each. */
  async sendToGroupSync(
    group: string,
    msg: Message<unknown>,
    timeoutMs?: number,
  ): Promise<Message<unknown>[]> {
    return this.request(this.groupEntries(group), `group ${group}`, msg, timeoutMs ?? this.syncTimeoutMs);
  }

  /** Number of sync requests waiting for replies. */
  get pendingSync(): number {
    return this.waiters.size;
  }

  /** Close every mailbox and fail every waiting sync request. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const e of this.modules.values()) e.mailbox.close();
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      this.waiters.delete(id);
      w.reject(new ContextClosedError('context'));
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private request(
    targets: ModuleEntry[],
    label: string,
    msg: Message<unknown>,
    timeoutMs: number,
  ): Promise<Message<unknown>[]> {
    if (this.closed) return Promise.reject(new ContextClosedError('context'));
    if (!msg.header.msg_id) msg.header.msg_id = randomUUID();
    if (!msg.header.timestamp) msg.header.timestamp = Date.now();
    msg.header.sync = true;
    const id = msg.header.msg_id;
    if (this.waiters.has(id)) {
      return Promise.reject(new InvalidMessageError(`msg_id ${id} is already awaiting a reply`));
    }
    return new Promise<Message<unknown>[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.waiters.get(id) === w) {
          this.waiters.delete(id);
          this.stats.timeouts++;
          reject(new SyncTimeoutError(label, id, timeoutMs));
        }
      }, timeoutMs);
      const w: Waiter = { module: label, expected: targets.length, replies: [], resolve, reject, timer };
      this.waiters.set(id, w);
      const fail = (e: unknown): void => {
        if (this.waiters.get(id) === w) {
          this.waiters.delete(id);
          clearTimeout(timer);
          reject(e as Error);
        }
      };
      for (const t of targets) {
        try {
          const p = t.mailbox.put(msg);
          this.stats.sent++;
          p.catch(fail);
        } catch (e) {
          fail(e);
          return;
        }
      }
    });
  }

  private entry(name: string): ModuleEntry {
    const e = this.modules.get(name);
    if (!e) {
      if (this.closed) throw new ContextClosedError('context');
      throw new UnknownModuleError(name);
    }
    return e;
  }

  private groupEntries(group: string): ModuleEntry[] {
    if (this.closed) throw new ContextClosedError('context');
    const list = this.groups.get(group);
    if (!list || list.length === 0) throw new UnknownGroupError(group);
    return list;
  }
}
