import type { Logger } from '@edgecore/beehive';
import { randomBytes } from 'node:crypto';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from './pipe';
import { SPLICE_MAGIC, SPLICE_TOKEN_CHARS } from './protocol';
import { TunnelCode, TunnelError } from './tunnel-errors';

/**
 * Spliced streams: the relay joins two plain TCP connections that the two nodes dial out to its
 * splice port, each presenting the one-time token the relay handed them over their authenticated
 * links; the nodes then run TLS end to end over the joined pair (see README "Spliced streams").
 * The relay never decrypts a spliced stream's bytes, and moves them without framing.
 */

const HELLO_LEN = SPLICE_MAGIC.length + SPLICE_TOKEN_CHARS;
const TOKEN = /^[0-9a-f]+$/;

export function newSpliceToken(): string {
  return randomBytes(SPLICE_TOKEN_CHARS / 2).toString('hex');
}

/** What a node writes first on a relay's splice port. */
export function spliceHello(token: string): Buffer {
  return Buffer.from(SPLICE_MAGIC + token, 'latin1');
}

/**
 * The TLS server name a source node sends on a spliced stream: the token, so the target node
 * knows which of the streams it accepted this handshake is (the relay knows the token anyway).
 */
export function spliceServerName(token: string): string {
  return `t${token}.splice.edgetunnel`;
}

export function tokenOfServerName(name: string | false | null | undefined): string | undefined {
  const m = typeof name === 'string' ? /^t([0-9a-f]+)\.splice\.edgetunnel$/.exec(name) : null;
  return m?.[1];
}

/**
 * Runs a spliced stream's end-to-end TLS outside JavaScript: EdgeMesh's native TLS pump fits
 * (`tlsPump()` of `@edgecore/edgemesh-module/tls-pump`, loaded by `loadTlsEngine`). `start` takes
 * the raw connection to the relay and the plaintext side (a connection — the backend's, or the
 * client's with `first` its bytes read already — or none: it returns a socket of its own for the
 * plaintext); undefined when it cannot take them. A stream that ends before its plaintext flows
 * (failed handshake, refused peer) leaves the given plaintext connection as it was. A client
 * resumes the TLS session `session` names (the DER of Node's TLS 'session' event, or of the
 * engine's own `session` event) where its peer takes it.
 */
export interface TlsEngine {
  context(id: { cert: Buffer; key: Buffer; ca: Buffer }, alpn: string, ciphersuites: string): object;
  start(
    ctx: object,
    raw: Socket,
    plain: Socket | undefined,
    o: { server: boolean; servername?: string; idleMs: number; first?: Buffer; session?: Buffer },
    events: {
      /**
       * The handshake is done, the chain verified (of a resumed session, when it began): true
       * lets the plaintext flow.
       */
      peer(der: Buffer, resumed: boolean): boolean;
      /** A client's new TLS session ticket (DER: `session` of a later start resumes it). */
      session?(der: Buffer): void;
      done(reason: 'eof' | 'error' | 'idle' | 'aborted', up: number, down: number, error: string): void;
    },
  ): { plain?: Socket; abort(): void } | undefined;
}

/**
 * A node's raw connection to a relay's splice port, the hello written (handed to the kernel:
 * a TLS engine may write on the descriptor next). Rejects with a
 * TunnelError (NO_PATH) when the port cannot be reached in `timeoutMs`.
 */
export function dialSplice(host: string, port: number, token: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host, port, allowHalfOpen: true, noDelay: true });
    const fail = (why: string): void => {
      clearTimeout(t);
      s.destroy();
      reject(new TunnelError(TunnelCode.NoPath, `relay splice port ${host}:${port}: ${why}`));
    };
    const t = setTimeout(() => fail(`no connection in ${timeoutMs} ms`), timeoutMs);
    s.once('error', (e) => fail(e.message));
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      s.on('error', () => undefined); // the TLS socket over it reports its errors
      s.write(spliceHello(token), () => resolve(s));
    });
  });
}

/** What the splice port counts, on the relay's own stats. */
export interface SpliceCounters {
  /** Streams joined (spliced or not) and not closed yet. */
  active: number;
  /** Bytes moved, both ways. */
  bytes: number;
  /** Spliced pairs joined. */
  spliced: number;
  /** Connections to the splice port closed: no or a malformed hello, an unknown or used token. */
  spliceRefused: number;
  /** Tokens whose second connection never came. */
  spliceExpired: number;
}

/**
 * Moves a joined pair's bytes inside the kernel (splice(2)), off the JavaScript thread: EdgeMesh's
 * L4 splice engine fits (`spliceEngineJoiner` in edgecore's relay command). `join` hands the
 * pair over, or calls `fallback` when it cannot take it (then JavaScript pipes); `done` reports
 * the bytes moved once both sockets are closed.
 */
