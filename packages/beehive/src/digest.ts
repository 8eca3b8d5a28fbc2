import { hash } from 'node:crypto';

/** The wire form of a digest: how many objects, and the XOR of their 64-bit hashes in hex. */
export interface DigestValue {
  count: number;
  hash: string;
  /** When the cloud published it (ms, the publisher's clock): it covers objects published before. */
  at?: number;
}

/**
 * An order-independent digest of a set of object versions (`<ns>/<type>/<name>` at a
 * resourceVersion): the count and the XOR of the first 64 bits of SHA-256(`key@rv`) of each.
 * Adding and removing are the same XOR, so a store keeps it current at O(1) per write, and the
 * cloud and a node that hold the same versions compute the same value whatever order they saw
 * them in. The cloud publishes one per object type; a node compares it with its own to notice
 * that it missed a message (see EdgeHub's README).
 */
export class ObjectDigest {
  count = 0;
  private hi = 0;
  private lo = 0;

  add(key: string, resourceVersion: number | string): void {
    this.addHash(objectHash(key, resourceVersion));
  }

  remove(key: string, resourceVersion: number | string): void {
    this.removeHash(objectHash(key, resourceVersion));
  }

  /** `add` with the object's hash computed once by the caller (`objectHash`). */
  addHash(h: Buffer): void {
    this.mix(h);
    this.count++;
  }

  removeHash(h: Buffer): void {
    this.mix(h);
    this.count--;
  }

  get value(): DigestValue {
    return { count: this.count, hash: hex8(this.hi) + hex8(this.lo) };
  }

  private mix(h: Buffer): void {
    this.hi = (this.hi ^ h.readUInt32BE(0)) >>> 0;
    this.lo = (this.lo ^ h.readUInt32BE(4)) >>> 0;
  }
}

/** SHA-256(`key@rv`): an object version's contribution to a digest (its first 64 bits). */
export function objectHash(key: string, rv: number | string): Buffer {
  return hash('sha256', `${key}@${rv}`, 'buffer');
}

/** A type's digest as published: the whole type, and each namespace on its own. */
export interface TypeDigestValue extends DigestValue {
  namespaces?: Record<string, DigestValue>;
}

export const EMPTY_DIGEST: DigestValue = { count: 0, hash: '0000000000000000' };

/**
 * The digest of one object type, kept per namespace too: a node that differs reads back only the
 * namespaces that differ, each with a filter of its own (`objects/<ns>/<type>/+`) — a broker hands
 * a subscription's retained messages out in one burst, and a burst larger than its queue limit is
 * cut short (see EdgeHub's README), so smaller reads are what make a large catalog readable.
 */
export class TypeDigest {
  readonly total = new ObjectDigest();
  private readonly byNs = new Map<string, ObjectDigest>();

  add(namespace: string, key: string, rv: number | string): void {
    const h = objectHash(key, rv); // once, for the type and its namespace
    this.total.addHash(h);
    let d = this.byNs.get(namespace);
    if (!d) this.byNs.set(namespace, (d = new ObjectDigest()));
    d.addHash(h);
  }

  remove(namespace: string, key: string, rv: number | string): void {
    const h = objectHash(key, rv);
    this.total.removeHash(h);
    const d = this.byNs.get(namespace);
    if (!d) return;
    d.removeHash(h);
    if (d.count === 0) this.byNs.delete(namespace);
  }

  get value(): TypeDigestValue {
    const namespaces: Record<string, DigestValue> = {};
    for (const [ns, d] of this.byNs) namespaces[ns] = d.value;
    return { ...this.total.value, namespaces };
  }
}

export function digestEquals(a: DigestValue | undefined, b: DigestValue | undefined): boolean {
  return !!a && !!b && a.count === b.count && a.hash === b.hash;
}

/** A digest's payload as published, or undefined when it is not one. */
export function parseDigest(text: string): TypeDigestValue | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const d = checkDigest(v);
  if (!d) return undefined;
  const raw = v as { at?: unknown; namespaces?: unknown };
  const out: TypeDigestValue = d;
  if (typeof raw.at === 'number' && Number.isFinite(raw.at)) out.at = raw.at;
  if (raw.namespaces !== undefined) {
    if (!raw.namespaces || typeof raw.namespaces !== 'object') return undefined;
    out.namespaces = {};
    for (const [ns, nd] of Object.entries(raw.namespaces)) {
      const c = checkDigest(nd);
      if (!c) return undefined;
      out.namespaces[ns] = c;
    }
  }
  return out;
}

function checkDigest(v: unknown): DigestValue | undefined {
  const d = v as Partial<DigestValue> | null;
  if (!d || typeof d !== 'object' || !Number.isSafeInteger(d.count) || (d.count as number) < 0)
    return undefined;
  if (typeof d.hash !== 'string' || !/^[0-9a-f]{16}$/.test(d.hash)) return undefined;
  return { count: d.count as number, hash: d.hash };
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}
