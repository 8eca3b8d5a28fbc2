import type { Logger } from '@edgecore/beehive';
import { connect as h2connect } from 'node:http2';
import type { Pool } from 'undici';
import type { Service } from '../catalog/types';
import type { Backend } from '../lb/backends';
import type { BackendDialer } from '../tunnel';
import { isLocalFailure } from '../open-files';

/**
 * Active health checks per service (annotations), so a node knows a backend is dead before a
 * request finds out — and keeps knowing while the cloud is away:
 * - `edgecore.io/health-check`: `tcp` (a connect), `http` (a GET of `edgecore.io/health-check-path`,
 *   default `/`, 2xx/3xx healthy; undici's Pool per backend) or `grpc`
 *   (`grpc.health.v1.Health/Check`, SERVING healthy);
 * - `edgecore.io/health-check-interval-seconds` (5), `…-timeout-seconds` (1),
 *   `…-healthy-threshold` (2 passes bring it back), `…-unhealthy-threshold` (3 failures take it
 *   out); each check is jittered by up to a tenth of the interval.
 * A backend failing its checks leaves the load balancer (`isUnhealthy`) before a request reaches
 * it, and comes back after it passes. A node runs at most `maxChecksPerSecond` checks a second
 * (a check over the budget waits for the next second). Checks go through the BackendDialer, so a
 * backend on another site is checked through the tunnel.
 */
export const HEALTH_CHECK_ANNOTATION = 'edgecore.io/health-check';
const A = {
  path: 'edgecore.io/health-check-path',
  interval: 'edgecore.io/health-check-interval-seconds',
  timeout: 'edgecore.io/health-check-timeout-seconds',
  healthy: 'edgecore.io/health-check-healthy-threshold',
  unhealthy: 'edgecore.io/health-check-unhealthy-threshold',
};

export interface HealthCheckSpec {
  kind: 'tcp' | 'http' | 'grpc';
  path: string;
  intervalMs: number;
  timeoutMs: number;
  healthy: number;
  unhealthy: number;
}

/** A service's check, or undefined (none, or a kind it does not know: a warning names it). */
export function healthCheckOf(
  svc: Service,
  warn: (field: string, value: string) => void,
): HealthCheckSpec | undefined {
  const a = svc.metadata.annotations ?? {};
  const kind = a[HEALTH_CHECK_ANNOTATION];
  if (kind === undefined) return undefined;
  if (kind !== 'tcp' && kind !== 'http' && kind !== 'grpc') {
    warn(HEALTH_CHECK_ANNOTATION, kind);
    return undefined;
  }
  const num = (k: string, def: number, min: number, max: number): number => {
    const v = a[k];
    if (v === undefined) return def;
    const n = Number(v);
    if (Number.isFinite(n) && n >= min && n <= max) return n;
    warn(k, v);
    return def;
  };
  const path = a[A.path] ?? '/';
  return {
    kind,
    path: path.startsWith('/') ? path : `/${path}`,
    intervalMs: num(A.interval, 5, 0.05, 3600) * 1000,
    timeoutMs: num(A.timeout, 1, 0.01, 60) * 1000,
    healthy: num(A.healthy, 2, 1, 100),
    unhealthy: num(A.unhealthy, 3, 1, 100),
  };
}

interface Target {
  backend: Backend;
  spec: HealthCheckSpec;
  sig: string;
  healthy: boolean;
  passes: number;
  fails: number;
  lastError?: string;
  timer?: NodeJS.Timeout;
  pool?: Pool;
  checks: number;
}

export interface ActiveHealthStats {
  checks: number;
  failures: number;
  /** Checks that waited for the next second (the node's budget). */
  deferred: number;
  /** Checks this node could not start (no socket: EMFILE…): no verdict, not in `failures`. */
  localFailures: number;
}

/** The node's active checks: targets per backend key, synced from the services that ask for them. */
export class ActiveHealth {
  readonly stats: ActiveHealthStats = { checks: 0, failures: 0, deferred: 0, localFailures: 0 };
  private readonly targets = new Map<string, Target>();
  /** `<ns>/<svc>` → the backend keys its checks cover. */
  private readonly byService = new Map<string, Set<string>>();
  private unhealthy = 0;
  private second = 0;
  private used = 0;
  private closed = false;

  constructor(
    private readonly dialer: Pick<BackendDialer, 'connect'>,
    private readonly log: Logger,
    private readonly maxChecksPerSecond = 100,
  ) {}

  get unhealthyCount(): number {
    return this.unhealthy;
  }

  /** Backends under checks. */
  get size(): number {
    return this.targets.size;
  }

  isUnhealthy(key: string): boolean {
    return this.unhealthy > 0 && this.targets.get(key)?.healthy === false;
  }

  /** Health rows for listings: backend key → state. */
  state(key: string): { healthy: boolean; lastError?: string; checks: number } | undefined {
    const t = this.targets.get(key);
    return t && { healthy: t.healthy, lastError: t.lastError, checks: t.checks };
  }

  /** The checks of service `key`: these backends with this spec (none: its checks stop). */
  sync(key: string, spec: HealthCheckSpec | undefined, backends: readonly Backend[]): void {
    const want = new Set<string>();
    if (spec) {
      const sig = JSON.stringify(spec);
      for (const b of backends) {
        want.add(b.key);
        const t = this.targets.get(b.key);
        if (t && t.sig === sig) continue;
        if (t) this.drop(t);
        this.start({ backend: b, spec, sig, healthy: true, passes: 0, fails: 0, checks: 0 });
      }
    }
    for (const k of this.byService.get(key) ?? []) {
      if (want.has(k)) continue;
      // still wanted by another service? (the same backend behind two services)
      let other = false;
      for (const [s, keys] of this.byService) if (s !== key && keys.has(k)) other = true;
      const t = this.targets.get(k);
      if (!other && t) this.drop(t);
    }
    if (want.size) this.byService.set(key, want);
    else this.byService.delete(key);
  }

