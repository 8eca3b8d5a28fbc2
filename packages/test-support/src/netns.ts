import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Run a command; rejects with stderr on failure. Never through a shell. */
export async function sh(cmd: string, args: string[], timeoutMs = 15_000): Promise<string> {
  try {
    return (await execFileP(cmd, args, { timeout: timeoutMs })).stdout;
  } catch (e) {
    const x = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${x.stderr || x.message}`);
  }
}

/**
 * A network namespace made by the test and deleted in afterAll. Everything that changes
 * interfaces, routes or iptables runs inside one of these, never in the host namespace.
 */
export class Netns {
  private constructor(readonly name: string) {}

  static async create(name: string, resolvConf?: string): Promise<Netns> {
    await sh('ip', ['netns', 'add', name]);
    const ns = new Netns(name);
    await ns.run('ip', ['link', 'set', 'lo', 'up']);
    if (resolvConf !== undefined) {
      // `ip netns exec` bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf
      mkdirSync(`/etc/netns/${name}`, { recursive: true });
      writeFileSync(`/etc/netns/${name}/resolv.conf`, resolvConf);
    }
    return ns;
  }

  run(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], timeoutMs);
  }

  /** Like run, but resolves with the exit code and output instead of throwing. */
  async attempt(
    cmd: string,
    args: string[],
    timeoutMs = 15_000,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const r = await execFileP('ip', ['netns', 'exec', this.name, cmd, ...args], { timeout: timeoutMs });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof x.code === 'number' ? x.code : 1,
        stdout: x.stdout ?? '',
        stderr: x.stderr ?? '',
      };
    }
  }

  async destroy(): Promise<void> {
    await sh('ip', ['netns', 'pids', this.name]).then(
      (pids) =>
        pids
          .split('\n')
          .filter(Boolean)
          .forEach((p) => process.kill(Number(p), 'SIGKILL')),
      () => undefined,
    );
    await sh('ip', ['netns', 'del', this.name]).catch(() => undefined);
    rmSync(`/etc/netns/${this.name}`, { recursive: true, force: true });
  }
}
