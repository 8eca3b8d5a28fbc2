import type * as dnsPacket from 'dns-packet';
import type { ServiceCatalog } from '../catalog/catalog';
import { isExternalName, type Service, type ServicePort } from '../catalog/types';
import { isHeadless } from '../vip/vip-table';
import { parseEndpointName, parseServiceName } from '../service-name';
import { QCLASS, QTYPE, RCODE, type ParsedQuery } from './wire';

export interface ZoneAnswer {
  rcode: number;
  /** Authoritative answer (AA): true unless said otherwise (a short form, a refusal). */
  aa?: boolean;
  /** The answer of a short form (`<svc>.<ns>[.svc]`): the server decides against the upstream. */
  shortForm?: boolean;
  /** Endpoint VIPs are being allocated: ask again when this settles. */
  pending?: Promise<void>;
  answers: dnsPacket.Answer[];
  authorities: dnsPacket.Answer[];
  additionals: dnsPacket.Answer[];
}

export interface ClusterZoneOptions {
  clusterDomain: string;
  ttl: number;
  /** `dns.shortNames` (default `fallback`; `never`: the zone does not answer short forms). */
  shortNames?: 'fallback' | 'always' | 'never';
}

/** Where the zone reads VIPs (the VipTable). */
export interface VipLookup {
  /** VIP of a service key `<ns>/<name>`, if it has one. */
  vipOf(serviceKey: string): string | undefined;
  /** Service key of a VIP. */
  serviceOf(ip: string): string | undefined;
  /** Whether an IP lies in the VIP pool (PTR for a free pool address is NXDOMAIN, not forwarded). */
  inPool(ip: string): boolean;
}

/**
 * The endpoints of headless services (spec §2.4.1), as the mesh knows them: each ready endpoint's
 * name `<label>.<svc>.<ns>.svc.<domain>` answers a VIP of its own, proxied to that endpoint alone,
 * allocated when a name of it is first asked for.
 */
export interface EndpointNames {
  /** The labels of the ready endpoints of a headless service (serving `port` when given). */
  labels(namespace: string, service: string, port?: ServicePort): string[];
  vipOf(namespace: string, service: string, label: string): string | undefined;
  /** Give these endpoints their VIPs (and portals); resolves once they can be answered. */
  ensure(namespace: string, service: string, labels: string[]): Promise<void>;
  /** The endpoint of an endpoint VIP. */
  endpointOf(ip: string): { service: string; label: string } | undefined;
}

/** The version of the Kubernetes DNS-based service discovery spec answered (spec §2.2). */
export const DNS_SCHEMA_VERSION = '1.1.0';

/**
 * Answers for the cluster domain, per the Kubernetes DNS-based service discovery spec:
 * `<svc>.<ns>.svc.<domain>` A → VIP, SRV → one per port; an ExternalName service → a CNAME (with the
 * target's A when it is a service of the zone); `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV;
 * `dns-version.<domain>` TXT; the apex SOA and NS (`ns.dns.<domain>`, its A the address the server
 * listens on); PTR for VIPs; empty non-terminals (`svc.`, `<ns>.svc.`, `pod.`, `dns.`) and other
 * types of a known name → NODATA; unknown names in the zone → NXDOMAIN with the SOA (RFC 2308).
 * A class other than IN (or ANY) for a name of ours is REFUSED, as BIND and Knot do.
 *
 * The short forms `<svc>.<ns>` and `<svc>.<ns>.svc` (clients without search paths) are answered
 * when the service exists, not authoritatively and without an SOA (the zone is no ancestor of
 * those names: a NODATA for them is not negatively cacheable, RFC 2308 §5), marked `shortForm`
 * for the server's `dns.shortNames` rule; otherwise they go upstream. Returns undefined when the
 * name is not ours.
 */
export class ClusterZone {
  /** The cluster domain, lower case, no trailing dot. */
  readonly domain: string;
  private readonly suffix: string;
  /** The address of `ns.dns.<domain>` (the DNS server's listen address), once known. */
  private nameserver?: string;

  constructor(
    private readonly catalog: ServiceCatalog,
    private readonly vips: VipLookup,
    private readonly o: ClusterZoneOptions,
  ) {
    this.domain = o.clusterDomain.toLowerCase().replace(/\.$/, '');
    this.suffix = `.${this.domain}`;
  }

  get shortNames(): 'fallback' | 'always' | 'never' {
    return this.o.shortNames ?? 'fallback';
  }

  private endpoints?: EndpointNames;

  /** Where the names of headless services' endpoints come from (the mesh sets it at start). */
  setEndpointNames(e: EndpointNames): void {
    this.endpoints = e;
  }

  /** The DNS server listens on `ip`: the glue of the apex NS. */
  setNameserverAddress(ip: string): void {
    this.nameserver = ip;
  }

  private get nsName(): string {
    return `ns.dns.${this.domain}`;
  }

  soa(): dnsPacket.Answer {
    const d = this.domain;
    return {
      type: 'SOA',
      name: d,
      ttl: this.o.ttl,
      data: {
        mname: this.nsName,
        rname: `hostmaster.${d}`,
        serial: 1,
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: this.o.ttl,
      },
    } as dnsPacket.Answer;
  }

