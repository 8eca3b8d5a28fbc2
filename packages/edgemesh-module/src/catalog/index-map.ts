/**
 * A key → set of strings index that keeps a lone value inline. Most keys of EdgeMesh's indexes
 * (a label pair's pods, a selector pair's services, a service's slices or portals) have exactly
 * one value, and a Set per key cost about 130 bytes for nothing: a node holding 10,000 services
 * had 50,000 of them (7 MiB of its heap). A Set is made when a second value arrives and dropped
 * when one is left. Values iterate in insertion order, as a Set's do.
 */
export class IndexMap {
  private readonly m = new Map<string, string | Set<string>>();

  /** How many keys have at least one value. */
  get size(): number {
    return this.m.size;
  }

  /** A new key is kept flat (flatKey): callers build keys by concatenation, lookups need not pay. */
  add(key: string, value: string): void {
    const cur = this.m.get(key);
    if (cur === undefined) this.m.set(flatKey(key), value);
    else if (typeof cur !== 'string') cur.add(value);
    else if (cur !== value) this.m.set(key, new Set([cur, value]));
  }

  /** Remove one value; the key goes with its last value. */
  delete(key: string, value: string): void {
    const cur = this.m.get(key);
    if (cur === undefined) return;
    if (typeof cur === 'string') {
      if (cur === value) this.m.delete(key);
      return;
    }
    cur.delete(value);
    if (cur.size === 1) this.m.set(key, cur.values().next().value!);
  }

  /** Remove a key with all its values. */
  deleteKey(key: string): void {
    this.m.delete(key);
  }

  has(key: string): boolean {
    return this.m.has(key);
  }

  /** How many values the key has (0 for an unknown key). */
  count(key: string): number {
    const cur = this.m.get(key);
    return cur === undefined ? 0 : typeof cur === 'string' ? 1 : cur.size;
  }

  /** The key's values (none for an unknown key). */
  values(key: string): Iterable<string> {
    const cur = this.m.get(key);
    return cur === undefined ? NONE : typeof cur === 'string' ? [cur] : cur;
  }

  /** Whether the key holds this value. */
  holds(key: string, value: string): boolean {
    const cur = this.m.get(key);
    return cur === value || (typeof cur === 'object' && cur.has(value));
  }

  clear(): void {
    this.m.clear();
  }
}

const NONE: readonly string[] = Object.freeze([]);

/**
 * A key as one flat string, for a map that keeps it. A key built by concatenation is a tree of its
 * parts until V8 flattens it, and a flattened tree keeps its wrapper and parts (a name sliced from
 * a resource string keeps that whole string): ~180 bytes per catalog key whose text is ~40, 7 MiB
 * at 10,000 services. `normalize()` returns the flat text — and leaves it as it was: Kubernetes
 * names, namespaces and label pairs are ASCII, which NFC does not change. IndexMap.add applies it
 * to the keys it keeps; a lookup's key stays as built.
 */
export function flatKey(s: string): string {
  return s.normalize();
}
