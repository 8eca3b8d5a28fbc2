import type { KernelJoiner, TlsEngine } from './splice';

/**
 * EdgeMesh's native engines, when `@edgecore/edgemesh-module` is installed next to EdgeTunnel
 * with its addon built (EdgeTunnel needs no EdgeMesh otherwise: without them, JavaScript pipes
 * the relay's pairs and Node's TLS runs the nodes' spliced streams). Resolved at run time only.
 */
function fromEdgeMesh<T>(subpath: string, factory: string): T | undefined {
  const spec = `@edgecore/edgemesh-module/${subpath}`; // not a literal: no build-time dependency
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const m = require(spec) as Record<string, () => T | undefined>;
    return m[factory]();
  } catch {
    return undefined;
  }
}

/** The splice engine as the relay's joiner of spliced pairs (the bytes stay in the kernel). */
export function loadKernelJoiner(): KernelJoiner | undefined {
  return fromEdgeMesh<KernelJoiner>('kernel-joiner', 'kernelJoiner');
}

/** The native TLS pump for the end-to-end TLS of a node's spliced streams. */
export function loadTlsEngine(): TlsEngine | undefined {
  return fromEdgeMesh<TlsEngine>('tls-pump', 'tlsPump');
}
