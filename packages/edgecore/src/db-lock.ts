import { mkdirs } from '@edgecore/beehive';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseLockedError } from './edgecore-errors';

/**
 * One edgecore per database: `<dataSource>.lock` holds the owner's pid, created with O_EXCL.
 * A lock whose pid is gone (a crash) is taken over.
 */
export class DbLock {
  /** Locks held by this process: a lock file with our own pid is stale unless listed here (pid 1 in containers). */
  private static readonly heldHere = new Set<string>();
  private held = false;
  readonly path: string;

  constructor(readonly dataSource: string) {
    this.path = `${dataSource}.lock`;
  }

  acquire(): void {
    mkdirs(dirname(this.path), 0o700);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.path, 'wx', 0o600);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        this.held = true;
        DbLock.heldHere.add(this.path);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const pid = Number(readFileSync(this.path, 'utf8').trim());
        const ours = pid === process.pid;
        if (ours ? DbLock.heldHere.has(this.path) : Number.isInteger(pid) && pid > 0 && alive(pid)) {
          throw new DatabaseLockedError(this.dataSource, pid);
        }
        unlinkSync(this.path); // stale: its owner is gone
      }
    }
    throw new DatabaseLockedError(this.dataSource, -1);
  }

  release(): void {
    if (!this.held) return;
    this.held = false;
    DbLock.heldHere.delete(this.path);
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
