import type { z } from 'zod';
import { healthOptionsSchema, resolveMeshOptions } from '../config';
import type { Backend } from './backends';
import type { LbStrategy } from './strategies';

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
  private readonly base: number;
  private readonly max: number;

  constructor(
    readonly strategy: LbStrategy,
    opts: HealthOptions = {},
  ) {
    const o = resolveMeshOptions(healthOptionsSchema, opts, 'lb');
    this.base = o.baseEjectMs;
    this.max = o.maxEjectMs;
  }

  isEjected(key: string, now = Date.now()): boolean {
    const e = this.ejected.get(key);
    return !!e && e.until > now;
  }

  /** Pick among `backends` minus `exclude` (already failed for this request); undefined if none. */
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
    this.stats.picks++;
    return cands.length === 1
      ? cands[0]
      : this.strategy.pick(cands, { clientIp, hashKey, active: this.active, scope });
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
