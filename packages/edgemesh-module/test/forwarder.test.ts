import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { Forwarder, type ForwarderOptions } from '../src/dns/forwarder';
import { parseQuery, walkRecords } from '../src/dns/wire';
import { underFileLimit, until } from './helpers';

/**
 * The forwarder against an upstream the test controls, on 127.0.0.1: adversarial replies (another
 * question, another id, another source port), names that differ only inside a label, non-ASCII
 * octets, EDNS per client, serve-stale while the upstream is gone, TCP only.
 */

function query(
  labels: (string | Buffer)[],
  opts: { id?: number; qtype?: number; edns?: boolean } = {},
): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(opts.id ?? 0x1111, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  const name = Buffer.concat([
    ...labels.map((l) => {
      const b = typeof l === 'string' ? Buffer.from(l, 'latin1') : l;
      return Buffer.concat([Buffer.from([b.length]), b]);
    }),
    Buffer.from([0]),
  ]);
  const tail = Buffer.from([0, opts.qtype ?? 1, 0, 1]);
  if (!opts.edns) return Buffer.concat([head, name, tail]);
  head.writeUInt16BE(1, 10);
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(41, 1);
  opt.writeUInt16BE(1232, 3);
  return Buffer.concat([head, name, tail, opt]);
}

function questionEnd(p: Buffer): number {
  let off = 12;
  while (p[off] !== 0) off += p[off] + 1;
  return off + 5;
}

