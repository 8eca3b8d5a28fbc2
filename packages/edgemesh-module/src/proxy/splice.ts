import type { Socket } from 'node:net';
import { loadNative, nativeUnavailable } from '../native';

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
  readStop?: () => number;
}

/** Stop Node's reads on a socket (a paused stream's handle keeps reading up to its buffer limit). */
export function stopReading(s: Socket): void {
  (s as unknown as { _handle?: Handle })._handle?.readStop?.();
}

/** The descriptor of a connected TCP socket, or undefined where Node does not expose one. */
function fdOf(s: Socket): number | undefined {
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
      c.client.destroy();
      c.up.destroy();
      c.done(reason, up, down);
    });
  }

  /** The process's engine, or undefined when the addon is not built (`unavailable()` says why). */
  static get(): SpliceEngine | undefined {
    if (SpliceEngine.shared === undefined) {
      const b = loadNative<{ splice: SpliceBinding }>()?.splice;
      SpliceEngine.shared = b ? new SpliceEngine(b) : null;
    }
    return SpliceEngine.shared ?? undefined;
  }

  static unavailable(): string | undefined {
    return nativeUnavailable();
  }

  get active(): number {
    return this.live.size;
  }

  /**
   * Hand a connected pair over. Node must not be reading either socket (the caller paused them
   * before any read started) and their write queues must be empty. Returns false when a socket
   * has no descriptor or the engine cannot take it (the caller then pipes in JavaScript); else the
   * connection's id.
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
      return undefined; // out of descriptors for the pipes, say: the caller pipes in JavaScript
    }
    this.live.set(id, { client, up, done });
    return id;
  }

  /** End a connection (its `done` follows with reason `aborted`). */
  abort(id: number): void {
    this.b.abort(id);
  }
}
