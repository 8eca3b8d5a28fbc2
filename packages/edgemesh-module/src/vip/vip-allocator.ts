import { deleteAll, putAll, type MetaClient, type MetaKey, type MetaPut } from '@edgecore/metamanager/client';
import { isIPv4 } from 'node:net';
import { InvalidSubnetError, VipConflictError, VipPoolExhaustedError } from '../edgemesh-errors';
import { cidrContains, intToIp, ipToInt, parseCidr, type Cidr } from '../net/ipv4';

/** Stored as `edgemesh/vip/<ns>.<name>` through MetaManager (its own resource type). */
interface VipRecord {
  service: string;
  ip: string;
}
const NS = 'edgemesh';
const TYPE = 'vip';
const CURSOR_TYPE = 'vipcursor';

/**
 * Fake IPs for headless services from `subNet` (kube-proxy-less, the seed's model). Allocation is
 * next-fit: a cursor walks the pool, so a released address is handed out again only after every
 * other free address was used — a client's cached answer does not reach a different service soon
 * after a delete. Allocations and the cursor are persisted through MetaClient, so a node that
 * restarts offline gives every service the same VIP.
 */
export class VipAllocator {
  readonly cidr: Cidr;
  private readonly byService = new Map<string, number>();
  private readonly byIp = new Map<number, string>();
  /** Next offset to try (1 … size-2: network and broadcast addresses are skipped). */
  private cursor = 1;

  constructor(
    subnet: string,
    private readonly meta: MetaClient,
  ) {
    this.cidr = parseCidr(subnet);
    if (this.cidr.prefix > 30)
      throw new InvalidSubnetError(subnet, 'a VIP pool needs a prefix of 30 or shorter');
  }

  get allocated(): number {
    return this.byService.size;
  }

  get capacity(): number {
    return Math.max(0, this.cidr.size - 2);
  }

  /** Load persisted allocations; returns records that were dropped (outside the pool, duplicates). */
  async load(): Promise<string[]> {
    const dropped: string[] = [];
    const records = await this.meta.list<VipRecord>(NS, TYPE);
    for (const r of records) {
      if (!r || typeof r.service !== 'string' || !isIPv4(r.ip ?? '')) continue;
      const ip = ipToInt(r.ip);
      if (!cidrContains(this.cidr, ip) || this.byIp.has(ip) || this.byService.has(r.service)) {
        dropped.push(`${r.service}=${r.ip}`);
        continue;
      }
      this.byService.set(r.service, ip);
      this.byIp.set(ip, r.service);
    }
    const cur = await this.meta.get<{ next: number }>(NS, CURSOR_TYPE, 'state');
    if (cur && Number.isInteger(cur.next) && cur.next >= 1 && cur.next <= this.cidr.size - 2)
      this.cursor = cur.next;
    return dropped;
  }

  /** Services with a persisted VIP (to release those whose service is gone). */
  services(): string[] {
    return [...this.byService.keys()];
  }

  lookup(service: string): string | undefined {
    const n = this.byService.get(service);
    return n === undefined ? undefined : intToIp(n);
  }

  serviceOf(ip: string): string | undefined {
    return isIPv4(ip) ? this.byIp.get(ipToInt(ip)) : undefined;
  }

  contains(ip: string): boolean {
    return isIPv4(ip) && cidrContains(this.cidr, ipToInt(ip));
  }

  /** The service's VIP, allocating and persisting one if it has none. */
  async allocate(service: string): Promise<string> {
    const [r] = await this.allocateMany([service]);
    if (r instanceof Error) throw r;
    return r;
  }

  /**
   * VIPs for many services in one pass (a burst of new services): each is taken in memory, then
   * the new records and the cursor are written together — one request (`putMany`: one message,
   * one transaction, one reply, where a request per record was two messages and a timer each),
   * one cursor write, not one per service. A service the pool cannot serve gets its error; the
   * others are unaffected.
   */
  async allocateMany(services: string[]): Promise<(string | Error)[]> {
    const out: (string | Error)[] = [];
    const writes: MetaPut[] = [];
    for (const service of services) {
      const have = this.byService.get(service);
      if (have !== undefined) {
        out.push(intToIp(have));
        continue;
      }
      const ip = this.take(service);
      if (ip === undefined) {
        out.push(new VipPoolExhaustedError(this.cidr.text, service));
        continue;
      }
      const text = intToIp(ip);
      out.push(text);
      writes.push({
        namespace: NS,
        type: TYPE,
        name: recordName(service),
        object: { service, ip: text } satisfies VipRecord,
      });
    }
    if (writes.length) {
      writes.push({ namespace: NS, type: CURSOR_TYPE, name: 'state', object: { next: this.cursor } });
      await putAll(this.meta, writes);
    }
    return out;
  }

  /** Next-fit from the cursor; undefined when the pool is full. */
  private take(service: string): number | undefined {
    const last = this.cidr.size - 2;
    let off = this.cursor;
    for (let tried = 0; tried < last; tried++) {
      const ip = this.cidr.base + off;
      const next = off >= last ? 1 : off + 1;
      if (!this.byIp.has(ip)) {
        this.byService.set(service, ip);
        this.byIp.set(ip, service);
        this.cursor = next;
        return ip;
      }
      off = next;
    }
    return undefined;
  }

  /** A real ClusterIP inside our pool is reserved so we never hand it to another service. */
  reserve(service: string, ip: string): void {
    const n = ipToInt(ip);
    if (!cidrContains(this.cidr, n)) return;
    const holder = this.byIp.get(n);
    if (holder !== undefined && holder !== service) throw new VipConflictError(ip, service, holder);
    this.byIp.set(n, service);
  }

  unreserve(service: string, ip: string): void {
    const n = ipToInt(ip);
    if (this.byIp.get(n) === service && this.byService.get(service) !== n) this.byIp.delete(n);
  }

  async release(service: string): Promise<void> {
    await this.releaseMany([service]);
  }

  /** Release the VIPs of these services; their records go in one request (`deleteMany`). */
  async releaseMany(services: Iterable<string>): Promise<void> {
    const gone: MetaKey[] = [];
    for (const service of services) {
      const n = this.byService.get(service);
      if (n === undefined) continue;
      this.byService.delete(service);
      if (this.byIp.get(n) === service) this.byIp.delete(n);
      gone.push({ namespace: NS, type: TYPE, name: recordName(service) });
    }
    if (!gone.length) return;
    await deleteAll(this.meta, gone);
  }
}

/** `<ns>/<name>` → `<ns>.<name>`: a valid resource name (a namespace has no dots). */
function recordName(service: string): string {
  return service.replace('/', '.');
}
