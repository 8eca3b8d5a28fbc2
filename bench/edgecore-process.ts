/**
 * Running full edgecore processes in a benchmark (update-path, fleet): an unprivileged edgecore
 * on fresh ports with its own database, and what a bench asks of one — its metrics, its DNS, its
 * CPU and memory from /proc — and the percentile every bench prints.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import * as dnsPacket from 'dns-packet';

const root = join(__dirname, '..');

/**
 * A free TCP port below the kernel's ephemeral range (32768-60999): a node's 10,000 portals bind
 * port 0 and could otherwise take a port picked for another listener before it binds.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
}

export async function waitFor(
  cond: () => Promise<boolean> | boolean,
  what: string,
  ms: number,
  everyMs = 50,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** One UDP socket asking the node's DNS; resolves with whether an A record came back. */
export class DnsProbe {
  private readonly sock = createSocket('udp4');
  private id = 0;
  private readonly waiters = new Map<number, (ok: boolean) => void>();
  constructor(private readonly port: number) {
    this.sock.on('message', (m) => {
      const r = dnsPacket.decode(m);
      const w = this.waiters.get(r.id ?? -1);
      if (!w) return;
      this.waiters.delete(r.id!);
      w((r.answers ?? []).some((a) => a.type === 'A'));
    });
  }
  ask(name: string): Promise<boolean> {
    const id = (this.id = (this.id + 1) & 0xffff);
    const q = dnsPacket.encode({
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'A', name }],
    });
    return new Promise((resolve) => {
      const t = setTimeout(() => (this.waiters.delete(id), resolve(false)), 1000);
      this.waiters.set(id, (ok) => (clearTimeout(t), resolve(ok)));
      this.sock.send(q, this.port, '127.0.0.1');
    });
  }
  close(): void {
    this.sock.close();
  }
}

export async function metric(obs: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${obs}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** CPU seconds (user + system) a process has used so far. */
/** The p-th percentile, nearest rank (p99 of 100 samples is the 99th smallest, not the largest). */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
}

export function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

export function rssMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The most resident memory the process has had (VmHWM), MiB. */
export const peakRssMiB = (pid: number): number => rssMiB(pid, 'VmHWM');

/** An unprivileged edgecore for `node` on fresh ports and its own database, connected. */
export interface CoreProcess {
  proc: ChildProcess;
  /** host:port of its /metrics */
  obs: string;
  dnsPort: number;
  proxyPort: number;
}

/**
 * Start an edgecore for `node`, linked to `server`, its files in `dir`; resolves once it is
 * connected. Every process started is pushed on `children` (the bench kills them by pid).
 */
export async function startCore(
  dir: string,
  children: ChildProcess[],
  server: string,
  node: string,
): Promise<CoreProcess> {
  const [obsPort, dnsPort, proxyPort] = [await freePort(), await freePort(), await freePort()];
  const config = join(dir, `${node}.yaml`);
  // GROUP_COMMIT=MS: MetaManager's groupCommitMs (its default without)
  const groupCommit = process.env.GROUP_COMMIT ? `, groupCommitMs: ${Number(process.env.GROUP_COMMIT)}` : '';
  writeFileSync(
    config,
    `apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${join(dir, `${node}.db`)} }
observability: { listen: 127.0.0.1:${obsPort} }
log: { level: ${process.env.TRACE ? 'info' : (process.env.CORE_LOG ?? 'warn')}, format: json }
modules:
  edgeHub: { nodeName: ${node}, nodeIP: 127.0.0.1, mqtt: { server: ${server} }${process.env.MAX_CHECK ? `, sync: { maxCheckSeconds: ${process.env.MAX_CHECK} }` : ''} }
  metaManager: { metaServer: { enable: false }${groupCommit} }
  edgeMesh: { mode: unprivileged, listenPort: ${proxyPort}, dns: { listenPort: ${dnsPort}, upstreams: [127.0.0.1:9] } }
`,
  );
  const proc = spawn(
    process.execPath,
    [
      // PROF=DIR: a CPU profile of edgecore for the whole run
      ...(process.env.PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROF}`] : []),
      // CORE_FLAGS: V8/Node flags for the edgecore processes (e.g. --max-old-space-size=192)
      ...(process.env.CORE_FLAGS ? process.env.CORE_FLAGS.split(' ').filter(Boolean) : []),
      join(root, 'packages/edgecore/bin/edgecore'),
      '--config',
      config,
    ],
    // its log (JSON, warnings and up) in the work directory: read back when a step fails
    { stdio: ['ignore', process.env.TRACE ? 'inherit' : openSync(join(dir, `${node}.log`), 'w'), 'inherit'] },
  );
  children.push(proc);
  const obs = `127.0.0.1:${obsPort}`;
  await waitFor(
    async () => (await metric(obs, 'edgecore_edgehub_connected').catch(() => 0)) === 1,
    `edgecore ${node} up`,
    30_000,
  );
  return { proc, obs, dnsPort, proxyPort };
}
