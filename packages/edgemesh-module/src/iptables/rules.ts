import type { Logger } from '@edgecore/beehive';
import { createHash } from 'node:crypto';
import type { PortalEntry } from '../portal-table';

/**
 * The text of EdgeMesh's nat rules (what `iptables-restore` is given): our top chains, one bucket
 * chain per VIP /24, the DNS hijack, DNAT to a portal or (DNAT mode) straight to backends, and the
 * masquerade of DNAT'd connections. IptablesManager writes it and keeps it in place.
 */

export const CHAIN_CONTAINER = 'EDGEMESH-PORTALS-CONTAINER';
export const CHAIN_HOST = 'EDGEMESH-PORTALS-HOST';
/** DNAT mode: masquerade of the connections DNAT'd to a backend on another address. */
export const CHAIN_POSTROUTING = 'EDGEMESH-POSTROUTING';
/** The packet mark of a connection to masquerade (kube-proxy's bit, with the same meaning). */
export const MASQ_MARK = '0x4000/0x4000';
/**
 * Every chain of ours: the top chains and the per-/24 bucket chains (`B-`; `C-` and `H-` were the
 * container and host copies of a bucket before they were shared, still removed if left behind).
 */
export const OUR_CHAIN = /^EDGEMESH-(PORTALS-CONTAINER|PORTALS-HOST|POSTROUTING|[BCH]-[0-9A-F]{6})$/;

export interface IptablesOptions {
  /** Address of the portals and the DNS server (the listen interface's IPv4). */
  listenIP: string;
  /** The container bridge (traffic from containers enters PREROUTING on it). */
  listenInterface: string;
  dnsPort: number;
  /**
   * DNAT udp/tcp 53 to our DNS (except our own upstream queries, sourced from listenIP), and
   * masquerade those upstream queries where they leave through another interface: no real
   * resolver has a route back to a bridge address or to edgemesh0's link-local one.
   */
  hijackDns: boolean;
  /** More container bridges whose DNS is hijacked (validated interface names). */
  hijackInterfaces?: string[];
  log?: Logger;
  /**
   * DNAT mode (kube-proxy's iptables mode) for the ports it returns backends for: instead of the
   * DNAT to the portal, a mark and one DNAT per backend, picked at random (`-m statistic`) — no
   * userspace hop. Ports it returns nothing (or an empty list) for keep their portal.
   * Connections DNAT'd to another host are masqueraded. For a UDP port, the conntrack entries of
   * a backend that leaves are deleted after the write (a UDP client that keeps sending would
   * otherwise keep its flow to the gone backend): give UDP ports only with `conntrack` installed.
   */
  dnatTargets?: (e: PortalEntry) => readonly { host: string; port: number }[] | undefined;
  /**
   * DNAT mode with client-IP affinity (SessionStickiness, kube-proxy's `sessionAffinity:
   * ClientIP`): a client's connections go to the backend it was last sent to while it connects
   * again within this many seconds (`-m recent`, one list per port and backend).
   */
  dnatAffinitySeconds?: number;
}

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SAFE_COMMENT = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]{1,5}$/;
/** An interface name as it may reach rule text (IFNAMSIZ 16 with the NUL; nothing a shell or iptables reads as syntax). */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
export const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
export const JUMP = / -j EDGEMESH-B-[0-9A-F]{6}$/;

/** The bucket of a VIP: its /24, as the chain-name suffix and the match. */
function bucketOf(vip: string): { id: string; cidr: string } {
  const [a, b, c] = vip.split('.').map(Number);
  const id = ((a << 16) | (b << 8) | c).toString(16).toUpperCase().padStart(6, '0');
  return { id, cidr: `${a}.${b}.${c}.0/24` };
}

interface CachedRule {
  e: PortalEntry;
  /** DNAT mode: the backends as written (`host:port,…`; '' = the portal). */
  t: string;
  /** The bucket chain, its jumps (from the container and the host top chain), the port's lines. */
  b: string;
  jc: string;
  jh: string;
  l: string[];
}

/**
 * What a rule set is made of: the `-A` lines (top chains first), the bucket chains they use, and
 * (DNAT mode) the UDP flows to forget once it is written: a backend that left a VIP:port.
 */
export interface RuleSet {
  lines: string[];
  chains: Set<string>;
  forget: { vip: string; port: number; backend: string }[];
}

