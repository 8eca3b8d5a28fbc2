import { durationMs, type Logger } from '@edgecore/beehive';
import { ruleTargets } from '../catalog/catalog';
import type { DestinationRule, Service } from '../catalog/types';
import type { Backend } from './backends';
import { STICKY_TIMEOUT_MS } from './strategies';

/**
 * A service's own load-balancing policy; the node's `lbStrategy` (and `consistentHashHeader`) for
 * what it does not say. Read, in order of precedence, from:
 *
 * 1. a DestinationRule (`networking.istio.io`) of the service's namespace named as the service or
 *    whose `spec.host` names it — standalone EdgeMesh's object: `trafficPolicy.loadBalancer.simple`
 *    ROUND_ROBIN, RANDOM, LEAST_REQUEST (LEAST_CONN) and `consistentHash.httpHeaderName` /
 *    `useSourceIp`;
 * 2. the service's annotations `edgecore.io/lb-strategy` (a strategy name) and
 *    `edgecore.io/consistent-hash-header`;
 * 3. `sessionAffinity: ClientIP` (with `sessionAffinityConfig.clientIP.timeoutSeconds`, 3 h by
 *    default) on top of whichever strategy: a client IP keeps its backend while it comes back within
 *    the timeout (the key is the IP, never IP:port).
 *
 * An unknown field or value is ignored with one warning (naming the object and the field), never
 * an error: standalone EdgeMesh crashes on an unknown policy, a node here keeps serving.
 */
export interface ServiceLbPolicy {
  /** A strategy name (built in or contributed). */
  strategy?: string;
  /** ConsistentHash key: a request header, or null for the client IP (undefined: the node's). */
  hashHeader?: string | null;
  /** Client-IP affinity, ms. */
  affinityMs?: number;
  /** Where it came from (`destinationrule/<ns>/<name>`, `service`), for listings and logs. */
  source?: string;
  /** Outlier detection (Envoy's semantics): ejection on consecutive errors answered. */
  outlier?: OutlierPolicy;
  /**
   * Retries: extra tries (default 1), whether a non-idempotent request may go again, and on which
   * answers besides a failed connect or reset (`502`, `503`, `504`, gRPC `unavailable`: HTTP/2
   * portals, where the proxy holds the request until the answer starts).
   */
  retries?: { attempts: number; nonIdempotent: boolean; on: ReadonlySet<string> };
  /** The longest a request may wait for its answer, ms (`edgecore.io/request-timeout-seconds`). */
  timeoutMs?: number;
  /**
   * TLS passed through (`appProtocol: https`): the backend chosen by the ClientHello's SNI
   * (`edgecore.io/backend-by-sni`) — exact names, and `*.suffix` patterns (one label, as a
   * certificate's wildcard), each naming an endpoint by its DNS label.
   */
  sniRoutes?: { exact: ReadonlyMap<string, string>; wildcard: ReadonlyMap<string, string> };
}

/**
 * A backend that answers `consecutive5xx` 5xx in a row (or `consecutiveGateway` 502/503/504) is
 * ejected for `baseEjectionMs` × its ejections so far (capped by the node's ejectMaxMs… ×10), never
 * more than `maxEjectionPercent` of the service's backends at once (at least one may be).
 */
export interface OutlierPolicy {
  consecutive5xx?: number;
  consecutiveGateway?: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
}

export const LB_STRATEGY_ANNOTATION = 'edgecore.io/lb-strategy';
/** Outlier detection by annotation: consecutive 5xx answers that eject a backend. */
export const OUTLIER_5XX_ANNOTATION = 'edgecore.io/outlier-consecutive-5xx';
export const MAX_EJECTION_PERCENT_ANNOTATION = 'edgecore.io/outlier-max-ejection-percent';
/** Extra tries after a failed connect or reset (0-10; 1 by default), within the node's retry budget. */
export const RETRY_ATTEMPTS_ANNOTATION = 'edgecore.io/retry-attempts';
/** `"true"`: a request of any method may go again after a failed connect (nothing reached the backend). */
export const RETRY_NON_IDEMPOTENT_ANNOTATION = 'edgecore.io/retry-non-idempotent';
/** Answers that are retried too: a comma list of 502, 503, 504, unavailable (gRPC 14). */
export const RETRY_ON_ANNOTATION = 'edgecore.io/retry-on';
export const REQUEST_TIMEOUT_ANNOTATION = 'edgecore.io/request-timeout-seconds';
/** HTTP answers a service may retry on (`edgecore.io/retry-on`). */
const RETRY_ON_STATUS = ['502', '503', '504'];
const RETRY_ON = new Set(['connect-failure', 'reset', ...RETRY_ON_STATUS, 'unavailable']);
export const HASH_HEADER_ANNOTATION = 'edgecore.io/consistent-hash-header';
/** `NAME=ENDPOINT, *.SUFFIX=ENDPOINT, …`: which endpoint a TLS client naming NAME reaches. */
export const SNI_ROUTES_ANNOTATION = 'edgecore.io/backend-by-sni';
const SNI_NAME = /^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const SIMPLE: Record<string, string> = {
  ROUND_ROBIN: 'RoundRobin',
  RANDOM: 'Random',
  LEAST_REQUEST: 'LeastConnections',
  LEAST_CONN: 'LeastConnections',
};
const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const attached = new WeakMap<readonly Backend[], ServiceLbPolicy>();