/** A reply to `q`: an A record (NOERROR) or an SOA (NXDOMAIN), OPT when the query had one. */
function reply(q: Buffer, a: { ip?: string; ttl?: number; nxdomain?: boolean; id?: number }): Buffer {
  const qe = questionEnd(q);
  const head = Buffer.from(q.subarray(0, qe));
  head.writeUInt16BE(a.id ?? q.readUInt16BE(0), 0);
  head.writeUInt16BE(0x8180 | (a.nxdomain ? 3 : 0), 2);
  head.writeUInt16BE(a.nxdomain ? 0 : 1, 6);
  head.writeUInt16BE(a.nxdomain ? 1 : 0, 8);
  const hadOpt = q.readUInt16BE(10) > 0;
  head.writeUInt16BE(hadOpt ? 1 : 0, 10);
  const rr = Buffer.alloc(a.nxdomain ? 1 + 10 + 22 : 2 + 10 + 4);
  let off = 0;
  if (a.nxdomain) {
    rr[off++] = 0; // the root owns the SOA: enough for a negative TTL
    rr.writeUInt16BE(6, off);
    rr.writeUInt16BE(1, off + 2);
    rr.writeUInt32BE(a.ttl ?? 60, off + 4);
    rr.writeUInt16BE(22, off + 8);
    off += 10 + 2; // mname, rname: the root
    rr.writeUInt32BE(a.ttl ?? 60, off + 16); // minimum
  } else {
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(1, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(a.ttl ?? 60, 6);
    rr.writeUInt16BE(4, 10);
    Buffer.from((a.ip ?? '192.0.2.1').split('.').map(Number)).copy(rr, 12);
  }
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(41, 1);
  opt.writeUInt16BE(1232, 3);
  return Buffer.concat([head, rr, ...(hadOpt ? [opt] : [])]);
}

type Behaviour = (q: Buffer, answer: (r: Buffer) => void, other: (r: Buffer) => void) => void;

/** A UDP (and TCP) upstream on 127.0.0.1 whose every answer the test decides. */
class FakeUpstream {
  udp!: Socket;
  other!: Socket;
  tcp!: Server;
  port = 0;
  received: Buffer[] = [];
  tcpReceived = 0;
  private closed = false;
  constructor(public behave: Behaviour) {}

  async start(): Promise<void> {
    this.other = createSocket('udp4');
    await new Promise<void>((r) => this.other.bind(0, '127.0.0.1', () => r()));
    // UDP and TCP on one port: the UDP port the kernel picks may be a TCP port in use (another
    // process's outgoing connection), so a taken TCP port means another UDP port, a few times
    for (let attempt = 1; ; attempt++) {
      this.udp = createSocket('udp4');
      await new Promise<void>((r) => this.udp.bind(0, '127.0.0.1', () => r()));
      this.port = this.udp.address().port;
      this.tcp = createServer();
      const taken = await new Promise<boolean>((r) => {
        this.tcp.once('error', () => r(true));
        this.tcp.listen(this.port, '127.0.0.1', () => r(false));
      });
      if (!taken) break;
      this.udp.close();
      if (attempt === 20) throw new Error('no port free for both UDP and TCP in 20 tries');
    }
    this.udp.on('message', (m: Buffer, ri: RemoteInfo) => {
      this.received.push(m);
      this.behave(
        m,
        (r) => !this.closed && this.udp.send(r, ri.port, ri.address),
        (r) => !this.closed && this.other.send(r, ri.port, ri.address),
      );
    });
    this.tcp.on('connection', (s) =>
      s.on('data', (d) => {
        this.tcpReceived++;
        const m = d.subarray(2);
        this.received.push(m);
        this.behave(
          m,
          (r) => {
            const l = Buffer.alloc(2);
            l.writeUInt16BE(r.length);
            s.end(Buffer.concat([l, r]));
          },
          () => s.destroy(),
        );
      }),
    );
  }

  async stop(): Promise<void> {
    this.closed = true; // a delayed answer of a test that is over goes nowhere
    this.udp.close();
    this.other.close();
    await new Promise((r) => this.tcp.close(r));
  }
}

const forward = (f: Forwarder, p: Buffer) => f.forward(p, parseQuery(p));
const aOf = (r: Buffer): string | undefined => {
  const a = walkRecords(r).find((x) => x.type === 1 && x.section === 0);
  return a ? [...r.subarray(a.end - 4, a.end)].join('.') : undefined;
};
const ttlOf = (r: Buffer): number => {
  const a = walkRecords(r).find((x) => x.section === 0)!;
  return r.readUInt32BE(a.ttlAt);
};
const hasOpt = (r: Buffer) => walkRecords(r).some((x) => x.type === 41);
const rcode = (r: Buffer) => r.readUInt16BE(2) & 0xf;

describe('DNS forwarder against an upstream that misbehaves on purpose', () => {
  const ups: FakeUpstream[] = [];
  async function upstream(
    b: Behaviour,
    o: ForwarderOptions = {},
  ): Promise<{ up: FakeUpstream; f: Forwarder }> {
    const up = new FakeUpstream(b);
    await up.start();
    ups.push(up);
    return { up, f: new Forwarder([{ host: '127.0.0.1', port: up.port }], { timeoutMs: 300, ...o }) };
  }
  afterEach(async () => {
    for (const u of ups.splice(0)) await u.stop();
  });

  it('a reply for another question, another id or from another port is dropped, not returned or cached (RFC 5452)', async () => {
    const { up, f } = await upstream((q, answer, other) => {
      const wrongQ = query(['evil', 'example', 'com'], { id: q.readUInt16BE(0) });
      answer(reply(wrongQ, { ip: '203.0.113.66' })); // right id and port, another question
      answer(reply(q, { ip: '203.0.113.67', id: (q.readUInt16BE(0) + 1) & 0xffff })); // another id
      other(reply(q, { ip: '203.0.113.68' })); // another source port
      setTimeout(() => answer(reply(q, { ip: '192.0.2.10' })), 20);
    });
    const r = await forward(f, query(['good', 'example', 'com'], { id: 0xabcd }));
    expect(r.readUInt16BE(0)).toBe(0xabcd);
    expect(aOf(r)).toBe('192.0.2.10');
    expect(f.stats.mismatched).toBe(3);
    // the spoofed answer for evil.example.com was not cached: asking for it goes upstream
    const before = up.received.length;
    await forward(f, query(['evil', 'example', 'com']));
    expect(up.received.length).toBe(before + 1);
  });

  it('only spoofed replies: the wait ends at the timeout with SERVFAIL', async () => {
    const { f } = await upstream((q, answer) =>
      answer(reply(query(['other', 'example', 'com'], { id: q.readUInt16BE(0) }), {})),
    );
    const r = await forward(f, query(['lonely', 'example', 'com']));
    expect(rcode(r)).toBe(2);
  });

  it('names that differ inside a label are different names in the cache (dot\\.example.com vs dot.example.com)', async () => {
    const { f } = await upstream((q, answer) => {
      const labels = parseQuery(q).name;
      answer(
        labels.startsWith('dot\\.') ? reply(q, { nxdomain: true, ttl: 300 }) : reply(q, { ip: '192.0.2.20' }),
      );
    });
    const dotted = await forward(f, query(['dot.example', 'com']));
    expect(rcode(dotted)).toBe(3);
    const plain = await forward(f, query(['dot', 'example', 'com']));
    expect(rcode(plain)).toBe(0);
    expect(aOf(plain)).toBe('192.0.2.20');
  });

  it('non-ASCII octets: a cached answer echoes the question octets as asked, case included', async () => {
    const { up, f } = await upstream((q, answer) => answer(reply(q, { ip: '192.0.2.30' })));
    const first = query([Buffer.from([0xc4, 0x80, 0x41]), 'example', 'com']);
    await forward(f, first);
    const second = query([Buffer.from([0xc4, 0x80, 0x61]), 'EXAMPLE', 'com'], { id: 0x2222 }); // ASCII case differs
    const r = await forward(f, second);
    expect(up.received.length).toBe(1); // the same name: a cache hit
    expect(r.subarray(12, questionEnd(second)).equals(second.subarray(12, questionEnd(second)))).toBe(true);
    expect(r.readUInt16BE(0)).toBe(0x2222);
    // an octet that is not ASCII is never case-folded: 0xc4 vs 0xe4 are two names
    await forward(f, query([Buffer.from([0xe4, 0x80, 0x61]), 'example', 'com']));
    expect(up.received.length).toBe(2);
  });

  it('a cached answer follows the EDNS of the client asking now', async () => {
    const { up, f } = await upstream((q, answer) => answer(reply(q, { ip: '192.0.2.40' })));
    expect(hasOpt(await forward(f, query(['e1', 'example', 'com'], { edns: true })))).toBe(true);
    const plain = await forward(f, query(['e1', 'example', 'com']));
    expect(hasOpt(plain)).toBe(false);
    expect(plain.readUInt16BE(10)).toBe(0);
    expect(hasOpt(await forward(f, query(['e2', 'example', 'com'])))).toBe(false);
    const edns = await forward(f, query(['e2', 'example', 'com'], { edns: true }));
    expect(hasOpt(edns)).toBe(true);
    expect(aOf(edns)).toBe('192.0.2.40');
    expect(up.received.length).toBe(2);
  });

  it('serve-stale: with every upstream gone, an expired answer comes back with TTL 30 (RFC 8767); a name never seen is SERVFAIL', async () => {
    let alive = true;
    const { up, f } = await upstream((q, answer) => alive && answer(reply(q, { ip: '192.0.2.50', ttl: 1 })));
    expect(ttlOf(await forward(f, query(['stale', 'example', 'com'])))).toBe(1);
    alive = false;
    await new Promise((r) => setTimeout(r, 1100)); // expired
    const r = await forward(f, query(['stale', 'example', 'com']));
    expect(rcode(r)).toBe(0);
    expect(aOf(r)).toBe('192.0.2.50');
    expect(ttlOf(r)).toBe(30); // the stale TTL, not the record's
    expect(f.stats.staleServed).toBe(1);
    // within the failure recheck time, stale answers come at once, without asking the upstream
    const asked = up.received.length;
    const t = Date.now();
    await forward(f, query(['stale', 'example', 'com']));
    expect(up.received.length).toBe(asked);
    expect(Date.now() - t).toBeLessThan(250); // the upstream timeout is 300 ms: it was not waited for
    expect(rcode(await forward(f, query(['never', 'example', 'com'])))).toBe(2);
  });

  it('a query the node could not send (out of descriptors) is SERVFAIL, and the upstreams are not held as down for it', async () => {
    // before: EMFILE counted as an upstream failure and started the failure recheck time, so the
    // node answered SERVFAIL for 30 s after its descriptors were back
    const r = await underFileLimit('forwarder-emfile-child.ts', 64);
    expect(r.held).toBeGreaterThan(0);
    expect(r).toMatchObject({ before: 'NOERROR 192.0.2.9', during: 'SERVFAIL', after: 'NOERROR 192.0.2.9' });
    expect(r.stats).toMatchObject({ localFailures: 1, upstreamFailures: 0, servfail: 1 });
  }, 30_000);

  it('serve-stale off: SERVFAIL once the answer expired and the upstream is gone', async () => {
    let alive = true;
    const { f } = await upstream((q, answer) => alive && answer(reply(q, { ip: '192.0.2.60', ttl: 1 })), {
      serveStale: { enable: false },
    });
    await forward(f, query(['nostale', 'example', 'com']));
    alive = false;
    await new Promise((r) => setTimeout(r, 1100));
    expect(rcode(await forward(f, query(['nostale', 'example', 'com'])))).toBe(2);
  });

  it.each([true, false])(
    'prefetch %s: an answer asked for in the last tenth of its TTL is refreshed in the background (or not)',
    async (prefetch) => {
      let n = 0;
      const { up, f } = await upstream((q, answer) => answer(reply(q, { ip: `192.0.2.${++n}`, ttl: 2 })), {
        prefetch,
      });
      const ask = () => forward(f, query(['popular', 'example', 'com']));
      // only the clock is faked (the sockets and their timers are real): no sleeping, no race
      const t0 = Date.now();
      jest.useFakeTimers({
        now: t0,
        doNotFake: [
          'nextTick',
          'setImmediate',
          'setTimeout',
          'clearTimeout',
          'setInterval',
          'clearInterval',
          'queueMicrotask',
          'hrtime',
          'performance',
        ],
      });
      try {
        expect(aOf(await ask())).toBe('192.0.2.1');
        jest.setSystemTime(t0 + 1850);
        expect(aOf(await ask())).toBe('192.0.2.1'); // still cached, 0.15 s left
        // the refreshed answer is stored once the prefetch's reply came (not when the upstream
        // got the query): asked meanwhile, the old answer still comes from the cache
        await until(async () => !prefetch || aOf(await ask()) === '192.0.2.2', 'the prefetch stored');
        jest.setSystemTime(t0 + 2150);
      } catch (e) {
        jest.useRealTimers();
        throw e;
      }
      const after = await ask(); // past the first answer's TTL
      jest.useRealTimers();
      if (prefetch) {
        expect(aOf(after)).toBe('192.0.2.2'); // refreshed at 1.85 s: a cache hit
        expect(up.received.length).toBe(2);
        expect(f.stats.prefetches).toBe(1);
      } else {
        expect(aOf(after)).toBe('192.0.2.2'); // fetched now, the client waited for it
        expect(up.received.length).toBe(2);
        expect(f.stats.prefetches).toBe(0);
        expect(f.stats.cacheHits).toBe(1);
      }
    },
  );

  it('upstreamTcp: every query goes over TCP', async () => {
    const { up, f } = await upstream((q, answer) => answer(reply(q, { ip: '192.0.2.70' })), {
      upstreamTcp: true,
    });
    const r = await forward(f, query(['tcp', 'example', 'com']));
    expect(aOf(r)).toBe('192.0.2.70');
    expect(up.tcpReceived).toBe(1);
  });
});
