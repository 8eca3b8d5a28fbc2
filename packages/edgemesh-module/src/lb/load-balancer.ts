import type { z } from 'zod/v3';
import { healthOptionsSchema, resolveMeshOptions } from '../config';
import type { Backend } from './backends';
import { RetryBudget } from './retry-budget';
import { policyOf } from './service-policy';
import { ClientAffinity, type LbStrategy, type LbStrategyContribution } from './strategies';
import { nearest } from './topology';

/** Passive health: the first ejection cool-down, doubled per consecutive failure up to the cap. */
export type HealthOptions = z.input<typeof healthOptionsSchema>;

export interface LbStats {
  picks: number;
  /** Ejections by passive health (failed connects) and by outlier detection (answers). */
  ejections: number;
  /** Of those, by outlier detection. */
  outlierEjections: number;
  /** Outlier ejections not made because maxEjectionPercent of the service's backends were out. */
  outlierCapped: number;
  /** Picks made while every backend was ejected ("try anyway"). */
  panicPicks: number;
}

/**
 * Strategy + passive health + connection accounting. A backend that refuses or resets a connect is
 * ejected for a cool-down that grows with consecutive failures; if all are ejected, all are tried
 * (Envoy's panic threshold, at 100 %).
 */
export class LoadBalancer {
  readonly stats: LbStats = { picks: 0, ejections: 0, outlierEjections: 0, outlierCapped: 0, panicPicks: 0 };
  /** Peak-EWMA latency per backend key, ms, and when it was last updated. */
  readonly latency = new Map<string, number>();
  private readonly latencyAt = new Map<string, number>();
  /** Consecutive 5xx / gateway errors per backend key (outlier detection). */
  private readonly errors = new Map<string, { c5: number; gw: number; ejections: number }>();
  /** Extra tries of every request of the node (the rulebook asks before each retry). */
  readonly retryBudget: RetryBudget;
  /** Active health checks: a backend failing them is passed over (set by EdgeMesh). */
  health?: { isUnhealthy(key: string): boolean; readonly unhealthyCount: number };
  readonly active = new Map<string, number>();
  private readonly ejected = new Map<string, { until: number; failures: number }>();
  /** `sessionAffinity: ClientIP` of the services that have it. */
  private readonly affinity = new ClientAffinity();
  /** Strategies services name (created at first use, one per name: their state is per scope). */
  private readonly byName = new Map<string, LbStrategy>();
  private readonly base: number;
  private readonly max: number;

  constructor(
    readonly strategy: LbStrategy,
    opts: HealthOptions = {},
    /** What a service's own policy may name (the node's strategy is always one). */
    private readonly contributions: readonly LbStrategyContribution[] = [],
  ) {
    const o = resolveMeshOptions(healthOptionsSchema, opts, 'lb');
    this.base = o.baseEjectMs;
    this.max = o.maxEjectMs;
    this.retryBudget = new RetryBudget(o.retryBudgetPercent / 100, o.retryBudgetMinPerSecond);
    this.byName.set(strategy.name, strategy);
  }

  /** The strategy names a service may pick. */
  get strategyNames(): string[] {
    return [...new Set([this.strategy.name, ...this.contributions.map((c) => c.name)])];
  }

  private strategyNamed(name: string | undefined): LbStrategy {
    if (!name) return this.strategy;
    let s = this.byName.get(name);
    if (!s) {
      const c = this.contributions.find((x) => x.name === name);
      if (!c) return this.strategy;
      this.byName.set(name, (s = c.create()));
    }
    return s;
  }

  isEjected(key: string, now = Date.now()): boolean {
    const e = this.ejected.get(key);
    return (!!e && e.until > now) || !!this.health?.isUnhealthy(key);
  }

  /** The peak-EWMA latency of a backend now: decayed since its last answer (τ = 10 s). */
  readonly latencyNow = (key: string): number | undefined => {
    const v = this.latency.get(key);
    if (v === undefined) return undefined;
    return v * Math.exp(-(Date.now() - (this.latencyAt.get(key) ?? 0)) / 10_000);
  };

  /** A request to `b` took `ms` from pick to its answer: its peak-EWMA latency (τ = 10 s). */
  observe(b: Backend, ms: number): void {
    const now = Date.now();
    const prev = this.latency.get(b.key);
    if (prev === undefined || ms > prev) this.latency.set(b.key, ms);
    else {
      const w = Math.exp(-(now - (this.latencyAt.get(b.key) ?? now)) / 10_000);
      this.latency.set(b.key, prev * w + ms * (1 - w));
    }
    this.latencyAt.set(b.key, now);
    if (this.latency.size > 100_000) {
      this.latency.clear();
      this.latencyAt.clear();
    }
  }

