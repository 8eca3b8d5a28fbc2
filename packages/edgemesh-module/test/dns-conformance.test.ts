import { ReferenceDns } from '@edgecore/test-support';
import * as dnsPacket from 'dns-packet';
import { createSocket } from 'node:dgram';
import { walkRecords } from '../src/dns/wire';
import { service, startMesh, tmpDir, type MeshNode } from './helpers';

/**
 * The cluster zone against BIND and Knot serving the same records (a zone file written from the
 * mesh's own VIPs): for each query the reply's RCODE, AA, TC, section counts, OPT and the question
 * echoed byte for byte must be what both references answer — or, where they differ from each
 * other, what one of them answers.
 */

type Label = string | Buffer;
interface Q {
  labels: Label[];
  qtype?: number;
  qclass?: number;
  opcode?: number;
  /** EDNS UDP size (an OPT record) or none. */
  edns?: number;
  /** A header only (QDCOUNT 0). */
  bare?: boolean;
}

function packet(q: Q, id = 0x4242): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(((q.opcode ?? 0) << 11) | 0x0100, 2);
  if (q.bare) return head;
  head.writeUInt16BE(1, 4);
  const name = Buffer.concat([
    ...q.labels.map((l) => {
      const b = typeof l === 'string' ? Buffer.from(l, 'latin1') : l;
      return Buffer.concat([Buffer.from([b.length]), b]);
    }),
    Buffer.from([0]),
  ]);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(q.qtype ?? 1, 0);
  tail.writeUInt16BE(q.qclass ?? 1, 2);
  const parts = [head, name, tail];
  if (q.edns) {
    head.writeUInt16BE(1, 10);
    const opt = Buffer.alloc(11);
    opt.writeUInt16BE(41, 1);
    opt.writeUInt16BE(q.edns, 3);
    parts.push(opt);
  }
  return Buffer.concat(parts);
}

function ask(port: number, p: Buffer): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => (s.close(), resolve(undefined)), 2000);
    s.on('message', (m) => (clearTimeout(t), s.close(), resolve(m)));
    s.send(p, port, '127.0.0.1');
  });
}

/** What is compared: RCODE, AA, TC, counts, OPT, whether the question came back as sent. */
function signature(r: Buffer | undefined, sent: Buffer): string {
  if (!r) return 'no reply';
  const f = r.readUInt16BE(2);
  let opt = '?';
  try {
    opt = walkRecords(r).some((x) => x.type === 41) ? 'opt' : 'no-opt';
  } catch {
    /* unparsable sections: '?' */
  }
  const qd = r.readUInt16BE(4);
  const qEnd = sent.readUInt16BE(4) ? 12 + sentQuestionLength(sent) : 12;
  const echoed = qd === 0 || r.subarray(12, qEnd).equals(sent.subarray(12, qEnd)) ? 'echo' : 'rewritten';
  return [
    `rcode=${f & 0xf}`,
    f & 0x400 ? 'aa' : '-',
    f & 0x200 ? 'tc' : '-',
    `an=${r.readUInt16BE(6)}`,
    `ns=${r.readUInt16BE(8)}`,
    opt,
    echoed,
  ].join(' ');
}

function sentQuestionLength(p: Buffer): number {
  let off = 12;
  while (p[off] !== 0) off += p[off] + 1;
  return off + 1 + 4 - 12;
}

/**
 * Asks EdgeMesh (`port`) and both references the same packet; throws unless EdgeMesh's reply has
 * the signature of one of theirs. Resolves with the three replies.
 */
async function againstReferences(
  port: number,
  refs: ReferenceDns[],
  p: Buffer,
): Promise<(Buffer | undefined)[]> {
  const [mine, bind, knot] = await Promise.all([port, ...refs.map((r) => r.port)].map((x) => ask(x, p)));
  const want = new Set([signature(bind, p), signature(knot, p)]);
  const got = signature(mine, p);
  if (!want.has(got))
    throw new Error(`EdgeMesh: ${got}\nBIND:     ${signature(bind, p)}\nKnot:     ${signature(knot, p)}`);
  return [mine, bind, knot];
}

const Z = ['cluster', 'local'];
const SVC = (name: string, ns = 'testns') => [name, ns, 'svc', ...Z];

