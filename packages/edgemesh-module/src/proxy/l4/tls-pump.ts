import { Socket } from 'node:net';
import { loadNative } from '../../native';
import { resetSocket } from '@edgecore/beehive';
import { fdOf, restartReading, stopReading } from './splice';

/**
 * The TLS pump of the native addon (native/tls_pump.c): TLS over a connected TCP socket whose
 * plaintext comes from and goes to a second socket, run by OpenSSL on an engine thread — the
 * bytes never cross JavaScript. EdgeTunnel's spliced streams use it for their end-to-end TLS
 * (`tlsPump()` is what it loads). Node's sockets stay the owners of the connections (the engine
 * works on duplicates of their descriptors); when the engine reports the end, they are destroyed
 * here — with a reset after an error or an abort.
 */
interface TlsBinding {
  context(cert: Buffer, key: Buffer, ca: Buffer, alpn: string, ciphersuites: string): object;
  start(
    ctx: object,
    rawFd: number,
    plainFd: number,
    server: boolean,
    servername: string,
    idleMs: number,
    first: Buffer | null,
    session: Buffer | null,
  ): [number, number];
  verdict(id: number, ok: boolean): boolean;
  abort(id: number): boolean;
  setOnPeer(cb: (id: number, der: Buffer, resumed: boolean) => void): void;
  setOnSession(cb: (id: number, der: Buffer) => void): void;
  setOnDone(cb: (id: number, reason: TlsPumpEnd, up: number, down: number, error: string) => void): void;
  active(): number;
}

export type TlsPumpEnd = 'eof' | 'error' | 'idle' | 'aborted';

/** A TLS context: the node's certificate and key, the CA its peers must chain to. */
export interface TlsPumpIdentity {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export interface TlsPumpStart {
  /** Server (accepts the handshake) or client (sends `servername` as SNI). */
  server: boolean;
  servername?: string;
  /** Ends a stream with no byte either way for this long (0: never). */
  idleMs: number;
  /** Plaintext read from `plain` elsewhere (sent first, before what Node still holds of it). */
  first?: Buffer;
  /**
   * A client's TLS session to resume (what `session` reported on an earlier stream, or Node's TLS
   * 'session' event: the same DER); one the server does not take means a full handshake.
   */
  session?: Buffer;
}

export interface TlsPumpEvents {
  /**
   * The handshake is done and the chain verified: the peer's certificate (DER) — of a resumed
   * session (`resumed`), the one verified when the session began. True lets the plaintext flow;
   * false ends the stream (reason `aborted`). No byte moves before it answers.
   */
  peer(der: Buffer, resumed: boolean): boolean;
  /** A client's new session ticket (DER, for `start`'s `session`): after `peer`, while it flows. */
  session?(der: Buffer): void;
  /** Both sockets are destroyed; `up` plaintext bytes sent, `down` received; `error` says why. */
  done(reason: TlsPumpEnd, up: number, down: number, error: string): void;
}

/** A stream in the pump. */
export interface TlsPumpStream {
  /** The plaintext end JavaScript holds when no plain socket was given (a socket pair's end). */
  plain?: Socket;
  /** End it abruptly (`done` follows with `aborted`; both connections reset). */
  abort(): void;
}

interface Live {
  raw: Socket;
  plain: Socket;
  /** `plain` is JavaScript's end of a socket pair the engine made. */
  pair: boolean;
  events: TlsPumpEvents;
  /** The plaintext flows (the verdict was yes). */
  pumping: boolean;
  /** Gives the caller's `plain` back as it was handed over (a stream that never got to flow). */
  giveBack(): void;
}

export class TlsPump {
  private static shared?: TlsPump | null;
  private readonly live = new Map<number, Live>();

  private constructor(private readonly b: TlsBinding) {
    b.setOnPeer((id, der, resumed) => {
      const c = this.live.get(id);
      let ok = false;
      try {
        ok = !!c && c.events.peer(der, resumed);
      } finally {
        if (c) c.pumping = ok;
        b.verdict(id, ok);
      }
    });
    b.setOnSession((id, der) => {
      const c = this.live.get(id);
      if (c?.pumping) c.events.session?.(der);
    });
    b.setOnDone((id, reason, up, down, error) => {
      const c = this.live.get(id);
      if (!c) return;
      this.live.delete(id);
      if (!c.pumping) {
        // the handshake failed or was refused: no byte of the caller's connection moved, and
        // the caller may carry it another way (the next backend); a pair's end was nobody's yet
        resetSocket(c.raw);
        if (c.pair) c.plain.destroy();
        else c.giveBack();
      } else if (reason === 'error' || reason === 'aborted') {
        resetSocket(c.raw);
        // a socket pair's end has no reset: an error tells its reader the stream broke
        if (c.pair) c.plain.destroy(new Error(`tunnel stream ${reason === 'error' ? error : 'aborted'}`));
        else resetSocket(c.plain);
      } else {
        c.raw.destroy();
        // a pair's end ends by itself once its reader has seen the FIN and ended its side
        if (!c.pair) c.plain.destroy();
      }
      c.events.done(reason, up, down, error);
    });
  }

