import {
  scrapedCounter,
  scrapedGauge,
  scrapedHistogram,
  scrapedLag,
  type MetricsContribution,
} from '@edgecore/beehive';
import type { Registry } from 'prom-client';
import type { EdgeMeshModule } from './edgemesh-module';
import { NativeListenerSet } from './proxy/listeners';
import { LATENCY_BUCKETS, type ServiceStats } from './proxy/http/policy';

/**
 * EdgeMesh's metrics, read from its parts at scrape time: DNS (queries, rcodes, forwarding, the
 * UDP path), the catalog and its update lag, the L7/L4 proxies, passive health, portals.
 */
export class EdgeMeshMetrics implements MetricsContribution {
  constructor(private readonly mesh: EdgeMeshModule) {}

  registerMetrics(r: Registry): void {
    const mesh = this.mesh;
    scrapedGauge(
      r,
      'edgecore_edgemesh_backends',
      'Backends of every service port, by path: routed (direct) or through EdgeTunnel (another site).',
      () => {
        const n = mesh.backendPathCounts();
        return [
          [{ path: 'direct' }, n.direct],
          [{ path: 'tunnel' }, n.tunnel],
        ];
      },
      ['path'],
    );
    const http = mesh.http.stats;
    scrapedCounter(
      r,
      'edgecore_dns_queries_total',
      'DNS queries received.',
      () => mesh.dns?.stats.queries ?? 0,
    );
    scrapedCounter(
      r,
      'edgecore_dns_tcp_refused_total',
      'DNS TCP connections reset at accept: dns.tcpClients reached, or the node connection limit.',
      () => mesh.dns?.stats.tcpRefused ?? 0,
    );
    scrapedCounter(
      r,
      'edgecore_dns_responses_total',
      'DNS responses by rcode.',
      () => Object.entries(mesh.dns?.rcodes() ?? {}).map(([rcode, n]) => [{ rcode }, n] as const),
      ['rcode'],
    );
    scrapedCounter(
      r,
      'edgecore_dns_forwarded_total',
      'Queries forwarded upstream, cache hits and failures (local_failure: not sent, the node had no socket for it).',
      () => {
        const f = mesh.forwarder?.stats;
        return [
          [{ result: 'forwarded' }, f?.forwarded ?? 0],
          [{ result: 'cache_hit' }, f?.cacheHits ?? 0],
          [{ result: 'upstream_failure' }, f?.upstreamFailures ?? 0],
          [{ result: 'local_failure' }, f?.localFailures ?? 0],
          [{ result: 'servfail' }, f?.servfail ?? 0],
        ];
      },
      ['result'],
    );
    scrapedCounter(
      r,
      'edgecore_mesh_updates_applied_total',
      'Catalog changes from MetaManager applied by EdgeMesh.',
      () => mesh.updates.applied,
    );
    scrapedCounter(
      r,
      'edgecore_mesh_update_batches_total',
      'Batches those changes were applied in (one reconcile each).',
      () => mesh.updates.batches,
    );
    scrapedLag(
      r,
      'edgecore_mesh_update_lag_seconds',
      'Cloud publish to applied in EdgeMesh',
      () => mesh.updates,
    );
    scrapedGauge(
      r,
      'edgecore_mesh_services',
      'Services in the EdgeMesh catalog.',
      () => mesh.catalog.services.size,
    );
    scrapedGauge(
      r,
      'edgecore_mesh_catalog_objects',
      'Objects in the EdgeMesh catalog, by type.',
      () => {
        const c = mesh.catalog;
        return [
          [{ type: 'service' }, c.services.size],
          [{ type: 'endpointslice' }, c.slices.size],
          [{ type: 'endpoints' }, c.endpoints.size],
          [{ type: 'pod' }, c.pods.size],
          [{ type: 'destinationrule' }, c.destinationRules.size],
          [{ type: 'nodestatus' }, c.nodes.size],
        ];
      },
      ['type'],
    );
    scrapedGauge(
      r,
      'edgecore_mesh_vips_allocated',
      'VIPs allocated from subNet.',
      () => mesh.vipTable.allocated,
    );
    scrapedCounter(
      r,
      'edgecore_proxy_http_responses_total',
      'L7 proxy responses by status.',
      () => [...http.byStatus].map(([status, n]) => [{ status: String(status) }, n] as const),
      ['status'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_http_rejected_total',
      'L7 requests refused before any backend, by reason (malformed-head, bad-target, bad-framing, unsupported-coding, unsupported-version, http2-preface, bad-host, head-too-large, head-timeout, bad-chunk, closed-in-head).',
      () => [...http.rejected].map(([reason, n]) => [{ reason }, n] as const),
      ['reason'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_http_backend_requests_total',
      'L7 proxy requests by backend.',
      () => [...http.byBackend].map(([backend, n]) => [{ backend }, n] as const),
      ['backend'],
    );
    scrapedGauge(
      r,
      'edgecore_proxy_active_connections',
      'Open client connections by kind.',
      () => [
        [{ kind: 'http' }, http.activeConnections],
        [{ kind: 'h2' }, mesh.h2.stats.sessions],
        [{ kind: 'tcp' }, mesh.tcp.stats.active],
      ],
      ['kind'],
    );
    const budget = mesh.connections;
    scrapedGauge(
      r,
      'edgecore_proxy_client_connections',
      'Client connections the node holds (portals, the explicit proxy and DNS over TCP), and how many it may (proxy.maxConnections, or what the open-file limit leaves).',
      () => [
        [{ state: 'open' }, budget.open],
        [{ state: 'limit' }, Number.isFinite(budget.limit) ? budget.limit : -1],
      ],
      ['state'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_client_connections_refused_total',
      'Client connections reset as soon as they were accepted, and UDP datagrams dropped without a session: the connection limit was reached.',
      () => budget.refused,
    );
    const h2 = mesh.h2.stats;
    scrapedCounter(
      r,
      'edgecore_proxy_h2_streams_total',
      'HTTP/2 portal streams (each balanced on its own) by the status answered (relayed, or ours).',
      () => [...h2.byStatus].map(([status, n]) => [{ status: String(status) }, n] as const),
      ['status'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_h2_backend_streams_total',
      'HTTP/2 portal streams by backend.',
      () => [...h2.byBackend].map(([backend, n]) => [{ backend }, n] as const),
      ['backend'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_h2_retries_total',
      'HTTP/2 streams sent to another backend, or the same one on a fresh connection (refused, connect failure, GOAWAY).',
      () => h2.retries,
    );
    scrapedCounter(
      r,
      'edgecore_proxy_grpc_proxy_answers_total',
      'gRPC calls answered by the proxy itself (trailers-only), by grpc-status (14 UNAVAILABLE, 4 DEADLINE_EXCEEDED).',
      () => [...h2.grpcAnswers].map(([code, n]) => [{ grpc_status: String(code) }, n] as const),
      ['grpc_status'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_h2_refused_connections_total',
      'HTTP/2 portal connections ended by the proxy, by reason (rapid-reset: GOAWAY ENHANCE_YOUR_CALM; not-http2: no preface).',
      () => [
        [{ reason: 'rapid-reset' }, h2.resetFloods],
        [{ reason: 'not-http2' }, h2.notHttp2],
      ],
      ['reason'],
    );
    // per service port: HTTP/1 and HTTP/2 answers by class, and latency from pick to answer
    const serviceStats = (): ServiceStats[] => [http.services, h2.services];
    scrapedCounter(
      r,
      'edgecore_proxy_service_requests_total',
      'L7 answers per service port (`<ns>/<svc>:<port>/<proto>`) by status class (2xx … 5xx), HTTP/1 and HTTP/2.',
      () => {
        const out: (readonly [Record<string, string>, number])[] = [];
        for (const st of serviceStats())
          for (const [service, v] of st.byScope)
            v.classes.forEach((n, i) => n && out.push([{ service, code: `${i + 1}xx` }, n] as const));
        return out;
      },
      ['service', 'code'],
    );
    scrapedHistogram(
      r,
      'edgecore_proxy_service_request_duration_seconds',
      'L7 request latency per service port, from the backend pick to the answer (HTTP/1 and HTTP/2).',
      LATENCY_BUCKETS,
      function* () {
        for (const st of serviceStats())
          for (const [service, v] of st.byScope) {
            // ServiceStats counts each observation in every bucket it fits: already cumulative
            yield { labels: { service }, buckets: v.buckets, sum: v.sum, count: v.count };
          }
      },
    );
    scrapedCounter(
      r,
      'edgecore_proxy_tls_connections_total',
      "Connections to appProtocol https ports: TLS passed through (by the ClientHello's first ALPN protocol) or plain HTTP with TLS originated to the backend.",
      () => [
        ...[...(mesh.portals?.tlsStats.passthrough ?? [])].map(
          ([alpn, n]) => [{ mode: 'passthrough', alpn }, n] as const,
        ),
        [{ mode: 'originate', alpn: 'http/1.1' }, mesh.portals?.tlsStats.originated ?? 0] as const,
      ],
      ['mode', 'alpn'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_tls_sni_routed_total',
      'TLS connections passed through whose backend the SNI chose (edgecore.io/backend-by-sni).',
      () => mesh.portals?.tlsStats.bySni ?? 0,
    );
    scrapedGauge(
      r,
      'edgecore_proxy_h2_upstream_connections',
      'HTTP/2 connections open to backends (shared by their streams).',
      () => mesh.h2.connections.upstreams,
    );
    scrapedCounter(
      r,
      'edgecore_proxy_spliced_connections_total',
      "Connections whose bytes went through a native engine, by kind (tunnel: the tunnel's TLS engine).",
      () => [
        [{ kind: 'tcp' }, mesh.tcp.stats.spliced],
        [{ kind: 'upgrade' }, http.splicedTunnels],
        // taken by a tunnel stream whose TLS runs in EdgeTunnel's native engine
        [{ kind: 'tunnel' }, mesh.tcp.stats.tunnelJoined],
      ],
      ['kind'],
    );
    scrapedCounter(
      r,
      'edgecore_proxy_native_http_connections_total',
      'L7 client connections (portals and the explicit proxy) taken by the native HTTP engine.',
      () => http.nativeConnections,
    );
    scrapedCounter(
      r,
      'edgecore_proxy_native_http_coalesced_wakeups_total',
      'Wake-ups of the native HTTP engine that waited for more events under load (httpCoalesceUs).',
      () => mesh.http.native?.coalescedWakeups ?? 0,
    );
    scrapedGauge(
      r,
      'edgecore_dns_udp_native',
      '1 when the DNS server uses the native batched UDP path, 0 on node:dgram.',
      () => (mesh.dns?.udpBackend === 'native' ? 1 : 0),
    );
    scrapedCounter(
      r,
      'edgecore_lb_ejections_total',
      'Backends ejected, by cause: a failed connect (passive health) or a run of errors answered (outlier detection).',
      () => [
        [{ cause: 'connect' }, mesh.lb.stats.ejections - mesh.lb.stats.outlierEjections],
        [{ cause: 'outlier' }, mesh.lb.stats.outlierEjections],
      ],
      ['cause'],
    );
    scrapedCounter(
      r,
      'edgecore_lb_outlier_ejections_capped_total',
      "Outlier ejections not made because maxEjectionPercent of the service's backends were out.",
      () => mesh.lb.stats.outlierCapped,
    );
    scrapedCounter(
      r,
      'edgecore_proxy_retries_total',
      'Requests (HTTP/1 and HTTP/2) sent to another backend after a failure.',
      () => http.retries + mesh.h2.stats.retries,
    );
    scrapedCounter(
      r,
      'edgecore_proxy_retry_budget_exhausted_total',
      "Retries not made because the node's retry budget was spent.",
      () => mesh.lb.retryBudget.exhausted,
    );
    scrapedGauge(
      r,
      'edgecore_health_backends',
      'Backends under active health checks, by state.',
      () => {
        const n = mesh.health.size;
        const bad = mesh.health.unhealthyCount;
        return [
          [{ state: 'healthy' }, n - bad],
          [{ state: 'unhealthy' }, bad],
        ];
      },
      ['state'],
    );
    scrapedCounter(
      r,
      'edgecore_health_checks_total',
      'Active health checks run, by result (local_failure: not started, the node had no socket for it: no verdict).',
      () => [
        [
          { result: 'pass' },
          mesh.health.stats.checks - mesh.health.stats.failures - mesh.health.stats.localFailures,
        ],
        [{ result: 'fail' }, mesh.health.stats.failures],
        [{ result: 'local_failure' }, mesh.health.stats.localFailures],
      ],
      ['result'],
    );
    scrapedGauge(
      r,
      'edgecore_mesh_portals',
      'Portals (one per service port).',
      () => mesh.portals?.size ?? 0,
    );
    scrapedGauge(
      r,
      'edgecore_mesh_portals_unopened',
      'Portals wanted but not open for want of a socket (EMFILE, ENFILE, ENOBUFS, ENOMEM): retried every 5 s and when a portal closes.',
      () => mesh.portals?.unopenedCount ?? 0,
    );
    scrapedCounter(
      r,
      'edgecore_mesh_portal_connections_refused_total',
      'Portal connections closed at once because the process was out of file descriptors (EMFILE; the native listener set).',
      () => NativeListenerSet.get()?.stats().refused ?? 0,
    );
  }
}
