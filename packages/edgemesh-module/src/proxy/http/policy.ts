import type { Logger } from '@edgecore/beehive';
import { UpstreamTimeoutError, type RejectReason } from '../../edgemesh-errors';
import type { Backend } from '../../lb/backends';
import type { LoadBalancer } from '../../lb/load-balancer';
import { policyOf } from '../../lb/service-policy';
import { isLocalResourceError } from '../../open-files';
import { IDEMPOTENT_METHODS } from './protocol';

/**
 * The L7 rulebook: what happens to one request between its head and its answer — which backend,
 * what a failed connect or a stale pooled connection leads to, when to retry, when to eject, and
 * the words of every answer the proxy makes itself. Both engines ask it (the JavaScript exchange
 * directly, the native engine through its per-request callback); neither states a rule of its own.
 */

/** Where a request goes: a service port's backends and the scope its LB state is kept under. */
export interface L7Route {
  backends: readonly Backend[];
  scope: string;
}

/** An answer the proxy makes itself; `close`: the client connection ends after it. */
export interface Reply {
  status: number;
  message: string;
  close: boolean;
}

/** Try the same backend again on a fresh connection (a pooled one it had closed). */
export const FRESH = Symbol('fresh connection');

/** A backend to send the request to, the same one afresh, or an answer of ours. */
export type Decision = Backend | typeof FRESH | Reply;

export const isReply = (d: Decision): d is Reply => typeof d === 'object' && 'status' in d;

/** Counters the rulebook keeps (HttpProxy's stats). */
export interface PolicyCounters {
  requests: number;
  retries: number;
  byStatus: Map<number, number>;
  byBackend: Map<string, number>;
  /** Requests refused before any backend, by reason. */
  rejected: Map<RejectReason, number>;
  /** Retries not made because the node's retry budget was spent. */
  budgetExhausted?: number;
  /** Per service port (scope): answers by status class and their latency (pick → answer). */
  services?: ServiceStats;
}

/** Latency buckets of the per-service histograms, seconds. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Answers and latency per service port (`<ns>/<svc>:<port>/<proto>`), kept for /metrics. */
export class ServiceStats {
  readonly byScope = new Map<string, { classes: number[]; buckets: number[]; sum: number; count: number }>();

  observe(scope: string, status: number, seconds: number | undefined): void {
    let s = this.byScope.get(scope);
    if (!s) {
      if (this.byScope.size >= 50_000) return; // bounded: one entry per service port
      this.byScope.set(
        scope,
        (s = { classes: [0, 0, 0, 0, 0], buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 }),
      );
    }
    const c = Math.floor(status / 100) - 1;
    if (c >= 0 && c < 5) s.classes[c]++;
    if (seconds === undefined) return;
    s.sum += seconds;
    s.count++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) if (seconds <= LATENCY_BUCKETS[i]) s.buckets[i]++;
  }
}

/** Why an upstream gave no answer: it closed the connection, or reset it. */
export type StaleReason = 'closed' | 'reset';
const STALE_WORDS: Record<StaleReason, string> = {
  closed: 'closed the connection',
  reset: 'reset the connection',
};

/** What the proxy answers when a request ends in its hands, not a backend's. */
export const failures = {
  noBackend: (scope: string): Reply => ({ status: 503, message: `no backend for ${scope}`, close: false }),
  allFailed: (scope: string, last: string): Reply => ({
    status: 502,
    message: `every backend of ${scope} failed (last: ${last})`,
    close: false,
  }),
  connect: (b: Backend, reason: string): Reply => ({
    status: 502,
    message: `upstream ${b.key}: ${reason}`,
    close: false,
  }),
  /** The node could not open a socket for the connect (EMFILE, ENFILE, ENOBUFS, ENOMEM). */
  local: (b: Backend, reason: string): Reply => ({
    status: 503,
    message: `no socket for a connection to ${b.key}: ${reason} (this node is out of descriptors or memory)`,
    close: false,
  }),
  closed: (b: Backend, why: StaleReason): Reply => ({
    status: 502,
    message: `upstream ${b.key} ${STALE_WORDS[why]}`,
    close: true,
  }),
  /** 502 at once, as nginx: no retry, no ejection (the connect worked). */
  malformed: (b: Backend): Reply => ({
    status: 502,
    message: `upstream ${b.key} sent a malformed response head`,
    close: true,
  }),
  timeout: (b: Backend, ms: number): Reply => ({
    status: 504,
    message: new UpstreamTimeoutError(b.key, ms).message,
    close: true,
  }),
  headTimeout: (ms: number): Reply => ({
    status: 408,
    message: `request head not complete in ${ms} ms`,
    close: true,
  }),
  badBody: (why = 'bad chunk in the request body'): Reply => ({ status: 400, message: why, close: true }),
  notAnIp: (b: Backend): Reply => ({
    status: 502,
    message: `upstream ${b.key}: not an IP address`,
    close: false,
  }),
};

