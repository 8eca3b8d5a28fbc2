import { createHash } from 'node:crypto';
import { UnknownLbStrategyError } from '../edgemesh-errors';
import type { Backend } from './backends';

/** What a strategy may look at for one pick. */
export interface PickContext {
  clientIp: string;
  /** ConsistentHash key from an HTTP header (when configured and present). */
  hashKey?: string;
  /** Active connections per backend key (LeastConnections). */
  active: ReadonlyMap<string, number>;
  /** Service port identity, so per-service state (round-robin index, sessions) stays apart. */
  scope: string;
  /** Peak-EWMA latency of a backend key now, ms (PeakEwma); undefined: none measured yet. */
  latency?: (key: string) => number | undefined;
}

/** One LB strategy (`lbStrategy`). `backends` is never empty. */
export interface LbStrategy {
  readonly name: string;
  pick(backends: readonly Backend[], ctx: PickContext): Backend;
}

export class RoundRobin implements LbStrategy {
  readonly name = 'RoundRobin';
  private readonly next = new Map<string, number>();
  pick(b: readonly Backend[], ctx: PickContext): Backend {
    const i = this.next.get(ctx.scope) ?? 0;
    this.next.set(ctx.scope, (i + 1) % 1_000_000_007);
    return b[i % b.length];
  }
}

export class RandomStrategy implements LbStrategy {
  readonly name = 'Random';
  pick(b: readonly Backend[]): Backend {
    return b[Math.floor(Math.random() * b.length)];
  }
}

/** SessionStickiness's idle timeout: kube-proxy's default for `sessionAffinity: ClientIP` (3 h). */
export const STICKY_TIMEOUT_MS = 10_800_000;

/**
 * Remembered choices: an id (`<scope>|<client IP>`) → a backend key, kept while it comes back
 * within its timeout. Used by SessionStickiness and by a service's `sessionAffinity: ClientIP`.
 */
export class ClientAffinity {
  private readonly sessions = new Map<string, { key: string; until: number }>();

  /** The remembered backend of `id` among `b` (its timeout renewed), or undefined. */
  get(id: string, b: readonly Backend[], timeoutMs: number, now = Date.now()): Backend | undefined {
    const s = this.sessions.get(id);
    if (!s || s.until <= now) return undefined;
    const hit = b.find((x) => x.key === s.key);
    if (hit) s.until = now + timeoutMs;
    return hit;
  }

  set(id: string, chosen: Backend, timeoutMs: number, now = Date.now()): void {
    if (this.sessions.size > 100_000) this.sessions.clear();
    this.sessions.set(id, { key: chosen.key, until: now + timeoutMs });
  }
}

/** Client-IP affinity (kube-proxy `sessionAffinity: ClientIP`), expiring after `timeoutMs` idle. */
export class SessionStickiness implements LbStrategy {
  readonly name = 'SessionStickiness';
  private readonly affinity = new ClientAffinity();
  private readonly rr = new RoundRobin();
  constructor(readonly timeoutMs = STICKY_TIMEOUT_MS) {}
  pick(b: readonly Backend[], ctx: PickContext): Backend {
    const id = `${ctx.scope}|${ctx.clientIp}`;
    const hit = this.affinity.get(id, b, this.timeoutMs);
    if (hit) return hit;
    const chosen = this.rr.pick(b, ctx);
    this.affinity.set(id, chosen, this.timeoutMs);
    return chosen;
  }
}

function hash32(s: string): number {
  return createHash('md5').update(s).digest().readUInt32BE(0);
}

/**
 * A hash ring with virtual nodes: when a backend leaves, only the keys it owned move
 * (minimal remapping). Key: the configured HTTP header's value, else the client IP.
 */
