import type { Socket } from 'node:net';
import type { SpliceEngine } from '../l4/splice';
import type { SocketReader } from '../socket-reader';

/**
 * WebSocket and other upgrades: from the 101 on, an L4 connection between the two sockets —
 * through the splice engine when it is built, else JavaScript pipes.
 */
export class UpgradeTunnels {
  /** Upgraded connections of ours in the splice engine. */
  private readonly live = new Set<number>();
  /** Connections handed to the splice engine. */
  spliced = 0;

  constructor(
    private readonly engine: SpliceEngine | undefined,
    private readonly idleMs: number,
  ) {}

  open(client: Socket, cr: SocketReader, up: Socket, ur: SocketReader): void {
    cr.detach();
    ur.detach();
    const c = cr.take(false);
    const u = ur.take(false);
    const engine = this.engine;
    if (!engine) {
      if (c.length) up.write(c);
      if (u.length) client.write(u);
      pipeBoth(client, up);
      return;
    }
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    up.on('error', end);
    let id: number | undefined;
    engine.handOver(
      client,
      up,
      { toB: c, toA: u, idleMs: this.idleMs },
      {
        started: (n) => {
          id = n;
          this.live.add(n);
          this.spliced++;
        },
        fallback: () => pipeBoth(client, up),
        failed: () => undefined,
        done: () => {
          if (id !== undefined) this.live.delete(id);
        },
      },
    );
  }

  abortAll(): void {
    for (const id of this.live) this.engine?.abort(id);
  }
}

/** An L4 pipe between two sockets in JavaScript, both closed when either closes. */
function pipeBoth(client: Socket, up: Socket): void {
  client.pipe(up);
  up.pipe(client);
  const end = (): void => {
    client.destroy();
    up.destroy();
  };
  client.on('close', end);
  up.on('close', end);
  up.on('error', end);
}
