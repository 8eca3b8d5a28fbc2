import { clientHello, originating } from './tls/backend-tls';
import type { NativeRoute } from './http/route';
import { h2RouteOf, type H2Proxy, type H2Route } from './h2/h2-proxy';
import { Logger, silentLogger } from '@edgecore/beehive';
import { readFileSync } from 'node:fs';
import { InvalidOptionError } from '../edgemesh-errors';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { defaultListen, type ConnectionTarget, type Listen, type Listener } from './listeners';
import type { Service } from '../catalog/types';
import { flatKey, IndexMap } from '../catalog/index-map';
import type { Backend } from '../lb/backends';
import type { LoadBalancer } from '../lb/load-balancer';
import { backendsForSni, hashHeaderFor } from '../lb/service-policy';
import type { HttpProxy } from './http/http-proxy';
import type { TcpProxy } from './l4/tcp-proxy';
import { UdpProxy, type UdpProxyOptions } from './l4/udp-proxy';
import { portProtocol, type PortalEntry, type PortalSpec } from '../portal-table';

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
      for (const p of s.spec?.ports ?? []) {
        const transport = (p.protocol ?? 'TCP') === 'UDP' ? 'UDP' : 'TCP';
        if ((p.protocol ?? 'TCP') === 'SCTP') continue;
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
    } = {},
  ) {
    this.log = opts.log ?? silentLogger;
    this.listen = opts.listen ?? defaultListen();
    // a random place to start, so that several edgecores on one host do not all walk the ports
    // the first one took
    const r = opts.portRange;
    this.nextPort = r ? r.from + Math.floor(Math.random() * (r.to - r.from + 1)) : 0;
  }

  private readonly listen: Listen;

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
    return this.reconcile([...this.portals.keys()], desired);
  }

  /**
   * The same for some services only: `desired` holds the portals those services should have now
   * (none for a deleted one); every other portal is left alone. A batch of catalog changes costs
   * the ports it touched, not the whole table.
   */
  syncServices(serviceKeys: Iterable<string>, desired: PortalSpec[]): Promise<boolean> {
    const current: string[] = [];
    for (const s of serviceKeys) for (const k of this.byService.values(s)) current.push(k);
    return this.reconcile(current, desired);
  }

  private async reconcile(current: string[], desired: PortalSpec[]): Promise<boolean> {
    let changed = false;
    const want = new Map(desired.map((d) => [d.key, d]));
    for (const key of current) {
      const p = this.portals.get(key);
      if (!p) continue;
      const d = want.get(key);
      if (!d || d.protocol !== p.spec.protocol) {
        await this.close(p);
        this.forget(key, p.spec);
        changed = true;
      } else if (d.vip !== p.spec.vip || d.portName !== p.spec.portName) {
        p.spec = d; // same listener, new VIP/name: connections keep going
        this.changes++;
        changed = true;
      }
    }
    for (const [key, d] of want) {
      if (this.portals.has(key)) continue;
      try {
        this.portals.set(key, await this.open(d));
        this.changes++;
        this.byService.add(d.serviceKey, key);
        changed = true;
      } catch (e) {
        this.log.error({ portal: key, err: (e as Error).message }, 'cannot open portal');
      }
    }
    return changed;
  }

  private forget(key: string, spec: PortalSpec): void {
    this.changes++;
    this.portals.delete(key);
    this.byService.delete(spec.serviceKey, key);
  }

  async closeAll(): Promise<void> {
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
        this.opts.udp,
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