export class ConsistentHash implements LbStrategy {
  readonly name = 'ConsistentHash';
  private readonly rings = new Map<string, { sig: string; points: Uint32Array; owners: string[] }>();
  constructor(readonly vnodes = 100) {}
  pick(b: readonly Backend[], ctx: PickContext): Backend {
    const sig = b.map((x) => x.key).join(',');
    let ring = this.rings.get(ctx.scope);
    if (!ring || ring.sig !== sig) {
      const pts: { h: number; k: string }[] = [];
      for (const x of b)
        for (let v = 0; v < this.vnodes; v++) pts.push({ h: hash32(`${x.key}#${v}`), k: x.key });
      pts.sort((p, q) => p.h - q.h);
      ring = { sig, points: Uint32Array.from(pts.map((p) => p.h)), owners: pts.map((p) => p.k) };
      this.rings.set(ctx.scope, ring);
    }
    const h = hash32(ctx.hashKey ?? ctx.clientIp);
    let lo = 0;
    let hi = ring.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ring.points[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    const owner = ring.owners[lo === ring.points.length ? 0 : lo];
    return b.find((x) => x.key === owner) ?? b[0];
  }
}

/** The backend with the fewest active connections; ties go round-robin. */
export class LeastConnections implements LbStrategy {
  readonly name = 'LeastConnections';
  private readonly rr = new RoundRobin();
  pick(b: readonly Backend[], ctx: PickContext): Backend {
    let min = Infinity;
    for (const x of b) min = Math.min(min, ctx.active.get(x.key) ?? 0);
    const least = b.filter((x) => (ctx.active.get(x.key) ?? 0) === min);
    return least.length === 1 ? least[0] : this.rr.pick(least, ctx);
  }
}

/**
 * Latency-aware (Linkerd's): power of two choices — two backends at random, the one whose
 * peak-EWMA latency × (active requests + 1) is lower. A backend not measured yet costs the
 * other one of the pair (it is tried, but not flooded). A slow backend's cost rises at its first
 * slow answer (the peak) and decays with time (τ = 10 s) when it is not picked, so it is probed
 * again and comes back as it recovers.
 */
export class PeakEwma implements LbStrategy {
  readonly name = 'PeakEwma';
  pick(b: readonly Backend[], ctx: PickContext): Backend {
    const lat = ctx.latency;
    const i = Math.floor(Math.random() * b.length);
    let j = Math.floor(Math.random() * (b.length - 1));
    if (j >= i) j++;
    const li = lat?.(b[i].key);
    const lj = lat?.(b[j].key);
    const worst = Math.max(1, li ?? 0, lj ?? 0);
    const ci = (li ?? worst) * ((ctx.active.get(b[i].key) ?? 0) + 1);
    const cj = (lj ?? worst) * ((ctx.active.get(b[j].key) ?? 0) + 1);
    return cj < ci ? b[j] : b[i];
  }
}

export const LB_STRATEGIES = [
  'RoundRobin',
  'Random',
  'SessionStickiness',
  'ConsistentHash',
  'LeastConnections',
  'PeakEwma',
] as const;
export type LbStrategyName = (typeof LB_STRATEGIES)[number];

/**
 * A contribution point (Theia style): each strategy a node may run under `lbStrategy`, by name.
 * EdgeMesh's container module binds the built-in ones; an embedder binds more (and names one in
 * `lbStrategy`), or rebinds the point to replace them.
 */
export const LbStrategyContribution = Symbol.for('edgecore.edgemesh.LbStrategyContribution');
export interface LbStrategyContribution {
  readonly name: string;
  create(): LbStrategy;
}

/** The built-in strategies (KubeEdge's three, plus ConsistentHash, LeastConnections and PeakEwma). */
export const BUILTIN_LB_STRATEGIES: readonly LbStrategyContribution[] = [
  { name: 'RoundRobin', create: () => new RoundRobin() },
  { name: 'Random', create: () => new RandomStrategy() },
  { name: 'SessionStickiness', create: () => new SessionStickiness() },
  { name: 'ConsistentHash', create: () => new ConsistentHash() },
  { name: 'LeastConnections', create: () => new LeastConnections() },
  { name: 'PeakEwma', create: () => new PeakEwma() },
];

/** The strategy named `name` among `from`; an unknown name is an error naming the known ones. */
export function createStrategy(
  name: string,
  from: readonly LbStrategyContribution[] = BUILTIN_LB_STRATEGIES,
): LbStrategy {
  const c = from.find((x) => x.name === name);
  if (!c)
    throw new UnknownLbStrategyError(
      name,
      from.map((x) => x.name),
    );
  return c.create();
}