  resolve(q: ParsedQuery): ZoneAnswer | undefined {
    const a = this.lookup(q);
    if (a && q.qclass !== QCLASS.IN && q.qclass !== QCLASS.ANY)
      return { rcode: RCODE.REFUSED, aa: false, answers: [], authorities: [], additionals: [] };
    return a;
  }

  private lookup(q: ParsedQuery): ZoneAnswer | undefined {
    const name = q.name;
    if (name.endsWith('.in-addr.arpa')) return this.ptr(q);
    if (name === this.domain) return this.apex(q);
    // A service's name; a short form only when the service exists, else not ours (forward).
    const s = parseServiceName(name, this.domain);
    if (s) {
      const svc = this.catalog.getService(s.namespace, s.service);
      if (svc) {
        const a = this.serviceAnswer(q, s.namespace, s.service, svc, name);
        if (s.inZone) return a;
        if (this.o.shortNames === 'never') return undefined;
        return {
          ...a,
          aa: false,
          shortForm: true,
          authorities: a.authorities.filter((r) => r.type !== 'SOA'),
        };
      }
      if (s.inZone) return this.nxdomain();
    }
    const e = parseEndpointName(name, this.domain);
    if (e) return this.endpoint(q, e.label, e.service, e.namespace);
    if (name.endsWith(this.suffix)) return this.inZone(q, name.slice(0, -this.suffix.length).split('.'));
    return undefined;
  }

  private apex(q: ParsedQuery): ZoneAnswer {
    const ns = { type: 'NS', name: this.domain, ttl: this.o.ttl, data: this.nsName } as dnsPacket.Answer;
    const glue = this.glue();
    switch (q.qtype) {
      case QTYPE.SOA:
        return this.ok([this.soa()]);
      case QTYPE.NS:
        return { ...this.ok([ns]), additionals: glue };
      case QTYPE.ANY:
        return { ...this.ok([this.soa(), ns]), additionals: glue };
      default:
        return this.nodata();
    }
  }

  private glue(): dnsPacket.Answer[] {
    return this.nameserver ? [{ type: 'A', name: this.nsName, ttl: this.o.ttl, data: this.nameserver }] : [];
  }

  private inZone(q: ParsedQuery, labels: string[]): ZoneAnswer {
    const n = labels.length;
    if (n === 1 && labels[0] === 'dns-version') {
      if (q.qtype !== QTYPE.TXT && q.qtype !== QTYPE.ANY) return this.nodata();
      return this.ok([{ type: 'TXT', name: q.name, ttl: this.o.ttl, data: DNS_SCHEMA_VERSION }]);
    }
    if (n === 2 && labels[0] === 'ns' && labels[1] === 'dns') {
      const glue = this.glue();
      return (q.qtype === QTYPE.A || q.qtype === QTYPE.ANY) && glue.length ? this.ok(glue) : this.nodata();
    }
    // empty non-terminals: names with names below them and no records of their own
    if (n === 1 && (labels[0] === 'svc' || labels[0] === 'pod' || labels[0] === 'dns')) return this.nodata();
    if (n === 2 && labels[1] === 'svc')
      return this.catalog.hasNamespace(labels[0]) ? this.nodata() : this.nxdomain();
    if (n === 5 && labels[4] === 'svc' && labels[0].startsWith('_') && labels[1].startsWith('_')) {
      return this.srv(q, labels[0].slice(1), labels[1].slice(1), labels[2], labels[3]);
    }
    return this.nxdomain();
  }

  /** `<label>.<svc>.<ns>.svc.<domain>`: an endpoint of a headless service, at its own VIP. */
  private endpoint(q: ParsedQuery, label: string, svc: string, ns: string): ZoneAnswer {
    const e = this.endpoints;
    const s = this.catalog.getService(ns, svc);
    if (!e || !isHeadless(s) || !e.labels(ns, svc).includes(label)) return this.nxdomain();
    const vip = e.vipOf(ns, svc, label);
    if (!vip) return { ...this.nodata(), pending: e.ensure(ns, svc, [label]) };
    if (q.qtype !== QTYPE.A && q.qtype !== QTYPE.ANY) return this.nodata();
    return this.ok([{ type: 'A', name: q.name, ttl: this.o.ttl, data: vip }]);
  }

  private serviceAnswer(q: ParsedQuery, ns: string, svc: string, s: Service, name: string): ZoneAnswer {
    if (isExternalName(s)) return this.alias(q, s, name);
    const vip = this.vips.vipOf(`${ns}/${svc}`);
    if (q.qtype === QTYPE.A || q.qtype === QTYPE.ANY) {
      if (!vip) return this.nodata();
      return this.ok([{ type: 'A', name, ttl: this.o.ttl, data: vip }]);
    }
    if (q.qtype === QTYPE.SRV) {
      // every port of the service (CoreDNS answers a bare service name's SRV so)
      const target = `${svc}.${ns}.svc.${this.domain}`;
      const ports = (s.spec?.ports ?? []).filter((p) => p.protocol !== 'SCTP');
      if (!ports.length || !vip) return this.nodata();
      const a = this.ok(ports.map((p) => this.srvRecord(name, p.port, target)));
      a.additionals.push({ type: 'A', name: target, ttl: this.o.ttl, data: vip });
      return a;
    }
    return this.nodata();
  }

