import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A TCP relay between MQTT clients and a broker that drops chosen PUBLISH packets on their way
 * from the broker to a client — messages lost between the broker and a node, on purpose. It parses
 * only the fixed header and, for CONNECT and PUBLISH, the client id and the topic (MQTT 3.1.1
 * §2.2, §3.1.3, §3.3.2; MQTT 5's CONNECT properties are skipped); everything else passes byte for
 * byte.
 */
export class MqttRelay {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  dropped: string[] = [];

  constructor(
    private readonly brokerPort: number,
    /** Drop this broker → client PUBLISH? */
    private readonly drop: (topic: string, clientId: string) => boolean,
  ) {}

  async listen(): Promise<number> {
    this.server = createServer((client) => {
      const broker = createConnection({ host: '127.0.0.1', port: this.brokerPort });
      this.sockets.add(client).add(broker);
      let clientId = '';
      const up = new Framer((pkt) => {
        if (pkt[0] >> 4 === 1) clientId = connectClientId(pkt);
        broker.write(pkt);
      });
      const down = new Framer((pkt) => {
        if (pkt[0] >> 4 === 3) {
          const topic = publishTopic(pkt);
          if (this.drop(topic, clientId)) {
            this.dropped.push(topic);
            return;
          }
        }
        client.write(pkt);
      });
      client.on('data', (d) => up.push(d));
      broker.on('data', (d) => down.push(d));
      const end = (): void => {
        client.destroy();
        broker.destroy();
        this.sockets.delete(client);
        this.sockets.delete(broker);
      };
      client.on('close', end).on('error', end);
      broker.on('close', end).on('error', end);
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** Cuts a byte stream into whole MQTT packets. */
class Framer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onPacket: (pkt: Buffer) => void) {}

  push(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      let len = 0;
      let mult = 1;
      let i = 1;
      for (; i < this.buf.length && i <= 4; i++) {
        len += (this.buf[i] & 0x7f) * mult;
        mult *= 128;
        if (!(this.buf[i] & 0x80)) break;
      }
      if (i >= this.buf.length || this.buf[i] & 0x80) return; // length not complete yet
      const total = i + 1 + len;
      if (this.buf.length < total) return;
      this.onPacket(this.buf.subarray(0, total));
      this.buf = this.buf.subarray(total);
    }
  }
}

function varHeaderStart(pkt: Buffer): number {
  let i = 1;
  while (pkt[i] & 0x80) i++;
  return i + 1;
}

function publishTopic(pkt: Buffer): string {
  const at = varHeaderStart(pkt);
  const n = pkt.readUInt16BE(at);
  return pkt.subarray(at + 2, at + 2 + n).toString();
}

function connectClientId(pkt: Buffer): string {
  const at = varHeaderStart(pkt);
  const proto = pkt.readUInt16BE(at);
  const level = pkt[at + 2 + proto];
  let payload = at + 2 + proto + 1 + 1 + 2; // protocol name, level, flags, keepalive
  if (level === 5) {
    // MQTT 5 §3.1.2.11: the properties, a variable byte integer length first
    let len = 0;
    let mult = 1;
    let b: number;
    do {
      b = pkt[payload++];
      len += (b & 0x7f) * mult;
      mult *= 128;
    } while (b & 0x80);
    payload += len;
  }
  const n = pkt.readUInt16BE(payload);
  return pkt.subarray(payload + 2, payload + 2 + n).toString();
}