/** The policy of the service a backend list belongs to (BackendIndex attaches it). */
export function policyOf(list: readonly Backend[]): ServiceLbPolicy | undefined {
  return attached.get(list);
}

/**
 * Whether an HTTP/1 request to these backends needs an engine that holds the answer's head before
 * relaying it (the service retries on answers, `edgecore.io/retry-on` 502/503/504) or bounds the
 * wait for it by the service's own timeout: the JavaScript engine does both; the native engine
 * hands such a connection to it.
 */
export function needsHeldAnswer(list: readonly Backend[]): boolean {
  const p = attached.get(list);
  if (!p) return false;
  if (p.timeoutMs !== undefined) return true;
  const on = p.retries?.on;
  return !!on && RETRY_ON_STATUS.some((s) => on.has(s));
}

export function attachPolicy(list: readonly Backend[], p: ServiceLbPolicy | undefined): void {
  if (p) attached.set(list, p);
}

/** The backends an SNI route chose, per backend list and endpoint. */
const sniChosen = new WeakMap<readonly Backend[], Map<string, readonly Backend[]>>();

/**
 * The backends a TLS client naming `sni` may reach: the endpoint the service's
 * `edgecore.io/backend-by-sni` names for it (an exact name first, then `*.` of its parent: one
 * label, as in a certificate), none when that endpoint has no backend now (a client that named a
 * device never reaches another one); every backend for a name no route covers, or no SNI.
 */
export function backendsForSni(list: readonly Backend[], sni: string | undefined): readonly Backend[] {
  const policy = attached.get(list);
  const routes = policy?.sniRoutes;
  if (!routes || !sni) return list;
  const name = sni.toLowerCase().replace(/\.$/, '');
  const dot = name.indexOf('.');
  const endpoint = routes.exact.get(name) ?? (dot > 0 ? routes.wildcard.get(name.slice(dot + 1)) : undefined);
  if (endpoint === undefined) return list;
  // per backend list and endpoint once (a list lives until its service changes), not per connection
  let byEndpoint = sniChosen.get(list);
  if (!byEndpoint) sniChosen.set(list, (byEndpoint = new Map()));
  let chosen = byEndpoint.get(endpoint);
  if (!chosen) {
    chosen = list.filter((b) => b.endpoint === endpoint);
    attached.set(chosen, policy!); // the service's other rules (strategy, outliers) still apply
    byEndpoint.set(endpoint, chosen);
  }
  return chosen;
}

/** The ConsistentHash header of a request to these backends: the service's, else the node's. */
export function hashHeaderFor(list: readonly Backend[], nodeDefault: string | undefined): string | undefined {
  const p = attached.get(list);
  return p?.hashHeader === undefined ? nodeDefault : (p.hashHeader ?? undefined);
}

/** Reads services' policies, warning once per object version and field. */
export class ServicePolicies {
  private readonly warned = new Set<string>();

  constructor(
    /** The strategy names the node can run. */
    private readonly known: () => readonly string[],
    private readonly log?: Logger,
  ) {}