const MASQ_LINES = [
  `-A ${CHAIN_POSTROUTING} -m mark ! --mark ${MASQ_MARK} -j RETURN`,
  // a backend on this node keeps the client's address (local delivery, no masquerade needed)
  `-A ${CHAIN_POSTROUTING} -m addrtype --dst-type LOCAL -j RETURN`,
  `-A ${CHAIN_POSTROUTING} -j MARK --xor-mark ${MASQ_MARK.split('/')[0]}`,
  `-A ${CHAIN_POSTROUTING} -m comment --comment edgemesh-masquerade -j MASQUERADE`,
];

export interface ServiceFilterInfo {
  labels?: Record<string, string>;
}

/** Builds our rule text, keeping each port's text until the port changes. */
export class RuleBuilder {
  /** Whether our POSTROUTING chain is used: DNAT mode's masquerade, the DNS upstream masquerade. */
  get usesPostrouting(): boolean {
    return !!this.o.dnatTargets || this.o.hijackDns;
  }

  /** Rule text per portal key, as last built. */
  private ruleCache = new Map<string, CachedRule>();

  constructor(
    private readonly o: IptablesOptions,
    private readonly log: Logger,
  ) {}

  /** The restore input for `entries` (exported for tests and the benchmark). */
  payload(entries: readonly PortalEntry[], include: (e: PortalEntry) => boolean = () => true): string {
    return this.restoreInput(this.build(entries, include), []);
  }

  /** The restore input of a rule set, with `stale` bucket chains removed. */
  restoreInput(rs: RuleSet, stale: string[]): string {
    return [
      '*nat',
      `:${CHAIN_CONTAINER} - [0:0]`,
      `:${CHAIN_HOST} - [0:0]`,
      ...(this.usesPostrouting ? [`:${CHAIN_POSTROUTING} - [0:0]`] : []),
      ...[...rs.chains, ...stale].map((c) => `:${c} - [0:0]`),
      ...rs.lines,
      ...stale.map((c) => `-X ${c}`),
      'COMMIT',
      '',
    ].join('\n');
  }

  /** DNAT mode: a port's backends as `host:port` (those that can be written into a rule). */
  private targetsOf(e: PortalEntry): string[] {
    const list = this.o.dnatTargets?.(e);
    if (!list?.length) return [];
    const out: string[] = [];
    for (const b of list) {
      if (IPV4.test(b.host) && Number.isInteger(b.port) && b.port > 0 && b.port < 65536)
        out.push(`${b.host}:${b.port}`);
      else
        this.log.warn(
          { portal: e.key, backend: `${b.host}:${b.port}` },
          'backend not writable as a DNAT target',
        );
    }
    return out;
  }

