import type * as dnsPacket from 'dns-packet';
import type { ServiceCatalog } from '../catalog/catalog';
import type { Service } from '../catalog/types';
import { parseServiceName } from '../service-name';
import { QTYPE, RCODE, type ParsedQuery } from './wire';

export interface ZoneAnswer {
  rcode: number;
  answers: dnsPacket.Answer[];
  authorities: dnsPacket.Answer[];
  additionals: dnsPacket.Answer[];
}

export interface ClusterZoneOptions {
  clusterDomain: string;
  ttl: number;
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
 * Answers for the cluster domain, per the Kubernetes DNS-based service discovery spec:
 * `<svc>.<ns>.svc.<domain>` A → VIP; `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV; PTR for VIPs;
 * other types of a known name → NODATA; unknown names in the zone → NXDOMAIN with the SOA
 * (RFC 2308 negative caching). The short forms `<svc>.<ns>` and `<svc>.<ns>.svc` are answered when
 * the service exists (clients without search paths), otherwise they go upstream.
 * Returns undefined when the name is not ours.
 */
export class ClusterZone {
  /** The cluster domain, lower case, no trailing dot. */
  readonly domain: string;
  private readonly suffix: string;

  constructor(
    private readonly catalog: ServiceCatalog,
    private readonly vips: VipLookup,
    private readonly o: ClusterZoneOptions,
  ) {
    this.domain = o.clusterDomain.toLowerCase().replace(/\.$/, '');
    this.suffix = `.${this.domain}`;
  }

  soa(): dnsPacket.Answer {
    const d = this.domain;
    return {
      type: 'SOA',
      name: d,
      ttl: this.o.ttl,
      data: {
        mname: `ns.dns.${d}`,
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
    const name = q.name;
    if (name.endsWith('.in-addr.arpa')) return this.ptr(q);
    if (name === this.domain) return q.qtype === QTYPE.SOA ? this.ok([this.soa()]) : this.nodata();
    // A service's name; a short form only when the service exists, else not ours (forward).
    const s = parseServiceName(name, this.domain);
    if (s) {
      if (this.catalog.getService(s.namespace, s.service))
        return this.serviceAnswer(q, s.namespace, s.service, name);
      if (s.inZone) return this.nxdomain();
    }
    if (name.endsWith(this.suffix)) return this.inZone(q, name.slice(0, -this.suffix.length).split('.'));
    return undefined;
  }

  private inZone(q: ParsedQuery, labels: string[]): ZoneAnswer {
    const n = labels.length;
    if (n === 1 && labels[0] === 'svc') return this.nodata();
    if (n === 2 && labels[1] === 'svc')
      return this.catalog.hasNamespace(labels[0]) ? this.nodata() : this.nxdomain();
    if (n === 5 && labels[4] === 'svc' && labels[0].startsWith('_') && labels[1].startsWith('_')) {
      return this.srv(q, labels[0].slice(1), labels[1].slice(1), labels[2], labels[3]);
    }
    return this.nxdomain();
  }

  private serviceAnswer(q: ParsedQuery, ns: string, svc: string, name: string): ZoneAnswer {
    const vip = this.vips.vipOf(`${ns}/${svc}`);
    if (q.qtype === QTYPE.A || q.qtype === QTYPE.ANY) {
      if (!vip) return this.nodata();
      return this.ok([{ type: 'A', name, ttl: this.o.ttl, data: vip }]);
    }
    return this.nodata();
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
    const vip = this.vips.vipOf(`${ns}/${svc}`);
    const answer = this.ok([
      {
        type: 'SRV',
        name: q.name,
        ttl: this.o.ttl,
        data: { priority: 0, weight: 100, port: port.port, target },
      } as dnsPacket.Answer,
    ]);
    if (vip) answer.additionals.push({ type: 'A', name: target, ttl: this.o.ttl, data: vip });
    return answer;
  }

  private ptr(q: ParsedQuery): ZoneAnswer | undefined {
    const parts = q.name.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return undefined;
    const ip = parts.reverse().join('.');
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
