import * as dnsPacket from 'dns-packet';
import { DnsFormatError, errorReply, parseQuery, RCODE } from '../src';

const q = (name: string, type: dnsPacket.RecordType = 'A', extra: Partial<dnsPacket.Packet> = {}): Buffer =>
  dnsPacket.encode({
    type: 'query',
    id: 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    ...extra,
  });

describe('DNS wire parsing', () => {
  it('reads id, flags, lower-cased name, type, class', () => {
    const p = parseQuery(q('NGINX-svc.Default.svc.cluster.local', 'SRV'));
    expect(p).toMatchObject({
      id: 4242,
      rd: true,
      opcode: 0,
      name: 'nginx-svc.default.svc.cluster.local',
      qtype: 33,
      qclass: 1,
    });
    expect(p.edns).toBeUndefined();
  });

  it('reads EDNS0 payload size and DO bit (RFC 6891)', () => {
    const p = parseQuery(
      q('a.b', 'A', {
        additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: dnsPacket.DNSSEC_OK } as any],
      }),
    );
    expect(p.edns).toEqual({ udpSize: 4096, dnssecOk: true, version: 0 });
    const small = parseQuery(
      q('a.b', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 100 } as any] }),
    );
    expect(small.edns!.udpSize).toBe(512); // RFC 6891 §6.2.5: values below 512 are treated as 512
  });

  it.each([
    ['short header', Buffer.alloc(5), 'shorter than a DNS header at byte 5'],
    [
      'two questions',
      (() => {
        const b = q('a.b');
        b.writeUInt16BE(2, 4);
        return b;
      })(),
      'expected 1 question, got 2 at byte 4',
    ],
    [
      'label past end',
      Buffer.concat([q('a.b').subarray(0, 12), Buffer.from([40, 97, 98])]),
      'label runs past the packet at byte 12',
    ],
    [
      'pointer loop',
      Buffer.concat([q('a.b').subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]),
      'compression loop',
    ],
    ['truncated question', q('a.b').subarray(0, 18), 'truncated question'],
  ])('malformed (%s) → DnsFormatError with the byte offset', (_n, buf, msg) => {
    expect(() => parseQuery(buf)).toThrow(DnsFormatError);
    expect(() => parseQuery(buf)).toThrow(msg);
  });

  it('errorReply echoes id and question, sets QR and the rcode', () => {
    const b = q('x.y');
    const p = parseQuery(b);
    const r = dnsPacket.decode(errorReply(b, RCODE.FORMERR, p.questionEnd));
    expect(r).toMatchObject({
      id: 4242,
      type: 'response',
      rcode: 'FORMERR',
      questions: [{ name: 'x.y', type: 'A' }],
    });
  });
});
