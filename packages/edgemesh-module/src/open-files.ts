import { readdirSync, readFileSync } from 'node:fs';

/** The process's open-file limit (RLIMIT_NOFILE): the soft one applies, the hard one caps it. */
export interface OpenFileLimit {
  soft: number;
  hard: number;
}

/** The limit as `/proc/self/limits` says ("Max open files"); undefined where it cannot be read. */
export function openFileLimit(limitsText?: string): OpenFileLimit | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const n = (s: string): number => (s === 'unlimited' ? Infinity : Number(s));
  return { soft: n(m[1]), hard: n(m[2]) };
}

/** Descriptors the process holds now (`/proc/self/fd`); undefined where it cannot be read. */
export function openFileCount(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length - 1; // the directory's own, open while it is read
  } catch {
    return undefined;
  }
}

/**
 * Descriptors EdgeMesh's portals leave to everything else — DNS, the explicit proxy, the
 * observability server, the cloud link, the database and every proxied connection (two each):
 * an eighth of the limit, at least 64. Node raises its soft limit to the hard one at start (as Go
 * programs do), so the hard limit is what a node has; a catalog with more service ports than it
 * allows gets portals up to here rather than a node that can open nothing else.
 */
export function portalReserve(limit: number): number {
  return Math.max(64, Math.floor(limit / 8));
}
