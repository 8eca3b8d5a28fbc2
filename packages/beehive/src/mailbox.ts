import { ContextClosedError, MailboxFullError } from './beehive-errors';

interface Putter<T> {
  item: T;
  resolve: () => void;
  reject: (e: Error) => void;
}

const RESOLVED: Promise<void> = Promise.resolve();
const DONE: IteratorResult<never> = Object.freeze({ done: true, value: undefined }) as IteratorResult<never>;

/**
 * A bounded FIFO with async back-pressure on both ends: `put` waits for space, `next` waits for an
 * item. A ring buffer keeps the hot path allocation-free apart from the iterator result.
 * `close()` refuses new items but lets consumers drain what is queued, then ends iteration.
 */
export class Mailbox<T> {
  private readonly buf: (T | undefined)[];
  private head = 0;
  private count = 0;
  private readonly takers: ((r: IteratorResult<T>) => void)[] = [];
  private readonly putters: Putter<T>[] = [];
  private closedFlag = false;

  constructor(
    readonly owner: string,
    readonly capacity: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`mailbox capacity must be a positive integer, got ${capacity}`);
    this.buf = new Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Number of senders currently waiting for space. */
  get waitingSenders(): number {
    return this.putters.length;
  }

  /** Enqueue without waiting: false when full. Throws when closed. */
  offer(item: T): boolean {
    if (this.closedFlag) throw new ContextClosedError(`mailbox of "${this.owner}"`);
    if (this.takers.length > 0) {
      // A consumer is parked: the buffer is empty, hand over directly.
      this.takers.shift()!({ done: false, value: item });
      return true;
    }
    if (this.count === this.capacity) return false;
    this.buf[(this.head + this.count) % this.capacity] = item;
    this.count++;
    return true;
  }

  /** Enqueue, throwing MailboxFullError instead of waiting. */
  offerOrThrow(item: T): void {
    if (!this.offer(item)) throw new MailboxFullError(this.owner, this.capacity);
  }

  /** Enqueue, waiting for space (back-pressure). Rejects with ContextClosedError if closed meanwhile. */
  put(item: T): Promise<void> {
    if (this.closedFlag) return Promise.reject(new ContextClosedError(`mailbox of "${this.owner}"`));
    if (this.offer(item)) return RESOLVED;
    return new Promise<void>((resolve, reject) => this.putters.push({ item, resolve, reject }));
  }

  /** Dequeue without waiting. */
  poll(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.buf[this.head] as T;
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    if (this.putters.length > 0) {
      const p = this.putters.shift()!;
      this.buf[(this.head + this.count) % this.capacity] = p.item;
      this.count++;
      p.resolve();
    }
    return item;
  }

  /** Next item; resolves `done` once closed and drained. */
  next(): Promise<IteratorResult<T>> {
    if (this.count > 0) return Promise.resolve({ done: false, value: this.poll() as T });
    if (this.closedFlag) return Promise.resolve(DONE);
    return new Promise((resolve) => this.takers.push(resolve));
  }

  /** Stop accepting items. Queued items stay for consumers; waiting senders are rejected. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const p of this.putters.splice(0)) p.reject(new ContextClosedError(`mailbox of "${this.owner}"`));
    // Takers only park on an empty buffer, so they can be ended right away.
    for (const t of this.takers.splice(0)) t(DONE);
  }

  /** Drop everything queued (used when a module is removed for good). */
  clear(): void {
    this.buf.fill(undefined);
    this.head = 0;
    this.count = 0;
  }
}
