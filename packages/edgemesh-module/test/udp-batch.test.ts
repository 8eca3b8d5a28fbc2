import * as dnsPacket from 'dns-packet';
import { createSocket, type Socket } from 'node:dgram';
import { connect, createServer, Server } from 'node:net';
import {
  ClusterZone,
  DnsServer,
  Forwarder,
  ServiceCatalog,
  loadUdpBatch,
  nativeUnavailable,
  parseUpstreams,
} from '../src';

/**
 * The DNS server's two UDP paths on real sockets: the native recvmmsg/sendmmsg addon (built by
 * `npm install`; required on Linux so a broken build fails here, not silently in production) and
 * node:dgram.
 */
const query = (name: string, id: number): Buffer =>
  dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: 'A', name }],
  });

function server(backend: 'native' | 'dgram', upstreams: string[] = []): DnsServer {
  const catalog = new ServiceCatalog();
  catalog.load(
    [{ metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: '10.96.0.7' } }],
    [],
    [],
  );
  const zone = new ClusterZone(
    catalog,
    {
      vipOf: (k) => (k === 'default/web' ? '10.96.0.7' : undefined),
      serviceOf: () => undefined,
      inPool: () => false,
    },
    { clusterDomain: 'cluster.local', ttl: 5 },
  );
  return new DnsServer(zone, new Forwarder(parseUpstreams(upstreams), { timeoutMs: 1000 }), {
    host: '127.0.0.1',
    port: 0,
    allowFrom: ['127.0.0.0/8'],
    udpBackend: backend,
  });
}

/**
 * Send the packets from one socket, at most 100 outstanding (a larger burst overflows the
 * kernel's socket buffers, which drops datagrams before any code of ours sees them); collect the
 * replies by id.
 */
