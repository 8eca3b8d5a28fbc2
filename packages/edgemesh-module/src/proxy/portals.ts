import { clientHello, originating } from './tls/backend-tls';
import type { NativeRoute } from './http/route';
import { h2RouteOf, type H2Proxy, type H2Route } from './h2/h2-proxy';
import { Logger, silentLogger } from '@edgecore/beehive';
import { readFileSync } from 'node:fs';
import { InvalidOptionError } from '../edgemesh-errors';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { defaultListen, type ConnectionTarget, type Listen, type Listener } from './listeners';
import type { ConnectionBudget } from './connection-budget';
import { isExternalName, type Service } from '../catalog/types';
import { flatKey, IndexMap } from '../catalog/index-map';
import type { Backend } from '../lb/backends';
import type { LoadBalancer } from '../lb/load-balancer';
import { backendsForSni, hashHeaderFor } from '../lb/service-policy';
import type { HttpProxy } from './http/http-proxy';
import type { TcpProxy } from './l4/tcp-proxy';
import { UdpProxy, type UdpProxyOptions } from './l4/udp-proxy';
import { portProtocol, type PortalEntry, type PortalSpec } from '../portal-table';
import { isLocalResourceError, openFileLimit, portalCapacity, portalReserve } from '../open-files';

/** How long a read of the open-file limit serves portal syncs (ms). */
const LIMIT_READ_MS = 1000;

/** One portal: its own listener's connection target (no function made per portal). */
class Portal implements ConnectionTarget {
  listenPort = 0;
  tcp?: Listener = undefined;
  udp?: UdpSocket = undefined;
  udpProxy?: UdpProxy = undefined;
  /** Its L7 routes, made at its first connection (most of 10,000 portals never see one). */
  route?: () => NativeRoute = undefined;
  h2route?: () => H2Route = undefined;

  constructor(
    private readonly manager: PortalManager,
    public spec: PortalSpec,
  ) {}

  connection(sock: Socket): void {
    this.manager.accept(this, sock);
  }
}

/**
 * The ports of a service that get a portal (each per VIP it has): every TCP and UDP port of a
 * service that has a VIP (an ExternalName alias has none); SCTP is not proxied.
 */
