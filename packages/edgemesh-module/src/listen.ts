import { existsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { EdgeMeshConfig } from './config';
import { intToIp, ipToInt } from './net/ipv4';

export type MeshMode = 'iptables' | 'unprivileged';

/** IPv4 address and prefix length of an interface, if it exists. */
export function interfaceIPv4(name: string): { address: string; prefix: number } | undefined {
  const a = (networkInterfaces()[name] ?? []).find((x) => x.family === 'IPv4');
  if (!a) return undefined;
  const prefix = a.cidr ? Number(a.cidr.split('/')[1]) : 32;
  return { address: a.address, prefix };
}

export function nodeIPv4s(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4') out.push(a.address);
  return out;
}

function onPath(bin: string): boolean {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d && existsSync(join(d, bin)));
}

/**
 * The effective mode. `auto` → iptables when root, iptables-restore is installed and the listen
 * interface exists (or is `edgemesh0`, which EdgeMesh creates); else unprivileged: DNS on
 * 127.0.0.1:5353 and the explicit proxy, with `reason` saying why.
 */
export function resolveMode(o: Pick<EdgeMeshConfig, 'mode' | 'listenInterface'>): {
  mode: MeshMode;
  reason?: string;
} {
  if (o.mode === 'iptables') return { mode: 'iptables' };
  if (o.mode === 'unprivileged') return { mode: 'unprivileged', reason: 'configured' };
  if (process.getuid?.() !== 0) return { mode: 'unprivileged', reason: 'not root' };
  if (!onPath('iptables-restore')) return { mode: 'unprivileged', reason: 'iptables-restore not installed' };
  const ifc = o.listenInterface;
  if (ifc !== 'edgemesh0' && !interfaceIPv4(ifc))
    return { mode: 'unprivileged', reason: `listen interface ${ifc} missing` };
  return { mode: 'iptables' };
}

/**
 * Where DNS listens: a configured address and port win in every mode; else 53 on the listen
 * address in iptables mode (where the hijack sends the node's queries), 5353 on 127.0.0.1 when
 * unprivileged (no root for port 53, nothing redirected).
 */
export function dnsListen(
  o: Pick<EdgeMeshConfig, 'dns'>,
  mode: MeshMode,
  listenIP?: string,
): { host: string; port: number } {
  if (mode === 'unprivileged')
    return { host: o.dns.listenAddress ?? '127.0.0.1', port: o.dns.listenPort ?? 5353 };
  return { host: o.dns.listenAddress ?? listenIP ?? '127.0.0.1', port: o.dns.listenPort ?? 53 };
}

/** Default query sources: loopback, this node's addresses, the container bridge subnet. */
export function defaultAllowFrom(
  o: Pick<EdgeMeshConfig, 'listenInterface'> & { dns?: { hijackInterfaces?: string[] } },
): string[] {
  const out = ['127.0.0.0/8', ...nodeIPv4s().map((a) => `${a}/32`)];
  // the container bridges: the listen interface's subnet, and those of the other hijacked ones
  for (const name of [o.listenInterface, ...(o.dns?.hijackInterfaces ?? [])]) {
    const br = interfaceIPv4(name);
    if (br && br.prefix < 32) {
      const mask = br.prefix === 0 ? 0 : (0xffffffff << (32 - br.prefix)) >>> 0;
      out.push(`${intToIp((ipToInt(br.address) & mask) >>> 0)}/${br.prefix}`);
    }
  }
  return out;
}
