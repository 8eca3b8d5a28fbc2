import type { Logger } from '@edgecore/beehive';

/**
 * When EdgeHub compares digests: soon after a trigger (connect, a new digest, a quiet link), again
 * after a check that found the node not in step or failed (1 s, doubling to the periodic interval, so a
 * digest that stays wrong does not cost a resync a second), and every `intervalMs` while
 * connected (0: never periodically). One check at a time; an earlier scheduled one wins.
 */
export class CheckSchedule {
  private timer?: NodeJS.Timeout;
  private periodic?: NodeJS.Timeout;
  private retryMs = 1_000;
  private stopped = false;

  constructor(
    private readonly check: () => Promise<boolean>,
    private readonly live: () => boolean,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  /** A check after `delayMs` (an earlier one already scheduled wins). */
  soon(delayMs: number): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped || !this.live()) return;
      const again = (): void => {
        this.soon(this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, this.intervalMs || 60_000);
      };
      this.check().then(
        (ok) => {
          if (ok) this.retryMs = 1_000;
          else again();
        },
        (e) => {
          if (this.stopped) return;
          // a failed check (its read cut, a commit refused) is tried again like one out of step
          this.log.warn({ err: (e as Error).message }, 'digest check failed');
          again();
        },
      );
    }, delayMs);
  }

  startPeriodic(): void {
    this.stopped = false;
    if (!this.intervalMs || this.periodic) return;
    this.periodic = setInterval(() => this.soon(0), this.intervalMs);
    this.periodic.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.periodic);
    this.timer = this.periodic = undefined;
  }
}
