import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { run } from '../src/iptables/exec';

const execFileP = promisify(execFile);

describe('run (how iptables mode starts iptables-restore and friends)', () => {
  it('gives the output and exit code of a program, fed its stdin', async () => {
    expect(await run('cat', [], 'hello')).toEqual({ code: 0, stdout: 'hello', stderr: '' });
    expect(await run('sh', ['-c', 'echo oops >&2; exit 3'])).toEqual({
      code: 3,
      stdout: '',
      stderr: 'oops\n',
    });
  });

  it('a program that does not exist: code 127 and the reason', async () => {
    const r = await run('/nonexistent/iptables-restore', ['--noflush'], '*nat\nCOMMIT\n');
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/ENOENT/);
  });

  it('in a process out of file descriptors: code 127 and EMFILE, not a TypeError of the missing pipes', async () => {
    // a process of its own, its limit lowered by prlimit and every descriptor then taken; before,
    // the run threw "Cannot read properties of null (reading 'on')" and the rule sync's log said that
    const child = [
      "require('ts-node/register/transpile-only');",
      `const { run } = require(${JSON.stringify(join(__dirname, '..', 'src', 'iptables', 'exec.ts'))});`,
      "const fs = require('fs'); const held = [];",
      "try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch {}",
      "run('cat', [], '*nat\\nCOMMIT\\n').then((r) => console.log(JSON.stringify(r)), (e) => console.log('threw: ' + e.message));",
    ].join('\n');
    const { stdout } = await execFileP('prlimit', ['--nofile=64:64', process.execPath, '-e', child], {
      timeout: 20_000,
    });
    expect(JSON.parse(stdout)).toEqual({ code: 127, stdout: '', stderr: expect.stringMatching(/EMFILE/) });
  }, 30_000);
});
