/**
 * Child for pipe.test: a TLS socket over a TCP socket, ended abruptly with pipe's kill() while both
 * are live (Node 20 crashed when the TCP socket went first). Prints what the TCP socket saw; the
 * process must then end by itself. argv: the directory with ca.crt, server.crt and server.key.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, createServer } from 'node:tls';
import { kill, runsOver } from '../src/pipe';

const dir = process.argv[2];
const read = (f: string) => readFileSync(join(dir, f));
const srv = createServer({ cert: read('server.crt'), key: read('server.key') }, (c) => {
  c.on('error', () => undefined);
  c.resume();
}).listen(0, '127.0.0.1', () => {
  const { port } = srv.address() as { port: number };
  const raw = connect(port, '127.0.0.1', () => {
    const t = tlsConnect({ socket: raw, host: '127.0.0.1', ca: read('ca.crt') });
    t.on('error', () => undefined);
    raw.on('error', () => undefined);
    raw.on('close', () => console.log('raw closed'));
    t.on('secureConnect', () => {
      runsOver(t, raw);
      t.write('x');
      kill(t);
      setTimeout(() => srv.close(), 100);
    });
  });
});
