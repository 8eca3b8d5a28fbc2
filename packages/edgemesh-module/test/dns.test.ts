import * as dnsPacket from 'dns-packet';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { ReferenceDns } from '@edgecore/test-support';
import { dig, status } from './dig';
import { service, startDnsmasq, startMesh, tmpDir, until, type MeshNode } from './helpers';

function udpQuery(port: number, packet: Buffer, timeoutMs = 2000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => (s.close(), reject(new Error('timeout'))), timeoutMs);
    s.on('message', (m) => (clearTimeout(t), s.close(), resolve(m)));
    s.send(packet, port, '127.0.0.1');
  });
}

function tcpQuery(port: number, packet: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = connect(port, '127.0.0.1', () => {
      const l = Buffer.alloc(2);
      l.writeUInt16BE(packet.length);
      c.write(Buffer.concat([l, packet]));
    });
    let b = Buffer.alloc(0);
    c.on('data', (d) => {
      b = Buffer.concat([b, d]);
      if (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) {
        c.destroy();
        resolve(b.subarray(2, 2 + b.readUInt16BE(0)));
      }
    });
    c.on('error', reject);
  });
}

const query = (name: string, type: dnsPacket.RecordType = 'A', id = 7): Buffer =>
  dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
  });

describe('EdgeMesh DNS (real sockets, real SQLite, dig)', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  beforeAll(async () => {
    d = tmpDir();
    n = await startMesh(d.db);
    await n.put(service('nginx-svc'));
    await n.put(
      service('web', 'shop', {
        ports: [
          { name: 'http', port: 80, protocol: 'TCP' },
          { name: 'dns', port: 53, protocol: 'UDP' },
        ],
      }),
    );
    await n.put(service('real', 'default', { clusterIP: '10.96.0.10' }));
  });
  afterAll(async () => {
    await n.stop();
    d.cleanup();
  });

  it.each([
    ['nginx-svc.default.svc.cluster.local', 'A', 'qr aa rd ra'],
    ['nginx-svc.default.svc.cluster.local.', 'A', 'qr aa rd ra'],
    ['NGINX-SVC.Default.SVC.Cluster.Local', 'A', 'qr aa rd ra'],
    // short forms: answered, but the cluster zone is no authority for them
    ['nginx-svc.default.svc', 'A', 'qr rd ra'],
    ['nginx-svc.default', 'A', 'qr rd ra'],
  ])('%s %s → the VIP, with dig (flags %s)', async (name, type, flags) => {
    const out = await dig(n.port, [name, type]);
    expect(status(out)).toBe('NOERROR');
    expect(out).toContain(`flags: ${flags};`);
    expect(out).toMatch(
      new RegExp(
        `${name.replace(/\.$/, '').replace(/\./g, '\\.')}\\.\\s+5\\s+IN\\s+A\\s+198\\.18\\.0\\.\\d+`,
        'i',
      ),
    );
  });

  it('a service with a real ClusterIP answers with it', async () => {
    expect((await dig(n.port, ['+short', 'real.default.svc.cluster.local'])).trim()).toBe('10.96.0.10');
  });

  it('SRV for named ports, with the A record in the additional section', async () => {
    const out = await dig(n.port, ['_dns._udp.web.shop.svc.cluster.local', 'SRV']);
    expect(out).toMatch(
      /_dns\._udp\.web\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+SRV\s+0 100 53 web\.shop\.svc\.cluster\.local\./,
    );
    expect(out).toMatch(/ADDITIONAL SECTION:\nweb\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+A\s+198\.18\./);
    expect(status(await dig(n.port, ['_dns._tcp.web.shop.svc.cluster.local', 'SRV']))).toBe('NXDOMAIN');
  });

  it('PTR for a VIP; NXDOMAIN for a free pool address', async () => {
    const vip = n.mesh.vipOf('default/nginx-svc')!;
    expect((await dig(n.port, ['+short', '-x', vip])).trim()).toBe('nginx-svc.default.svc.cluster.local.');
    expect(status(await dig(n.port, ['-x', '198.18.255.200']))).toBe('NXDOMAIN');
  });

  it('AAAA and other types of a known name → NODATA with SOA', async () => {
    for (const t of ['AAAA', 'MX', 'TXT']) {
      const out = await dig(n.port, ['nginx-svc.default.svc.cluster.local', t]);
      expect(status(out)).toBe('NOERROR');
      expect(out).toMatch(/ANSWER: 0/);
      expect(out).toMatch(/AUTHORITY SECTION:\ncluster\.local\.\s+5\s+IN\s+SOA/);
    }
  });

  it('unknown names inside the cluster domain → authoritative NXDOMAIN with SOA; a known namespace → NODATA', async () => {
    const nx = await dig(n.port, ['nope.default.svc.cluster.local']);
    expect(status(nx)).toBe('NXDOMAIN');
    expect(nx).toMatch(/flags: qr aa/);
    expect(nx).toMatch(/SOA\s+ns\.dns\.cluster\.local\. hostmaster\.cluster\.local\./);
    expect(status(await dig(n.port, ['a.b.c.cluster.local']))).toBe('NXDOMAIN');
    const nsOnly = await dig(n.port, ['shop.svc.cluster.local']);
    expect(status(nsOnly)).toBe('NOERROR');
    expect(status(await dig(n.port, ['ghost.svc.cluster.local']))).toBe('NXDOMAIN');
  });

  it('TCP answers the same, and echoes the client spelling of the name (0x20)', async () => {
    const out = await dig(n.port, ['+tcp', 'NgInX-sVc.dEfAuLt.svc.cluster.local']);
    expect(out).toMatch(/NgInX-sVc\.dEfAuLt\.svc\.cluster\.local\.\s+5\s+IN\s+A/);
    const r = dnsPacket.decode(await tcpQuery(n.port, query('nginx-svc.default.svc.cluster.local', 'A', 99)));
    expect(r.id).toBe(99);
    expect((r.answers![0] as any).data).toBe(n.mesh.vipOf('default/nginx-svc'));
  });

  it('EDNS0: the answer carries our OPT; a malformed packet gets FORMERR; a bare header is dropped', async () => {
    const out = await dig(n.port, ['+edns=0', '+bufsize=1232', 'nginx-svc.default.svc.cluster.local']);
    expect(out).toMatch(/EDNS: version: 0, flags:; udp: 1232/);
    const bad = Buffer.concat([query('x.y').subarray(0, 12), Buffer.from([60, 1, 2])]);
    const r = await udpQuery(n.port, bad);
    expect(r.readUInt16BE(0)).toBe(7);
    expect(r.readUInt16BE(2) & 0xf).toBe(1); // FORMERR
    await expect(udpQuery(n.port, Buffer.alloc(6), 300)).rejects.toThrow('timeout');
  });

  it('an ExternalName service is a CNAME only: no VIP, no portal; turned into a ClusterIP service it gets both, and back', async () => {
    const ext = service('mail', 'default', {
      type: 'ExternalName',
      externalName: 'Mail.Example.COM.',
      ports: [],
    });
    await n.put(ext);
    const out = await dig(n.port, ['mail.default.svc.cluster.local', 'A']);
    expect(status(out)).toBe('NOERROR');
    expect(out).toMatch(/mail\.default\.svc\.cluster\.local\.\s+5\s+IN\s+CNAME\s+mail\.example\.com\./);
    expect(n.mesh.vipOf('default/mail')).toBeUndefined();
    const portalsOf = () =>
      n.mesh.portals.table().filter((p) => p.namespace === 'default' && p.service === 'mail');
    expect(portalsOf()).toEqual([]);
    await n.put(service('mail')); // a selector service now
    expect(n.mesh.vipOf('default/mail')).toMatch(/^198\.18\./);
    expect(portalsOf()).toHaveLength(1);
    await n.put(ext);
    expect(n.mesh.vipOf('default/mail')).toBeUndefined();
    expect(portalsOf()).toEqual([]);
    await n.del('default', 'mail');
  });

  it('changes apply at once: a new service resolves, a deleted one is NXDOMAIN', async () => {
    await n.put(service('late'));
    expect((await dig(n.port, ['+short', 'late.default.svc.cluster.local'])).trim()).toMatch(/^198\.18\./);
    await n.del('default', 'late');
    expect(status(await dig(n.port, ['late.default.svc.cluster.local']))).toBe('NXDOMAIN');
  });

  it('fuzz: 100,000 random and mutated packets, then it still answers correctly', async () => {
    const seeds = [
      query('nginx-svc.default.svc.cluster.local'),
      query('_http-0._tcp.nginx-svc.default.svc.cluster.local', 'SRV'),
      query('1.0.18.198.in-addr.arpa', 'PTR'),
    ];
    let seed = 12345;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    let replies = 0;
    sock.on('message', () => replies++);
    const N = 100_000;
    const started = Date.now();
    for (let i = 0; i < N && Date.now() - started < 60_000; i++) {
      let pkt: Buffer;
      if (i % 3 === 0) {
        pkt = Buffer.alloc(rnd(120));
        for (let j = 0; j < pkt.length; j++) pkt[j] = rnd(256);
      } else {
        pkt = Buffer.from(seeds[rnd(seeds.length)]);
        for (let k = 1 + rnd(4); k > 0; k--) pkt[rnd(pkt.length)] = rnd(256);
        if (rnd(4) === 0) pkt = pkt.subarray(0, rnd(pkt.length + 1));
      }
      // the handler itself must never throw …
      expect(() => n.mesh.dns.handle(pkt, '127.0.0.1', false)).not.toThrow();
      // … and the server gets the same packet over a real socket
      sock.send(pkt, n.port, '127.0.0.1');
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    await until(() => replies > 1000, 'replies to the valid queries among the fuzz');
    sock.close();
    expect(replies).toBeGreaterThan(1000);
    const r = dnsPacket.decode(
      await udpQuery(n.port, query('nginx-svc.default.svc.cluster.local', 'A', 4321)),
    );
    expect(r.id).toBe(4321);
    expect((r.answers![0] as any).data).toBe(n.mesh.vipOf('default/nginx-svc'));
    expect(status(await dig(n.port, ['nope.default.svc.cluster.local']))).toBe('NXDOMAIN');
  }, 120_000);
});

