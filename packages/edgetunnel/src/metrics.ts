import { scrapedCounter, scrapedGauge, type MetricsContribution } from '@edgecore/beehive';
import type { Registry } from 'prom-client';
import type { TunnelAgent } from './agent';

/** EdgeTunnel's metrics on a node: streams by path and outcome, bytes, links to relays. */
export class TunnelMetrics implements MetricsContribution {
  constructor(private readonly agent: TunnelAgent) {}

  registerMetrics(r: Registry): void {
    const s = this.agent.stats;
    scrapedCounter(
      r,
      'edgecore_edgetunnel_streams_total',
      'Tunnel streams: opened by this node (spliced through a relay, relayed over the links, or direct to a peer), failed to open, served for other nodes, refused (no such backend here, or a revoked peer).',
      () => [
        [{ result: 'opened', via: 'spliced' }, s.openedSpliced],
        [{ result: 'opened', via: 'relay' }, s.openedViaRelay - s.openedSpliced],
        [{ result: 'opened', via: 'direct' }, s.openedDirect],
        [{ result: 'failed', via: '' }, s.openFailures],
        [{ result: 'served', via: '' }, s.served],
        [{ result: 'refused', via: '' }, s.refused],
      ],
      ['result', 'via'],
    );
    scrapedCounter(
      r,
      'edgecore_edgetunnel_bytes_total',
      'Bytes through tunnel streams this node served for other nodes, both ways.',
      () => s.bytesServed,
    );
    scrapedCounter(
      r,
      'edgecore_edgetunnel_native_tls_streams_total',
      "Spliced streams, opened or served, whose end-to-end TLS ran in EdgeMesh's native TLS pump (the others in Node's TLS).",
      () => s.nativeTls,
    );
    scrapedCounter(
      r,
      'edgecore_edgetunnel_spliced_resumed_total',
      'Spliced streams this node opened whose end-to-end TLS resumed an earlier session with the peer (no certificates exchanged, the peer checked again).',
      () => s.resumedSpliced,
    );
    scrapedGauge(
      r,
      'edgecore_edgetunnel_relays_up',
      'Relays this node can open streams through.',
      () => this.agent.relaysUp().length,
    );
    scrapedGauge(
      r,
      'edgecore_edgetunnel_relays_reaching',
      'Relays holding a reverse link to this node.',
      () => this.agent.reachedBy().length,
    );
  }
}
