import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { MetaStore, SCHEMA_VERSION, type MetaOp } from '../src';
import { tmpDb } from './helpers';

const up = (name: string, rv: number, value = `{"n":"${name}","rv":${rv}}`, type = 'service'): MetaOp => ({
  op: 'upsert',
  key: `default/${type}/${name}`,
  namespace: 'default',
  type,
  name,
  value,
  resourceVersion: rv,
});
const del = (name: string, rv: number): MetaOp => ({
  op: 'delete',
  key: `default/service/${name}`,
  namespace: 'default',
  type: 'service',
  name,
  resourceVersion: rv,
});

describe('MetaStore', () => {
  let db: ReturnType<typeof tmpDb>;
  let store: MetaStore;
  beforeEach(() => {
    db = tmpDb();
    store = new MetaStore(db.path);
  });
  afterEach(() => {
    store.close();
    db.cleanup();
  });

  it('creates a 0600 file in WAL mode with the current schema version and indexes', () => {
    expect(statSync(db.path).mode & 0o777).toBe(0o600);
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('synchronous', { simple: true })).toBe(1); // NORMAL
    expect(store.db.pragma('busy_timeout', { simple: true })).toBe(5000);
    // SQLite's own page cache size, not the 16 MB better-sqlite3 builds it with
    expect(store.db.pragma('cache_size', { simple: true })).toBe(-2048);
    expect(store.schemaVersion).toBe(SCHEMA_VERSION);
    const idx = store.db
      .prepare("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='meta'")
      .all()
      .map((r: any) => r.name);
    // one index, the key's (a type's objects, and a namespace's, are its ranges); rows by rowid
    expect(idx.filter((n: string) => !n.startsWith('sqlite_autoindex'))).toEqual([]);
    expect(idx).toHaveLength(1);
    const ddl = (store.db.prepare("SELECT sql FROM sqlite_master WHERE name='meta'").get() as any).sql;
    expect(ddl).not.toMatch(/WITHOUT ROWID/);
  });

  it('migrates a schema-2 database (keyed by resource, two indexes) with its rows; lists by the key index', () => {
    store.close();
    const raw = new Database(db.path);
    raw.exec(`DROP TABLE meta;
      CREATE TABLE meta (key TEXT PRIMARY KEY, type TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        value TEXT NOT NULL, resource_version INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
      CREATE INDEX meta_type ON meta(type);
      CREATE INDEX meta_ns_type ON meta(namespace, type);
      INSERT INTO meta VALUES ('a/pod/old', 'pod', 'a', 'old', '{"v":1}', 3);`);
    raw.pragma('user_version = 2');
    raw.close();
    store = new MetaStore(db.path);
    expect(store.schemaVersion).toBe(SCHEMA_VERSION);
    expect(store.get('a/pod/old')).toEqual({
      key: 'a/pod/old',
      type: 'pod',
      namespace: 'a',
      name: 'old',
      value: '{"v":1}',
      resourceVersion: 3,
    });
    const at = (namespace: string, type: string, name: string): MetaOp => ({
      op: 'upsert',
      key: `${namespace}/${type}/${name}`,
      namespace,
      type,
      name,
      value: JSON.stringify({ at: `${namespace}/${type}/${name}` }),
      resourceVersion: 1,
    });
    // neighbours of `a/pod/` in key order: namespaces `a-b` and `a0`, types `po` and `pod0`
    store.apply([
      at('a', 'pod', 'x.y'),
      at('a', 'pod', 'x-1'),
      at('a', 'pod0', 'x'),
      at('a', 'po', 'x'),
      at('a-b', 'pod', 'x'),
      at('a0', 'pod', 'x'),
    ]);
    expect(store.list('a', 'pod').map((r) => r.key)).toEqual(['a/pod/old', 'a/pod/x-1', 'a/pod/x.y']);
    expect(store.list('a', 'pod0').map((r) => r.key)).toEqual(['a/pod0/x']);
    expect(store.list('a-b', 'pod').map((r) => r.key)).toEqual(['a-b/pod/x']);
    expect(store.list('*', 'pod').map((r) => r.key)).toEqual([
      'a/pod/old',
      'a/pod/x-1',
      'a/pod/x.y',
      'a-b/pod/x',
      'a0/pod/x',
    ]);
    // the stored text alone, in the same order (what a MetaClient list parses)
    expect(store.listValues('*', 'pod')).toEqual([
      '{"v":1}',
      ...['a/pod/x-1', 'a/pod/x.y', 'a-b/pod/x', 'a0/pod/x'].map((at) => JSON.stringify({ at })),
    ]);
    expect(store.listValues('a', 'pod')).toEqual(store.list('a', 'pod').map((r) => r.value));
    expect(store.listValues('a', 'pod0')).toEqual(['{"at":"a/pod0/x"}']);
    expect(store.listValues('b', 'pod')).toEqual([]);
    expect(store.getValue('a/pod/x-1')).toBe('{"at":"a/pod/x-1"}');
    expect(store.getValue('a/pod/old')).toBe(store.get('a/pod/old')?.value);
    expect(store.getValue('a/pod/none')).toBeUndefined();
    expect(store.getValue('a/pod')).toBeUndefined();
    expect(store.versions('pod').get('a/pod/old')).toBe(3);
    expect(store.digest('pod').count).toBe(5);
    expect(store.get('a/pod')).toBeUndefined();
    for (const [sql, args] of [
      ['SELECT * FROM meta WHERE type = ? ORDER BY namespace, name', ['pod']],
      ['SELECT * FROM meta WHERE type = ? AND namespace = ? ORDER BY name', ['pod', 'a']],
    ] as const) {
      const plan = store.db
        .prepare(`EXPLAIN QUERY PLAN ${sql}`)
        .all(...args)
        .map((r: any) => r.detail)
        .join(' ');
      expect(plan).toMatch(/USING INDEX sqlite_autoindex_meta_1/);
      expect(plan).not.toMatch(/TEMP B-TREE/); // already in order
    }
  });

  it('checkpoints the WAL at a quiet moment, never inside a commit', async () => {
    expect(store.db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    const before = statSync(db.path).size;
    const big = 'x'.repeat(1000);
    // a burst of commits: none of them copies the WAL back (the database file keeps its size)
    for (let b = 0; b < 30; b++)
      store.apply(Array.from({ length: 100 }, (_, i) => up(`s-${b}-${i}`, 1, `{"v":"${big}"}`)));
    expect(store.checkpointer!.runs).toBe(0);
    expect(statSync(db.path).size).toBe(before);
    // then quiet: one checkpoint copies it all
    const deadline = Date.now() + 10_000;
    while (store.checkpointer!.runs === 0) {
      if (Date.now() > deadline) throw new Error('no checkpoint within 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(statSync(db.path).size).toBeGreaterThan(before + 2_000_000);
    expect(store.get('default/service/s-29-99')?.resourceVersion).toBe(1);
    const plain = new MetaStore(`${db.path}-plain`, { idleCheckpoint: false });
    expect(plain.db.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
    plain.close();
  });

  it('takes its page cache size as an option; a bad one is an error naming the key', () => {
    const other = tmpDb();
    try {
      const s = new MetaStore(other.path, { cacheSizeKiB: 512 });
      expect(s.db.pragma('cache_size', { simple: true })).toBe(-512);
      s.close();
      expect(() => new MetaStore(other.path, { cacheSizeKiB: 1 })).toThrow(/cacheSizeKiB/);
    } finally {
      other.cleanup();
    }
  });

  it('refuses a database from a newer edgecore with a clear error', () => {
    store.close();
    const raw = new Database(db.path);
    raw.pragma('user_version = 99');
    raw.close();
    expect(() => new MetaStore(db.path)).toThrow(/schema version 99 is newer/);
    store = new MetaStore(':memory:');
  });

  it('applies resourceVersion rules: newer wins, equal is a no-op, older is stale', () => {
    expect(store.apply([up('a', 5)])).toEqual([{ status: 'applied' }]);
    expect(store.apply([up('a', 5)])).toEqual([{ status: 'unchanged' }]);
    expect(store.apply([up('a', 4, '{"old":true}')])).toEqual([{ status: 'stale', stored: 5 }]);
    expect(store.get('default/service/a')!.resourceVersion).toBe(5);
    expect(store.apply([up('a', 6, '{"v":6}')])).toEqual([{ status: 'applied' }]);
    expect(store.get('default/service/a')!.value).toBe('{"v":6}');
    // rv 0 = unversioned local write: always applied
    expect(store.apply([up('a', 0, '{"local":1}')])).toEqual([{ status: 'applied' }]);
  });

  it('a deletion leaves a tombstone so a redelivered older insert cannot resurrect the object', () => {
    store.apply([up('a', 5)]);
    expect(store.apply([del('a', 7)])).toEqual([{ status: 'applied' }]);
    expect(store.get('default/service/a')).toBeUndefined();
    expect(store.apply([up('a', 5)])).toEqual([{ status: 'stale', stored: 7 }]);
    expect(store.apply([up('a', 7)])).toEqual([{ status: 'stale', stored: 7 }]);
    expect(store.apply([up('a', 8)])).toEqual([{ status: 'applied' }]);
    expect(store.apply([del('zzz', 3)])).toEqual([{ status: 'absent' }]);
    expect(store.apply([up('zzz', 2)])).toEqual([{ status: 'stale', stored: 3 }]);
  });

  it('an older delete does not remove a newer object', () => {
    store.apply([up('a', 9)]);
    expect(store.apply([del('a', 8)])).toEqual([{ status: 'stale', stored: 9 }]);
    expect(store.get('default/service/a')).toBeDefined();
  });

  it('lists by namespace+type and across namespaces, ordered by key', () => {
    store.apply([
      up('b', 1),
      up('a', 1),
      { ...up('c', 1), key: 'kube-system/service/c', namespace: 'kube-system' },
      up('p1', 1, '{}', 'pod'),
    ]);
    expect(store.list('default', 'service').map((r) => r.name)).toEqual(['a', 'b']);
    expect(store.list('*', 'service').map((r) => r.key)).toEqual([
      'default/service/a',
      'default/service/b',
      'kube-system/service/c',
    ]);
    expect(store.list('*', 'pod')).toHaveLength(1);
    expect(store.count('service')).toBe(3);
  });

  it('a batch is one transaction: a failure writes nothing', () => {
    const bad = { ...up('x', 1), value: null as unknown as string }; // NOT NULL violation
    expect(() => store.apply([up('ok', 1), bad])).toThrow(expect.objectContaining({ code: 'META_DATABASE' }));
    expect(store.get('default/service/ok')).toBeUndefined();
  });

  it('emits change events after commit', () => {
    const events: string[] = [];
    store.on('change', (e) => events.push(`${e.type}:${e.record.name}`));
    store.apply([up('a', 1), up('a', 2), up('a', 2), del('a', 3)]);
    expect(events).toEqual(['ADDED:a', 'MODIFIED:a', 'DELETED:a']);
  });

  it('keeps the digest of a type current through upserts, deletes and a rolled-back batch', () => {
    const fresh = (): MetaStore => new MetaStore(db.path);
    store.apply([up('a', 1), up('b', 2), up('p', 3, '{}', 'pod')]);
    const first = store.digest('service'); // computed by a scan, then kept current
    expect(first.count).toBe(2);
    store.apply([up('a', 5), del('b', 6), up('c', 7)]);
    store.apply([up('a', 4)]); // stale: nothing changes
    const other = fresh();
    expect(store.digest('service')).toEqual(other.digest('service')); // the same as a fresh scan
    expect(store.digest('service').count).toBe(2);
    expect(store.digest('service').namespaces).toEqual({
      default: { count: 2, hash: store.digest('service').hash },
    });
    const bad = { ...up('d', 8), value: undefined as unknown as string }; // NOT NULL: the batch rolls back
    expect(() => store.apply([up('e', 9), bad])).toThrow();
    expect(store.digest('service')).toEqual(other.digest('service'));
    expect([...store.versions('service').entries()].sort()).toEqual([
      ['default/service/a', 5],
      ['default/service/c', 7],
    ]);
    other.close();
  });

  it('keeps the digest of a type from its first write when the store had none of its rows (no scan later)', () => {
    store.apply([up('a', 1), up('p', 2, '{}', 'pod')]); // services and pods: begun empty, kept since
    const scans = jest.spyOn(
      (store as unknown as { stmts: { versionsType: { iterate: () => unknown } } }).stmts.versionsType,
      'iterate',
    );
    store.apply([up('b', 3), up('a', 4), del('b', 5), up('q', 6, '{}', 'pod')]);
    const other = new MetaStore(db.path); // a fresh scan of the same file
    expect(store.digest('service')).toEqual(other.digest('service'));
    expect(store.digest('pod')).toEqual(other.digest('pod'));
    expect(store.digest('service').count).toBe(1);
    expect(scans).not.toHaveBeenCalled();
    other.close();
    // a store opened over rows of a type keeps no digest of it until asked: that one scans once
    const third = new MetaStore(db.path);
    const thirdScans = jest.spyOn(
      (third as unknown as { stmts: { versionsType: { iterate: () => unknown } } }).stmts.versionsType,
      'iterate',
    );
    third.apply([up('c', 7)]);
    expect(thirdScans).not.toHaveBeenCalled();
    expect(third.digest('service').count).toBe(2);
    expect(third.digest('service').count).toBe(2);
    expect(thirdScans).toHaveBeenCalledTimes(1);
    third.close();
  });
});
