import { Counter, Gauge, type Registry } from 'prom-client';
import type { ChannelContext } from './channel-context';

/**
 * Metrics as a contribution point (Theia style): each package binds what it measures, the host
 * only serves `/metrics` from one prom-client `Registry`. Collectors read a module's own counters
 * at scrape time, so hot paths keep plain integer increments.
 */
export const MetricsContribution = Symbol.for('edgecore.MetricsContribution');
export interface MetricsContribution {
  registerMetrics(registry: Registry): void;
}

/** One value, or one value per label set. */
export type Samples = number | readonly (readonly [Record<string, string>, number])[];

/** Puts what `read` returns into a counter (`inc`) or a gauge (`set`) that was just reset. */
function fill(
  read: () => Samples,
  put: (labels: Record<string, string> | undefined, value: number) => void,
): void {
  const v = read();
  if (typeof v === 'number') put(undefined, Number.isFinite(v) ? v : 0);
  else for (const [labels, n] of v) put(labels, Number.isFinite(n) ? n : 0);
}

/** A counter whose value is read at scrape time (`read`), optionally per label set. */
export function scrapedCounter(
  registry: Registry,
  name: string,
  help: string,
  read: () => Samples,
  labelNames: readonly string[] = [],
): void {
  new Counter({
    name,
    help,
    labelNames: [...labelNames],
    registers: [registry],
    collect() {
      this.reset();
      fill(read, (l, n) => (l ? this.inc(l, n) : this.inc(n)));
    },
  });
}

/** A gauge whose value is read at scrape time (`read`), optionally per label set. */
export function scrapedGauge(
  registry: Registry,
  name: string,
  help: string,
  read: () => Samples,
  labelNames: readonly string[] = [],
): void {
  new Gauge({
    name,
    help,
    labelNames: [...labelNames],
    registers: [registry],
    collect() {
      this.reset();
      fill(read, (l, n) => (l ? this.set(l, n) : this.set(n)));
    },
  });
}

/** One histogram series: cumulative counts per upper bound (`le`, seconds), their sum and count. */
export interface HistogramSamples {
  labels: Record<string, string>;
  /** Counts of observations ≤ each bound of `bounds` (cumulative, as Prometheus wants them). */
  buckets: readonly number[];
  sum: number;
  count: number;
}

/**
 * A histogram read at scrape time: the hot path keeps plain per-bucket counters, the registry
 * gets `_bucket{le}`, `_sum` and `_count` per label set (prom-client's own shape).
 */
export function scrapedHistogram(
  registry: Registry,
  name: string,
  help: string,
  bounds: readonly number[],
  read: () => Iterable<HistogramSamples>,
): void {
  registry.registerMetric({
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    get: async () => {
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (const h of read()) {
        bounds.forEach((le, i) =>
          values.push({
            labels: { ...h.labels, le },
            value: h.buckets[i] ?? 0,
            metricName: `${name}_bucket`,
          }),
        );
        values.push({ labels: { ...h.labels, le: '+Inf' }, value: h.count, metricName: `${name}_bucket` });
        values.push({ labels: h.labels, value: h.sum, metricName: `${name}_sum` });
        values.push({ labels: h.labels, value: h.count, metricName: `${name}_count` });
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
    reset: () => undefined,
  } as unknown as Parameters<Registry['registerMetric']>[0]);
}

/**
 * A lag measured in milliseconds as `_sum` and `_count` (counters) and `_max` (gauge), in
 * seconds — the names the lag metrics have had since before histograms.
 */
export function scrapedLag(
  registry: Registry,
  name: string,
  what: string,
  read: () => { lagMsSum: number; lagCount: number; lagMsMax: number },
): void {
  scrapedCounter(registry, `${name}_sum`, `${what}: seconds, summed.`, () => read().lagMsSum / 1000);
  scrapedCounter(registry, `${name}_count`, `${what}: updates measured.`, () => read().lagCount);
  scrapedGauge(registry, `${name}_max`, `${what}: the longest, seconds.`, () => read().lagMsMax / 1000);
}

/** The bus's own: messages accepted, late replies, sync timeouts. */
export class BusMetrics implements MetricsContribution {
  constructor(private readonly ctx: ChannelContext) {}

  registerMetrics(r: Registry): void {
    const s = this.ctx.stats;
    scrapedCounter(
      r,
      'edgecore_beehive_messages_total',
      'Messages accepted into module mailboxes.',
      () => s.sent,
    );
    scrapedCounter(
      r,
      'edgecore_beehive_late_replies_total',
      'Sync replies that found no waiter (dropped).',
      () => s.lateReplies,
    );
    scrapedCounter(
      r,
      'edgecore_beehive_sync_timeouts_total',
      'sendSync calls that timed out.',
      () => s.timeouts,
    );
    scrapedGauge(
      r,
      'edgecore_beehive_mailbox_depth',
      "Messages waiting in each module's mailbox.",
      () => this.ctx.moduleNames().map((m) => [{ module: m }, this.ctx.queued(m)] as const),
      ['module'],
    );
    scrapedGauge(
      r,
      'edgecore_beehive_sync_pending',
      'sendSync calls waiting for their reply.',
      () => this.ctx.pendingSync,
    );
  }
}
