import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const pkg = join(__dirname, '..');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('package edges', () => {
  it('EdgeMesh imports MetaManager only through its client entry point', () => {
    const offenders = sources(join(pkg, 'src')).filter((f) =>
      /from '@edgecore\/metamanager(?!\/client')/.test(readFileSync(f, 'utf8')),
    );
    expect(offenders).toEqual([]);
  });

  it('loading EdgeMesh (the built package) loads neither the store nor SQLite', () => {
    const out = execFileSync(
      process.execPath,
      [
        '-e',
        `require(${JSON.stringify(join(pkg, 'dist', 'index.js'))});` +
          'process.stdout.write(JSON.stringify(Object.keys(require.cache)))',
      ],
      { encoding: 'utf8' },
    );
    const loaded = JSON.parse(out) as string[];
    expect(loaded.some((f) => f.includes('meta-client'))).toBe(true);
    expect(loaded.filter((f) => /better-sqlite3|meta-store|metamanager-module/.test(f))).toEqual([]);
  });
});