export interface KernelJoiner {
  /** `abort()` ends the pair (the joiner holds the connections: destroying the sockets would not). */
  join(a: Socket, b: Socket, cb: { fallback(): void; done(bytes: number): void }): { abort(): void };
}

interface Pending {
  from: string;
  to: string;
  timer: NodeJS.Timeout;
  first?: Socket;
}

/**
 * The relay's splice port: a token from `issue()` pairs the two connections that present it and
 * joins them (pipes both ways; half-close and reset cross). Not an open proxy: it dials nobody,
 * and a connection without a token it issued — to the two nodes it told, over their
 * authenticated links — is closed. A token is good for one pair, for `ttlMs`.
 */
export class SpliceRendezvous {
  private server?: Server;
  private readonly pending = new Map<string, Pending>();
  /** Joined pairs by their first socket: who, and how to end the pair. */
  private readonly pairs = new Map<Socket, { from: string; to: string; end(): void }>();

  constructor(
    private readonly stats: SpliceCounters,
    private readonly ttlMs: number,
    private readonly log: Logger,
    private readonly kernel?: KernelJoiner,
  ) {}

  async listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) =>
        reject(new TunnelError(TunnelCode.Listen, `relay splice listen ${host}:${port}: ${e.message}`)),
      );
      // two connections per stream, many streams at once: a short backlog drops SYNs (1 s retries)
      server.listen({ port, host, backlog: 4096 }, () => resolve());
    });
    this.server = server;
    return server.address() as AddressInfo;
  }

  /** A token for one stream from `from` to `to`. */
  issue(from: string, to: string): string {
    const token = newSpliceToken();
    const timer = setTimeout(() => {
      const p = this.pending.get(token);
      if (!p) return;
      this.pending.delete(token);
      this.stats.spliceExpired++;
      p.first?.destroy();
    }, this.ttlMs);
    timer.unref();
    this.pending.set(token, { from, to, timer });
    return token;
  }

  /** The stream was refused or relayed after all: the token is no good. */
  forget(token: string): void {
    const p = this.pending.get(token);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(token);
    p.first?.destroy();
  }

  /** Close every pair and waiting connection of `node` (revoked). */
  cut(node: string): void {
    for (const [token, p] of this.pending)
      if (p.from === node || p.to === node) {
        clearTimeout(p.timer);
        this.pending.delete(token);
        p.first?.destroy();
      }
    for (const p of this.pairs.values()) if (p.from === node || p.to === node) p.end();
  }

  async close(): Promise<void> {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.first?.destroy();
    }
    this.pending.clear();
    for (const p of this.pairs.values()) p.end();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private accept(s: Socket): void {
    s.on('error', () => undefined);
    const t = setTimeout(() => refuse('no hello'), this.ttlMs);
    const refuse = (why: string): void => {
      clearTimeout(t);
      this.stats.spliceRefused++;
      this.log.warn({ peer: s.remoteAddress, why }, 'relay: splice connection refused');
      s.destroy();
    };
    const onReadable = (): void => {
      const hello = s.read(HELLO_LEN) as Buffer | null;
      if (!hello) return; // fewer bytes so far (read() takes all or nothing)
      s.off('readable', onReadable);
      s.off('end', onEnd);
      clearTimeout(t);
      const magic = hello.toString('latin1', 0, SPLICE_MAGIC.length);
      const token = hello.toString('latin1', SPLICE_MAGIC.length);
      const p = magic === SPLICE_MAGIC && TOKEN.test(token) ? this.pending.get(token) : undefined;
      if (!p) return refuse('unknown token');
      if (!p.first) {
        p.first = s;
        s.once('close', () => {
          if (this.pending.get(token)?.first === s) this.pending.get(token)!.first = undefined;
        });
        return;
      }
      clearTimeout(p.timer);
      this.pending.delete(token);
      this.join(p, p.first, s);
    };
    const onEnd = (): void => refuse('closed before its hello');
    s.on('readable', onReadable);
    s.once('end', onEnd);
  }

  private join(p: Pending, a: Socket, b: Socket): void {
    this.stats.spliced++;
    this.stats.active++;
    // JavaScript pipes end with a socket (the other follows); the kernel's copy ends by abort
    const pair = { from: p.from, to: p.to, end: (): void => void a.destroy() };
    this.pairs.set(a, pair);
    let closed = 0;
    const gone = (): void => {
      if (++closed < 2) return;
      this.pairs.delete(a);
      this.stats.active--;
    };
    a.once('close', gone);
    b.once('close', gone);
    const inJs = (): void => join(a, b, (x, y) => (this.stats.bytes += x + y));
    if (!this.kernel) return inJs();
    a.on('error', () => undefined);
    b.on('error', () => undefined);
    let inKernel = true;
    const k = this.kernel.join(a, b, {
      fallback: () => {
        inKernel = false; // may come before join() returns
        inJs();
      },
      done: (n) => (this.stats.bytes += n),
    });
    if (inKernel) pair.end = () => k.abort();
  }
}
