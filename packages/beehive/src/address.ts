/** `host:port` (or `[v6]:port`) → host and port; throws naming the input when malformed. */
export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  if (i <= 0) throw new Error(`expected host:port, got "${s}"`);
  const host = s.slice(0, i).replace(/^\[|\]$/g, '');
  const port = s.slice(i + 1);
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) throw new Error(`bad port in "${s}"`);
  return [host, Number(port)];
}
