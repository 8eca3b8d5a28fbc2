import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { freePort } from './wait';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = createConnection({ host: '127.0.0.1', port }, () => (c.destroy(), r(true)));
      c.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface MosquittoOptions {
  /** Keep mosquitto's default queue limits (the tests otherwise raise max_queued_messages). */
  stock?: boolean;
  /** max_queued_messages (default 10,000; a bench that reads a large retained state raises it). */
  maxQueued?: number;
  /**
   * max_inflight_messages (default mosquitto's 20): QoS 1 messages in flight to a 3.1.1 client,
   * and the Receive Maximum announced to an MQTT 5 one (what edgectl keeps within).
   */
  maxInflight?: number;
  /**
   * Who may connect: anonymous clients (default), or only the users of `passwords` (user →
   * password, hashed into a password_file with mosquitto_passwd) under `acl` (an acl_file's text).
   */
  auth?: { passwords: Record<string, string>; acl: string };
  /** TLS only (mqtts://): the broker's certificate and key (PEM files). */
  tls?: { certFile: string; keyFile: string };
  /** Keep retained messages and sessions across a restart (default true). */
  persistence?: boolean;
  /** More configuration after the rest (a bridge's `connection` section). */
  extra?: string;
}

/**
 * A real mosquitto (Debian package) on 127.0.0.1 and a free port, persistence in a temp dir so a
 * restart keeps retained messages and persistent sessions.
 */
export class Mosquitto {
  private proc?: ChildProcess;
  readonly dir = mkdtempSync(join(tmpdir(), 'mosquitto-'));
  log = '';
  private constructor(
    readonly port: number,
    opts: MosquittoOptions,
  ) {
    const auth = opts.auth;
    if (auth) {
      const pw = join(this.dir, 'passwords');
      writeFileSync(pw, '');
      for (const [user, pass] of Object.entries(auth.passwords))
        execFileSync('mosquitto_passwd', ['-b', pw, user, pass]);
      writeFileSync(join(this.dir, 'acl'), auth.acl);
    }
    this.tls = !!opts.tls;
    const lines = [
      `listener ${port} 127.0.0.1`,
      ...(opts.tls ? [`certfile ${opts.tls.certFile}`, `keyfile ${opts.tls.keyFile}`] : []),
      ...(auth
        ? [
            'allow_anonymous false',
            `password_file ${join(this.dir, 'passwords')}`,
            `acl_file ${join(this.dir, 'acl')}`,
          ]
        : ['allow_anonymous true']),
      ...(opts.persistence === false ? [] : ['persistence true', `persistence_location ${this.dir}/`]),
      // stock: mosquitto's own limits (max_queued_messages 1000, max_inflight_messages 20)
      ...(opts.stock ? [] : [`max_queued_messages ${opts.maxQueued ?? 10000}`]),
      ...(opts.maxInflight !== undefined ? [`max_inflight_messages ${opts.maxInflight}`] : []),
      'log_dest stdout',
    ];
    if (process.getuid?.() === 0) lines.push('user root');
    if (opts.extra) lines.push(opts.extra);
    writeFileSync(join(this.dir, 'mosquitto.conf'), lines.join('\n') + '\n');
  }

  static async start(opts: MosquittoOptions = {}): Promise<Mosquitto> {
    const m = new Mosquitto(await freePort(), opts);
    await m.restart();
    return m;
  }

  private readonly tls: boolean;

  /** The running broker's pid (a restart gives another). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get url(): string {
    return `${this.tls ? 'mqtts' : 'tcp'}://127.0.0.1:${this.port}`;
  }

  async restart(): Promise<void> {
    const bin = process.env.MOSQUITTO ?? '/usr/sbin/mosquitto';
    const p = spawn(bin, ['-c', join(this.dir, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout!.on('data', (d) => (this.log += d));
    p.stderr!.on('data', (d) => (this.log += d));
    this.proc = p;
    await waitForPort(this.port, 10_000);
  }

  /** SIGTERM: mosquitto saves its persistence file and exits. */
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    // exitCode stays null for a process that a signal ended (a crash): check both
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    await exited;
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
