import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { NativeListenerSet, netListen, type Listen, type Listener } from '../src/proxy/listeners';

/**
 * The portals' listeners on real sockets: the addon's listener set (required on Linux, so a broken
 * build fails here) and node:net, through the same contract.
 */
const native = NativeListenerSet.get();

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const c = connect(port, '127.0.0.1', () => resolve(c));
    c.once('error', reject);
  });
}

/** Everything a socket sends until its end. */
function readAll(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let b = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (b += d));
    s.once('end', () => resolve(b));
    s.once('error', reject);
  });
}

it('the addon is built and has a listener set', () => {
  expect(native).toBeDefined();
});

describe.each<[string, () => Listen]>([
  ['native', () => native!.listen],
  ['node:net', () => netListen],
])('listeners (%s)', (_name, listenOf) => {
  const open: Listener[] = [];
  afterEach(() => {
    for (const l of open.splice(0)) l.close();
  });
  const listen = async (port: number, allowHalfOpen: boolean, on: (s: Socket) => void): Promise<Listener> => {
    const l = await listenOf()({ host: '127.0.0.1', port, allowHalfOpen }, { connection: on });
    open.push(l);
    return l;
  };

  it('accepts a burst larger than one hand-over (300 connections at once), each served', async () => {
    const l = await listen(0, false, (s) => s.end(`hello ${s.remotePort}`));
    expect(l.port).toBeGreaterThan(0);
    const socks = await Promise.all(Array.from({ length: 300 }, () => dial(l.port)));
    const ports = socks.map((s) => s.localPort);
    const got = await Promise.all(socks.map(readAll));
    expect(got).toEqual(ports.map((p) => `hello ${p}`));
  });

  it('a half-open connection keeps its other direction when allowed, and not when not', async () => {
    const late = (s: Socket): void => {
      s.on('data', () => undefined);
      s.once('end', () => setTimeout(() => s.end('after your end'), 50));
    };
    const half = await listen(0, true, late);
    const c = await dial(half.port);
    const body = readAll(c);
    c.end();
    expect(await body).toBe('after your end');
    const whole = await listen(0, false, late);
    const d = await dial(whole.port);
    const nothing = readAll(d);
    d.end();
    expect(await nothing).toBe(''); // the server side ended with the client's end
  });

  it('a port in use: EADDRINUSE, like node:net; a closed listener refuses new connections, its accepted ones go on', async () => {
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as { port: number }).port;
    await expect(
      listenOf()({ host: '127.0.0.1', port, allowHalfOpen: false }, { connection: () => undefined }),
    ).rejects.toMatchObject({
      code: 'EADDRINUSE',
    });
    taken.close();

    const accepted: Socket[] = [];
    const l = await listen(0, false, (s) => {
      accepted.push(s);
      s.on('data', (d) => s.write(d));
    });
    const c = await dial(l.port);
    c.write('one');
    await once(c, 'data');
    l.close();
    await expect(dial(l.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    c.write('two');
    expect(String((await once(c, 'data'))[0])).toBe('two');
    c.destroy();
    accepted.forEach((s) => s.destroy());
  });
});

describe('the native listener set in a process of its own', () => {
  const child = join(__dirname, 'listeners-child.ts');
  const node = (args: string[]): string[] => ['-r', 'ts-node/register/transpile-only', child, ...args];

  it('keeps the process alive while something listens, and lets it exit after the last close', async () => {
    const c = spawn(process.execPath, node(['until-first']), { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [first] = (await once(c.stdout, 'data')) as [Buffer];
      const port = Number(/listening (\d+)/.exec(String(first))![1]);
      await new Promise((r) => setTimeout(r, 300)); // nothing else keeps the child alive meanwhile
      expect(c.exitCode).toBeNull();
      const s = await dial(port);
      expect(await readAll(s)).toBe('bye');
      let timer: NodeJS.Timeout | undefined;
      const [code] = (await Promise.race([
        once(c, 'exit'),
        new Promise((r) => (timer = setTimeout(() => r(['still running']), 10_000))),
      ])) as [unknown];
      clearTimeout(timer);
      expect(code).toBe(0); // its last listener closed: the loop had nothing left
    } finally {
      c.kill();
    }
  });

  it('out of descriptors: refuses the connections it cannot take (no spinning), and serves again once they are back', async () => {
    // the child's descriptor limit is low: it holds every connection it takes until told to drop them
    const c = spawn(
      'bash',
      ['-c', `ulimit -n 48 && exec "${process.execPath}" "$@"`, 'x', ...node(['hold'])],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
    try {
      let out = '';
      c.stdout.setEncoding('utf8');
      c.stdout.on('data', (d: string) => (out += d));
      const line = async (re: RegExp): Promise<RegExpMatchArray> => {
        for (let i = 0; i < 200; i++) {
          const m = re.exec(out);
          if (m) return m;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`no ${re} in ${out}`);
      };
      const port = Number((await line(/listening (\d+)/))[1]);
      // more connections than descriptors left: the ones past the limit are closed by the child
      const socks = await Promise.all(
        Array.from({ length: 80 }, () =>
          dial(port).then(
            (s) => s,
            () => undefined,
          ),
        ),
      );
      const ended = await Promise.all(
        socks.map(
          (s) =>
            new Promise<boolean>((resolve) => {
              if (!s) return resolve(true);
              s.on('error', () => resolve(true));
              s.once('close', () => resolve(true));
              s.on('data', () => undefined);
              setTimeout(() => resolve(false), 1500);
            }),
        ),
      );
      expect(ended.filter(Boolean).length).toBeGreaterThan(0); // refused, not left waiting
      c.stdin.write('stats\n');
      const [, held, refused, cpu] = await line(/held (\d+) refused (\d+) cpu (\d+)/);
      expect(Number(held)).toBeGreaterThan(0);
      expect(Number(refused)).toBeGreaterThan(0);
      // a listener left readable at EMFILE would spin the loop at 100 % for the second it waited
      expect(Number(cpu)).toBeLessThan(500);
      socks.forEach((s) => s?.destroy());
      c.stdin.write('drop\n');
      await line(/dropped/);
      const again = await dial(port);
      again.write('ping');
      expect(String((await once(again, 'data'))[0])).toBe('pong');
      again.destroy();
    } finally {
      c.kill();
    }
  });
});
