import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import {
  LoadBalancer,
  SpliceEngine,
  TcpProxy,
  createStrategy,
  nativeUnavailable,
  type Backend,
} from '../src';

/**
 * L4 through TcpProxy, with the native splice engine and with JavaScript pipes (`splice: false`):
 * the same behaviour either way, on real sockets.
 */
interface Rig {
  proxy: TcpProxy;
  front: Server;
  port: number;
  close(): Promise<void>;
}

async function listen(s: Server): Promise<number> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

async function rig(backends: Backend[], opts: { splice: boolean; idleTimeoutMs?: number }): Promise<Rig> {
  const proxy = new TcpProxy(new LoadBalancer(createStrategy('RoundRobin')), opts);
  const front = createServer({ allowHalfOpen: true }, (c) => proxy.handle(c, backends, 'test'));
  const port = await listen(front);
  return {
    proxy,
    front,
    port,
    close: async () => {
      proxy.closeAll();
      await new Promise<void>((r) => front.close(() => r()));
    },
  };
}

async function backend(onConn: (s: Socket) => void): Promise<{ b: Backend; server: Server }> {
  const server = createServer({ allowHalfOpen: true }, onConn);
  const port = await listen(server);
  return { b: { host: '127.0.0.1', port, key: `127.0.0.1:${port}` }, server };
}

/** Connect, send `data` then EOF, collect everything until close. */
function roundTrip(port: number, data: Buffer | string, endAfterWrite = true): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(port, '127.0.0.1', () => (endAfterWrite ? s.end(data) : s.write(data)));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

it('the splice engine is built on Linux', () => {
  if (process.platform !== 'linux') return;
  expect(nativeUnavailable()).toBeUndefined();
  expect(new TcpProxy(new LoadBalancer(createStrategy('RoundRobin'))).splicing).toBe(true);
});

