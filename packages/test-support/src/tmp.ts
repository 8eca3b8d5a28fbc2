import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A directory of the test's own under the system temp dir, a database path in it, and its removal. */
export function tmpDir(prefix = 'edgecore-'): { dir: string; db: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, db: join(dir, 'edgecore.db'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
