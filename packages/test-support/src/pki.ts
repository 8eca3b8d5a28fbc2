import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * A test CA in `dir` (`<ca>.crt`, `<ca>.key`) and certificates it signs, each for its
 * subjectAltName (`<name>.crt`, `<name>.key`; e.g. `{ broker: 'IP:127.0.0.1' }`): openssl, EC
 * P-256, valid a day.
 */
export async function testPki(dir: string, ca: string, certs: Record<string, string> = {}): Promise<void> {
  const o = (args: string[]) => execFileP('openssl', args, { cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await o([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    `${ca}.key`,
    '-out',
    `${ca}.crt`,
    '-subj',
    `/CN=${ca}`,
    '-days',
    '1',
  ]);
  for (const [name, san] of Object.entries(certs)) {
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
    await o(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    await o([
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}.crt`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    ]);
  }
}
