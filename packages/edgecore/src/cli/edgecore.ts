import { setFlagsFromString } from 'node:v8';
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
import { MemoryReleaser } from '../memory';
import { createLogger } from '../logging';
import { brokerUrls, checkBroker, mqttClientAuth } from '@edgecore/edgehub';
import { trimMalloc } from '@edgecore/edgemesh-module';
import { checkEnvironment } from '../check/environment';

const HELP = `edgecore — KubeEdge-style edge runtime (beehive, MetaManager, EdgeHub, EdgeMesh)

Usage:
  edgecore --config FILE        run the enabled modules of FILE (edgecore.yaml)
  edgecore check [--config FILE]
                                look at the MQTT broker the way a node depends on it (protocol,
                                retained messages, the queue of a node that is away, the cloud's
                                digests); exit 1 when a node could not work with it
  edgecore --defaultconfig      print the full default configuration
  edgecore --minconfig          print the smallest valid configuration
  edgecore --help               this text

Signals: SIGTERM/SIGINT stop accepting, drain for up to drainSeconds, then exit.
`;

export async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        defaultconfig: { type: 'boolean' },
        minconfig: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    process.stderr.write(`edgecore: ${(e as Error).message}\n\n${HELP}`);
    process.exitCode = 2;
    return;
  }
  const args = parsed.values;
  const [command, ...extra] = parsed.positionals;
  if ((command !== undefined && command !== 'check') || extra.length) {
    process.stderr.write(`edgecore: unknown command "${[command, ...extra].join(' ')}"\n\n${HELP}`);
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
  if (command === 'check') {
    process.exitCode = await check(config);
    return;
  }
  applyMemoryConfig(config.memory);
  const log = createLogger(config.log);
  const host = new EdgeCoreHost(config, { logger: log });
  // the process's own memory policy, like the V8 flags above: an embedder's host leaves its
  // process alone (a release there would pause the embedder's whole heap)
  const memory = new MemoryReleaser({
    growthMiB: config.memory.releaseAfterGrowthMiB,
    quietMs: 2000,
    trim: trimMalloc,
  });
  memory.registerMetrics(host.metrics);
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'signal received, draining');
    memory.stop();
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
    memory.start();
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

/**
 * `edgecore check`: the node's environment (check/environment.ts), then the broker as the node
 * depends on it; one line each, the fix with every failure; 1 when one is an error.
 */
export async function check(
  config: EdgeCoreConfig,
  out: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
  opts: { environment?: boolean } = {},
): Promise<number> {
  const findings: { level: string; key: string; message: string }[] = [];
  if (opts.environment !== false) findings.push(...(await checkEnvironment(config)));
  const mqtt = config.modules.edgeHub.mqtt;
  try {
    // every broker the node may link to (mqtt.servers): each must hold the fleet's state
    const servers = config.modules.edgeHub.enable ? brokerUrls(mqtt) : [];
    for (const server of servers) {
      const got = await checkBroker({ server, client: mqttClientAuth(mqtt) });
      findings.push(...got.map((f) => (servers.length > 1 ? { ...f, key: `${server} ${f.key}` } : f)));
    }
  } catch (e) {
    findings.push({ level: 'error', key: 'check', message: (e as Error).message });
  }
  for (const f of findings) out(`${f.level.padEnd(6)} ${f.key}: ${f.message}`);
  return findings.some((f) => f.level === 'error') ? 1 : 0;
}

/**
 * `memory.heapGrowingPercent` as V8's flag (read at every full collection, so it takes effect
 * now); a flag given to node itself (its command line or NODE_OPTIONS) wins.
 */
export function applyMemoryConfig(m: EdgeCoreConfig['memory']): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (m.heapGrowingPercent > 0 && !given.some((a) => /^--heap[-_]growing[-_]percent/.test(a)))
    setFlagsFromString(`--heap-growing-percent=${m.heapGrowingPercent}`);
}
