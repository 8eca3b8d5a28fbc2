import { isIPv4 } from 'node:net';
import { InvalidSubnetError } from '../edgemesh-errors';

export function ipToInt(ip: string): number {
  const p = ip.split('.');
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export interface Cidr {
  base: number;
  prefix: number;
  size: number;
  text: string;
}

export function parseCidr(text: string): Cidr {
  const [ip, len] = text.split('/');
  if (!isIPv4(ip ?? '')) throw new InvalidSubnetError(text, 'not an IPv4 address');
  const prefix = Number(len);
  if (!/^\d{1,2}$/.test(len ?? '') || prefix > 32) throw new InvalidSubnetError(text, 'prefix must be 0-32');
  const size = 2 ** (32 - prefix);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (ipToInt(ip) & mask) >>> 0, prefix, size, text };
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip < c.base + c.size;
}