describe('forwarding to upstreams (dnsmasq on 127.0.0.1)', () => {
  let d: ReturnType<typeof tmpDir>;
  let n: MeshNode;
  let up: Awaited<ReturnType<typeof startDnsmasq>>;
  const big = Array.from({ length: 12 }, (_, i) => `"${String(i).padStart(2, '0')}${'x'.repeat(80)}"`).join(
    ',',
  );
  beforeAll(async () => {
    up = await startDnsmasq(['--address=/example.test/192.0.2.10', `--txt-record=big.example.test,${big}`]);
    d = tmpDir();
    // a dead upstream first: failover must skip it
    n = await startMesh(d.db, {
      dns: { upstreams: ['127.0.0.1:9', `127.0.0.1:${up.port}`], upstreamTimeoutMs: 300 },
    });
  });
  afterAll(async () => {
    await n.stop();
    await up.stop();
    d.cleanup();
  });

  it('names outside the cluster domain go upstream, with failover past a dead upstream', async () => {
    const out = await dig(n.port, ['www.example.test']);
    expect(status(out)).toBe('NOERROR');
    expect(out).toMatch(/www\.example\.test\.\s+\d+\s+IN\s+A\s+192\.0\.2\.10/);
    expect(n.mesh.forwarder.stats.upstreamFailures).toBeGreaterThanOrEqual(1);
  });

  it('answers are cached with decreasing TTLs', async () => {
    const a = await dig(n.port, ['cache.example.test']);
    const hits = n.mesh.forwarder.stats.cacheHits;
    await new Promise((r) => setTimeout(r, 1100));
    const b = await dig(n.port, ['cache.example.test']);
    expect(n.mesh.forwarder.stats.cacheHits).toBe(hits + 1);
    const ttl = (s: string): number => Number(/cache\.example\.test\.\s+(\d+)/.exec(s)![1]);
    expect(ttl(b)).toBeLessThan(ttl(a));
  });

  it('a big answer: fetched over TCP after TC, truncated for a 512-byte UDP client, whole over TCP', async () => {
    const udp = await dig(n.port, ['+noedns', '+ignore', 'big.example.test', 'TXT']);
    expect(udp).toMatch(/flags: qr[a-z ]* tc /);
    expect(udp).toMatch(/ANSWER: 0/);
    const tcp = await dig(n.port, ['+tcp', 'big.example.test', 'TXT']);
    expect(status(tcp)).toBe('NOERROR');
    expect((tcp.match(/x{80}/g) ?? []).length).toBe(12);
  });

  it('SERVFAIL when every upstream fails', async () => {
    await up.stop();
    const out = await dig(n.port, ['down.example.test', '+tries=1', '+time=5']);
    expect(status(out)).toBe('SERVFAIL');
  });
});

