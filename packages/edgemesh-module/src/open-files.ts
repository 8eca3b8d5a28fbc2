import { readFileSync } from 'node:fs';

/** The process's open-file limit (RLIMIT_NOFILE): the soft one applies, the hard one caps it. */
export interface OpenFileLimit {
  soft: number;
  hard: number;
}

/** The limit as `/proc/self/limits` says ("Max open files"); undefined where it cannot be read. */
export function openFileLimit(): OpenFileLimit | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const n = (s: string): number => (s === 'unlimited' ? Infinity : Number(s));
  return { soft: n(m[1]), hard: n(m[2]) };
}

/** Descriptors an edgecore holds besides its portals before any connection (measured: ~40). */
export const BASE_DESCRIPTORS = 64;

/**
 * Descriptors EdgeMesh's portals leave to everything else — DNS, the explicit proxy, the
 * observability server, the cloud link, the database and every proxied connection (two each):
 * an eighth of the limit, at least 64. Node raises its soft limit to the hard one at start (as Go
 * programs do), so the hard limit is what a node has; a catalog with more service ports than it
 * allows gets portals up to `portalCapacity` rather than a node that can open nothing else.
 */
export function portalReserve(limit: number): number {
  return Math.max(64, Math.floor(limit / 8));
}

/**
 * Of the portals' reserve, what proxied connections leave to the node's own needs — DNS
 * forwarding, the cloud link, health checks, iptables-restore's pipes, the database, pooled
 * upstream connections: half of it (`ConnectionBudget`).
 */
export function nodeReserve(limit: number): number {
  return Math.floor(portalReserve(limit) / 2);
}

/**
 * How many portals an open-file limit holds: the limit less the reserve and what a node holds
 * before any (`BASE_DESCRIPTORS`). Reckoned from the limit, not by counting the descriptors held
 * (`/proc/self/fd`: 12 ms at 9,000 of them, paid by every change that opened a portal).
 */
export function portalCapacity(limit: number): number {
  return Math.max(0, limit - portalReserve(limit) - BASE_DESCRIPTORS);
}

/**
 * Errors of a socket this process could not have (out of descriptors, kernel buffers or memory):
 * the connection or query never left the node, so they say nothing of the peer it was for — no
 * ejection, no failover to another peer that would fare no better, no upstream held as down (as
 * nginx, whose `socket()` failure ends the request without counting against the upstream).
 */
const LOCAL_RESOURCE_ERRORS: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);

/** Whether an errno name (an error's `code`, a connect failure's reason) is a local resource's. */
export function isLocalResourceError(code: string | undefined): code is string {
  return code !== undefined && LOCAL_RESOURCE_ERRORS.has(code);
}

/**
 * Whether a failure is a local resource's: its errno name where an error carries one — a
 * connect failure's `reason` (ConnectError), the error's `code`, or its cause's.
 */
export function isLocalFailure(e: unknown): boolean {
  const x = e as { reason?: unknown; code?: unknown; cause?: { code?: unknown } } | null;
  if (!x || typeof x !== 'object') return false;
  return [x.reason, x.code, x.cause?.code].some((c) => typeof c === 'string' && isLocalResourceError(c));
}
