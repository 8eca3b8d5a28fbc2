import type { z } from 'zod/v3';
import { iptablesOptionsSchema, resolveMeshOptions } from '../config';
import { Logger, silentLogger } from '@edgecore/beehive';
import { IptablesError } from '../edgemesh-errors';
import type { PortalEntry } from '../portal-table';
import { run } from './exec';

import {
  CHAIN_CONTAINER,
  CHAIN_HOST,
  CHAIN_POSTROUTING,
  IPV4,
  JUMP,
  OUR_CHAIN,
  RuleBuilder,
  type IptablesOptions,
} from './rules';
import { NOPROXY_LABEL, PROXY_NAME_LABELS } from '../catalog/types';

/**
 * Plus the re-ensure period (rules deleted by someone else come back) and the binaries: iptables,
 * iptables-restore, iptables-save, and conntrack (conntrack-tools, for DNAT mode's UDP ports).
 */
export type IptablesManagerOptions = IptablesOptions & z.input<typeof iptablesOptionsSchema>;

/** The first retry of a failed rule write (then doubled, up to the sync interval). */
const RETRY_BASE_MS = 1000;

/**
 * The nat rules of EdgeMesh (kube-proxy userspace style): our own chains jumped to first from
 * PREROUTING (containers) and OUTPUT (host processes), one DNAT per service port VIP:port →
 * portal (in DNAT mode, for plain TCP ports, a random pick among DNATs to the backends, as
 * kube-proxy's iptables mode), and the DNS hijack. The chains are rewritten whole in one `iptables-restore --noflush`
 * batch (declaring a chain in the input flushes it), so 10,000 ports are one exec, not 10,000.
 *
 * The DNAT rules sit in one chain per VIP /24 (`EDGEMESH-B-C61213` for 198.18.19.0/24), jumped to
 * from both top chains by `-d 198.18.19.0/24`. Two reasons: a change deletes a rule in a chain of
 * at most 256 VIPs, and iptables-nft fetches only the chains a batch touches (one chain of 10,000
 * rules made one change cost ~300 ms, a bucket ~10 ms); and a new connection walks one jump plus
 * its bucket instead of up to 10,000 rules. Both sides share the bucket (a container's and a
 * node process's connection to a VIP:port go to the same place): one copy of each rule, where a
 * bucket per side wrote every rule twice.
 */
export class IptablesManager {
  private timer?: NodeJS.Timeout;
  private readonly log: Logger;
  private readonly restore: string;
  private readonly ipt: string;
  private last?: PortalEntry[];
  /** The `-A` lines currently in our chains, as last written. */
  private written?: Set<string>;
  /** Bucket chains that may exist (declared and not yet removed). */
  private known = new Set<string>();
  private lastFilter?: (e: PortalEntry) => boolean;
  private syncing: Promise<void> = Promise.resolve();
  syncs = 0;
  /**
   * After a failed write, the next try of the last rule set: 1 s, doubling up to the sync interval;
   * a write that succeeds ends it. A failure is often brief (no descriptor for iptables-restore's
   * pipes, the xtables lock held past its wait) and the rules of a new service should not wait
   * for the periodic re-ensure.
   */
  private retryTimer?: NodeJS.Timeout;
  private retryMs = 0;
  /** Writes tried again after a failure. */
  retries = 0;

  private readonly o: IptablesOptions & z.output<typeof iptablesOptionsSchema>;
  private readonly rules: RuleBuilder;