describe('access control (not an open resolver)', () => {
  it('clients outside allowFrom get REFUSED', async () => {
    const d = tmpDir();
    const n = await startMesh(d.db, { dns: { allowFrom: ['10.0.0.0/8'] } });
    try {
      await n.put(service('nginx-svc'));
      expect(status(await dig(n.port, ['nginx-svc.default.svc.cluster.local']))).toBe('REFUSED');
    } finally {
      await n.stop();
      d.cleanup();
    }
  });
});

describe('short forms never shadow a real name (dns.shortNames)', () => {
  let d: ReturnType<typeof tmpDir>;
  let up: Awaited<ReturnType<typeof startDnsmasq>>;
  const nodes: MeshNode[] = [];
  // upstream: shadow.test exists on "the Internet"; everything under .default does not (NXDOMAIN)
  beforeAll(async () => {
    // .test served locally (NXDOMAIN / NODATA for what it lacks), .default does not exist
    up = await startDnsmasq([
      '--local=/test/',
      '--host-record=shadow.test,192.0.2.99',
      '--address=/default/',
    ]);
    d = tmpDir();
  });
  afterAll(async () => {
    for (const n of nodes) await n.stop();
    await up.stop();
    d.cleanup();
  });
  async function mesh(shortNames?: 'fallback' | 'always' | 'never'): Promise<MeshNode> {
    const n = await startMesh(`${d.dir}/${shortNames ?? 'default'}.db`, {
      dns: {
        upstreams: [`127.0.0.1:${up.port}`],
        upstreamTimeoutMs: 300,
        ...(shortNames ? { shortNames } : {}),
      },
    });
    nodes.push(n);
    await n.put(service('shadow', 'test'));
    await n.put(service('other', 'test'));
    await n.put(service('nginx-svc'));
    return n;
  }

  it('fallback (default): a name that exists upstream is the upstream’s, even NODATA; one that does not is the service', async () => {
    const n = await mesh();
    expect((await dig(n.port, ['+short', 'shadow.test'])).trim()).toBe('192.0.2.99');
    // SRV: the zone would answer the service's ports; the real name has none (NODATA upstream)
    const srv = await dig(n.port, ['shadow.test', 'SRV']);
    expect(status(srv)).toBe('NOERROR');
    expect(srv).toMatch(/ANSWER: 0,/);
    // the same namespace label, a name that does not exist upstream: the service
    expect((await dig(n.port, ['+short', 'other.test'])).trim()).toBe(n.mesh.vipOf('test/other'));
    const vip = n.mesh.vipOf('default/nginx-svc')!;
    const out = await dig(n.port, ['nginx-svc.default']);
    expect(out).toMatch(new RegExp(`nginx-svc\\.default\\.\\s+5\\s+IN\\s+A\\s+${vip.replace(/\./g, '\\.')}`));
    expect(out).toContain('flags: qr rd ra;'); // not authoritative
    // the full name is ours whatever the upstream says
    expect((await dig(n.port, ['+short', 'shadow.test.svc.cluster.local'])).trim()).toBe(
      n.mesh.vipOf('test/shadow'),
    );
  });

  it('always: the service first (standalone EdgeMesh); never: forwarded', async () => {
    const always = await mesh('always');
    expect((await dig(always.port, ['+short', 'shadow.test'])).trim()).toBe(always.mesh.vipOf('test/shadow'));
    const never = await mesh('never');
    expect(status(await dig(never.port, ['nginx-svc.default']))).toBe('NXDOMAIN');
  });
});

