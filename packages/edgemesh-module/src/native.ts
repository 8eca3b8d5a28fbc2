import { join } from 'node:path';

/**
 * The `edgemesh_native` addon (native/*.c, built by `npm install` through node-gyp; Linux): the
 * batched UDP socket of the DNS server, the splice engine of the L4 proxy, the L7 HTTP engine and
 * the portals' listener set. Everything that uses it has a pure-Node fallback, chosen when the addon
 * is not built.
 */
let binding: unknown;
let loadError: string | undefined;

export function loadNative<T>(): T | undefined {
  if (binding === undefined) {
    try {
      // the same relative path from src/ (ts-jest) and dist/ (built)
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      binding = require(join(__dirname, '..', 'build', 'Release', 'edgemesh_native.node'));
    } catch (e) {
      binding = null;
      loadError = (e as Error).message.split('\n')[0];
    }
  }
  return (binding ?? undefined) as T | undefined;
}

/** Why the addon is not available (undefined when it is). */
export function nativeUnavailable(): string | undefined {
  loadNative();
  return loadError;
}

/**
 * Gives malloc's free pages back to the system (glibc's `malloc_trim`): glibc keeps what a burst
 * freed inside its arenas for reuse, resident. True when some were given back; undefined without
 * the addon. For the process's owner (the edgecore CLI's memory release), like a V8 flag.
 */
export function trimMalloc(): boolean | undefined {
  return loadNative<{ trimMalloc(): boolean }>()?.trimMalloc();
}