  constructor(options: IptablesManagerOptions) {
    const o = (this.o = resolveMeshOptions(iptablesOptionsSchema, options, 'iptables'));
    this.log = o.log ?? silentLogger;
    this.restore = o.iptablesRestore;
    this.ipt = o.iptables;
    this.rules = new RuleBuilder(o, this.log);
    if (!IPV4.test(o.listenIP)) throw new IptablesError('validate', `listen IP "${o.listenIP}" is not IPv4`);
    if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(o.listenInterface))
      throw new IptablesError('validate', `interface "${o.listenInterface}"`);
  }

  /** The restore input for `entries` (exported for tests and the benchmark). */
  payload(entries: readonly PortalEntry[], include: (e: PortalEntry) => boolean = () => true): string {
    return this.rules.payload(entries, include);
  }

  /**
   * Bring the chains to `entries` in one iptables-restore batch, and make sure the jumps exist once,
   * first. After a full write, a change writes only the difference (`-D` the rules that went, `-A`
   * the new ones); `full` (start, periodic re-ensure) rewrites both chains whole.
   */
  sync(entries: readonly PortalEntry[], include?: (e: PortalEntry) => boolean, full = false): Promise<void> {
    this.last = [...entries];
    this.lastFilter = include;
    this.syncing = this.syncing
      .catch(() => undefined)
      .then(async () => {
        const rs = this.rules.build(entries, include);
        let input: string;
        const prev = this.written;
        const written = new Set(rs.lines);
        let known: Set<string>;
        if (full || !prev) {
          // Declaring a chain flushes it: the top chains and every bucket are rewritten whole, and
          // buckets no longer used are removed.
          input = this.rules.restoreInput(
            rs,
            [...this.known].filter((c) => !rs.chains.has(c)),
          );
          known = new Set(rs.chains);
        } else {
          // Only the difference. A bucket's jump stays until the next full write (deleting it would
          // make iptables-nft fetch the top chain); an empty bucket matches nothing.
          const gone: string[] = [];
          for (const l of prev) {
            if (written.has(l)) continue;
            if (JUMP.test(l)) written.add(l);
            else gone.push(`-D${l.slice(2)}`);
          }
          const fresh = [...rs.chains].filter((c) => !this.known.has(c));
          const added = rs.lines.filter((l) => !prev.has(l));
          if (gone.length === 0 && added.length === 0) input = '';
          else
            input = ['*nat', ...fresh.map((c) => `:${c} - [0:0]`), ...gone, ...added, 'COMMIT', ''].join(
              '\n',
            );
          known = new Set([...this.known, ...rs.chains]);
        }
        this.written = undefined; // unknown until the write succeeds
        for (const c of rs.chains) this.known.add(c); // may exist from here on, even if the write fails
        if (input) {
          const r = await run(this.restore, ['--noflush', '-w', '5'], input);
          if (r.code !== 0) throw new IptablesError('iptables-restore', r.stderr);
        }
        const wasFull = full || !prev;
        this.known = known;
        this.written = written;
        // Each `iptables -C` reads the whole table: check the jumps on full writes only (start and
        // every re-ensure period), not on every incremental change.
        if (wasFull) {
          await this.ensureJump('PREROUTING', CHAIN_CONTAINER);
          await this.ensureJump('OUTPUT', CHAIN_HOST);
          if (this.rules.usesPostrouting) await this.ensureJump('POSTROUTING', CHAIN_POSTROUTING);
        }
        for (const f of rs.forget) await this.forgetFlows(f.vip, f.port, f.backend);
        this.syncs++;
      });
    this.syncing.then(
      () => this.settled(true),
      () => this.settled(false),
    );
    return this.syncing;
  }

  /** A write ended: a success ends the retries; a failure schedules one (none while one waits). */
  private settled(ok: boolean): void {
    if (ok) {
      this.stopRetry();
      this.retryMs = 0;
      return;
    }
    if (this.retryTimer || !this.last) return;
    this.retryMs = Math.min(this.retryMs ? this.retryMs * 2 : RETRY_BASE_MS, this.o.syncIntervalMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.last) return;
      this.retries++;
      this.sync(this.last, this.lastFilter, true).catch((e) =>
        this.log.error(
          { err: (e as Error).message, nextMs: Math.min(this.retryMs * 2, this.o.syncIntervalMs) },
          'iptables retry failed',
        ),
      );
    }, this.retryMs);
    this.retryTimer.unref();
  }

  private stopRetry(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Periodic re-ensure of the last rule set. */
  startResync(): void {
    this.stopResync();
    this.timer = setInterval(() => {
      if (this.last)
        this.sync(this.last, this.lastFilter, true).catch((e) =>
          this.log.error({ err: (e as Error).message }, 'iptables resync failed'),
        );
    }, this.o.syncIntervalMs);
    this.timer.unref();
  }

  stopResync(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Remove every rule and chain of ours (also the leftovers of a run that crashed). */
  async cleanup(): Promise<void> {
    this.stopResync();
    await this.syncing.catch(() => undefined);
    // nothing of ours is to be written again: no retry, and none scheduled by a write that failed
    this.stopRetry();
    this.last = undefined;
    this.written = undefined;
    this.known.clear();
    for (const [parent, chain] of [
      ['PREROUTING', CHAIN_CONTAINER],
      ['OUTPUT', CHAIN_HOST],
      ['POSTROUTING', CHAIN_POSTROUTING],
    ]) {
      for (let i = 0; i < 100; i++) {
        const r = await run(this.ipt, ['-w', '5', '-t', 'nat', '-D', parent, '-j', chain]);
        if (r.code !== 0) break;
      }
    }
    const exists = await run(this.ipt, ['-w', '5', '-t', 'nat', '-S']);
    const have = exists.stdout
      .split('\n')
      .filter((l) => l.startsWith('-N '))
      .map((l) => l.slice(3).trim())
      .filter((c) => OUR_CHAIN.test(c));
    if (have.length) {
      const input = [
        '*nat',
        ...have.map((c) => `:${c} - [0:0]`),
        ...have.map((c) => `-X ${c}`),
        'COMMIT',
        '',
      ].join('\n');
      const r = await run(this.restore, ['--noflush', '-w', '5'], input);
      if (r.code !== 0) throw new IptablesError('iptables-restore (cleanup)', r.stderr);
    }
  }

  /** The nat table's rules as they are now (`iptables -t nat -S`), to compare with what we wrote. */
  async liveNatRules(): Promise<string[]> {
    const r = await run(this.ipt, ['-w', '5', '-t', 'nat', '-S']);
    if (r.code !== 0) throw new IptablesError('iptables -t nat -S', r.stderr);
    return r.stdout.split('\n');
  }

  /** Delete the UDP conntrack entries from VIP:port to a backend that left (kube-proxy does too). */
  private async forgetFlows(vip: string, port: number, backend: string): Promise<void> {
    const [host, bport] = backend.split(':');
    const r = await run(this.o.conntrack, [
      '-D',
      '-p',
      'udp',
      '--orig-dst',
      vip,
      '--orig-port-dst',
      String(port),
      '--reply-src',
      host,
      '--reply-port-src',
      bport,
    ]);
    // exit 1 with "0 flow entries" is nothing to delete
    if (r.code !== 0 && !/0 flow entries/.test(r.stderr))
      this.log.warn(
        { vip, port, backend, err: r.stderr.trim() },
        'conntrack could not forget the flows to a gone backend',
      );
  }

  private async ensureJump(parent: string, chain: string): Promise<void> {
    const check = await run(this.ipt, ['-w', '5', '-t', 'nat', '-C', parent, '-j', chain]);
    if (check.code === 0) return;
    const ins = await run(this.ipt, ['-w', '5', '-t', 'nat', '-I', parent, '1', '-j', chain]);
    if (ins.code !== 0) throw new IptablesError(`insert jump ${parent} -> ${chain}`, ins.stderr);
  }
}

/** Binaries of a backend: the system alternative, or the nft / legacy flavour explicitly. */
export function iptablesBinaries(backend: 'auto' | 'nft' | 'legacy' = 'auto'): {
  iptables: string;
  iptablesRestore: string;
  iptablesSave: string;
} {
  const sfx = backend === 'auto' ? '' : `-${backend}`;
  return {
    iptables: `iptables${sfx}`,
    iptablesRestore: `iptables${sfx}-restore`,
    iptablesSave: `iptables${sfx}-save`,
  };
}

/**
 * Service filter: a service another proxy's name label hands to it (either label, another value
 * than `ourName`), or labelled `noproxy: edgemesh`, gets no VIP rules.
 */
export function proxiedByUs(labels: Record<string, string> | undefined, ourName = 'edgemesh'): boolean {
  if (!labels) return true;
  if (labels[NOPROXY_LABEL] === 'edgemesh') return false;
  return PROXY_NAME_LABELS.every((l) => labels[l] === undefined || labels[l] === ourName);
}