const IDEMPOTENT = new Set<string>(IDEMPOTENT_METHODS);
const NO_BACKENDS: readonly Backend[] = [];

/** RFC 9110 §9.2.2: a request that may be sent again after a failure. */
export function idempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/**
 * One request's course through the backends (one object per client connection, reset per
 * request): pick, connect failure → eject and one retry for an idempotent request, a stale pooled
 * connection → the same backend on a fresh connection once, then as a failure.
 */
export class RequestPolicy {
  private route?: L7Route;
  private ip = '';
  private hashKey?: string;
  private idempotent = false;
  /** Extra tries this request has had. */
  private retried = 0;
  private freshRetried = false;
  private lastFailure = '';
  private readonly tried = new Set<string>();
  /** When the backend of this request was picked (performance.now()). */
  private pickedAt = 0;

  constructor(
    private readonly lb: LoadBalancer,
    private readonly counters: PolicyCounters,
    private readonly log: Logger,
  ) {}

  /**
   * A new request: its route (or the resolver's refusal), its client and its method. A request
   * refused for what it is (a `reason`) is counted by it, and its connection ends after the answer
   * unless the refusal says otherwise (as nginx closes after a 400): what follows it is not trusted
   * to be the next request.
   */
  begin(
    route: L7Route | (Omit<Reply, 'close'> & { close?: boolean; reason?: RejectReason }),
    ip: string,
    hashKey: string | undefined,
    isIdempotent: boolean,
  ): Decision {
    this.counters.requests++;
    if (this.tried.size) this.tried.clear();
    this.retried = 0;
    this.freshRetried = false;
    this.lb.retryBudget.deposit();
    this.lastFailure = '';
    this.ip = ip;
    this.hashKey = hashKey;
    this.idempotent = isIdempotent;
    if ('status' in route) {
      if (route.reason) this.noteRejected(route.reason);
      const close = route.close ?? route.reason !== undefined;
      return this.reply({ status: route.status, message: route.message, close });
    }
    this.route = route;
    return this.pick();
  }

  /**
   * The connect to `b` failed (`reason`: an errno name or `timeout`): eject it, and one retry for
   * an idempotent request — or for any request whose sender still holds all of it (`replayable`:
   * nothing reached `b`, so it goes to another backend, as nginx's `proxy_next_upstream error`).
   */
  connectFailed(b: Backend, reason: string, replayable = false): Decision {
    if (isLocalResourceError(reason)) {
      // this node had no socket for it: `b` is not at fault and another backend would fare no
      // better — no ejection, no retry; 503, as for any overload of the node's own
      this.lb.release(b);
      this.lastFailure = `${b.key} ${reason}`;
      this.log.debug({ backend: b.key, reason }, 'no socket for a backend connect');
      return this.reply(failures.local(b, reason));
    }
    this.eject(b, `${b.key} ${reason}`);
    this.log.debug({ backend: b.key, reason }, 'backend connect failed');
    if (this.retry(replayable)) return this.pick();
    return this.reply(failures.connect(b, reason));
  }

  /**
   * `b` refused the request before processing it (HTTP/2 REFUSED_STREAM, or a GOAWAY that did not
   * cover it: RFC 9113 §8.7): it may go to another backend whatever its method, when its sender
   * still holds all of it. Not a health failure (a backend at its stream limit, or draining).
   */
  refused(b: Backend, replayable: boolean): Decision {
    this.lb.release(b);
    this.tried.add(b.key);
    this.lastFailure = `${b.key} refused the request`;
    if (replayable) {
      this.counters.retries++;
      return this.pick();
    }
    return this.reply(failures.allFailed(this.route?.scope ?? '', this.lastFailure));
  }

  /**
   * `b` closed the connection before any response byte. `replayable`: nothing of the request body
   * and nothing to the client was sent, so the request can go again.
   */
  stale(b: Backend, reused: boolean, replayable: boolean, why: StaleReason = 'closed'): Decision {
    this.lb.release(b);
    if (replayable && reused && !this.freshRetried) {
      // a pooled connection the upstream had closed: nothing was answered, try a fresh one
      this.freshRetried = true;
      this.lb.acquire(b);
      return FRESH;
    }
    if (replayable) {
      this.eject(b, `${b.key} ${STALE_WORDS[why]}`, false);
      if (this.retry()) return this.pick();
    }
    return this.reply(failures.closed(b, why));
  }

