import { endToEnd, header, type Head } from './head';
import type { HttpRoute } from './route';

/**
 * Heads as the JavaScript engine sends them on: the request head upstream (the client's version,
 * hop-by-hop and underscore fields out, X-Forwarded-For, keep-alive or the upgrade asked for) and
 * the response head to the client, under our status line. (The native engine rewrites heads in
 * place, `native/http/heads.c`, from the same tables.)
 */

/**
 * The protocols an Upgrade asks for that we relay (Connection: upgrade and an Upgrade field),
 * `h2c` left out — RFC 9113 deprecates it, and nginx does not relay it either; undefined: no
 * upgrade (the fields are hop-by-hop and go no further).
 */
export function upgradeTo(head: Head): string | undefined {
  if (!head.connection.has('upgrade')) return undefined;
  const asked = header(head, 'upgrade');
  if (asked === undefined) return undefined;
  const keep = asked
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p && p.toLowerCase() !== 'h2c');
  return keep.length ? keep.join(', ') : undefined;
}

/**
 * The head sent upstream: the client's version (an HTTP/1.0 client must never get a chunked
 * answer, RFC 9112 §7.1, and an upstream asked in HTTP/1.0 does not send one), hop-by-hop fields
 * dropped, one Content-Length of two equal ones, field names with an underscore dropped unless
 * `underscores` (nginx's `underscores_in_headers`: some backends read `_` as `-`), X-Forwarded-For
 * appended, keep-alive (or the upgrade asked for).
 */
export function requestHead(
  head: Head,
  route: HttpRoute,
  ip: string,
  upgrade: string | undefined,
  underscores: boolean,
): string {
  let out = `${head.method} ${route.target ?? head.target} HTTP/${head.version}\r\n`;
  if (route.host !== undefined) out += `Host: ${route.host}\r\n`;
  let xff: string | undefined;
  let length = false;
  for (const [k, v] of endToEnd(head)) {
    const lk = k.toLowerCase();
    if (lk === 'x-forwarded-for') xff = xff ? `${xff}, ${v}` : v;
    else if (lk === 'content-length') {
      if (!length) out += `${k}: ${v}\r\n`;
      length = true;
    } else if (!underscores && k.includes('_')) continue;
    else if (lk !== 'host' || route.host === undefined) out += `${k}: ${v}\r\n`;
  }
  out += `X-Forwarded-For: ${xff ? `${xff}, ${ip}` : ip}\r\n`;
  if (head.chunked) out += 'Transfer-Encoding: chunked\r\n';
  out +=
    upgrade !== undefined
      ? `Connection: Upgrade\r\nUpgrade: ${upgrade}\r\n\r\n`
      : 'Connection: keep-alive\r\n\r\n';
  return out;
}

/** A response head's status line, as ours, and its end-to-end fields (no blank line). */
export function responseLines(h: Head): string {
  let s = `HTTP/1.1 ${h.status} ${h.reason}\r\n`;
  for (const [k, v] of endToEnd(h)) s += `${k}: ${v}\r\n`;
  return s;
}

/**
 * A 101 response head with every field (Upgrade and Connection are what it switches by), under
 * our status line.
 */
export function rawHead(h: Head): string {
  let s = `HTTP/1.1 ${h.status} ${h.reason}\r\n`;
  for (const [k, v] of h.headers) s += `${k}: ${v}\r\n`;
  return s + '\r\n';
}
