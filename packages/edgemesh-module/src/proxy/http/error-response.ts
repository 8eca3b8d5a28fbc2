import { reasonPhrase } from './protocol';

/**
 * The bytes of an answer the proxy makes itself (the portals' L7 engines and the explicit proxy
 * alike): `STATUS Reason: message` as text/plain, `Connection: close` unless the connection goes on.
 */
export function errorResponse(status: number, message: string, keep: boolean): Buffer {
  const reason = reasonPhrase(status);
  const body = Buffer.from(`${status} ${reason}: ${message}\n`);
  const head =
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${body.length}\r\n${keep ? '' : 'Connection: close\r\n'}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}