async function burst(port: number, packets: Buffer[]): Promise<Map<number, Buffer>> {
  const s = createSocket('udp4');
  const got = new Map<number, Buffer>();
  try {
    for (let i = 0; i < packets.length; i += 100) {
      const chunk = packets.slice(i, i + 100);
      const want = got.size + chunk.length;
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${got.size}/${packets.length} replies`)), 5000);
        s.on('message', (m) => {
          got.set(m.readUInt16BE(0), m);
          if (got.size < want) return;
          clearTimeout(t);
          s.removeAllListeners('message');
          resolve();
        });
        for (const p of chunk) s.send(p, port, '127.0.0.1');
      });
    }
  } finally {
    s.close();
  }
  return got;
}

const answerOf = (m: Buffer): string => {
  const p = dnsPacket.decode(m);
  return `${p.questions?.[0]?.name} ${(p.answers?.[0] as { data?: string } | undefined)?.data}`;
};

describe('DNS UDP paths', () => {
  it('the native addon is built on Linux', () => {
    if (process.platform !== 'linux') return;
    expect(nativeUnavailable()).toBeUndefined();
    expect(loadUdpBatch()).toBeDefined();
  });

  for (const backend of ['native', 'dgram'] as const) {
    it(`${backend}: a burst of 2,000 queries from one socket, every one answered with its id`, async () => {
      const s = server(backend);
      await s.listen();
      try {
        expect(s.udpBackend).toBe(backend);
        const packets = Array.from({ length: 2000 }, (_, i) => query('web.default.svc.cluster.local', i));
        const got = await burst(s.port, packets);
        for (let i = 0; i < 2000; i += 97)
          expect(answerOf(got.get(i)!)).toBe('web.default.svc.cluster.local 10.96.0.7');
        expect(s.stats.queries).toBe(2000);
      } finally {
        await s.close();
      }
    });
  }

  it('native: an oversized datagram is dropped and the server keeps answering', async () => {
    const s = server('native');
    await s.listen();
    try {
      const big = Buffer.concat([query('web.default.svc.cluster.local', 1), Buffer.alloc(5000)]);
      const c = createSocket('udp4');
      c.send(big, s.port, '127.0.0.1');
      const got = await burst(s.port, [query('web.default', 2)]);
      expect(answerOf(got.get(2)!)).toBe('web.default 10.96.0.7');
      c.close();
    } finally {
      await s.close();
    }
  });

  it('native: a forwarded query keeps its own bytes while later batches reuse the receive buffer', async () => {
    // upstream 1 answers SERVFAIL after 150 ms (the forwarder moves on to upstream 2, re-reading
    // the query after an await); meanwhile 300 cluster queries pass through the same slots.
    const ups: Socket[] = [];
    const upstream = async (servfail: boolean): Promise<number> => {
      const u = createSocket('udp4');
      ups.push(u);
      u.on('message', (m, r) => {
        const q = dnsPacket.decode(m);
        const reply = dnsPacket.encode({
          type: 'response',
          id: q.id,
          flags: servfail ? 2 : dnsPacket.RECURSION_AVAILABLE,
          questions: q.questions,
          answers: servfail ? [] : [{ type: 'A', name: q.questions![0].name, ttl: 60, data: '192.0.2.80' }],
        });
        setTimeout(() => u.send(reply, r.port, r.address), servfail ? 150 : 0);
      });
      await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
      return u.address().port;
    };
    const p1 = await upstream(true);
    const p2 = await upstream(false);
    const s = server('native', [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`]);
    await s.listen();
    try {
      const external = burst(s.port, [query('example.org', 9999)]);
      await new Promise((r) => setTimeout(r, 20));
      const flood = await burst(
        s.port,
        Array.from({ length: 300 }, (_, i) => query('web.default.svc.cluster.local', i)),
      );
      expect(flood.size).toBe(300);
      expect(answerOf((await external).get(9999)!)).toBe('example.org 192.0.2.80');
    } finally {
      await s.close();
      for (const u of ups) u.close();
    }
  });

  /** A TCP listen that fails as if another process held the port. */
  function clash(this: Server): Server {
    process.nextTick(() =>
      this.emit('error', Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE' })),
    );
    return this;
  }

  it('port 0: a TCP clash on the port UDP picked is retried with a fresh port', async () => {
    const spy = jest.spyOn(Server.prototype, 'listen').mockImplementationOnce(clash);
    const s = server('native');
    try {
      await s.listen();
      // the injected clash was retried; how many more attempts depends on which ports happen to
      // be free on this machine, never more than the bound of five
      expect(spy.mock.calls.length).toBeGreaterThanOrEqual(2);
      expect(spy.mock.calls.length).toBeLessThanOrEqual(5);
      // one port for both: UDP answers, TCP accepts
      const got = await burst(s.port, [query('web.default', 3)]);
      expect(answerOf(got.get(3)!)).toBe('web.default 10.96.0.7');
      await new Promise<void>((resolve, reject) => {
        const c = connect(s.port, '127.0.0.1', () => (c.destroy(), resolve()));
        c.once('error', reject);
      });
    } finally {
      spy.mockRestore();
      await s.close();
    }
  });

  it('port 0: the retry is bounded — five clashes in a row are a clear error', async () => {
    const spy = jest.spyOn(Server.prototype, 'listen').mockImplementation(clash);
    const s = server('native');
    try {
      await expect(s.listen()).rejects.toMatchObject({ code: 'EDGEMESH_DNS_LISTEN' });
      expect(spy).toHaveBeenCalledTimes(5);
    } finally {
      spy.mockRestore();
      await s.close();
    }
  });

  it('a fixed port taken on TCP: a clear error, and the UDP port is released again', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    const s = new DnsServer(server('native')['zone' as never], new Forwarder([]), {
      host: '127.0.0.1',
      port,
      allowFrom: [],
    });
    try {
      await expect(s.listen()).rejects.toMatchObject({ code: 'EDGEMESH_DNS_LISTEN' });
      const u = createSocket('udp4');
      await new Promise<void>((r) => u.bind(port, '127.0.0.1', r)); // free again
      u.close();
    } finally {
      taken.close();
    }
  });

  it('native: an IPv6 listen address is a clear error', async () => {
    const s = new DnsServer(server('native')['zone' as never], new Forwarder([]), {
      host: '::1',
      port: 0,
      allowFrom: [],
      udpBackend: 'native',
    });
    await expect(s.listen()).rejects.toThrow(/IPv4 only/);
  });
});