describe('TCP clients at once (dns.tcpClients, BIND’s tcp-clients)', () => {
  it('past the limit a TCP connection is reset at accept and counted; those held are answered; a close makes room', async () => {
    const d = tmpDir();
    const n = await startMesh(d.db, { dns: { tcpClients: 2 } });
    const held: ReturnType<typeof connect>[] = [];
    try {
      await n.put(service('nginx-svc'));
      const open = (): Promise<ReturnType<typeof connect>> =>
        new Promise((resolve, reject) => {
          const c = connect(n.port, '127.0.0.1', () => resolve(c));
          c.on('error', reject);
        });
      held.push(await open(), await open());
      await new Promise((r) => setTimeout(r, 100));
      // the third: reset (before or after Node reports its connect: the kernel completed the handshake)
      const third = await new Promise<string>((resolve) => {
        const c = connect(n.port, '127.0.0.1');
        c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
        c.on('close', () => resolve('closed'));
      });
      expect(third).toBe('ECONNRESET');
      expect(n.mesh.dns!.stats.tcpRefused).toBe(1);
      // a held connection is answered
      const answer = await new Promise<Buffer>((resolve) => {
        const q = query('nginx-svc.default.svc.cluster.local');
        const l = Buffer.alloc(2);
        l.writeUInt16BE(q.length);
        let b = Buffer.alloc(0);
        held[0].on('data', (x) => {
          b = Buffer.concat([b, x]);
          if (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) resolve(b.subarray(2));
        });
        held[0].write(Buffer.concat([l, q]));
      });
      expect(dnsPacket.decode(answer).answers?.[0]).toMatchObject({
        type: 'A',
        name: 'nginx-svc.default.svc.cluster.local',
      });
      // one goes: dig over TCP is answered
      held.shift()!.destroy();
      // (the node's connection count holds DNS TCP clients too)
      await until(() => n.mesh.connections.open === 1, 'the closed connection counted out');
      expect(status(await dig(n.port, ['+tcp', 'nginx-svc.default.svc.cluster.local']))).toBe('NOERROR');
      expect(n.mesh.dns!.stats.tcpRefused).toBe(1);
    } finally {
      for (const c of held) c.destroy();
      await n.stop();
      d.cleanup();
    }
  });
});