  close(): void {
    this.closed = true;
    for (const t of this.targets.values()) this.drop(t);
  }

  private start(t: Target): void {
    this.targets.set(t.backend.key, t);
    this.schedule(t, Math.random() * Math.min(t.spec.intervalMs, 1000));
  }

  private drop(t: Target): void {
    clearTimeout(t.timer);
    void t.pool?.destroy().catch(() => undefined);
    if (!t.healthy) this.unhealthy--;
    if (this.targets.get(t.backend.key) === t) this.targets.delete(t.backend.key);
  }

  private schedule(t: Target, ms: number): void {
    if (this.closed) return;
    t.timer = setTimeout(() => void this.run(t), ms);
    t.timer.unref();
  }

  private async run(t: Target): Promise<void> {
    if (this.targets.get(t.backend.key) !== t) return;
    // the node's budget: at most maxChecksPerSecond
    const sec = Math.floor(Date.now() / 1000);
    if (sec !== this.second) {
      this.second = sec;
      this.used = 0;
    }
    if (++this.used > this.maxChecksPerSecond) {
      this.stats.deferred++;
      return this.schedule(t, 1000 - (Date.now() % 1000) + Math.random() * 100);
    }
    this.stats.checks++;
    t.checks++;
    let error: string | undefined;
    let local = false;
    try {
      await this.check(t);
    } catch (e) {
      error = (e as Error).message || String(e);
      local = isLocalFailure(e);
    }
    if (this.targets.get(t.backend.key) !== t) return;
    // a check this node could not even start (no socket) is no verdict on the backend
    if (local) this.stats.localFailures++;
    else this.record(t, error);
    const jitter = t.spec.intervalMs * 0.1 * Math.random();
    this.schedule(t, t.spec.intervalMs + jitter);
  }

  private record(t: Target, error: string | undefined): void {
    if (error === undefined) {
      t.fails = 0;
      t.lastError = undefined;
      if (!t.healthy && ++t.passes >= t.spec.healthy) {
        t.healthy = true;
        this.unhealthy--;
        this.log.info(
          { backend: t.backend.key, check: t.spec.kind },
          'backend passes its health checks again',
        );
      }
      return;
    }
    this.stats.failures++;
    t.passes = 0;
    t.lastError = error;
    if (t.healthy && ++t.fails >= t.spec.unhealthy) {
      t.healthy = false;
      this.unhealthy++;
      this.log.warn(
        { backend: t.backend.key, check: t.spec.kind, err: error },
        'backend fails its health checks: out of the load balancer',
      );
    }
  }

  private async check(t: Target): Promise<void> {
    const { spec, backend: b } = t;
    if (spec.kind === 'tcp') {
      const s = await this.dialer.connect(b, spec.timeoutMs);
      s.destroy();
      return;
    }
    if (spec.kind === 'http') {
      // undici loads with the first HTTP check: a node without one keeps its 6 MiB
      t.pool ??= new (await import('undici')).Pool(`http://${b.host}:${b.port}`, {
        connections: 1,
        connect: (_opts, cb) => {
          this.dialer.connect(b, spec.timeoutMs).then(
            (s) => cb(null, s),
            (e: Error) => cb(e, null),
          );
        },
      });
      const r = await t.pool.request({
        path: spec.path,
        method: 'GET',
        headersTimeout: spec.timeoutMs,
        bodyTimeout: spec.timeoutMs,
        headers: { 'user-agent': 'edgemesh-health' },
      });
      await r.body.dump();
      if (r.statusCode >= 400) throw new Error(`HTTP ${r.statusCode}`);
      return;
    }
    return this.grpcCheck(b, spec.timeoutMs);
  }

  /** `grpc.health.v1.Health/Check` with an empty service name: SERVING (1) or an error. */
  private async grpcCheck(b: Backend, timeoutMs: number): Promise<void> {
    const sock = await this.dialer.connect(b, timeoutMs);
    const session = h2connect(`http://${b.host}:${b.port}`, { createConnection: () => sock });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
        session.on('error', (e) => (clearTimeout(timer), reject(e)));
        const req = session.request({
          ':method': 'POST',
          ':path': '/grpc.health.v1.Health/Check',
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        const chunks: Buffer[] = [];
        let grpcStatus: string | undefined;
        req.on('response', (h) => (grpcStatus = h['grpc-status'] as string | undefined));
        req.on('trailers', (h) => (grpcStatus = (h['grpc-status'] as string | undefined) ?? grpcStatus));
        req.on('data', (d: Buffer) => chunks.push(d));
        req.on('error', (e) => (clearTimeout(timer), reject(e)));
        req.on('close', () => {
          clearTimeout(timer);
          const body = Buffer.concat(chunks);
          // a gRPC frame: flag, length, then HealthCheckResponse { status = 1 (SERVING) }: 08 01
          if (grpcStatus !== '0') return reject(new Error(`grpc-status ${grpcStatus ?? 'missing'}`));
          if (body.length >= 7 && body[5] === 0x08 && body[6] === 0x01) return resolve();
          reject(new Error(`not SERVING (${body.subarray(5).toString('hex') || 'UNKNOWN'})`));
        });
        req.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    } finally {
      session.close();
      if (!session.destroyed) setTimeout(() => session.destroy(), 1000).unref();
    }
  }
}
