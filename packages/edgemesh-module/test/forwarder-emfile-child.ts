/**
 * For forwarder.test.ts, under `prlimit --nofile=64:64`: a forwarder with serve-stale on and an
 * upstream in this process; a name asked before, while and after every descriptor is taken.
 * Prints one JSON line: the rcodes and answers, and the forwarder's stats.
 */
import { createSocket } from 'node:dgram';
import { closeSync, openSync } from 'node:fs';
import * as packet from 'dns-packet';
import { Forwarder } from '../src/dns/forwarder';
import { parseQuery } from '../src/dns/wire';

async function main(): Promise<void> {
  const up = createSocket('udp4');
  up.on('message', (m, r) => {
    const q = packet.decode(m);
    const name = q.questions![0].name;
    up.send(
      packet.encode({
        id: q.id,
        type: 'response',
        flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE,
        questions: q.questions,
        answers: [{ type: 'A', name, ttl: 60, data: '192.0.2.9' }],
      }),
      r.port,
      r.address,
    );
  });
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
  const f = new Forwarder([{ host: '127.0.0.1', port: up.address().port }], {
    timeoutMs: 500,
    serveStale: { enable: true },
  });
  const ask = async (name: string): Promise<string> => {
    const q = packet.encode({
      id: 7,
      type: 'query',
      flags: packet.RECURSION_DESIRED,
      questions: [{ type: 'A', name }],
    });
    const r = packet.decode(await f.forward(q, parseQuery(q)));
    return `${r.rcode} ${r.answers!.map((a) => a.data).join(',')}`.trim();
  };
  const before = await ask('before.example');
  const held: number[] = [];
  try {
    for (;;) held.push(openSync('/dev/null', 'r'));
  } catch {
    // every descriptor taken
  }
  const during = await ask('during.example');
  for (const fd of held) closeSync(fd);
  const after = await ask('after.example');
  console.log(JSON.stringify({ before, during, after, held: held.length, stats: f.stats }));
  process.exit(0);
}

void main();
