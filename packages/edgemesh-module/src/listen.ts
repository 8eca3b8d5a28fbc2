import { networkInterfaces } from 'node:os';
import type { EdgeMeshOptions } from './config';
import { intToIp, ipToInt } from './vip/ipv4';

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

/**
 * The effective mode. Interception (iptables) is its own piece of work; until a build has it,
 * `auto` means unprivileged: DNS on 127.0.0.1:5353 and the explicit proxy.
 */
export function resolveMode(o: EdgeMeshOptions): MeshMode {
  return o.mode === 'iptables' ? 'iptables' : 'unprivileged';
}

/** Where DNS listens: a configured listenPort wins in every mode. */
export function dnsListen(o: EdgeMeshOptions, mode: MeshMode): { host: string; port: number } {
  if (mode === 'unprivileged')
    return { host: o.dns?.listenAddress ?? '127.0.0.1', port: o.dns?.listenPort ?? 5353 };
  const ifc = interfaceIPv4(o.listenInterface ?? 'docker0');
  return { host: o.dns?.listenAddress ?? ifc?.address ?? '127.0.0.1', port: o.dns?.listenPort ?? 53 };
}

/** Default query sources: loopback, this node's addresses, the container bridge subnet. */
export function defaultAllowFrom(o: EdgeMeshOptions): string[] {
  const out = ['127.0.0.0/8', ...nodeIPv4s().map((a) => `${a}/32`)];
  const br = interfaceIPv4(o.listenInterface ?? 'docker0');
  if (br && br.prefix < 32) {
    const mask = br.prefix === 0 ? 0 : (0xffffffff << (32 - br.prefix)) >>> 0;
    out.push(`${intToIp((ipToInt(br.address) & mask) >>> 0)}/${br.prefix}`);
  }
  return out;
}
