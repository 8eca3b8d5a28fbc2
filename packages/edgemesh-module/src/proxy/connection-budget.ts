import { resetSocket, silentLogger, type Logger } from '@edgecore/beehive';
import type { Socket } from 'node:net';
import { BASE_DESCRIPTORS, nodeReserve, openFileLimit } from '../open-files';
import { SpliceEngine } from './l4/splice';

/** Descriptors a spliced connection holds besides its two sockets: their duplicates and two pipes. */
export const SPLICE_EXTRA_DESCRIPTORS = 6;

export interface ConnectionBudgetOptions {
  /** Client connections at once (`proxy.maxConnections`); `auto`: what the open-file limit leaves. */
  maxConnections?: number | 'auto';
  /** The open-file limit that applies (default: the process's soft RLIMIT_NOFILE; none where unknown). */
  fileLimit?: number;
  /** Connections in the splice engine now (default: the process's engine). */
  spliced?: () => number;
  log?: Logger;
}

/**
 * How many client connections the node holds at once — portals (TCP connections and UDP
 * sessions, each with its socket to the backend), the explicit proxy and the DNS server's TCP
 * clients, one count (HAProxy's `maxconn`, Envoy's global downstream connection limit, nginx's
 * `worker_connections`). Past it a connection is reset as soon as it is accepted, counted, and
 * said in the log (once per 10 s); the connections being served go on.
 *
 * Without a number (`auto`, the default) the limit is what the open-file limit leaves: the limit,
 * less what a node holds before any connection (`BASE_DESCRIPTORS`), its listening portals, the
 * node's own reserve (`nodeReserve`: DNS forwarding, the cloud link, health checks, iptables, the
 * database) and the splice engine's descriptors (6 per spliced connection), halved — a proxied
 * connection is two sockets. Before, a flood of clients could take every descriptor: the node then
 * failed well (a 503, a reset) but had none left for its own work — a DNS query forwarded, the
 * cloud link reconnecting, iptables-restore's pipes. A number is the limit as given (nginx's
 * `worker_connections`): set past what the descriptors allow, connections can take them all again
 * (the node then fails as it did before: a 503, a reset, its portals waiting).
 */
export class ConnectionBudget {
  /** Client connections open now. */
  open = 0;
  /** Connections reset at accept, and UDP datagrams dropped, because the limit was reached. */
  refused = 0;
  /** Descriptors held by listening portals now (their manager says how many: `listeningFrom`). */
  private listening: () => number = () => 0;
  private readonly fileLimit: number;
  private readonly log: Logger;
  private saidAt = -Infinity;

  constructor(private readonly o: ConnectionBudgetOptions = {}) {
    this.fileLimit = o.fileLimit ?? openFileLimit()?.soft ?? Infinity;
    this.log = o.log ?? silentLogger;
  }

  /** Where the count of listening portals is read (a portal manager, each TCP listener or UDP socket one descriptor). */
  listeningFrom(count: () => number): void {
    this.listening = count;
  }

  /** How many client connections may be open now. */
  get limit(): number {
    const max = this.o.maxConnections ?? 'auto';
    if (max !== 'auto') return max;
    if (!Number.isFinite(this.fileLimit)) return Infinity;
    const spliced = this.o.spliced?.() ?? SpliceEngine.get()?.active ?? 0;
    const room =
      this.fileLimit -
      BASE_DESCRIPTORS -
      this.listening() -
      nodeReserve(this.fileLimit) -
      SPLICE_EXTRA_DESCRIPTORS * spliced;
    return Math.max(0, Math.floor(room / 2));
  }

  /**
   * A connection just accepted: counted until it closes (true), or reset at once when the limit
   * is reached (false: the caller does nothing more with it).
   */
  admit(sock: Socket): boolean {
    if (!this.acquire()) {
      this.refuse();
      resetSocket(sock);
      return false;
    }
    let released = false;
    giveCounted(sock, () => {
      if (released) return;
      released = true;
      this.release();
    });
    return true;
  }

  /**
   * A place for what holds a descriptor without a socket of its own here (a UDP session's
   * upstream socket): true if taken (give it back with `release`), false at the limit.
   */
  acquire(): boolean {
    if (this.open >= this.limit) return false;
    this.open++;
    return true;
  }

  /** One turned away at the limit: counted, and said (once per 10 s). */
  refuse(): void {
    this.refused++;
    const now = Date.now();
    if (now - this.saidAt < 10_000) return;
    this.saidAt = now;
    this.log.warn(
      {
        open: this.open,
        limit: this.limit,
        refused: this.refused,
        openFiles: Number.isFinite(this.fileLimit) ? this.fileLimit : undefined,
      },
      'connection limit reached: new client connections are reset and new UDP sessions take their portal’s oldest place until some close (edgeMesh.proxy.maxConnections, or the open-file limit: LimitNOFILE)',
    );
  }

  /** Give back a place taken with `acquire`. */
  release(): void {
    this.open--;
  }
}

/** The release of a counted connection, on the socket that holds it now. */
const COUNTED = Symbol('edgemesh.connectionCounted');
type Counted = Socket & { [COUNTED]?: () => void };

/**
 * A native engine takes the connection (a duplicate of its descriptor) and destroys Node's socket:
 * the count leaves the socket and goes with the returned release, which the taker calls when the
 * connection ends — or hands on with `giveCounted` to the socket it gives the connection back as.
 */
export function takeCounted(sock: Socket): (() => void) | undefined {
  const c = sock as Counted;
  const release = c[COUNTED];
  if (!release) return undefined;
  delete c[COUNTED];
  sock.off('close', release);
  return release;
}

/** The connection goes on as `sock`: its count is released when that closes. */
export function giveCounted(sock: Socket, release: (() => void) | undefined): void {
  if (!release) return;
  (sock as Counted)[COUNTED] = release;
  sock.once('close', release);
}