  /**
   * An ExternalName service: a CNAME to its name; when that name is a service of this zone, the
   * target's records follow (RFC 1034 §4.3.2), and a target the zone does not have is NXDOMAIN
   * (RFC 6604: the rcode speaks of the last name of the chain).
   */
  private alias(q: ParsedQuery, s: Service, name: string): ZoneAnswer {
    const target = (s.spec?.externalName ?? '').toLowerCase().replace(/\.$/, '');
    if (!target) return this.nodata();
    const cname = { type: 'CNAME', name, ttl: this.o.ttl, data: target } as dnsPacket.Answer;
    if (q.qtype === QTYPE.CNAME || !target.endsWith(this.suffix)) return this.ok([cname]);
    const t = parseServiceName(target, this.domain);
    const ts = t?.inZone ? this.catalog.getService(t.namespace, t.service) : undefined;
    if (!t || !ts) return { ...this.nxdomain(), answers: [cname] };
    if (isExternalName(ts)) return this.ok([cname]); // one step only: no chains through the zone
    const next = this.serviceAnswer({ ...q, name: target }, t.namespace, t.service, ts, target);
    return { ...next, answers: [cname, ...next.answers] };
  }

  private srv(q: ParsedQuery, portName: string, proto: string, svc: string, ns: string): ZoneAnswer {
    const s: Service | undefined = this.catalog.getService(ns, svc);
    if (!s) return this.nxdomain();
    const port = (s.spec?.ports ?? []).find(
      (p) => p.name === portName && (p.protocol ?? 'TCP').toLowerCase() === proto,
    );
    if (!port) return this.nxdomain();
    if (q.qtype !== QTYPE.SRV && q.qtype !== QTYPE.ANY) return this.nodata();
    const target = `${svc}.${ns}.svc.${this.domain}`;
    const srv = (t: string) => this.srvRecord(q.name, port.port, t);
    // a headless service: one SRV per ready endpoint serving the port (spec §2.4.2), each named
    // and at its own VIP; with none ready, the service's own name (its VIP still answers)
    const labels = this.endpoints && isHeadless(s) ? this.endpoints.labels(ns, svc, port) : [];
    if (labels.length) {
      const e = this.endpoints!;
      const missing = labels.filter((l) => !e.vipOf(ns, svc, l));
      if (missing.length) return { ...this.nodata(), pending: e.ensure(ns, svc, missing) };
      const a = this.ok(labels.map((l) => srv(`${l}.${target}`)));
      for (const l of labels)
        a.additionals.push({
          type: 'A',
          name: `${l}.${target}`,
          ttl: this.o.ttl,
          data: e.vipOf(ns, svc, l)!,
        });
      return a;
    }
    const vip = this.vips.vipOf(`${ns}/${svc}`);
    const answer = this.ok([srv(target)]);
    if (vip) answer.additionals.push({ type: 'A', name: target, ttl: this.o.ttl, data: vip });
    return answer;
  }

  /** An SRV of ours: priority 0, weight 100 (as CoreDNS), the port and its target. */
  private srvRecord(name: string, port: number, target: string): dnsPacket.Answer {
    return {
      type: 'SRV',
      name,
      ttl: this.o.ttl,
      data: { priority: 0, weight: 100, port, target },
    } as dnsPacket.Answer;
  }

  private ptr(q: ParsedQuery): ZoneAnswer | undefined {
    const parts = q.name.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return undefined;
    const ip = parts.reverse().join('.');
    const ep = this.endpoints?.endpointOf(ip);
    if (ep) {
      if (q.qtype !== QTYPE.PTR && q.qtype !== QTYPE.ANY) return this.nodata();
      const [ns, svc] = ep.service.split('/');
      return this.ok([
        { type: 'PTR', name: q.name, ttl: this.o.ttl, data: `${ep.label}.${svc}.${ns}.svc.${this.domain}` },
      ]);
    }
    const key = this.vips.serviceOf(ip);
    if (!key) return this.vips.inPool(ip) ? this.nxdomain() : undefined;
    const [ns, svc] = key.split('/');
    if (q.qtype !== QTYPE.PTR && q.qtype !== QTYPE.ANY) return this.nodata();
    return this.ok([{ type: 'PTR', name: q.name, ttl: this.o.ttl, data: `${svc}.${ns}.svc.${this.domain}` }]);
  }

  private ok(answers: dnsPacket.Answer[]): ZoneAnswer {
    return { rcode: RCODE.NOERROR, answers, authorities: [], additionals: [] };
  }
  private nodata(): ZoneAnswer {
    return { rcode: RCODE.NOERROR, answers: [], authorities: [this.soa()], additionals: [] };
  }
  private nxdomain(): ZoneAnswer {
    return { rcode: RCODE.NXDOMAIN, answers: [], authorities: [this.soa()], additionals: [] };
  }
}
