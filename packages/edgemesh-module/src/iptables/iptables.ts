import { Logger, silentLogger } from '@edgecore/beehive';
import { EdgeMeshError } from '../edgemesh-errors';
import type { PortalEntry } from '../proxy/portals';
import { run } from './exec';

export const CHAIN_CONTAINER = 'EDGEMESH-PORTALS-CONTAINER';
export const CHAIN_HOST = 'EDGEMESH-PORTALS-HOST';
/** Label that hands a service to another proxy (EdgeMesh's own convention). */
export const PROXY_NAME_LABEL = 'service.edgemesh.kubeedge.io/service-proxy-name';

export class IptablesError extends EdgeMeshError {
  constructor(what: string, stderr: string) {
    super('EDGEMESH_IPTABLES', `${what} failed: ${stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  }
}

export interface IptablesOptions {
  /** Address of the portals and the DNS server (the listen interface's IPv4). */
  listenIP: string;
  /** The container bridge (traffic from containers enters PREROUTING on it). */
  listenInterface: string;
  dnsPort: number;
  /** DNAT udp/tcp 53 to our DNS (except our own upstream queries, sourced from listenIP). */
  hijackDns: boolean;
  /** Re-ensure period (default 30 s): rules deleted by someone else come back. */
  syncIntervalMs?: number;
  iptablesRestore?: string;
  iptables?: string;
  iptablesSave?: string;
  log?: Logger;
}

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SAFE_COMMENT = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]{1,5}$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export interface ServiceFilterInfo {
  labels?: Record<string, string>;
}

/**
 * The nat rules of EdgeMesh (kube-proxy userspace style): our own chains jumped to first from
 * PREROUTING (containers) and OUTPUT (host processes), one DNAT per service port VIP:port →
 * portal, and the DNS hijack. The chains are rewritten whole in one `iptables-restore --noflush`
 * batch (declaring a chain in the input flushes it), so 10,000 ports are one exec, not 10,000.
 */
export class IptablesManager {
  private timer?: NodeJS.Timeout;
  private readonly log: Logger;
  private readonly restore: string;
  private readonly ipt: string;
  private last?: PortalEntry[];
  /** The `-A` lines currently in our chains, as last written. */
  private written?: Set<string>;
  private lastFilter?: (e: PortalEntry) => boolean;
  private syncing: Promise<void> = Promise.resolve();
  syncs = 0;

  constructor(private readonly o: IptablesOptions) {
    this.log = o.log ?? silentLogger;
    this.restore = o.iptablesRestore ?? 'iptables-restore';
    this.ipt = o.iptables ?? 'iptables';
    if (!IPV4.test(o.listenIP)) throw new IptablesError('validate', `listen IP "${o.listenIP}" is not IPv4`);
    if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(o.listenInterface))
      throw new IptablesError('validate', `interface "${o.listenInterface}"`);
  }

  /** The restore input for `entries` (exported for tests and the benchmark). */
  payload(entries: readonly PortalEntry[], include: (e: PortalEntry) => boolean = () => true): string {
    return [
      '*nat',
      `:${CHAIN_CONTAINER} - [0:0]`,
      `:${CHAIN_HOST} - [0:0]`,
      ...this.ruleLines(entries, include),
      'COMMIT',
      '',
    ].join('\n');
  }

  /** Our `-A` lines, DNS hijack first. */
  private ruleLines(
    entries: readonly PortalEntry[],
    include: (e: PortalEntry) => boolean = () => true,
  ): string[] {
    const o = this.o;
    const out: string[] = [];
    if (o.hijackDns) {
      for (const proto of ['udp', 'tcp']) {
        out.push(
          `-A ${CHAIN_CONTAINER} -i ${o.listenInterface} -p ${proto} --dport 53 -m comment --comment edgemesh-dns -j DNAT --to-destination ${o.listenIP}:${o.dnsPort}`,
        );
        out.push(
          `-A ${CHAIN_HOST} ! -s ${o.listenIP}/32 -p ${proto} --dport 53 -m comment --comment edgemesh-dns -j DNAT --to-destination ${o.listenIP}:${o.dnsPort}`,
        );
      }
    }
    for (const e of entries) {
      if (!include(e)) continue;
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
      const rule = `-d ${e.vip}/32 -p ${proto} --dport ${e.port} -m comment --comment ${comment} -j DNAT --to-destination ${e.listenHost}:${e.listenPort}`;
      out.push(`-A ${CHAIN_CONTAINER} ${rule}`, `-A ${CHAIN_HOST} ${rule}`);
    }
    return out;
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
        const lines = this.ruleLines(entries, include);
        let input: string;
        const prev = this.written;
        if (full || !prev) {
          input = [
            '*nat',
            `:${CHAIN_CONTAINER} - [0:0]`,
            `:${CHAIN_HOST} - [0:0]`,
            ...lines,
            'COMMIT',
            '',
          ].join('\n');
        } else {
          const now = new Set(lines);
          const gone = [...prev].filter((l) => !now.has(l)).map((l) => `-D${l.slice(2)}`);
          const added = lines.filter((l) => !prev.has(l));
          if (gone.length === 0 && added.length === 0) input = '';
          else input = ['*nat', ...gone, ...added, 'COMMIT', ''].join('\n');
        }
        this.written = undefined; // unknown until the write succeeds
        if (input) {
          const r = await run(this.restore, ['--noflush', '-w', '5'], input);
          if (r.code !== 0) throw new IptablesError('iptables-restore', r.stderr);
        }
        const wasFull = full || !prev;
        this.written = new Set(lines);
        // Each `iptables -C` reads the whole table: check the jumps on full writes only (start and
        // every re-ensure period), not on every incremental change.
        if (wasFull) {
          await this.ensureJump('PREROUTING', CHAIN_CONTAINER);
          await this.ensureJump('OUTPUT', CHAIN_HOST);
        }
        this.syncs++;
      });
    return this.syncing;
  }

  /** Periodic re-ensure of the last rule set. */
  startResync(): void {
    this.stopResync();
    this.timer = setInterval(() => {
      if (this.last)
        this.sync(this.last, this.lastFilter, true).catch((e) =>
          this.log.error({ err: (e as Error).message }, 'iptables resync failed'),
        );
    }, this.o.syncIntervalMs ?? 30_000);
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
    this.written = undefined;
    for (const [parent, chain] of [
      ['PREROUTING', CHAIN_CONTAINER],
      ['OUTPUT', CHAIN_HOST],
    ]) {
      for (let i = 0; i < 100; i++) {
        const r = await run(this.ipt, ['-w', '5', '-t', 'nat', '-D', parent, '-j', chain]);
        if (r.code !== 0) break;
      }
    }
    const exists = await run(this.ipt, ['-w', '5', '-t', 'nat', '-S']);
    const have = [CHAIN_CONTAINER, CHAIN_HOST].filter((c) => exists.stdout.includes(`-N ${c}`));
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

/** Service filter: another proxy's services, or `noproxy: edgemesh`, get no VIP rules. */
export function proxiedByUs(labels: Record<string, string> | undefined, ourName = 'edgemesh'): boolean {
  if (!labels) return true;
  if (labels.noproxy === 'edgemesh') return false;
  const want = labels[PROXY_NAME_LABEL];
  return want === undefined || want === ourName;
}
