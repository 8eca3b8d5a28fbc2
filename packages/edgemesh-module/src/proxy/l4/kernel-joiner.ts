import type { Socket } from 'node:net';
import { SpliceEngine } from './splice';

/**
 * The splice engine as a joiner of two connected sockets, for a component outside EdgeMesh that
 * relays plain TCP (EdgeTunnel's relay joins spliced streams with it: the bytes stay in the
 * kernel). Undefined when the native addon is not built.
 */
export function kernelJoiner():
  { join(a: Socket, b: Socket, cb: { fallback(): void; done(bytes: number): void }): void } | undefined {
  const engine = SpliceEngine.get();
  if (!engine) return undefined;
  return {
    join(a, b, cb) {
      engine.handOver(
        a,
        b,
        { idleMs: 0 },
        {
          started: () => undefined,
          fallback: cb.fallback,
          failed: () => cb.done(0),
          done: (_reason, up, down) => cb.done(up + down),
        },
      );
    },
  };
}