  /** The policy of `svc`, given the DestinationRules of its namespace (undefined: the node's). */
  of(svc: Service, rules: Iterable<[string, DestinationRule]>): ServiceLbPolicy | undefined {
    const ns = svc.metadata.namespace ?? 'default';
    const key = `${ns}/${svc.metadata.name}`;
    const p: ServiceLbPolicy = {};
    const a = svc.metadata.annotations ?? {};
    const named = a[LB_STRATEGY_ANNOTATION];
    if (named !== undefined) {
      if (this.known().includes(named)) {
        p.strategy = named;
        p.source = 'service';
      } else this.warn(`service/${key}`, svc.metadata, LB_STRATEGY_ANNOTATION, named);
    }
    const header = a[HASH_HEADER_ANNOTATION];
    if (header !== undefined) {
      if (HEADER.test(header)) p.hashHeader = header;
      else this.warn(`service/${key}`, svc.metadata, HASH_HEADER_ANNOTATION, header);
    }
    const ra = a[RETRY_ATTEMPTS_ANNOTATION];
    const rn = a[RETRY_NON_IDEMPOTENT_ANNOTATION];
    const ro = a[RETRY_ON_ANNOTATION];
    const on = new Set<string>();
    for (const x of (ro ?? '')
      .split(',')
      .map((v) => v.trim().toLowerCase())
      .filter(Boolean))
      if (RETRY_ON.has(x)) on.add(x);
      else this.warn(`service/${key}`, svc.metadata, RETRY_ON_ANNOTATION, x);
    const rt = a[REQUEST_TIMEOUT_ANNOTATION];
    if (rt !== undefined) {
      const sec = Number(rt);
      if (Number.isFinite(sec) && sec > 0 && sec <= 86400) p.timeoutMs = sec * 1000;
      else this.warn(`service/${key}`, svc.metadata, REQUEST_TIMEOUT_ANNOTATION, rt);
    }
    if (ra !== undefined || rn !== undefined || ro !== undefined) {
      const n = ra === undefined ? 1 : Number(ra);
      const ok = Number.isInteger(n) && n >= 0 && n <= 10;
      if (!ok) this.warn(`service/${key}`, svc.metadata, RETRY_ATTEMPTS_ANNOTATION, ra);
      if (rn !== undefined && rn !== 'true' && rn !== 'false')
        this.warn(`service/${key}`, svc.metadata, RETRY_NON_IDEMPOTENT_ANNOTATION, rn);
      p.retries = { attempts: ok ? n : 1, nonIdempotent: rn === 'true', on };
    }
    const sr = a[SNI_ROUTES_ANNOTATION];
    if (sr !== undefined) {
      const exact = new Map<string, string>();
      const wildcard = new Map<string, string>();
      for (const entry of sr
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean)) {
        const i = entry.indexOf('=');
        const name = entry.slice(0, i).trim().toLowerCase();
        const endpoint = entry.slice(i + 1).trim();
        if (i < 1 || !SNI_NAME.test(name) || name.length > 253 || !DNS_LABEL.test(endpoint)) {
          this.warn(`service/${key}`, svc.metadata, SNI_ROUTES_ANNOTATION, entry);
          continue;
        }
        if (name.startsWith('*.')) wildcard.set(name.slice(2), endpoint);
        else exact.set(name, endpoint);
      }
      if (exact.size || wildcard.size) p.sniRoutes = { exact, wildcard };
    }
    const o5 = a[OUTLIER_5XX_ANNOTATION];
    if (o5 !== undefined) {
      const n = Number(o5);
      if (Number.isInteger(n) && n >= 1 && n <= 1000) {
        const pct = Number(a[MAX_EJECTION_PERCENT_ANNOTATION] ?? 10);
        p.outlier = {
          consecutive5xx: n,
          baseEjectionMs: 30_000,
          maxEjectionPercent: Number.isFinite(pct) && pct >= 0 && pct <= 100 ? pct : 10,
        };
      } else this.warn(`service/${key}`, svc.metadata, OUTLIER_5XX_ANNOTATION, o5);
    }
    for (const [rkey, dr] of rules) {
      if (!rkey.startsWith(`${ns}/`) || !ruleTargets(dr, ns).includes(key)) continue;
      this.fromRule(`destinationrule/${rkey}`, dr, p);
      break;
    }
    if (svc.spec?.sessionAffinity === 'ClientIP') {
      const t = svc.spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
      p.affinityMs = Number.isInteger(t) && t! > 0 && t! <= 86400 ? t! * 1000 : STICKY_TIMEOUT_MS;
    }
    return p.strategy ||
      p.hashHeader !== undefined ||
      p.affinityMs ||
      p.outlier ||
      p.retries ||
      p.timeoutMs ||
      p.sniRoutes
      ? p
      : undefined;
  }

  private fromRule(name: string, dr: DestinationRule, p: ServiceLbPolicy): void {
    const warn = (field: string, value: unknown): void => this.warn(name, dr.metadata, field, value);
    const spec = (dr.spec ?? {}) as Record<string, unknown>;
    for (const k of Object.keys(spec)) if (k !== 'host' && k !== 'trafficPolicy') warn(`spec.${k}`, spec[k]);
    const tp = (spec.trafficPolicy ?? {}) as Record<string, unknown>;
    for (const k of Object.keys(tp))
      if (k !== 'loadBalancer' && k !== 'outlierDetection') warn(`spec.trafficPolicy.${k}`, tp[k]);
    if (tp.outlierDetection !== undefined) this.outlierFromRule(tp.outlierDetection, warn, p);
    const lb = tp.loadBalancer as Record<string, unknown> | undefined;
    if (!lb || typeof lb !== 'object') return;
    for (const k of Object.keys(lb))
      if (k !== 'simple' && k !== 'consistentHash') warn(`spec.trafficPolicy.loadBalancer.${k}`, lb[k]);
    if (lb.simple !== undefined) {
      const s = SIMPLE[String(lb.simple)];
      if (s && this.known().includes(s)) {
        p.strategy = s;
        p.source = name;
      } else warn('spec.trafficPolicy.loadBalancer.simple', lb.simple);
    }
    const ch = lb.consistentHash as Record<string, unknown> | undefined;
    if (ch && typeof ch === 'object') {
      for (const k of Object.keys(ch))
        if (k !== 'httpHeaderName' && k !== 'useSourceIp')
          warn(`spec.trafficPolicy.loadBalancer.consistentHash.${k}`, ch[k]);
      if (typeof ch.httpHeaderName === 'string' && HEADER.test(ch.httpHeaderName)) {
        p.strategy = 'ConsistentHash';
        p.hashHeader = ch.httpHeaderName;
        p.source = name;
      } else if (ch.httpHeaderName !== undefined)
        warn('spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName', ch.httpHeaderName);
      else if (ch.useSourceIp === true) {
        p.strategy = 'ConsistentHash';
        p.hashHeader = null;
        p.source = name;
      }
    }
  }

  /** `trafficPolicy.outlierDetection` (Istio's fields; Envoy's defaults when it is there). */
  private outlierFromRule(
    od: unknown,
    warn: (field: string, value: unknown) => void,
    p: ServiceLbPolicy,
  ): void {
    const f = 'spec.trafficPolicy.outlierDetection';
    if (!od || typeof od !== 'object') return warn(f, od);
    const o = od as Record<string, unknown>;
    const count = (k: string): number | undefined => {
      if (o[k] === undefined) return undefined;
      const n = Number(o[k]);
      if (Number.isInteger(n) && n >= 0 && n <= 1000) return n || undefined; // 0 turns it off
      warn(`${f}.${k}`, o[k]);
      return undefined;
    };
    for (const k of Object.keys(o))
      if (
        ![
          'consecutive5xxErrors',
          'consecutiveGatewayErrors',
          'baseEjectionTime',
          'maxEjectionPercent',
          'interval',
        ].includes(k)
      )
        warn(`${f}.${k}`, o[k]);
    const base = o.baseEjectionTime === undefined ? 30_000 : durationMs(o.baseEjectionTime);
    if (base === undefined) warn(`${f}.baseEjectionTime`, o.baseEjectionTime);
    const pct = o.maxEjectionPercent === undefined ? 10 : Number(o.maxEjectionPercent);
    const pctOk = Number.isFinite(pct) && pct >= 0 && pct <= 100;
    if (!pctOk) warn(`${f}.maxEjectionPercent`, o.maxEjectionPercent);
    const gw = count('consecutiveGatewayErrors');
    const c5 = o.consecutive5xxErrors === undefined && gw === undefined ? 5 : count('consecutive5xxErrors');
    if (!c5 && !gw) return;
    p.outlier = {
      consecutive5xx: c5,
      consecutiveGateway: gw,
      baseEjectionMs: base ?? 30_000,
      maxEjectionPercent: pctOk ? pct : 10,
    };
    p.source ??= f;
  }

  private warn(object: string, meta: { resourceVersion?: string }, field: string, value: unknown): void {
    const id = `${object}@${meta.resourceVersion ?? ''}|${field}`;
    if (this.warned.has(id)) return;
    if (this.warned.size > 10_000) this.warned.clear();
    this.warned.add(id);
    this.log?.warn(
      { object, field, value },
      'ignoring a load-balancing field or value EdgeMesh does not know (the node default applies)',
    );
  }
}
