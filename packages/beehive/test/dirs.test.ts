import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdirs } from '../src';

describe('mkdirs', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'beehive-dirs-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('makes each missing level with the mode, and is a no-op for a directory that exists', () => {
    const deep = join(dir, 'a', 'b', 'c');
    mkdirs(deep, 0o700);
    for (const d of [join(dir, 'a'), join(dir, 'a', 'b'), deep]) {
      expect(statSync(d).isDirectory()).toBe(true);
      expect(statSync(d).mode & 0o777).toBe(0o700 & ~process.umask());
    }
    expect(() => mkdirs(deep, 0o700)).not.toThrow();
    expect(() => mkdirs(dir)).not.toThrow();
  });

  it('a file in the way: ENOTDIR naming the path', () => {
    writeFileSync(join(dir, 'f'), '');
    expect(() => mkdirs(join(dir, 'f'))).toThrow(
      expect.objectContaining({
        code: 'ENOTDIR',
        message: `ENOTDIR: not a directory, mkdir '${join(dir, 'f')}'`,
      }),
    );
    expect(() => mkdirs(join(dir, 'f', 'x'))).toThrow(
      expect.objectContaining({ code: 'ENOTDIR', path: join(dir, 'f', 'x') }),
    );
  });

  it('where mkdir(2) says ENOENT under a parent that exists (procfs): that error, at once', () => {
    // Node's mkdirSync(…, { recursive: true }) loops for good here
    expect(() => mkdirs(`/proc/beehive-test-${process.pid}/x`)).toThrow(
      expect.objectContaining({ code: 'ENOENT', path: `/proc/beehive-test-${process.pid}` }),
    );
  });
});
