import { policyOf } from '../lb/service-policy';
import type { Logger } from '@edgecore/beehive';
import { readFileSync } from 'node:fs';
import type { ServiceCatalog } from '../catalog/catalog';
import type { ResolvedEdgeMeshOptions } from '../config';
import { ResolvConfHijack } from '../dns/resolvconf';
import type { BackendIndex } from '../lb/backend-index';
import { hasTunneled, type Backend } from '../lb/backends';
import { dnsListen } from '../listen';
import { STICKY_TIMEOUT_MS } from '../lb/strategies';
import type { PortalEntry } from '../portal-table';
import { run } from './exec';
import { iptablesBinaries, IptablesManager, proxiedByUs } from './iptables';
import { ListenInterface } from './listen-interface';

/**
 * iptables mode's hold on the node: the listen address (docker0's, or an `edgemesh0` EdgeMesh
 * creates), the route for the VIP subnet, our nat chains (portals, DNS hijack, and in `l4Mode:
 * dnat` the kernel's own balancing of plain TCP and UDP ports), or the resolv.conf hijack — set up
 * before anything serves, kept in step with the portals, removed on stop.
 */
export class Interception {
  private listenIfc!: ListenInterface;
  private resolvConf?: ResolvConfHijack;
  iptables!: IptablesManager;
  /** `l4Mode: dnat` in force: plain TCP (and, with conntrack, UDP) ports DNAT'd to backends. */
  l4Dnat = false;
  private portals: () => PortalEntry[] = () => [];
  /** DNAT mode: rule syncs for backend changes, one after another… */
  private backendSyncs: Promise<void> = Promise.resolve();
  /** …and whether one is queued and not yet started (every change before it starts is in it). */
  private backendSyncQueued = false;
  private stopping = false;

  constructor(
    private readonly o: ResolvedEdgeMeshOptions,
    private readonly catalog: ServiceCatalog,
    private readonly backends: BackendIndex,
    private readonly log: Logger,
  ) {}

  /**
   * Before DNS starts: the listen address and the VIP route, our leftover rules of a crash removed,
   * a crashed run's resolv.conf change undone (so upstreams come from the original). Returns the
   * listen address.
   */
  async prepare(): Promise<string> {
    const o = this.o;
    this.listenIfc = new ListenInterface(o.listenInterface, { log: this.log });
    const listenIP = await this.listenIfc.ensure();
    await this.listenIfc.routeSubnet(o.subNet);
    // DNAT mode: plain TCP ports, and UDP ports when conntrack can forget a gone backend's flows
    const dnat = this.dnatMode();
    const udp = dnat && (await run('conntrack', ['--version'])).code === 0;
    if (dnat && !udp)
      this.log.warn({}, 'l4Mode dnat: conntrack (conntrack-tools) not found; UDP ports keep the portal');
    this.iptables = new IptablesManager({
      dnatAffinitySeconds: o.lbStrategy === 'SessionStickiness' ? STICKY_TIMEOUT_MS / 1000 : undefined,
      dnatTargets: dnat
        ? (e) => (e.protocol === 'tcp' || (udp && e.protocol === 'udp') ? this.kernelTargets(e) : undefined)
        : undefined,
      listenIP,
      listenInterface: this.listenIfc.name,
      dnsPort: dnsListen(o, 'iptables', listenIP).port,
      hijackDns: o.dns.hijack === 'iptables',
      hijackInterfaces: o.dns.hijackInterfaces,
      syncIntervalMs: o.iptablesSyncSeconds * 1000,
      ...iptablesBinaries(o.iptablesBackend),
      log: this.log,
    });
    await this.iptables.cleanup();
    if (o.dns.hijack === 'resolvconf') {
      this.resolvConf = new ResolvConfHijack(o.dns.resolvConf, listenIP);
      this.resolvConf.recover();
    }
    return listenIP;
  }

  /** DNS listens on `nameserver`: the resolv.conf hijack points the node at it. */
  dnsListening(nameserver: string): void {
    if (!this.resolvConf) return;
    this.resolvConf.apply();
    this.log.info({ path: this.resolvConf.path, nameserver }, 'resolv.conf now points at edgemesh');
  }

  /** The portals serve: the whole rule set written, and re-ensured from now on. */
  async start(portals: () => PortalEntry[]): Promise<void> {
    this.portals = portals;
    await this.sync();
    this.iptables.startResync();
  }

  /** A batch changed services (rules follow their portals) or only backends (DNAT mode's rules). */
  async changed(services: boolean, backends: boolean): Promise<void> {
    if (services)
      await this.sync().catch((e) => this.log.error({ err: (e as Error).message }, 'iptables sync failed'));
    // DNAT mode writes backends into the rules: a pod or Endpoints change is a rule change too
    else if (this.l4Dnat && backends) this.syncBackendRules();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.backendSyncs;
    await this.iptables
      ?.cleanup()
      .catch((e) => this.log.error({ err: (e as Error).message }, 'removing iptables rules failed'));
    await this.listenIfc?.teardown();
    this.resolvConf?.restore();
  }

  /** Program the whole rule set for the current portal table (one iptables-restore). */
  private sync(): Promise<void> {
    return this.iptables.sync(this.portals(), (e) =>
      proxiedByUs(this.catalog.getService(e.namespace, e.service)?.metadata.labels, this.o.proxyName),
    );
  }

  /**
   * DNAT mode, a pod or Endpoints change: a rule sync, not awaited by the change, so a burst (a
   * node back online, a rollout) costs one or two writes, not one per pod — a sync queued and not
   * yet started takes every change that comes before it starts.
   */
  private syncBackendRules(): void {
    if (this.backendSyncQueued) return;
    this.backendSyncQueued = true;
    this.backendSyncs = this.backendSyncs
      .then(() => {
        this.backendSyncQueued = false;
        return this.stopping ? undefined : this.sync();
      })
      .catch((e) => this.log.error({ err: (e as Error).message }, 'iptables sync failed'));
  }

  /**
   * `l4Mode: dnat` with a strategy iptables can express: random picks (RoundRobin, Random), or
   * random picks remembered per client address (SessionStickiness).
   */
  /**
   * A port's backends for DNAT rules, or undefined (the port keeps its portal) when one of them is
   * on another site (the kernel cannot reach it, the tunnel can), when its service has a policy of
   * its own (a strategy or client affinity the node-wide rules do not express), or when its
   * endpoints have tiers (nearest-first with fallback on failure is the portal's).
   */
  private kernelTargets(e: PortalEntry): readonly Backend[] | undefined {
    const list = this.backends.of(e);
    if (hasTunneled(list) || policyOf(list) || list[0]?.tier !== undefined) return undefined;
    return list;
  }

  private dnatMode(): boolean {
    if (this.o.l4Mode !== 'dnat') return false;
    const strategy = this.o.lbStrategy;
    if (strategy !== 'RoundRobin' && strategy !== 'Random' && strategy !== 'SessionStickiness') {
      this.log.warn(
        { lbStrategy: strategy },
        'l4Mode dnat: iptables cannot express this strategy; TCP ports keep the portal',
      );
      return false;
    }
    this.l4Dnat = true;
    let forwarding = '1';
    try {
      forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    } catch {
      // no procfs: nothing to warn about
    }
    if (forwarding === '0')
      this.log.warn(
        {},
        'l4Mode dnat: net.ipv4.ip_forward is 0, so containers cannot reach backends on other hosts (host processes can)',
      );
    return true;
  }
}