  /**
   * Our `-A` lines: DNS hijack first, then the bucket jumps, then the DNAT rules. The text of a
   * port that did not change since the last build is reused.
   */
  build(entries: readonly PortalEntry[], include: (e: PortalEntry) => boolean = () => true): RuleSet {
    const o = this.o;
    const out: string[] = [];
    const jumps: string[] = [];
    const dnat: string[] = [];
    const chains = new Set<string>();
    if (o.hijackDns) {
      // our upstream queries, sourced from listenIP: masqueraded to the address of the interface
      // they leave through (before MASQ_LINES, whose first rule returns what it did not mark)
      for (const proto of ['udp', 'tcp'])
        out.push(
          `-A ${CHAIN_POSTROUTING} -s ${o.listenIP}/32 ! -o ${o.listenInterface} -p ${proto} -m comment --comment edgemesh-dns-upstream -j MASQUERADE`,
        );
    }
    if (o.dnatTargets) out.push(...MASQ_LINES);
    if (o.hijackDns) {
      for (const proto of ['udp', 'tcp']) {
        for (const ifc of [o.listenInterface, ...(o.hijackInterfaces ?? []).filter((i) => IFNAME.test(i))])
          out.push(
            `-A ${CHAIN_CONTAINER} -i ${ifc} -p ${proto} --dport 53 -m comment --comment edgemesh-dns -j DNAT --to-destination ${o.listenIP}:${o.dnsPort}`,
          );
        out.push(
          `-A ${CHAIN_HOST} ! -s ${o.listenIP}/32 -p ${proto} --dport 53 -m comment --comment edgemesh-dns -j DNAT --to-destination ${o.listenIP}:${o.dnsPort}`,
        );
      }
    }
    const cache = new Map<string, CachedRule>();
    for (const e of entries) {
      if (!include(e)) continue;
      // The rule text of an unchanged portal is reused: a change at 10,000 ports costs a lookup
      // per port, not a validation and two string builds.
      const was = this.ruleCache.get(e.key);
      const targets = o.dnatTargets ? this.targetsOf(e) : [];
      const t = targets.join(',');
      if (
        was &&
        was.t === t &&
        was.e.vip === e.vip &&
        was.e.port === e.port &&
        was.e.transport === e.transport &&
        was.e.listenHost === e.listenHost &&
        was.e.listenPort === e.listenPort &&
        was.e.namespace === e.namespace &&
        was.e.service === e.service
      ) {
        cache.set(e.key, was);
        if (!chains.has(was.b)) {
          chains.add(was.b);
          jumps.push(was.jc, was.jh);
        }
        dnat.push(...was.l);
        continue;
      }
      const comment = `${e.namespace}/${e.service}:${e.port}`;
      // Names reach the rule text: validate (RFC 1123) so nothing can inject arguments.
      if (
        !SAFE_COMMENT.test(comment) ||
        !LABEL.test(e.namespace) ||
        !IPV4.test(e.vip) ||
        !Number.isInteger(e.listenPort)
      ) {
        this.log.warn(
          { portal: e.key },
          'skipping a portal whose name or address cannot be written into a rule',
        );
        continue;
      }
      const proto = e.transport === 'UDP' ? 'udp' : 'tcp';
      const match = `-d ${e.vip}/32 -p ${proto} --dport ${e.port} -m comment --comment ${comment}`;
      let rules: string[];
      if (targets.length) {
        // DNAT mode, kube-proxy's pick: rule i of n takes 1/(n-i) of what reaches it, the last the
        // rest; a mark first for the masquerade. The lines sit in the bucket (a chain per port, as
        // kube-proxy's, took 6.3–6.9 s to write for 10,000 ports on nft, against 1.0–1.6 s) and
        // carry a hash of the backend list, so a change replaces the port's lines all together and
        // they stay in order.
        const tag = createHash('sha256').update(t).digest('hex').slice(0, 8);
        const m = `${match}@${tag}`;
        rules = [`${m} -j MARK --set-xmark ${MASQ_MARK}`];
        // affinity: first a client seen for a backend within the timeout (the check renews it),
        // then the random pick, which records the client for the backend it picked
        const secs = o.dnatAffinitySeconds;
        const lists = secs
          ? targets.map(
              (to) =>
                `-m recent --name EM-${createHash('sha256').update(`${e.key}>${to}`).digest('hex').slice(0, 16)} --mask 255.255.255.255 --rsource`,
            )
          : [];
        lists.forEach((l, i) =>
          rules.push(`${m} ${l} --update --seconds ${secs} --reap -j DNAT --to-destination ${targets[i]}`),
        );
        targets.forEach((to, i) => {
          const left = targets.length - i;
          const pick = left > 1 ? `-m statistic --mode random --probability ${(1 / left).toFixed(10)} ` : '';
          const remember = secs ? `${lists[i]} --set ` : '';
          rules.push(`${m} ${pick}${remember}-j DNAT --to-destination ${to}`);
        });
      } else rules = [`${match} -j DNAT --to-destination ${e.listenHost}:${e.listenPort}`];
      const bucket = bucketOf(e.vip);
      const b = `EDGEMESH-B-${bucket.id}`;
      const r: CachedRule = {
        e: { ...e },
        t,
        b,
        jc: `-A ${CHAIN_CONTAINER} -d ${bucket.cidr} -j ${b}`,
        jh: `-A ${CHAIN_HOST} -d ${bucket.cidr} -j ${b}`,
        l: rules.map((x) => `-A ${b} ${x}`),
      };
      cache.set(e.key, r);
      if (!chains.has(b)) {
        chains.add(b);
        jumps.push(r.jc, r.jh);
      }
      dnat.push(...r.l);
    }
    // UDP backends that left (or whose port left): their conntrack flows go after the write
    const forget: RuleSet['forget'] = [];
    for (const [key, was] of this.ruleCache) {
      if (was.e.transport !== 'UDP' || !was.t) continue;
      const now = cache.get(key);
      const kept = new Set(
        now && now.e.vip === was.e.vip && now.e.port === was.e.port ? now.t.split(',') : [],
      );
      for (const backend of was.t.split(','))
        if (!kept.has(backend)) forget.push({ vip: was.e.vip, port: was.e.port, backend });
    }
    this.ruleCache = cache;
    return { lines: out.concat(jumps, dnat), chains, forget };
  }
}
