import type { Logger } from '@edgecore/beehive';
import pino from 'pino';
import pretty from 'pino-pretty';
import type { EdgeCoreConfig } from './config/config';

/** pino: JSON by default, pretty on a TTY (or when asked). Lifecycle lines only at info. */
export function createLogger(
  cfg: EdgeCoreConfig['log'],
  stream: NodeJS.WritableStream = process.stdout,
): Logger {
  const usePretty =
    cfg.format === 'pretty' || (cfg.format === 'auto' && (stream as NodeJS.WriteStream).isTTY === true);
  const dest = usePretty
    ? pretty({
        colorize: true,
        destination: stream as NodeJS.WritableStream & { fd?: number } as any,
        sync: true,
      })
    : stream;
  return pino({ level: cfg.level, base: { pid: process.pid } }, dest as any) as unknown as Logger;
}
