import { scrapedCounter, scrapedGauge, scrapedLag, type MetricsContribution } from '@edgecore/beehive';
import type { Registry } from 'prom-client';
import type { EdgeHubModule } from './edgehub-module';

/** EdgeHub's metrics: digest checks and resyncs, messages by outcome, the link, publish → commit lag. */
export class EdgeHubMetrics implements MetricsContribution {
  constructor(private readonly hub: EdgeHubModule) {}

  registerMetrics(r: Registry): void {
    const s = this.hub.stats;
    scrapedCounter(
      r,
      'edgecore_edgehub_digest_checks_total',
      'Comparisons of the cloud digests with the local store.',
      () => s.sync.checks,
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_resyncs_total',
      'Object types read back from retained state because the local digest differed (a lost message).',
      () => s.sync.resyncs,
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_retained_loads_total',
      'Object types loaded from retained state after a subscription without retained replay (MQTT 5).',
      () => s.sync.loads,
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_orphans_deleted_total',
      'Objects deleted by a resync because the broker no longer retains them.',
      () => s.sync.orphansDeleted,
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_digest_checks_abandoned_total',
      'Digest checks that did not end in time and were abandoned (their read cut) so later ones could run.',
      () => s.sync.abandoned,
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_retained_fences_resent_total',
      'Fences of retained reads published again after a silence: the first was lost on the way (a broker dropping packets to a slow reader).',
      () => s.sync.fencesResent,
    );
    scrapedLag(r, 'edgecore_edgehub_update_lag_seconds', 'Cloud publish to committed on this node', () => s);
    scrapedCounter(
      r,
      'edgecore_edgehub_messages_total',
      'MQTT messages from the cloud, by outcome.',
      () => [
        [{ result: 'received' }, s.received],
        [{ result: 'committed' }, s.committed],
        [{ result: 'malformed' }, s.malformed],
      ],
      ['result'],
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_connects_total',
      'Successful connections to the broker.',
      () => s.connects,
    );
    scrapedCounter(
      r,
      'edgecore_edgehub_failovers_total',
      'Links made to another broker of mqtt.servers than the last one.',
      () => s.failovers,
    );
    scrapedGauge(
      r,
      'edgecore_edgehub_commits_in_flight',
      'Object messages taken from the broker whose commit is under way (not yet acknowledged).',
      () => this.hub.commitsInFlight,
    );
    scrapedGauge(r, 'edgecore_edgehub_connected', '1 while the MQTT link is up.', () =>
      this.hub.cloudConnected ? 1 : 0,
    );
    scrapedGauge(
      r,
      'edgecore_edgehub_mqtt_protocol_version',
      'MQTT version of the link: 5, or 4 (3.1.1) with a broker that refused 5.',
      () => this.hub.protocolVersion,
    );
  }
}
