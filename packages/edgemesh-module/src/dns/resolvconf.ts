import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';

const MARK = '# added by edgemesh';

/**
 * `dns.hijack: resolvconf`: put our nameserver first in the host's resolv.conf and restore the
 * original on stop. The original is kept beside it (`<path>.edgemesh-orig`) so a crashed run's
 * change is undone on the next start. Writes go through a temp file + rename (never half-written).
 */
export class ResolvConfHijack {
  private applied = false;

  constructor(
    readonly path: string,
    private readonly nameserver: string,
  ) {}

  get backupPath(): string {
    return `${this.path}.edgemesh-orig`;
  }

  /** Undo a previous run that did not restore (crash). */
  recover(): void {
    if (existsSync(this.backupPath)) {
      renameSync(this.backupPath, this.path);
    }
  }

  /** The original content (what upstreams should be read from). */
  original(): string {
    return existsSync(this.backupPath)
      ? readFileSync(this.backupPath, 'utf8')
      : readFileSync(this.path, 'utf8');
  }

  apply(): void {
    this.recover();
    const orig = readFileSync(this.path, 'utf8');
    writeFileSync(this.backupPath, orig);
    const body = orig
      .split('\n')
      .filter((l) => !l.includes(MARK))
      .join('\n');
    const tmp = `${this.path}.edgemesh-tmp`;
    writeFileSync(tmp, `nameserver ${this.nameserver} ${MARK}\n${body}`);
    renameSync(tmp, this.path);
    this.applied = true;
  }

  restore(): void {
    if (!this.applied) return;
    this.applied = false;
    if (existsSync(this.backupPath)) {
      const orig = readFileSync(this.backupPath, 'utf8');
      const tmp = `${this.path}.edgemesh-tmp`;
      writeFileSync(tmp, orig);
      renameSync(tmp, this.path);
      unlinkSync(this.backupPath);
    }
  }
}