describe('TCP clients at once, against BIND (tcp-clients 2 on both)', () => {
  /** On `sock`: one query and whether its answer came within `ms` (no: a timeout, a reset or a close). */
  const answered = (sock: ReturnType<typeof connect>, name: string, ms = 1000): Promise<boolean> =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      const q = query(name);
      const l = Buffer.alloc(2);
      l.writeUInt16BE(q.length);
      let b = Buffer.alloc(0);
      sock.on('data', (x) => {
        b = Buffer.concat([b, x]);
        if (b.length < 2 || b.length < 2 + b.readUInt16BE(0)) return;
        clearTimeout(t);
        resolve(true);
      });
      sock.on('error', () => (clearTimeout(t), resolve(false)));
      sock.on('close', () => (clearTimeout(t), resolve(false)));
      sock.write(Buffer.concat([l, q]));
    });
  /** Two clients held and answered, a third not answered while they are held, dig +tcp after they go. */
  async function contract(port: number, name: string) {
    const open = (): Promise<ReturnType<typeof connect>> =>
      new Promise((resolve) => {
        const c = connect(port, '127.0.0.1', () => resolve(c));
        c.on('error', () => undefined);
      });
    const held = [await open(), await open()];
    const heldAnswered = [await answered(held[0], name), await answered(held[1], name)];
    const third = connect(port, '127.0.0.1');
    third.on('error', () => undefined);
    const thirdAnswered = await answered(third, name);
    for (const c of held) c.destroy();
    third.destroy();
    await new Promise((r) => setTimeout(r, 200));
    return { heldAnswered, thirdAnswered, after: status(await dig(port, ['+tcp', name])) };
  }

  it('both answer two held clients, neither answers a third while they hold, both answer once they go', async () => {
    const name = 'nginx-svc.default.svc.cluster.local';
    const bind = await ReferenceDns.bind(
      'cluster.local',
      `$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 192.0.2.53\n${name}. IN A 198.18.0.10\n`,
      { tcpClients: 2 },
    );
    const d = tmpDir();
    const n = await startMesh(d.db, { dns: { tcpClients: 2 } });
    try {
      await n.put(service('nginx-svc'));
      const ours = await contract(n.port, name);
      const theirs = await contract(bind.port, name);
      expect(ours).toEqual({ heldAnswered: [true, true], thirdAnswered: false, after: 'NOERROR' });
      expect(ours).toEqual(theirs);
      // how the third ended differs: BIND left it in its listen queue, ours reset it (counted)
      expect(n.mesh.dns!.stats.tcpRefused).toBe(1);
    } finally {
      await n.stop();
      d.cleanup();
      await bind.stop();
    }
  });
});
