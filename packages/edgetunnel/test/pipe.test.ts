import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { testPki } from '@edgecore/test-support';

describe('pipe: ending a TLS stream that runs over a TCP socket', () => {
  it('kill() of a live TLS socket over a live TCP socket closes both, and the process goes on and ends', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pipe-kill-'));
    try {
      await testPki(dir, 'ca', { server: 'IP:127.0.0.1' });
      // in a child: the old order (the TCP socket first) was a segmentation fault
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['-r', 'ts-node/register/transpile-only', join(__dirname, 'kill-child.ts'), dir],
        { timeout: 20_000, killSignal: 'SIGKILL', cwd: join(__dirname, '..') },
      );
      expect(stdout.trim()).toBe('raw closed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