export function portalPorts(s: Service): NonNullable<NonNullable<Service['spec']>['ports']> {
  if (isExternalName(s)) return [];
  return (s.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') !== 'SCTP');
}

export function desiredPortals(
  services: Iterable<[string, Service]>,
  vipOf: (key: string) => string | undefined,
  endpointsOf?: (key: string) => ReadonlyMap<string, string>,
): PortalSpec[] {
  const out: PortalSpec[] = [];
  for (const [key, s] of services) {
    const vip = vipOf(key);
    if (!vip) continue;
    // the service's own strings (its namespace is one string for the catalog), not copies
    const namespace = s.metadata.namespace ?? 'default';
    const service = s.metadata.name;
    // the service's VIP, then each endpoint VIP a headless service has handed out
    const vips: [string, string, string | undefined][] = [[key, vip, undefined]];
    for (const [label, ip] of endpointsOf?.(key) ?? []) vips.push([`${key}.${label}`, ip, label]);
    for (const [id, v, endpoint] of vips)
      for (const p of portalPorts(s)) {
        const transport = (p.protocol ?? 'TCP') === 'UDP' ? 'UDP' : 'TCP';
        out.push({
          key: flatKey(`${id}:${p.port}/${transport}`),
          serviceKey: key,
          namespace,
          service,
          vip: v,
          port: p.port,
          portName: p.name,
          transport,
          protocol: portProtocol(p),
          ...(endpoint ? { endpoint } : {}),
        });
      }
  }
  return out;
}

/**
 * One listener ("portal") per service port (kube-proxy's userspace design, which EdgeMesh itself
 * adopted): created, updated and closed as services come and go; closing one portal never touches
 * the connections of another.
 */
export class PortalManager {
  private readonly portals = new Map<string, Portal>();
  /** `<ns>/<svc>` → keys of its portals. */
  private readonly byService = new IndexMap();
  private changes = 0;
  private readonly log: Logger;
  /** Portals wanted but not open for want of file descriptors, in the order they were wanted. */
  private readonly unopened = new Map<string, PortalSpec>();
  private retryTimer?: NodeJS.Timeout;

  constructor(
    private readonly listenHost: string,
    private readonly http: HttpProxy,
    private readonly tcp: TcpProxy,
    private readonly h2: H2Proxy,
    private readonly lb: LoadBalancer,
    /** Backends of a portal, resolved at connection time (changes apply to the next request). */
    private readonly backendsOf: (spec: PortalSpec) => readonly Backend[],
    private readonly opts: {
      udp?: UdpProxyOptions;
      log?: Logger;
      hashHeader?: string;
      /** Listen ports taken next-fit from this range (inclusive); a random bind without it. */
      portRange?: { from: number; to: number };
      /** How TCP portals listen (default: the addon's listener set when built, else node:net). */
      listen?: Listen;
      /**
       * Called every `retryMs` while portals wait for descriptors: the owner runs `retryUnopened`
       * in turn with its other portal work, and tells interception when the table changed.
       */
      onRetry?: () => void;
      /** How often (ms, default 5,000). */
      retryMs?: number;
      /** The node's count of client connections: past it one is reset at accept. */
      budget?: ConnectionBudget;
    } = {},
  ) {
    this.log = opts.log ?? silentLogger;
    this.listen = opts.listen ?? defaultListen();
    opts.budget?.listeningFrom(() => this.portals.size);
    // a random place to start, so that several edgecores on one host do not all walk the ports
    // the first one took
    const r = opts.portRange;
    this.nextPort = r ? r.from + Math.floor(Math.random() * (r.to - r.from + 1)) : 0;
  }

  private readonly listen: Listen;

  private get retryMs(): number {
    return this.opts.retryMs ?? 5000;
  }

  /** The next port of the range to try (next-fit: a closed portal's port is reused last). */
  private nextPort: number;

  /**
   * Bind with `bind(port)` for each port of the range from the cursor on, skipping ports in use;
   * a random bind without a range. Throws the last error when the whole range is taken.
   */
  private async bindInRange(bind: (port: number) => Promise<void>): Promise<void> {
    const r = this.opts.portRange;
    if (!r) return bind(0);
    const size = r.to - r.from + 1;
    let last: unknown;
    for (let i = 0; i < size; i++) {
      const port = this.nextPort;
      this.nextPort = port >= r.to ? r.from : port + 1;
      try {
        return await bind(port);
      } catch (e) {
        if ((e as { code?: string }).code !== 'EADDRINUSE') throw e;
        last = e;
      }
    }
    throw last;
  }

  /** How many portals are open (a scrape must not build the table). */
  get size(): number {
    return this.portals.size;
  }

  /** Every open portal's service port, as held (nothing copied: for a walk on every scrape). */
  *specs(): Iterable<PortalSpec> {
    for (const p of this.portals.values()) yield p.spec;
  }

  table(): PortalEntry[] {
    return [...this.portals.values()].map((p) => ({
      ...p.spec,
      listenHost: this.listenHost,
      listenPort: p.listenPort,
    }));
  }

  /**
   * A wanted service port's spec, its portal open or waiting for a descriptor (the explicit proxy
   * serves a service by it, with or without its portal).
   */
  spec(key: string): PortalSpec | undefined {
    return this.portals.get(key)?.spec ?? this.unopened.get(key);
  }

  get(key: string): PortalEntry | undefined {
    const p = this.portals.get(key);
    return p && { ...p.spec, listenHost: this.listenHost, listenPort: p.listenPort };
  }

  /** Bumped whenever a portal opens, closes or changes its spec (what a count over specs() may cache by). */
  get generation(): number {
    return this.changes;
  }

  /** Bring the listeners in line with `desired`. Returns whether the table changed. */
  sync(desired: PortalSpec[]): Promise<boolean> {
    return this.reconcile([...this.portals.keys()], desired, undefined);
  }

  /**
   * The same for some services only: `desired` holds the portals those services should have now
   * (none for a deleted one); every other portal is left alone. A batch of catalog changes costs
   * the ports it touched, not the whole table.
   */
  syncServices(serviceKeys: Iterable<string>, desired: PortalSpec[]): Promise<boolean> {
    const services = new Set(serviceKeys);
    const current: string[] = [];
    for (const s of services) for (const k of this.byService.values(s)) current.push(k);
    return this.reconcile(current, desired, services);
  }

  /** Portals wanted but not open for want of a socket (EMFILE, ENFILE, ENOBUFS, ENOMEM): retried. */
  get unopenedCount(): number {
    return this.unopened.size;
  }

  /**
   * Try the portals that could not open for want of descriptors again (a connection or a portal
   * may have closed since, or the limit been raised), in the order they were wanted; stops at the
   * first that still cannot. Returns whether the table changed (the caller tells interception).
   */
  async retryUnopened(): Promise<boolean> {
    if (!this.unopened.size) return false;
    const opened = await this.openAll([...this.unopened.values()], true);
    if (opened) this.log.info({ opened, unopened: this.unopened.size }, 'portals opened on retry');
    return opened > 0;
  }

  private async reconcile(
    current: string[],
    desired: PortalSpec[],
    services: ReadonlySet<string> | undefined,
  ): Promise<boolean> {
    let changed = false;
    let closed = false;
    const want = new Map(desired.map((d) => [d.key, d]));
    for (const key of current) {
      const p = this.portals.get(key);
      if (!p) continue;
      const d = want.get(key);
      if (!d || d.protocol !== p.spec.protocol) {
        await this.close(p);
        this.forget(key, p.spec);
        changed = closed = true;
      } else if (d.vip !== p.spec.vip || d.portName !== p.spec.portName) {
        p.spec = d; // same listener, new VIP/name: connections keep going
        this.changes++;
        changed = true;
      }
    }
    // an unopened portal of these services (of every service, for a whole sync) is wanted as
    // `desired` says now, or not at all
    for (const [key, spec] of this.unopened)
      if ((!services || services.has(spec.serviceKey)) && !want.has(key)) this.unopened.delete(key);
    const open: PortalSpec[] = [];
    // descriptors were given back: the portals waiting for them first, in their order
    if (closed) for (const [key, d] of this.unopened) if (!want.has(key)) open.push(d);
    for (const [key, d] of want) if (!this.portals.has(key)) open.push(d);
    if ((await this.openAll(open, false)) > 0) changed = true;
    return changed;
  }

  /**
   * Open these portals in order, within what the open-file limit holds (`fdRoom`). One
   * that finds none waits in `unopened` (and so does every one after it: they would find none
   * either). A shortage is said in one line when it begins (the count since is the
   * `edgecore_mesh_portals_unopened` gauge) rather than one per portal — a node short of
   * descriptors by thousands logged thousands of lines; another failure is said for its portal and
   * not retried. Returns how many opened.
   */
  private async openAll(specs: PortalSpec[], retry: boolean): Promise<number> {
    const waiting = this.unopened.size;
    let opened = 0;
    let short: { reason: string; first: string } | undefined;
    let room = specs.length ? this.fdRoom(specs.length) : 0;
    for (const d of specs) {
      if (!short && room <= 0) short = { reason: 'reserve', first: d.key };
      if (short) {
        this.unopened.set(d.key, d);
        continue;
      }
      try {
        this.portals.set(d.key, await this.open(d));
        this.unopened.delete(d.key);
        this.changes++;
        this.byService.add(d.serviceKey, d.key);
        opened++;
        room--;
      } catch (e) {
        const code = (e as { code?: string }).code;
        // a socket this process cannot have now (the rule the proxies and DNS follow too): it waits
        if (isLocalResourceError(code)) {
          short = { reason: code, first: d.key };
          this.unopened.set(d.key, d);
        } else {
          this.unopened.delete(d.key);
          this.log.error({ portal: d.key, err: (e as Error).message }, 'cannot open portal');
        }
      }
    }
    if (short) this.scheduleRetry();
    if (short && !retry && !waiting) {
      const limit = openFileLimit();
      this.log.warn(
        {
          reason: short.reason,
          unopened: this.unopened.size,
          first: short.first,
          openFiles: limit ? `${limit.soft} (hard ${limit.hard})` : undefined,
          reserve: limit && Number.isFinite(limit.soft) ? portalReserve(limit.soft) : undefined,
          retryMs: this.retryMs,
        },
        `portals not open: out of file descriptors (${short.reason === 'reserve' ? 'what is left is kept for connections, DNS and the proxy' : short.reason}); each service port needs one — raise the open-file limit (LimitNOFILE in edgecore's unit, ulimit -Hn); retried as descriptors free up`,
      );
    }
    return opened;
  }

  /** The soft open-file limit as last read, and when (`performance.now()`). */
  private limitRead?: { soft: number | undefined; at: number };

  /**
   * The soft open-file limit, read from `/proc/self/limits` at most once a second: every sync that
   * opens portals asks, and a burst makes hundreds (the reads were ~1 % of a node's CPU taking a
   * whole catalog); a limit raised while the node runs (`prlimit --pid`) is seen within a second.
   */
  private softLimit(): number | undefined {
    const now = performance.now();
    if (!this.limitRead || now - this.limitRead.at >= LIMIT_READ_MS)
      this.limitRead = { soft: openFileLimit()?.soft, at: now };
    return this.limitRead.soft;
  }

  /** How many of `want` more portals the open-file limit holds (`portalCapacity`). */
  private fdRoom(want: number): number {
    const limit = this.softLimit();
    if (limit === undefined || !Number.isFinite(limit)) return want;
    return Math.min(want, portalCapacity(limit) - this.portals.size);
  }

  /** While portals wait for descriptors, the owner's `onRetry` every `retryMs`. */
  private scheduleRetry(): void {
    if (this.retryTimer || !this.opts.onRetry) return;
    this.retryTimer = setInterval(() => {
      if (!this.unopened.size) {
        clearInterval(this.retryTimer);
        this.retryTimer = undefined;
        return;
      }
      this.opts.onRetry!();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  private forget(key: string, spec: PortalSpec): void {
    this.changes++;
    this.portals.delete(key);
    this.byService.delete(spec.serviceKey, key);
  }

  async closeAll(): Promise<void> {
    clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    this.unopened.clear();
    for (const p of this.portals.values()) await this.close(p);
    this.changes++;
    this.portals.clear();
    this.byService.clear();
  }

  private async open(spec: PortalSpec): Promise<Portal> {
    const portal = new Portal(this, spec);
    if (spec.transport === 'UDP') {
      let sock!: UdpSocket;
      await this.bindInRange(
        (port) =>
          new Promise<void>((resolve, reject) => {
            const s = createSocket('udp4');
            s.once('error', (e) => (s.close(), reject(e)));
            s.bind(port, this.listenHost, () => {
              s.removeAllListeners('error');
              sock = s;
              resolve();
            });
          }),
      );
      portal.udp = sock;
      portal.udpProxy = new UdpProxy(
        sock,
        this.lb,
        () => ({ backends: this.backendsOf(portal.spec), scope: portal.spec.key }),
        { ...this.opts.udp, budget: this.opts.budget },
      );
      portal.listenPort = sock.address().port;
      return portal;
    }
    const allowHalfOpen = spec.protocol === 'tcp' || spec.protocol === 'https';
    let tcp!: Listener;
    await this.bindInRange(async (port) => {
      tcp = await this.listen({ host: this.listenHost, port, allowHalfOpen }, portal);
    });
    portal.tcp = tcp;
    portal.listenPort = tcp.port;
    return portal;
  }

  /**
   * A connection to a portal, by its service port's protocol (read now: it may have changed).
   * @internal its portals call it
   */
  accept(portal: Portal, sock: Socket): void {
    if (this.opts.budget?.admit(sock) === false) return;
    const s = portal.spec;
    if (s.protocol === 'h2') this.h2.handlePortal(sock, this.h2RouteOf(portal));
    else if (s.protocol === 'http') this.http.handleRoute(sock, this.routeOf(portal));
    else if (s.protocol === 'https') this.tlsOrPlain(sock, s, this.routeOf(portal));
    else this.tcp.handle(sock, this.backendsOf(s), s.key);
  }

  /** An L7 portal's route, asked per connection (HTTP/1): one per portal, made when first needed. */
  private routeOf(portal: Portal): () => NativeRoute {
    return (portal.route ??= () => {
      const backends = this.backendsOf(portal.spec);
      return { backends, scope: portal.spec.key, hashHeader: hashHeaderFor(backends, this.opts.hashHeader) };
    });
  }

  /** Its HTTP/2 route, asked per stream (the HTTP/2 proxy keeps one per scope). */
  private h2RouteOf(portal: Portal): () => H2Route {
    return (portal.h2route ??= () =>
      h2RouteOf(this.backendsOf(portal.spec), portal.spec.key, this.opts.hashHeader));
  }

  /**
   * An `appProtocol: https` port, by its first bytes: a TLS ClientHello passes through at L4 (its
   * SNI and ALPN read for logs and metrics, nothing terminated); anything else is plain HTTP for
   * the HTTP/1 proxy, which originates TLS to the backend (proxy/tls/backend-tls.ts).
   */
  private tlsOrPlain(sock: Socket, spec: PortalSpec, route: () => NativeRoute): void {
    sock.on('error', () => sock.destroy());
    const timer = setTimeout(() => sock.destroy(), 10_000);
    sock.once('data', (first: Buffer) => {
      clearTimeout(timer);
      sock.pause();
      const st = this.tlsStats;
      if (first[0] === 0x16) {
        const hello = clientHello(first);
        const alpn = hello?.alpn?.[0] ?? 'none';
        st.passthrough.set(alpn, (st.passthrough.get(alpn) ?? 0) + 1);
        // the service may choose the backend by the name the client asked for
        const all = this.backendsOf(spec);
        const chosen = backendsForSni(all, hello?.sni);
        if (chosen !== all) st.bySni++;
        this.log.debug(
          { portal: spec.key, sni: hello?.sni, alpn: hello?.alpn, backends: chosen.length },
          'TLS passed through',
        );
        return this.tcp.handle(sock, chosen, spec.key, first);
      }
      st.originated++;
      this.http.handle(
        sock,
        () => {
          const r = route();
          return { ...r, backends: originating(r.backends) };
        },
        first,
      );
    });
  }

  /** `appProtocol: https` connections: passed through by ALPN (the client's first), or TLS originated. */
  readonly tlsStats = { passthrough: new Map<string, number>(), originated: 0, bySni: 0 };

  private async close(p: Portal): Promise<void> {
    p.udpProxy?.close();
    if (p.udp) p.udp.close();
    if (p.tcp) {
      // stop accepting; existing connections of this portal finish on their own
      p.tcp.close();
    }
  }
}

/** `auto` → the kernel's ephemeral range, `FROM-TO`, or `0` (random bind: undefined). */
export function portalPortRange(spec: string): { from: number; to: number } | undefined {
  if (spec === '0') return undefined;
  let text = spec;
  if (spec === 'auto') {
    try {
      text = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().replace(/\s+/, '-');
    } catch {
      return undefined; // no procfs: the kernel picks, as before
    }
  }
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text);
  const from = Number(m?.[1]);
  const to = Number(m?.[2]);
  if (!m || from < 1 || to > 65535 || from > to)
    throw new InvalidOptionError('portalPortRange', spec, 'auto, 0 or FROM-TO within 1-65535');
  return { from, to };
}
