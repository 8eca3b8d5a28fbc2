import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './wait';

/**
 * The reference DNS servers of the protocol tests: BIND (`named -g`) and Knot (`knotd`), each
 * authoritative for one zone given as zone-file text, on 127.0.0.1 and a free port (UDP and TCP),
 * in the foreground with its own config and files, stopped by its pid. Recursion is off in both
 * (an authoritative server of the zone is what the cluster zone is compared with).
 */
export class ReferenceDns {
  private constructor(
    readonly name: 'bind' | 'knot',
    readonly port: number,
    private readonly proc: ChildProcess,
    private readonly dir: string,
  ) {}

  /** `tcpClients`: BIND's `tcp-clients` (its own default: 150). */
  static bind(zone: string, zoneText: string, opts: { tcpClients?: number } = {}): Promise<ReferenceDns> {
    return ReferenceDns.start('bind', zone, zoneText, (port, dir) => {
      writeFileSync(
        join(dir, 'named.conf'),
        `options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  listen-on port ${port} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-transfer { none; };
  dnssec-validation no;
  minimal-responses yes;${opts.tcpClients !== undefined ? `\n  tcp-clients ${opts.tcpClients};` : ''}
};
zone "${zone}" { type primary; file "${dir}/zone.db"; };
`,
      );
      // -u root as root: named would otherwise switch to a 'bind' user that cannot read the temp dir
      const user = process.getuid?.() === 0 ? ['-u', 'root'] : [];
      return spawn('named', ['-g', '-c', join(dir, 'named.conf'), ...user], { stdio: 'ignore' });
    });
  }

  static knot(zone: string, zoneText: string): Promise<ReferenceDns> {
    return ReferenceDns.start('knot', zone, zoneText, (port, dir) => {
      writeFileSync(
        join(dir, 'knot.conf'),
        `server:
  listen: 127.0.0.1@${port}
  rundir: ${dir}
database:
  storage: ${dir}
template:
  - id: default
    storage: ${dir}
    file: zone.db
    semantic-checks: off
zone:
  - domain: ${zone}
`,
      );
      return spawn('knotd', ['-c', join(dir, 'knot.conf')], { stdio: 'ignore' });
    });
  }

  /** A free port, a temp dir with the zone file, the server `launch` starts there, serving. */
  private static async start(
    name: 'bind' | 'knot',
    zone: string,
    zoneText: string,
    launch: (port: number, dir: string) => ChildProcess,
  ): Promise<ReferenceDns> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), `ref-${name}-`));
    writeFileSync(join(dir, 'zone.db'), zoneText);
    const r = new ReferenceDns(name, port, launch(port, dir), dir);
    await r.ready(zone);
    return r;
  }

  /** Resolves once the server answers the zone's SOA over UDP (10 s at most). */
  private async ready(zone: string): Promise<void> {
    const labels = zone.replace(/\.$/, '').split('.');
    const q = Buffer.concat([
      Buffer.from([0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
      Buffer.from([0, 0, 6, 0, 1]),
    ]);
    const end = Date.now() + 10_000;
    while (Date.now() < end) {
      if (this.proc.exitCode !== null) {
        const code = this.proc.exitCode;
        await this.stop(); // its temp dir too
        throw new Error(`${this.name} exited with ${code}`);
      }
      const r = await this.query(q, 200).catch(() => undefined);
      if (r && (r[3] & 0xf) === 0 && r.readUInt16BE(6) > 0) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    await this.stop();
    throw new Error(`${this.name} did not serve ${zone} on 127.0.0.1:${this.port}`);
  }

  /** One UDP query, the raw reply. */
  query(packet: Buffer, timeoutMs = 2000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = createSocket('udp4');
      const t = setTimeout(() => (s.close(), reject(new Error('timeout'))), timeoutMs);
      s.on('message', (m) => (clearTimeout(t), s.close(), resolve(m)));
      s.send(packet, this.port, '127.0.0.1');
    });
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