  /**
   * `b` answered `status` (or gRPC UNAVAILABLE, `grpcUnavailable`) before any of it reached the
   * client, and the sender still holds the whole request: another backend when the service retries
   * on that answer (`edgecore.io/retry-on`) and the budget allows; undefined: relay the answer.
   * The answer counts for outlier detection either way.
   */
  answeredBadly(
    b: Backend,
    status: number,
    grpcUnavailable: boolean,
    replayable: boolean,
  ): Decision | undefined {
    const on = policyOf(this.route?.backends ?? NO_BACKENDS)?.retries?.on;
    const hit = grpcUnavailable ? on?.has('unavailable') : on?.has(String(status));
    const others = this.route?.backends.some((x) => x.key !== b.key && !this.tried.has(x.key));
    if (!hit || !replayable || !others) return undefined;
    if (!this.retry(true)) return undefined;
    this.lb.report(this.route!.backends, b, grpcUnavailable ? 503 : status);
    this.lb.release(b);
    this.tried.add(b.key);
    this.lastFailure = `${b.key} answered ${grpcUnavailable ? 'UNAVAILABLE' : status}`;
    return this.pick();
  }

  /**
   * The exchange with `b` ended: `status` relayed to the client (0: aborted), `ms` after the pick
   * (the native engine says, and its request's route; otherwise measured from this request's
   * pick). Feeds the latency the latency-aware strategy reads, outlier detection and the
   * per-service stats.
   */
  done(b: Backend | undefined, status: number, ms?: number, route: L7Route | undefined = this.route): void {
    if (b) this.release(b, status > 0);
    if (status <= 0) return;
    this.count(status, b);
    const elapsed = ms ?? (this.pickedAt ? performance.now() - this.pickedAt : undefined);
    if (b && elapsed !== undefined) this.lb.observe(b, elapsed);
    if (b && route) {
      this.lb.report(route.backends, b, status);
      this.counters.services?.observe(
        route.scope,
        status,
        elapsed === undefined ? undefined : elapsed / 1000,
      );
    }
  }

  /** `b` is no longer busy with this request; `ok`: it answered (its failures are forgotten). */
  release(b: Backend, ok: boolean): void {
    this.lb.release(b);
    if (ok) this.lb.succeed(b);
  }

  /** An answer of ours that ends the exchange with `b` (which keeps no connection of it). */
  fail(b: Backend | undefined, r: Reply): Reply {
    if (b) this.lb.release(b);
    return this.reply(r, b);
  }

  /** An answer of ours, counted. */
  reply(r: Reply, b?: Backend): Reply {
    this.count(r.status, b);
    return r;
  }

  private pick(): Decision {
    const route = this.route!;
    const b = this.lb.pick(route.backends, route.scope, this.ip, this.hashKey, this.tried);
    if (!b)
      return this.reply(
        route.backends.length === 0
          ? failures.noBackend(route.scope)
          : failures.allFailed(route.scope, this.lastFailure),
      );
    this.lb.acquire(b);
    this.pickedAt = performance.now();
    return b;
  }

  private eject(b: Backend, why: string, release = true): void {
    if (release) this.lb.release(b);
    this.lb.fail(b);
    this.tried.add(b.key);
    this.lastFailure = why;
  }

  /**
   * Whether this request goes to another backend: it may be sent again (idempotent, held whole,
   * or its service allows any method), it has tries left (its service's `retries`, one by
   * default), and the node's retry budget has room (extra tries ≤ a share of live requests).
   */
  private retry(replayable = false): boolean {
    const r = policyOf(this.route?.backends ?? NO_BACKENDS)?.retries;
    if (!(this.idempotent || replayable || r?.nonIdempotent)) return false;
    if (this.retried >= (r?.attempts ?? 1)) return false;
    if (!this.lb.retryBudget.withdraw()) {
      this.counters.budgetExhausted = (this.counters.budgetExhausted ?? 0) + 1;
      return false;
    }
    this.retried++;
    this.counters.retries++;
    return true;
  }

  /** A request refused before any backend (its head, or its body): counted by status and reason. */
  reject(e: { status: number; reason: RejectReason }): void {
    this.count(e.status);
    this.noteRejected(e.reason);
  }

  /** A refusal's reason, counted (its status is counted where it is answered). */
  noteRejected(reason: RejectReason): void {
    this.counters.rejected.set(reason, (this.counters.rejected.get(reason) ?? 0) + 1);
  }

  /** A status relayed or answered, counted (per backend when one answered). */
  count(status: number, b?: Backend): void {
    const c = this.counters;
    c.byStatus.set(status, (c.byStatus.get(status) ?? 0) + 1);
    if (b) c.byBackend.set(b.key, (c.byBackend.get(b.key) ?? 0) + 1);
  }
}
