import { splitHostPort, type Logger } from '@edgecore/beehive';
import { parseArgs } from 'node:util';
import { loadIdentity } from '../certs';
import { Relay } from '../relay';
import { followRevokedConfigMap } from '../revoked-feed';
import { readFileSync } from 'node:fs';
import { ROLE_RELAY } from '../protocol';
import { loadKernelJoiner } from '../engines';

const HELP = `edgerelay — EdgeTunnel's relay: joins streams between nodes of the fleet (mTLS, HTTP/2)

Usage:
  edgerelay --name NAME --cert FILE --key FILE --ca FILE [--listen 0.0.0.0:4443] [--revoked FILE]
            [--splice-listen HOST:PORT|off]
            [--server mqtt://BROKER:1883 [--username U --password P] [--broker-ca FILE] [--prefix P]]

Spliced streams (the default for TCP): the two nodes dial --splice-listen (default: the --listen
host, its port + 1) with a one-time token and run TLS end to end over the joined pair; the relay
moves their bytes without decrypting them — in the kernel (splice(2)) when EdgeMesh's native
addon is installed next to it. Reachable at the same address as --listen. "off": every stream
rides the links.

With --server it follows the cloud's deny list too (the kube-system/edgetunnel-revoked ConfigMap
that \`edgectl certs configmap | edgectl apply -f -\` publishes): a node it names is cut at once.

It dials nobody: nodes link to it. It forwards only between nodes with certificates of the
fleet CA, cuts a node as soon as the deny list names it, and logs node names, never payloads.
`;

/** Runs until SIGTERM/SIGINT; returns the exit code on a start failure. */
export async function main(argv: string[]): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        name: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        ca: { type: 'string' },
        listen: { type: 'string', default: '0.0.0.0:4443' },
        'splice-listen': { type: 'string' },
        revoked: { type: 'string' },
        server: { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        'broker-ca': { type: 'string' },
        prefix: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    process.stderr.write(`edgerelay: ${(e as Error).message}\n`);
    return (process.exitCode = 2);
  }
  if (v.help) return (void process.stdout.write(HELP), 0);
  for (const k of ['name', 'cert', 'key', 'ca'] as const)
    if (!v[k]) {
      process.stderr.write(`edgerelay: --${k} is required\n\n${HELP}`);
      return (process.exitCode = 2);
    }
  const line =
    (level: string, out: NodeJS.WriteStream) =>
    (o: object | string, m?: string): void =>
      void out.write(
        `${JSON.stringify(typeof o === 'string' ? { level, msg: o } : { level, msg: m, ...o })}\n`,
      );
  const log: Logger = {
    info: line('info', process.stdout),
    warn: line('warn', process.stdout),
    error: line('error', process.stderr),
    debug: () => undefined,
  };
  try {
    const identity = loadIdentity(
      { cert: v.cert!, key: v.key!, ca: v.ca! },
      { role: ROLE_RELAY, name: v.name! },
    );
    const [host, port] = splitHostPort(v.listen!);
    const sl = v['splice-listen'];
    const spliceAt = sl === undefined || sl === 'off' ? undefined : splitHostPort(sl);
    if (spliceAt && spliceAt[0] !== host)
      throw new Error(`--splice-listen must be on the --listen host (${host}): nodes dial it there`);
    const kernelJoiner = sl === 'off' ? undefined : loadKernelJoiner();
    const relay = new Relay({
      identity,
      host,
      port,
      splicePort: sl === 'off' ? false : spliceAt?.[1],
      kernelJoiner,
      revokedFile: v.revoked,
      log,
    });
    await relay.listen();
    if (relay.splicePort)
      log.info(
        { splicePort: relay.splicePort, joiner: kernelJoiner ? 'kernel' : 'javascript' },
        'relay: spliced streams',
      );
    const feed = v.server
      ? await followRevokedConfigMap(relay.denied, {
          server: v.server,
          prefix: v.prefix,
          client: {
            username: v.username,
            password: v.password,
            ca: v['broker-ca'] ? readFileSync(v['broker-ca']) : undefined,
          },
          log,
        })
      : undefined;
    const stop = (): void => void Promise.all([relay.close(), feed?.endAsync()]).then(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    return 0;
  } catch (e) {
    process.stderr.write(`edgerelay: ${(e as Error).message}\n`);
    return (process.exitCode = 1);
  }
}
