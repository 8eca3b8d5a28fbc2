import { parseArgs } from 'node:util';
import {
  configToYaml,
  defaultConfig,
  loadConfigFile,
  MIN_CONFIG,
  type EdgeCoreConfig,
} from '../config/config';
import { EdgeCoreError } from '../edgecore-errors';
import { EdgeCoreHost } from '../host';
import { createLogger } from '../logging';

const HELP = `edgecore — KubeEdge-style edge runtime (beehive, MetaManager, EdgeHub, EdgeMesh)

Usage:
  edgecore --config FILE        run the enabled modules of FILE (edgecore.yaml)
  edgecore --defaultconfig      print the full default configuration
  edgecore --minconfig          print the smallest valid configuration
  edgecore --help               this text

Signals: SIGTERM/SIGINT stop accepting, drain for up to drainSeconds, then exit.
`;

export async function main(argv: string[]): Promise<void> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        defaultconfig: { type: 'boolean' },
        minconfig: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`edgecore: ${(e as Error).message}\n\n${HELP}`);
    process.exitCode = 2;
    return;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return;
  }
  if (args.defaultconfig) {
    process.stdout.write(configToYaml(defaultConfig()));
    return;
  }
  if (args.minconfig) {
    process.stdout.write(configToYaml(MIN_CONFIG));
    return;
  }
  let config: EdgeCoreConfig;
  try {
    config = args.config ? loadConfigFile(args.config) : defaultConfig();
  } catch (e) {
    process.stderr.write(`edgecore: ${(e as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const log = createLogger(config.log);
  const host = new EdgeCoreHost(config, { logger: log });
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'signal received, draining');
    host.stop().then(
      () => process.exit(0),
      (e) => {
        log.error({ err: e }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await host.start();
  } catch (e) {
    const code =
      e instanceof EdgeCoreError || (e as { code?: string }).code
        ? ` [${(e as { code?: string }).code}]`
        : '';
    log.error({ err: e }, 'edgecore failed to start');
    process.stderr.write(`edgecore: ${(e as Error).message}${code}\n`);
    process.exit(1);
  }
}
