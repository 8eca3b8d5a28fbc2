/**
 * The node's retry budget (Linkerd's): extra tries may be `ratio` of the requests, plus
 * `minPerSecond` — so a failing backend set cannot multiply the load on it. A token bucket: each
 * request deposits `ratio`, time adds `minPerSecond` a second up to a window's worth
 * (`minPerSecond × ttlMs`, what an idle node may spend at once), a retry takes one.
 */
export class RetryBudget {
  private tokens: number;
  private at = Date.now();
  /** Retries refused for want of budget. */
  exhausted = 0;

  constructor(
    readonly ratio = 0.2,
    readonly minPerSecond = 10,
    private readonly ttlMs = 10_000,
  ) {
    this.tokens = minPerSecond;
  }

  /** Time's tokens: up to a window's worth of minPerSecond (the requests' share is on top). */
  private refill(): void {
    const now = Date.now();
    const cap = (this.minPerSecond * this.ttlMs) / 1000;
    if (this.tokens < cap)
      this.tokens = Math.min(cap, this.tokens + (this.minPerSecond * (now - this.at)) / 1000);
    this.at = now;
  }

  deposit(): void {
    // the requests' share, kept at most a window's worth of requests at 10× the base rate
    this.tokens = Math.min(this.tokens + this.ratio, (this.minPerSecond * this.ttlMs) / 100 + 1);
  }

  /** One retry, when the budget has it. */
  withdraw(): boolean {
    this.refill();
    if (this.tokens < 1) {
      this.exhausted++;
      return false;
    }
    this.tokens -= 1;
    return true;
  }
}