  /**
   * `b`, one of `backends`, answered `status`: outlier detection, when the service has it — a
   * run of 5xx (or of 502/503/504) ejects it for its base time × its ejections so far, unless
   * maxEjectionPercent of the service's backends (at least one) are out already.
   */
  report(backends: readonly Backend[], b: Backend, status: number): void {
    const o = policyOf(backends)?.outlier;
    if (!o) return;
    let e = this.errors.get(b.key);
    if (status < 500) {
      if (e) e.c5 = e.gw = 0;
      return;
    }
    if (!e) this.errors.set(b.key, (e = { c5: 0, gw: 0, ejections: 0 }));
    e.c5++;
    if (status === 502 || status === 503 || status === 504) e.gw++;
    const hit =
      (o.consecutive5xx && e.c5 >= o.consecutive5xx) ||
      (o.consecutiveGateway && e.gw >= o.consecutiveGateway);
    if (!hit) return;
    e.c5 = e.gw = 0;
    const now = Date.now();
    let out = 0;
    for (const x of backends) if (x.key !== b.key && this.isEjected(x.key, now)) out++;
    const allowed = Math.max(1, Math.floor((backends.length * o.maxEjectionPercent) / 100));
    if (out >= allowed) {
      this.stats.outlierCapped++;
      return;
    }
    e.ejections++;
    const ms = Math.min(o.baseEjectionMs * e.ejections, Math.max(this.max, o.baseEjectionMs) * 10);
    const prev = this.ejected.get(b.key);
    this.ejected.set(b.key, { until: now + ms, failures: prev?.failures ?? 0 });
    this.stats.ejections++;
    this.stats.outlierEjections++;
  }

  /**
   * Pick among `backends` minus `exclude` (already failed for this request); undefined if none.
   * Healthy ones first (all when none is), of those the nearest tier (topology-aware services),
   * then the client's affinity or the service's strategy (the node's when it names none).
   */
  pick(
    backends: readonly Backend[],
    scope: string,
    clientIp: string,
    hashKey?: string,
    exclude?: ReadonlySet<string>,
  ): Backend | undefined {
    let cands = exclude?.size ? backends.filter((b) => !exclude.has(b.key)) : backends;
    if (cands.length === 0) return undefined;
    const now = Date.now();
    const healthy =
      this.ejected.size || this.health?.unhealthyCount
        ? cands.filter((b) => !this.isEjected(b.key, now))
        : cands;
    if (healthy.length) cands = healthy;
    else this.stats.panicPicks++;
    cands = nearest(cands);
    this.stats.picks++;
    const policy = policyOf(backends);
    const affinityMs = policy?.affinityMs;
    const id = affinityMs ? `${scope}|${clientIp}` : '';
    const hit = affinityMs ? this.affinity.get(id, cands, affinityMs, now) : undefined;
    if (hit) return hit;
    const chosen =
      cands.length === 1
        ? cands[0]
        : this.strategyNamed(policy?.strategy).pick(cands, {
            clientIp,
            hashKey,
            active: this.active,
            scope,
            latency: this.latencyNow,
          });
    if (affinityMs) this.affinity.set(id, chosen, affinityMs, now);
    return chosen;
  }

  /** A connect to `b` was refused or reset: eject it. */
  fail(b: Backend): void {
    const prev = this.ejected.get(b.key);
    const failures = (prev?.failures ?? 0) + 1;
    const ms = Math.min(this.base * 2 ** (failures - 1), this.max);
    this.ejected.set(b.key, { until: Date.now() + ms, failures });
    this.stats.ejections++;
  }

  /** A connect to `b` worked: forget its failures (an outlier ejection runs its time). */
  succeed(b: Backend): void {
    if (!this.ejected.size) return;
    const e = this.ejected.get(b.key);
    if (e && (e.failures > 0 || e.until <= Date.now())) this.ejected.delete(b.key);
  }

  acquire(b: Backend): void {
    this.active.set(b.key, (this.active.get(b.key) ?? 0) + 1);
  }

  release(b: Backend): void {
    const n = (this.active.get(b.key) ?? 1) - 1;
    if (n > 0) this.active.set(b.key, n);
    else this.active.delete(b.key);
  }
}
