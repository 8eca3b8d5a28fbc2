/**
 * Child process for the crash-safety test: runs the real MetaManager module over beehive on a
 * database file, applies a stream of updates sent the way EdgeHub sends them (sync, one ack per
 * commit) and prints `ack <key> <rv>` after each acknowledgement. The parent SIGKILLs it.
 */
import 'reflect-metadata';
import { newMessage } from '@edgecore/beehive';
import { harness } from './helpers';

async function main(): Promise<void> {
  const [path, round] = process.argv.slice(2);
  const h = await harness(path, { withMesh: false });
  process.stdout.write('ready\n');
  let rv = Number(round) * 1_000_000;
  for (;;) {
    // Several writers in flight, so commits batch as they would under load.
    const batch = Array.from({ length: 1 + Math.floor(Math.random() * 20) }, () => {
      rv++;
      const key = `default/service/s${rv % 300}`;
      const payload = {
        metadata: { name: `s${rv % 300}`, resourceVersion: String(rv) },
        spec: { pad: 'x'.repeat(rv % 500) },
      };
      return h.ctx
        .sendSync(
          'metamanager',
          newMessage(payload, { source: 'edgehub', operation: 'update', resource: key }),
          10_000,
        )
        .then((reply) => {
          if (reply.content === 'OK')
            process.stdout.write(`ack ${key} ${payload.metadata.resourceVersion}\n`);
        });
    });
    await Promise.all(batch);
  }
}

void main();
