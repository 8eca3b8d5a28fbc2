import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { resetSocket } from '../src';

/** A connected client, and what the server's side of it saw at its end (`end`, or an error code). */
async function pair(): Promise<{ server: Server; client: Socket; seen: Promise<string> }> {
  let seen!: Promise<string>;
  const server = createServer((c) => {
    seen = new Promise((r) => {
      c.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
      c.on('end', () => r('end'));
    });
    c.resume();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await Promise.all([once(server, 'connection'), once(client, 'connect')]);
  return { server, client, seen };
}

describe('resetSocket', () => {
  it('a connected socket: the peer sees a reset', async () => {
    const { server, client, seen } = await pair();
    const closed = once(client, 'close');
    resetSocket(client);
    await closed;
    expect(await seen).toBe('ECONNRESET');
    server.close();
  });

  it('a socket whose shutdown is under way is closed (its FIN goes out), not left open', async () => {
    const { server, client, seen } = await pair();
    const errors: string[] = [];
    client.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? 'error'));
    const closed = once(client, 'close');
    client.write('x');
    client.end();
    // Node's resetAndDestroy() here: EINVAL, and no close ever
    resetSocket(client);
    await closed;
    expect(errors).toEqual([]);
    expect(await seen).toBe('end');
    server.close();
  });

  it('a process that ended such a socket ends by itself', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['-r', 'ts-node/register/transpile-only', join(__dirname, 'reset-child.ts')],
      { timeout: 20_000, killSignal: 'SIGKILL', cwd: join(__dirname, '..') },
    );
    expect(stdout.trim()).toBe('close');
  });
});
