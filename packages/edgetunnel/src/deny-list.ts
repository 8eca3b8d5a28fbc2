import { readFileSync, statSync, writeFileSync, renameSync, chmodSync } from 'node:fs';

/**
 * Revoked identities: a JSON file `{"revoked":[{"node":"b","fingerprint256":"AB:…"}, …]}` kept
 * next to the CA by `edgectl certs revoke` and handed to relays and nodes. An entry with a
 * fingerprint revokes that certificate; an entry with only a node name revokes every certificate
 * of the name. The file is read again when it changes (`pollMs`); whoever holds links cuts those
 * of an identity that became revoked (`onChange`).
 */
export interface Revocation {
  node?: string;
  fingerprint256?: string;
}

/** The ConfigMap that carries the deny list to nodes through the cloud, and its key. */
export const REVOKED_CONFIGMAP = {
  namespace: 'kube-system',
  name: 'edgetunnel-revoked',
  key: 'revoked.json',
};

/** `edgectl certs configmap`: the deny list file as that ConfigMap (YAML, for `edgectl apply -f -`). */
export function revokedConfigMap(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
    parseDenyList(text, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    text = '{"revoked": []}\n';
  }
  const c = REVOKED_CONFIGMAP;
  return [
    'apiVersion: v1',
    'kind: ConfigMap',
    `metadata: { name: ${c.name}, namespace: ${c.namespace} }`,
    'data:',
    `  ${c.key}: ${JSON.stringify(JSON.stringify(JSON.parse(text)))}`,
    '',
  ].join('\n');
}

export class DenyList {
  private names = new Set<string>();
  private prints = new Set<string>();
  /** Entries that came another way than the file (the cloud's ConfigMap), kept apart from it. */
  private distributed: { names: Set<string>; prints: Set<string> } = { names: new Set(), prints: new Set() };
  private mtime = -1;
  private timer?: NodeJS.Timeout;
  /** The last read error, cleared by a good read (the previous list stays in force). */
  error?: string;

  constructor(
    readonly file?: string,
    private readonly onChange?: () => void,
  ) {
    if (file) this.reload();
  }

  /** Poll the file every `ms` for changes. */
  watch(ms: number): void {
    if (!this.file || this.timer) return;
    this.timer = setInterval(() => this.reload(), ms);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Replace the file's entries. */
  set(entries: readonly Revocation[]): void {
    ({ names: this.names, prints: this.prints } = split(entries));
    this.onChange?.();
  }

  /** Replace the entries that came through the cloud (they add to the file's). */
  setDistributed(entries: readonly Revocation[]): void {
    this.distributed = split(entries);
    this.onChange?.();
  }

  get size(): number {
    return this.names.size + this.prints.size + this.distributed.names.size + this.distributed.prints.size;
  }

  isRevoked(name: string, fingerprint256: string): boolean {
    const fp = fingerprint256.toUpperCase();
    const d = this.distributed;
    return this.names.has(name) || this.prints.has(fp) || d.names.has(name) || d.prints.has(fp);
  }

  private reload(): void {
    const file = this.file!;
    let m: number;
    try {
      m = statSync(file).mtimeMs;
    } catch {
      m = 0; // no file: nothing revoked
    }
    if (m === this.mtime) return;
    try {
      const entries = m === 0 ? [] : parseDenyList(readFileSync(file, 'utf8'), file);
      this.mtime = m;
      this.error = undefined;
      this.set(entries);
    } catch (e) {
      this.error = (e as Error).message;
    }
  }
}

function split(entries: readonly Revocation[]): { names: Set<string>; prints: Set<string> } {
  return {
    names: new Set(entries.filter((e) => e.node && !e.fingerprint256).map((e) => e.node!)),
    prints: new Set(entries.filter((e) => e.fingerprint256).map((e) => e.fingerprint256!.toUpperCase())),
  };
}

export function parseDenyList(text: string, file: string): Revocation[] {
  const doc = JSON.parse(text) as { revoked?: unknown };
  if (!doc || !Array.isArray(doc.revoked)) throw new Error(`${file}: expected {"revoked": [...]}`);
  return doc.revoked.map((e: unknown, i: number) => {
    const r = e as Revocation;
    if (!r || (typeof r.node !== 'string' && typeof r.fingerprint256 !== 'string'))
      throw new Error(`${file}: revoked[${i}]: expected "node" and/or "fingerprint256"`);
    return { node: r.node, fingerprint256: r.fingerprint256 };
  });
}

/** Add an entry to the file (written whole to a temp file, then renamed: never half-written). */
export function appendRevocation(file: string, entry: Revocation): void {
  let list: Revocation[] = [];
  try {
    list = parseDenyList(readFileSync(file, 'utf8'), file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (!list.some((r) => r.node === entry.node && r.fingerprint256 === entry.fingerprint256)) list.push(entry);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify({ revoked: list }, null, 2) + '\n');
  chmodSync(tmp, 0o644);
  renameSync(tmp, file);
}
