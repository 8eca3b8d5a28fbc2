import type { Socket } from 'node:net';
import { resetSocket } from '@edgecore/beehive';
import { loadNative } from '../../native';

/**
 * The L4 splice engine of the native addon (native/splice.c): once JavaScript has connected a
 * client to a backend, the bytes move socket → pipe → socket inside the kernel on an engine
 * thread, never through JavaScript buffers. Node's sockets stay the owners of the connections
 * (the engine works on duplicates of their descriptors); when the engine reports the end, the
 * sockets are destroyed here.
 */
interface SpliceBinding {
  start(clientFd: number, backendFd: number, idleMs: number): number;
  abort(id: number): boolean;
  setOnDone(cb: (id: number, reason: SpliceEnd, bytesUp: number, bytesDown: number) => void): void;
  active(): number;
}

export type SpliceEnd = 'eof' | 'error' | 'idle' | 'aborted';

interface Handle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
  readStart?: () => number;
}

/** Stop Node's reads on a socket (a paused stream's handle keeps reading up to its buffer limit). */
export function stopReading(s: Socket): void {
  const h = (s as unknown as { _handle?: Handle })._handle;
  if (!h?.readStop) return;
  h.readStop();
  h.reading = false; // Node's own flag, kept in step
}

/**
 * Undo stopReading (the engine did not take the pair). The stream may still wait for the read it
 * asked for before the stop, so the handle is restarted here rather than by the next resume().
 */
export function restartReading(s: Socket): void {
  const h = (s as unknown as { _handle?: Handle })._handle;
  if (!h?.readStart || h.reading || s.destroyed) return;
  h.reading = true;
  h.readStart();
}

/**
 * The descriptor of a connected TCP socket, or undefined where Node does not expose one — and for
 * a TLS socket, whose handle reports the descriptor of the TCP connection under it: its bytes are
 * ciphertext (a tunnel's spliced stream, TLS origination), never for the native engines.
 */
export function fdOf(s: Socket): number | undefined {
  if ((s as { encrypted?: boolean }).encrypted) return undefined;
  const h = (s as unknown as { _handle?: Handle })._handle;
  return typeof h?.fd === 'number' && h.fd >= 0 ? h.fd : undefined;
}

export class SpliceEngine {
  private static shared?: SpliceEngine | null;
  private readonly live = new Map<
    number,
    { client: Socket; up: Socket; done: (r: SpliceEnd, up: number, down: number) => void }
  >();

  private constructor(private readonly b: SpliceBinding) {
    b.setOnDone((id, reason, up, down) => {
      const c = this.live.get(id);
      if (!c) return;
      this.live.delete(id);
      // a connection that failed or was aborted ends with a reset on both sides, as a reset
      // crosses a TCP proxy (the engine closed its duplicates first: Node's descriptor is the
      // last one); one that ended (both directions at EOF) or idled out, with a FIN
      const end = reason === 'error' || reason === 'aborted' ? resetSocket : (s: Socket) => s.destroy();
      end(c.client);
      end(c.up);
      c.done(reason, up, down);
    });
  }

  /** The process's engine, or undefined when the addon is not built (`nativeUnavailable()` says why). */
  static get(): SpliceEngine | undefined {
    if (SpliceEngine.shared === undefined) {
      const b = loadNative<{ splice: SpliceBinding }>()?.splice;
      SpliceEngine.shared = b ? new SpliceEngine(b) : null;
    }
    return SpliceEngine.shared ?? undefined;
  }

  get active(): number {
    return this.live.size;
  }

  /**
   * Hand a connected pair over. Node must not be reading either socket (the caller paused them
   * before any read started) and their write queues must be empty. Returns the connection's id, or
   * undefined when a socket has no descriptor or the engine cannot take the pair (reads are then
   * restarted and the caller pipes in JavaScript).
   */
  start(
    client: Socket,
    up: Socket,
    idleMs: number,
    done: (reason: SpliceEnd, bytesUp: number, bytesDown: number) => void,
  ): number | undefined {
    const a = fdOf(client);
    const b = fdOf(up);
    if (a === undefined || b === undefined) return undefined;
    stopReading(client);
    stopReading(up);
    let id: number;
    try {
      id = this.b.start(a, b, idleMs);
    } catch {
      // out of descriptors for the pipes, say: the caller pipes in JavaScript
      restartReading(client);
      restartReading(up);
      return undefined;
    }
    // From here Node must never read these sockets again (a resume() scheduled earlier would
    // restart the handle's reads and race the engine for bytes).
    for (const s of [client, up]) (s as unknown as { _read: () => void })._read = () => undefined;
    this.live.set(id, { client, up, done });
    return id;
  }

  /**
   * Hand a connected pair over once everything Node holds for it is written: `toB` / `toA` (bytes
   * read elsewhere, e.g. CONNECT or Upgrade leftovers), then whatever each socket's stream buffered
   * before its reads stopped — re-checked after every write, so no byte stays behind in a Node
   * buffer. Then `started(id)`; or `fallback()` when the engine cannot take the pair (both paused,
   * the caller pipes in JavaScript); or `failed()` when a socket closed or a write failed meanwhile
   * (both destroyed). `done` as for `start()`.
   */
  handOver(
    a: Socket,
    b: Socket,
    o: { toB?: Buffer; toA?: Buffer; idleMs: number },
    cb: {
      started(id: number): void;
      fallback(): void;
      failed(): void;
      done(reason: SpliceEnd, bytesUp: number, bytesDown: number): void;
    },
  ): void {
    const kill = (): void => {
      a.destroy();
      b.destroy();
    };
    let toB = o.toB?.length ? [o.toB] : [];
    let toA = o.toA?.length ? [o.toA] : [];
    const drain = (s: Socket, into: Buffer[]): void => {
      if (s.readableLength === 0) return;
      const chunk = s.read() as Buffer | null;
      if (chunk) into.push(chunk);
    };
    const step = (): void => {
      if (a.destroyed || b.destroyed) {
        kill();
        cb.failed();
        return;
      }
      a.pause();
      b.pause();
      stopReading(a);
      stopReading(b);
      drain(a, toB);
      drain(b, toA);
      if (toB.length || toA.length) {
        let waits = 0;
        let failed = false;
        const after = (err?: Error | null): void => {
          if (failed) return;
          if (err) {
            failed = true;
            kill();
            cb.failed();
          } else if (--waits === 0) step();
        };
        if (toB.length) waits++;
        if (toA.length) waits++;
        if (toB.length) b.write(Buffer.concat(toB), after);
        if (toA.length) a.write(Buffer.concat(toA), after);
        toB = [];
        toA = [];
        return;
      }
      const id = this.start(a, b, o.idleMs, cb.done);
      if (id === undefined) cb.fallback();
      else cb.started(id);
    };
    step();
  }

  /** End a connection (its `done` follows with reason `aborted`). */
  abort(id: number): void {
    this.b.abort(id);
  }
}
