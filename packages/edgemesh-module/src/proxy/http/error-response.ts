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

/**
 * What an HTTP/2 client with prior knowledge gets on an HTTP/1.1 port: our (empty) SETTINGS and a
 * GOAWAY with HTTP_1_1_REQUIRED (RFC 9113 §7) and `message` as its debug data — curl prints it —
 * rather than HTTP/1.1 bytes it cannot read.
 */
export function http2Refusal(message: string): Buffer {
  const debug = Buffer.from(message);
  const frame = (type: number, payload: Buffer): Buffer => {
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    return Buffer.concat([h, payload]);
  };
  const goaway = Buffer.alloc(8);
  goaway.writeUInt32BE(0, 0); // last stream: none processed
  goaway.writeUInt32BE(0xd, 4); // HTTP_1_1_REQUIRED
  return Buffer.concat([frame(0x4, Buffer.alloc(0)), frame(0x7, Buffer.concat([goaway, debug]))]);
}