  /** The process's pump, or undefined when the addon is not built. */
  static get(): TlsPump | undefined {
    if (TlsPump.shared === undefined) {
      const b = loadNative<{ tls?: TlsBinding }>()?.tls;
      TlsPump.shared = b ? new TlsPump(b) : null;
    }
    return TlsPump.shared ?? undefined;
  }

  get active(): number {
    return this.live.size;
  }

  /** A context for `start` (throws EDGEMESH_TLS_PUMP on a certificate, key or CA it cannot use). */
  context(id: TlsPumpIdentity, alpn: string, ciphersuites: string): object {
    return this.b.context(id.cert, id.key, id.ca, alpn, ciphersuites);
  }

  /**
   * Run TLS over `raw` (connected; nothing read from it by Node, nothing left in its write queue),
   * its plaintext to and from `plain` (a connected socket whose write queue is empty; what Node
   * has read of it goes first) or, without one, a socket pair whose end is returned as `plain`.
   * Undefined when a socket has no descriptor or the engine cannot take it (the caller runs TLS
   * itself; its sockets are as they were). A stream that ends before its plaintext flows (a
   * failed handshake, a refused peer) gives `plain` back as it was, for the caller to use.
   */
  start(
    ctx: object,
    raw: Socket,
    plain: Socket | undefined,
    o: TlsPumpStart,
    events: TlsPumpEvents,
  ): TlsPumpStream | undefined {
    const rawFd = fdOf(raw);
    const plainFd = plain ? fdOf(plain) : -1;
    if (rawFd === undefined || plainFd === undefined || raw.readableLength > 0) return undefined;
    if (raw.writableLength > 0 || (plain && plain.writableLength > 0)) return undefined;
    let id: number;
    let pairFd: number;
    stopReading(raw);
    // Node must never read these sockets again: a read() below, or a resume() scheduled earlier,
    // would restart the handle's reads and race the engine for bytes
    const reader = (s: Socket): { _read: () => void } => s as unknown as { _read: () => void };
    const readOf = new Map((plain ? [raw, plain] : [raw]).map((s) => [s, reader(s)._read] as const));
    for (const s of readOf.keys()) reader(s)._read = () => undefined;
    const held: Buffer[] = [];
    /** `s` as it was: Node reads it again, and what was taken from its buffer is back in it. */
    const giveBack = (s: Socket | undefined): void => {
      if (!s || !readOf.has(s)) return;
      reader(s)._read = readOf.get(s)!;
      if (s === plain) for (const c of held.reverse()) s.unshift(c);
      if (!s.destroyed) restartReading(s);
    };
    if (plain) {
      stopReading(plain);
      for (let c = plain.read() as Buffer | null; c; c = plain.read() as Buffer | null) held.push(c);
    }
    try {
      const first =
        o.first?.length || held.length ? Buffer.concat([...(o.first ? [o.first] : []), ...held]) : null;
      [id, pairFd] = this.b.start(
        ctx,
        rawFd,
        plainFd,
        o.server,
        o.servername ?? '',
        o.idleMs,
        first,
        o.server ? null : (o.session ?? null),
      );
    } catch {
      // out of descriptors, say: the caller runs TLS itself (raw was never read)
      giveBack(raw);
      giveBack(plain);
      return undefined;
    }
    const end =
      plain ?? new Socket({ fd: pairFd, readable: true, writable: true, allowHalfOpen: true } as never);
    raw.on('error', () => undefined);
    this.live.set(id, {
      raw,
      plain: end,
      pair: !plain,
      events,
      pumping: false,
      giveBack: () => giveBack(plain),
    });
    return { plain: plain ? undefined : end, abort: () => void this.b.abort(id) };
  }
}

/**
 * The pump as EdgeTunnel takes it (its `TlsEngine`): undefined when the native addon is not
 * built (the tunnel then runs TLS in Node).
 */
export function tlsPump(): TlsPump | undefined {
  return TlsPump.get();
}