describe.each([true, false])('TcpProxy, splice %s', (splice) => {
  it('streams 64 MiB each way unchanged (an echo backend), with bounded memory', async () => {
    const { b, server } = await backend((s) => s.pipe(s));
    const r = await rig([b], { splice });
    try {
      const data = randomBytes(64 << 20);
      const rss0 = process.memoryUsage().rss;
      const got = await roundTrip(r.port, data);
      expect(got.length).toBe(data.length);
      expect(sha(got)).toBe(sha(data));
      // the test itself holds 128 MiB (data + got); the proxy must not add a copy of the stream
      expect(process.memoryUsage().rss - rss0).toBeLessThan(200 << 20);
      expect(r.proxy.stats.spliced).toBe(splice ? 1 : 0);
    } finally {
      await r.close();
      server.close();
    }
  }, 60_000);

  it('half-close both ways: the backend sees EOF, still answers, then closes its side', async () => {
    const { b, server } = await backend((s) => {
      let n = 0;
      s.on('data', (d) => (n += d.length));
      s.on('end', () => s.end(`got ${n} bytes after your EOF`));
    });
    const r = await rig([b], { splice });
    try {
      expect((await roundTrip(r.port, 'x'.repeat(100_000))).toString()).toBe(
        'got 100000 bytes after your EOF',
      );
    } finally {
      await r.close();
      server.close();
    }
  });

  it('a server-first backend: its banner, sent at accept, reaches the client', async () => {
    const { b, server } = await backend((s) => {
      s.write('220 banner\r\n');
      s.on('data', (d) => s.end(`echo ${d}`));
    });
    const r = await rig([b], { splice });
    try {
      const got = await new Promise<string>((resolve) => {
        const s = connect(r.port, '127.0.0.1');
        let out = '';
        s.on('data', (d) => {
          out += d;
          if (out === '220 banner\r\n') s.write('hi');
        });
        s.on('close', () => resolve(out));
      });
      expect(got).toBe('220 banner\r\necho hi');
    } finally {
      await r.close();
      server.close();
    }
  });

  it('bytes the client sends before the backend answers the connect arrive first and in order', async () => {
    // the first backend is a closed port (refused, then the next one is tried): the client's early
    // bytes wait in Node's buffers meanwhile and must be written before the handover
    const dead = await backend(() => undefined);
    const deadB = dead.b;
    await new Promise<void>((r) => dead.server.close(() => r()));
    const { b, server } = await backend((s) => s.pipe(s));
    const r = await rig([deadB, b], { splice });
    try {
      const got = await new Promise<string>((resolve) => {
        const s = connect(r.port, '127.0.0.1', () => {
          for (let i = 0; i < 50; i++) s.write(`${i},`);
          setTimeout(() => s.end('end'), 50);
        });
        let out = '';
        s.on('data', (d) => (out += d));
        s.on('close', () => resolve(out));
      });
      expect(got).toBe(`${Array.from({ length: 50 }, (_, i) => `${i},`).join('')}end`);
    } finally {
      await r.close();
      server.close();
    }
  });

  it('idle timeout closes both sides; closeAll ends live connections', async () => {
    const seen: Socket[] = [];
    const { b, server } = await backend((s) => {
      seen.push(s);
      s.on('error', () => undefined);
    });
    const r = await rig([b], { splice, idleTimeoutMs: 300 });
    try {
      const t0 = Date.now();
      await roundTrip(r.port, 'hello', false); // never ends by itself
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
      const r2 = await rig([b], { splice }); // default idle: 1 h
      const closed = roundTrip(r2.port, 'hello', false);
      await new Promise((res) => setTimeout(res, 100));
      await r2.close();
      await closed;
      for (let i = 0; i < 100 && r2.proxy.stats.active > 0; i++)
        await new Promise((res) => setTimeout(res, 10));
      expect(r2.proxy.stats.active).toBe(0);
    } finally {
      await r.close();
      for (const s of seen) s.destroy();
      server.close();
    }
  });

  it('no descriptor outlives its connection (100 connections, Linux /proc)', async () => {
    if (process.platform !== 'linux') return;
    const { b, server } = await backend((s) => s.pipe(s));
    const r = await rig([b], { splice });
    try {
      await roundTrip(r.port, 'warm-up');
      const before = readdirSync('/proc/self/fd').length;
      for (let i = 0; i < 10; i++)
        await Promise.all(Array.from({ length: 10 }, (_, j) => roundTrip(r.port, `c${i}-${j}`)));
      for (
        let i = 0;
        i < 100 && (r.proxy.stats.active > 0 || readdirSync('/proc/self/fd').length > before);
        i++
      )
        await new Promise((res) => setTimeout(res, 10));
      expect(r.proxy.stats.active).toBe(0);
      expect(readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(before);
      if (splice) expect(SpliceEngine.get()!.active).toBe(0);
    } finally {
      await r.close();
      server.close();
    }
  });

  it('when the engine cannot take a connection (out of descriptors, say), it runs on JavaScript pipes', async () => {
    const engine = SpliceEngine.get();
    if (!splice || !engine) return;
    const { b, server } = await backend((s) => s.pipe(s));
    const r = await rig([b], { splice });
    const binding = (engine as unknown as { b: { start: () => number } }).b;
    (engine as unknown as { b: unknown }).b = {
      ...binding,
      abort: (binding as unknown as { abort: unknown }).abort,
      start: () => {
        throw new Error('splice engine: dup/pipe: Too many open files');
      },
    };
    try {
      const data = randomBytes(1 << 20);
      const got = await roundTrip(r.port, data);
      expect(sha(got)).toBe(sha(data));
      expect(r.proxy.stats.spliced).toBe(0);
    } finally {
      (engine as unknown as { b: unknown }).b = binding;
      await r.close();
      server.close();
    }
  });

  it('a backend reset closes the client', async () => {
    const { b, server } = await backend((s) => s.once('data', () => s.resetAndDestroy()));
    const r = await rig([b], { splice });
    try {
      const got = await new Promise<string>((resolve) => {
        const s = connect(r.port, '127.0.0.1', () => s.write('boom'));
        s.on('error', () => undefined);
        s.on('close', () => resolve('closed'));
      });
      expect(got).toBe('closed');
      await new Promise((res) => setTimeout(res, 50));
      expect(r.proxy.stats.active).toBe(0);
    } finally {
      await r.close();
      server.close();
    }
  });
});
