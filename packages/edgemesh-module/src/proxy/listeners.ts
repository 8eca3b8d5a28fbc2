import { closeSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, Socket, type AddressInfo } from 'node:net';
import { loadNative } from '../native';

/**
 * Where the portals listen. A portal per service port makes 10,000 listeners on a node with
 * 10,000 services; through node:net each is a net.Server with its TCP handle (1.1 KiB of heap and
 * malloc apiece). The native addon's listener set (native/listeners.c) keeps them as descriptors
 * in one epoll set on Node's event loop and hands accepted connections over a batch per wake-up,
 * each wrapped here in a net.Socket; node:net serves when the addon is not built.
 */
export interface Listener {
  readonly port: number;
  /** Stop accepting; connections already accepted go on. */
  close(): void;
}

export interface ListenOptions {
  host: string;
  /** 0: a free port. */
  port: number;
  allowHalfOpen: boolean;
}

/** What a listener hands its connections to (a portal: no function made per listener). */
export interface ConnectionTarget {
  connection(sock: Socket): void;
}

/** Opens a listener, or rejects with node:net's errors (`code` EADDRINUSE, EACCES, ...). */
export type Listen = (o: ListenOptions, target: ConnectionTarget) => Promise<Listener>;

/** node:net: a net.Server per listener. */
export const netListen: Listen = async (o, target) => {
  const server = createServer({ allowHalfOpen: o.allowHalfOpen, noDelay: true }, (s) => target.connection(s));
  server.listen(o.port, o.host);
  await once(server, 'listening'); // rejects on 'error'
  return { port: (server.address() as AddressInfo).port, close: () => void server.close() };
};

interface ListenersBinding {
  create(slab: Int32Array, onAccept: (n: number) => void): unknown;
  listen(h: unknown, host: string, port: number, backlog: number): [number, number];
  close(h: unknown, fd: number): boolean;
  stats(h: unknown): [number, number];
}

class NativeListener implements Listener {
  constructor(
    private readonly set: NativeListenerSet,
    readonly fd: number,
    readonly port: number,
    readonly allowHalfOpen: boolean,
    readonly target: ConnectionTarget,
  ) {}

  close(): void {
    this.set.close(this.fd);
  }
}

/** node:net's backlog for a listener. */
const BACKLOG = 511;
/** Connections handed over per call into JavaScript at most. */
const SLAB_PAIRS = 256;

/** The addon's listener set: one per process (per JavaScript realm), made when first needed. */
export class NativeListenerSet {
  private static shared?: NativeListenerSet | null;
  private readonly slab = new Int32Array(2 * SLAB_PAIRS);
  private readonly handle: unknown;
  private readonly open = new Map<number, NativeListener>();

  private constructor(private readonly b: ListenersBinding) {
    this.handle = b.create(this.slab, (n) => this.accepted(n));
  }

  /** The set, or undefined when the addon is not built. */
  static get(): NativeListenerSet | undefined {
    if (NativeListenerSet.shared === undefined) {
      const b = loadNative<{ listeners?: ListenersBinding }>()?.listeners;
      NativeListenerSet.shared = b ? new NativeListenerSet(b) : null;
    }
    return NativeListenerSet.shared ?? undefined;
  }

  readonly listen: Listen = async (o, target) => {
    const [fd, port] = this.b.listen(this.handle, o.host, o.port, BACKLOG);
    const l = new NativeListener(this, fd, port, o.allowHalfOpen, target);
    this.open.set(fd, l);
    return l;
  };

  close(fd: number): void {
    if (!this.open.delete(fd)) return;
    this.b.close(this.handle, fd);
  }

  /** Listening now, and connections refused for want of descriptors (EMFILE) since the start. */
  stats(): { listening: number; refused: number } {
    const [listening, refused] = this.b.stats(this.handle);
    return { listening, refused };
  }

  private accepted(n: number): void {
    const slab = this.slab;
    for (let i = 0; i < n; i++) {
      const fd = slab[2 * i + 1];
      const t = this.open.get(slab[2 * i]);
      let sock: Socket | undefined;
      try {
        if (t) sock = new Socket({ fd, allowHalfOpen: t.allowHalfOpen, readable: true, writable: true });
      } catch {
        sock = undefined;
      }
      if (!t || !sock) {
        // its listener closed meanwhile, or not a socket Node can take: the connection is closed
        try {
          closeSync(fd);
        } catch {
          // already gone
        }
        continue;
      }
      sock.setNoDelay(true);
      t.target.connection(sock);
    }
  }
}

/** The addon's set when it is built, else node:net. */
export function defaultListen(): Listen {
  return NativeListenerSet.get()?.listen ?? netListen;
}
