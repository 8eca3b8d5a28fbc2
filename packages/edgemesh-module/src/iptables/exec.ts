import { spawn } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a program with arguments (never through a shell), optionally feeding stdin. A program that
 * cannot be started resolves with code 127 and the reason in `stderr` ("spawn iptables-restore
 * EMFILE"): a process out of file descriptors gets no pipes for it — Node then leaves the child's
 * stdio unset and reports the failure as an 'error' event.
 */
export function run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d) => (stdout += d));
    p.stderr?.on('data', (d) => (stderr += d));
    p.on('error', (e) => resolve({ code: 127, stdout, stderr: stderr + e.message }));
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    if (input !== undefined && p.stdin) {
      // a program that exits before reading everything must not crash us (EPIPE)
      p.stdin.on('error', (e) => (stderr += `stdin: ${e.message}`));
      p.stdin.end(input);
    }
  });
}
