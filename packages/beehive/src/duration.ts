const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * A duration as Go and Istio's protobuf Duration write it (`100ms`, `1.5s`, `15m`, `24h`) in ms;
 * with `days`, `7d` too (edgectl's flags). Undefined when it is not one.
 */
export function durationMs(v: unknown, opts: { days?: boolean } = {}): number | undefined {
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v.trim()) : null;
  if (!m || (m[2] === 'd' && !opts.days)) return undefined;
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}
