// A process for listeners.test.ts: the native listener set with nothing else keeping the loop alive.
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { NativeListenerSet } from '../src/proxy/listeners';

const set = NativeListenerSet.get()!;
const mode = process.argv[2];

void (async () => {
  if (mode === 'until-first') {
    // nothing but the listener keeps this process alive; its first connection closes it
    const l = await set.listen(
      { host: '127.0.0.1', port: 0, allowHalfOpen: false },
      {
        connection: (s) => {
          s.end('bye');
          l.close();
        },
      },
    );
    console.log(`listening ${l.port}`);
    return;
  }
  // hold: every connection is kept (its descriptor too) until `drop`; `stats` reports
  const held: Socket[] = [];
  const l = await set.listen(
    { host: '127.0.0.1', port: 0, allowHalfOpen: false },
    {
      connection: (s) => {
        held.push(s);
        s.on('error', () => undefined);
        s.on('data', () => s.write('pong'));
      },
    },
  );
  console.log(`listening ${l.port}`);
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (cmd) => {
    if (cmd === 'stats') {
      const c0 = process.cpuUsage();
      setTimeout(() => {
        const c = process.cpuUsage(c0);
        const live = held.filter((s) => !s.destroyed).length;
        console.log(
          `held ${live} refused ${set.stats().refused} cpu ${Math.round((c.user + c.system) / 1000)}`,
        );
      }, 1000);
    } else if (cmd === 'drop') {
      held.splice(0).forEach((s) => s.destroy());
      setTimeout(() => console.log('dropped'), 100);
    }
  });
  rl.on('close', () => process.exit(0));
})();
