/** Child for the concurrency test: a write burst through MetaStore batches in its own process. */
import { MetaStore } from '../src/dao/meta-store';

const [path, batches, size] = process.argv.slice(2).map((x, i) => (i === 0 ? x : Number(x))) as [
  string,
  number,
  number,
];
const store = new MetaStore(path);
process.stdout.write('start\n');
let rv = 0;
for (let b = 0; b < batches; b++) {
  const ops = Array.from({ length: size }, () => {
    rv++;
    const name = `s${rv % 2000}`;
    return {
      op: 'upsert' as const,
      key: `default/service/${name}`,
      namespace: 'default',
      type: 'service',
      name,
      value: JSON.stringify({ rv, pad: 'y'.repeat(200) }),
      resourceVersion: rv,
    };
  });
  store.apply(ops);
}
store.close();
process.stdout.write('done\n');