describe('DNS protocol conformance: the cluster zone against BIND and Knot', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  let refs: ReferenceDns[] = [];

  beforeAll(async () => {
    d = tmpDir();
    n = await startMesh(d.db);
    await n.put(service('svc1', 'testns', { ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
    const many = Array.from({ length: 40 }, (_, i) => ({
      name: `p${i}`,
      port: 1000 + i,
      protocol: 'TCP' as const,
    }));
    await n.put(service('many', 'testns', { ports: many }));
    await n.put(service('ext', 'testns', { type: 'ExternalName', externalName: 'example.com', ports: [] }));
    await n.put(
      service('alias', 'testns', {
        type: 'ExternalName',
        externalName: 'svc1.testns.svc.cluster.local',
        ports: [],
      }),
    );
    const vip1 = n.mesh.vipOf('testns/svc1')!;
    const vipMany = n.mesh.vipOf('testns/many')!;
    const zone = [
      '$TTL 5',
      '@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5',
      '@ IN NS ns.dns.cluster.local.',
      'ns.dns IN A 127.0.0.1',
      'dns-version IN TXT "1.1.0"',
      `svc1.testns.svc IN A ${vip1}`,
      'svc1.testns.svc IN SRV 0 100 80 svc1.testns.svc.cluster.local.',
      '_http._tcp.svc1.testns.svc IN SRV 0 100 80 svc1.testns.svc.cluster.local.',
      `many.testns.svc IN A ${vipMany}`,
      ...many.map((p) => `many.testns.svc IN SRV 0 100 ${p.port} many.testns.svc.cluster.local.`),
      'ext.testns.svc IN CNAME example.com.',
      'alias.testns.svc IN CNAME svc1.testns.svc.cluster.local.',
      // something under pod.: it is an empty non-terminal in both
      'x.y.pod IN TXT "placeholder"',
    ].join('\n');
    refs = [
      await ReferenceDns.bind('cluster.local', zone + '\n'),
      await ReferenceDns.knot('cluster.local', zone + '\n'),
    ];
  }, 60_000);
  afterAll(async () => {
    for (const r of refs) await r.stop();
    await n?.stop();
    d?.cleanup();
  });

  const long63 = 'a'.repeat(63);
  const cases: [string, Q][] = [
    ['a service A', { labels: SVC('svc1') }],
    ['a service A, EDNS', { labels: SVC('svc1'), edns: 1232 }],
    ['a service in mixed case', { labels: ['SvC1', 'TestNS', 'svc', 'CLUSTER', 'local'] }],
    ['a service AAAA: NODATA', { labels: SVC('svc1'), qtype: 28 }],
    ['SRV of a named port', { labels: ['_http', '_tcp', ...SVC('svc1')], qtype: 33 }],
    ['SRV of a bare service name', { labels: SVC('svc1'), qtype: 33 }],
    ['an unknown service: NXDOMAIN', { labels: SVC('nope') }],
    ['an unknown name in the zone, EDNS', { labels: ['nope', ...Z], edns: 1232 }],
    ['dns-version TXT', { labels: ['dns-version', ...Z], qtype: 16 }],
    ['the apex SOA', { labels: Z, qtype: 6 }],
    ['the apex NS', { labels: Z, qtype: 2 }],
    ['the apex A: NODATA', { labels: Z }],
    ['ns.dns A (the glue)', { labels: ['ns', 'dns', ...Z] }],
    ['empty non-terminal svc.', { labels: ['svc', ...Z] }],
    ['empty non-terminal <ns>.svc.', { labels: ['testns', 'svc', ...Z] }],
    ['empty non-terminal pod.', { labels: ['pod', ...Z] }],
    ['empty non-terminal dns.', { labels: ['dns', ...Z] }],
    ['ExternalName: a CNAME out of the zone', { labels: SVC('ext') }],
    ['ExternalName: a CNAME into the zone, with its A', { labels: SVC('alias') }],
    ['ExternalName asked for CNAME', { labels: SVC('alias'), qtype: 5 }],
    ['a label holding a dot is one label', { labels: ['svc1.testns', 'svc', ...Z] }],
    ['non-ASCII octets, echoed as sent', { labels: [Buffer.from([0xc4, 0x80, 0xff]), ...Z] }],
    ['class CH', { labels: SVC('svc1'), qclass: 3 }],
    ['class CH, EDNS: the refusal carries OPT', { labels: SVC('svc1'), qclass: 3, edns: 1232 }],
    ['class ANY', { labels: SVC('svc1'), qclass: 255 }],
    ['class 7', { labels: SVC('svc1'), qclass: 7 }],
    ['opcode STATUS with a question, EDNS', { labels: Z, qtype: 6, opcode: 2, edns: 1232 }],
    ['a header only with opcode 15', { labels: [], bare: true, opcode: 15 }],
    // 3 × 64 + 48 + 14 (cluster.local) + 1 (root) = 255 octets; one more is one too many
    ['a 256-octet name', { labels: [long63, long63, long63, 'a'.repeat(48), ...Z] }],
    ['a 255-octet name (the longest)', { labels: [long63, long63, long63, 'a'.repeat(47), ...Z] }],
    ['AXFR over UDP', { labels: Z, qtype: 252 }],
    ['IXFR over UDP', { labels: Z, qtype: 251 }],
    ['truncated for 512 octets, EDNS: TC and OPT', { labels: SVC('many'), qtype: 33, edns: 512 }],
    ['truncated without EDNS', { labels: SVC('many'), qtype: 33 }],
  ];

  it.each(cases)('%s', async (_name, q) => {
    await againstReferences(n.port, refs, packet(q));
  });
});

/** The PTR answer's target name (lower case), or undefined. */
function ptrTarget(r: Buffer | undefined): string | undefined {
  const a = r && dnsPacket.decode(r).answers?.find((x) => x.type === 'PTR');
  return a ? String(a.data).toLowerCase() : undefined;
}

describe('DNS protocol conformance: PTR of the VIP pool against BIND and Knot', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  let refs: ReferenceDns[] = [];
  const rev = (ip: string) => [...ip.split('.').reverse(), 'in-addr', 'arpa'];
  let vip1 = '';
  let vip2 = '';
  let free = '';

  beforeAll(async () => {
    d = tmpDir();
    n = await startMesh(d.db);
    await n.put(service('svc1', 'testns', { ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
    await n.put(service('svc2', 'other', { ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] }));
    vip1 = n.mesh.vipOf('testns/svc1')!;
    vip2 = n.mesh.vipOf('other/svc2')!;
    const [a, b] = vip1.split('.');
    // an address of the pool no service holds
    free = [a, b, '255', '253'].join('.');
    expect([vip1, vip2]).not.toContain(free);
    const zone = `${b}.${a}.in-addr.arpa`;
    const owner = (ip: string) => ip.split('.').reverse().slice(0, 2).join('.');
    const text = [
      '$TTL 5',
      '@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5',
      '@ IN NS ns.dns.cluster.local.',
      `${owner(vip1)} IN PTR svc1.testns.svc.cluster.local.`,
      `${owner(vip2)} IN PTR svc2.other.svc.cluster.local.`,
    ].join('\n');
    refs = [await ReferenceDns.bind(zone, text + '\n'), await ReferenceDns.knot(zone, text + '\n')];
  }, 60_000);
  afterAll(async () => {
    for (const r of refs) await r.stop();
    await n?.stop();
    d?.cleanup();
  });

  const cases: [string, () => Q][] = [
    ['PTR of a service VIP', () => ({ labels: rev(vip1), qtype: 12 })],
    ['PTR of another namespace’s VIP, EDNS', () => ({ labels: rev(vip2), qtype: 12, edns: 1232 })],
    ['A of a VIP’s reverse name: NODATA', () => ({ labels: rev(vip1) })],
    ['PTR of a free pool address: NXDOMAIN', () => ({ labels: rev(free), qtype: 12 })],
  ];

  it.each(cases)('%s', async (_name, make) => {
    const [mine, bind, knot] = await againstReferences(n.port, refs, packet(make()));
    // the same service named
    expect(ptrTarget(mine)).toBe(ptrTarget(bind));
    expect(ptrTarget(mine)).toBe(ptrTarget(knot));
  });
});
