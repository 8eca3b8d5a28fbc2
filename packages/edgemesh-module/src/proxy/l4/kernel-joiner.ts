import type { Socket } from 'node:net';
import { SpliceEngine } from './splice';

/**
 * The splice engine as a joiner of two connected sockets, for a component outside EdgeMesh that
 * relays plain TCP (EdgeTunnel's relay joins spliced streams with it: the bytes stay in the
 * kernel). Undefined when the native addon is not built.
 */
export function kernelJoiner():
  | {
      join(a: Socket, b: Socket, cb: { fallback(): void; done(bytes: number): void }): { abort(): void };
    }
  | undefined {
  const engine = SpliceEngine.get();
  if (!engine) return undefined;
  return {
    join(a, b, cb) {
      // the engine holds duplicates of the descriptors: destroying the sockets would not end
      // the connections, aborting the engine's copy does (its done then destroys both)
      let id: number | undefined;
      let aborted = false;
      engine.handOver(
        a,
        b,
        { idleMs: 0 },
        {
          started: (n) => (aborted ? engine.abort(n) : (id = n)),
          fallback: () => (aborted ? (a.destroy(), b.destroy()) : cb.fallback()),
          failed: () => cb.done(0),
          done: (_reason, up, down) => cb.done(up + down),
        },
      );
      return {
        abort: () => {
          aborted = true;
          if (id !== undefined) engine.abort(id);
          else if (a.destroyed || b.destroyed) cb.done(0);
        },
      };
    },
  };
}
