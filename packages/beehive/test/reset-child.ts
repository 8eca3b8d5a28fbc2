/**
 * Child for tcp-reset.test: a connection whose shutdown is under way is ended with resetSocket,
 * then the process should end by itself (it prints what its socket saw).
 */
import { createServer, connect } from 'node:net';
import { resetSocket } from '../src/tcp-reset';

const srv = createServer((c) => {
  c.on('error', () => undefined);
  c.resume();
}).listen(0, '127.0.0.1', () => {
  const { port } = srv.address() as { port: number };
  const s = connect(port, '127.0.0.1', () => {
    s.on('error', (e: NodeJS.ErrnoException) => console.log(`error ${e.code}`));
    s.on('close', () => console.log('close'));
    s.write('x');
    s.end(); // its shutdown is under way now
    resetSocket(s);
    setTimeout(() => srv.close(), 100);
  });
});
