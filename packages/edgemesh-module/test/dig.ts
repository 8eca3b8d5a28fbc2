import { execFile } from 'node:child_process';

/** Run the real `dig` (bind9-dnsutils) against 127.0.0.1:port. */
export function dig(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('dig', ['@127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 }, (err, stdout) =>
      err && !stdout ? reject(err) : resolve(stdout),
    );
  });
}

export function status(out: string): string | undefined {
  return /status: (\w+)/.exec(out)?.[1];
}
