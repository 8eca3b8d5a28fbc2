import type { z } from 'zod';
import { healthOptionsSchema, resolveMeshOptions } from '../config';
import type { Backend } from './backends';
import { policyOf } from './service-policy';
import { ClientAffinity, type LbStrategy, type LbStrategyContribution } from './strategies';
import { nearest } from './topology';

/** Passive health: the first ejection cool-down, doubled per consecutive failure up to the cap. */
export type HealthOptions = z.input<typeof healthOptionsSchema>;

export interface LbStats {
  picks: number;
  ejections: number;
  /** Picks made while every backend was ejected ("try anyway"). */
  panicPicks: number;
}

/**
 * Strategy + passive health + connection accounting. A backend that refuses or resets a connect is
 * ejected for a cool-down that grows with consecutive failures; if all are ejected, all are tried
 * (Envoy's panic threshold, at 100 %).
 */
export class LoadBalancer {
  readonly stats: LbStats = { picks: 0, ejections: 0, panicPicks: 0 };
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
    return !!e && e.until > now;
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
    const healthy = this.ejected.size ? cands.filter((b) => !this.isEjected(b.key, now)) : cands;
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
        : this.strategyNamed(policy?.strategy).pick(cands, { clientIp, hashKey, active: this.active, scope });
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

  /** A connect to `b` worked: forget its failures. */
  succeed(b: Backend): void {
    if (this.ejected.size) this.ejected.delete(b.key);
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
