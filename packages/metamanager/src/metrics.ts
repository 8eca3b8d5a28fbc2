import { scrapedCounter, scrapedGauge, type MetricsContribution } from '@edgecore/beehive';
import type { Registry } from 'prom-client';
import type { MetaManagerModule } from './metamanager-module';

/** MetaManager's metrics: writes by outcome, queries, remote queries, the cloud link as it sees it. */
export class MetaManagerMetrics implements MetricsContribution {
  constructor(private readonly mm: MetaManagerModule) {}

  registerMetrics(r: Registry): void {
    const s = this.mm.stats;
    scrapedCounter(
      r,
      'edgecore_metadata_updates_total',
      'Metadata writes by outcome (applied, unchanged, stale, rejected).',
      () =>
        (['applied', 'unchanged', 'stale', 'rejected'] as const).map((k) => [{ result: k }, s[k]] as const),
      ['result'],
    );
    scrapedCounter(
      r,
      'edgecore_metadata_commits_total',
      'SQLite transactions of metadata writes (writes ÷ commits: the group-commit batch).',
      () => s.batches,
    );
    scrapedCounter(r, 'edgecore_metadata_queries_total', 'Metadata queries answered.', () => s.queries);
    scrapedCounter(
      r,
      'edgecore_metadata_remote_queries_total',
      'Queries forwarded to the cloud, by outcome.',
      () => [
        [{ result: 'sent' }, s.remoteQueries],
        [{ result: 'failed' }, s.remoteFailures],
      ],
      ['result'],
    );
    scrapedGauge(
      r,
      'edgecore_cloud_connected',
      '1 while the cloud link is up (as MetaManager saw it).',
      () => (this.mm.cloudConnected ? 1 : 0),
    );
  }
}
