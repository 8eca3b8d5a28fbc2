import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * `mkdir -p`: `dir` and each missing directory above it, each with `mode`; nothing when `dir` is
 * a directory already. Node's own `mkdirSync(dir, { recursive: true })` loops for good where
 * mkdir(2) says ENOENT under a parent that exists (procfs: `/proc/x/y`): a data path there had
 * edgecore spin at full CPU without a word, deaf to SIGTERM. Here each level is created once, top
 * down, and the first that cannot be is the error (`ENOENT: no such file or directory, mkdir
 * '/proc/x'`; ENOTDIR for a file in the way).
 */
export function mkdirs(dir: string, mode = 0o777): void {
  const missing: string[] = [];
  for (let cur = resolve(dir); ;) {
    let isDir: boolean;
    try {
      isDir = statSync(cur).isDirectory();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      missing.push(cur);
      const up = dirname(cur);
      if (up === cur) break;
      cur = up;
      continue;
    }
    if (!isDir)
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${cur}'`), {
        code: 'ENOTDIR',
        syscall: 'mkdir',
        path: cur,
      });
    break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, { mode });
    } catch (e) {
      // made meanwhile (another process): fine if it is a directory
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(d).isDirectory()) throw e;
    }
  }
}
