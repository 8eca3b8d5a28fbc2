import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A broker of the test's own on a TCP port: answers CONNECT with `connack` (and with `answers`,
 * SUBSCRIBE with a SUBACK granting what was asked, PINGREQ with PINGRESP; else nothing more), and
 * hands every later packet to `onPacket` (whole, as the client framed it: first byte, body).
 */
export class FakeBroker {
  readonly server: Server;
  readonly sockets: Socket[] = [];
  readonly packets: { type: number; body: Buffer }[] = [];
  constructor(
    connack: Buffer,
    onPacket: (s: Socket, type: number, body: Buffer) => void = () => undefined,
    answers = false,
  ) {
    this.server = createServer((s) => {
      this.sockets.push(s);
      let rest = Buffer.alloc(0);
      let v5 = false;
      s.on('data', (d) => {
        rest = Buffer.concat([rest, d]);
        for (;;) {
          if (rest.length < 2) return;
          const [len, at] = readVarint(rest, 1);
          if (at > rest.length || at + len > rest.length) return;
          const type = rest[0] >> 4;
          const body = rest.subarray(at, at + len);
          rest = rest.subarray(at + len);
          this.packets.push({ type, body });
          if (type === 1) {
            v5 = body[6] === 5; // after the protocol name "MQTT"
            s.write(connack);
            continue;
          }
          if (answers && type === 8) s.write(suback(body, v5));
          if (answers && type === 12) s.write(Buffer.from([0xd0, 0]));
          onPacket(s, type, body);
        }
      });
      s.on('error', () => undefined);
    });
    this.server.listen(0, '127.0.0.1');
  }
  async url(): Promise<string> {
    if (!this.server.listening) await once(this.server, 'listening');
    return `tcp://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

/** The payload of an MQTT 5 PUBLISH body (QoS 1): after the topic, the packet id and the properties. */
export function publishPayload5(body: Buffer): Buffer {
  const [len, at] = readVarint(body, 2 + body.readUInt16BE(0) + 2);
  return body.subarray(at + len);
}

/**
 * MQTT's Variable Byte Integer at `at`: its value and the offset after it (past the end of `buf`
 * when it is cut short there).
 */
function readVarint(buf: Buffer, at: number): [number, number] {
  let n = 0;
  let mul = 1;
  for (; at < buf.length; mul *= 128) {
    const b = buf[at++];
    n += (b & 127) * mul;
    if (!(b & 128)) return [n, at];
  }
  return [n, at + 1];
}

/** The packet id of a PUBLISH body (QoS 1): after the topic. */
export function publishId(body: Buffer): number {
  return body.readUInt16BE(2 + body.readUInt16BE(0));
}

/** A v5 CONNACK accepting, with these properties (already encoded). */
export function connack5(props: number[] = []): Buffer {
  return Buffer.from([0x20, 3 + props.length, 0, 0, props.length, ...props]);
}

/** MQTT's Variable Byte Integer. */
export function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 128;
    out.push(b);
  } while (n > 0);
  return out;
}

/** PUBACK: just the id (success), or a reason code and properties. */
export function puback(id: number, rc?: number, props: number[] = []): Buffer {
  if (rc === undefined) return Buffer.from([0x40, 2, id >> 8, id & 0xff]);
  const body = [id >> 8, id & 0xff, rc, ...varint(props.length), ...props];
  return Buffer.from([0x40, ...varint(body.length), ...body]);
}

/** A SUBACK for a SUBSCRIBE body: each filter granted the QoS it asked for. */
function suback(body: Buffer, v5: boolean): Buffer {
  let i = 2;
  if (v5) {
    const [len, at] = readVarint(body, i);
    i = at + len;
  }
  const codes: number[] = [];
  while (i < body.length) {
    i += 2 + body.readUInt16BE(i);
    codes.push(body[i++] & 3);
  }
  const rest = [body[0], body[1], ...(v5 ? [0] : []), ...codes];
  return Buffer.from([0x90, ...varint(rest.length), ...rest]);
}
