import type { MetaChange } from '@edgecore/metamanager/client';
import {
  BackendIndex,
  hashHeaderFor,
  LoadBalancer,
  policyOf,
  portProtocol,
  resolveBackends,
  RoundRobin,
  BUILTIN_LB_STRATEGIES,
  ServiceCatalog,
  ServicePolicies,
  SitePaths,
  type Backend,
  type EndpointSlice,
  type Service,
  type SliceEndpoint,
} from '../src';
import type { Logger } from '@edgecore/beehive';

const svc = (name: string, spec: Service['spec'] = {}, annotations?: Record<string, string>): Service => ({
  metadata: { name, namespace: 'default', ...(annotations ? { annotations } : {}) },
  spec: { selector: { app: name }, ports: [{ name: 'http', port: 80 }], ...spec },
});
const ep = (ip: string, node: string, extra: Partial<SliceEndpoint> = {}): SliceEndpoint => ({
  addresses: [ip],
  nodeName: node,
  ...extra,
});
const slice = (name: string, service: string, endpoints: SliceEndpoint[], port = 8080): EndpointSlice => ({
  metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port, protocol: 'TCP' }],
  endpoints,
});
const change = (type: string, object: { metadata: { name: string } }, operation = 'update'): MetaChange =>
  ({ operation, type, namespace: 'default', name: object.metadata.name, object }) as MetaChange;

function catalog(services: Service[], slices: EndpointSlice[]): ServiceCatalog {
  const c = new ServiceCatalog();
  c.applyBatch([
    ...services.map((s) => change('service', s)),
    ...slices.map((s) => change('endpointslice', s)),
  ]);
  return c;
}
const keys = (bs: readonly Backend[]): string[] => bs.map((b) => b.key).sort();
const port0 = (s: Service) => s.spec!.ports![0];

describe('EndpointSlices in the catalog', () => {
  it('several slices of a service are joined by their service-name label; deleting one drops its endpoints', () => {
    const s = svc('web');
    const c = catalog(
      [s],
      [
        slice('web-a', 'web', [ep('10.0.0.1', 'n1')]),
        slice('web-b', 'web', [ep('10.0.0.2', 'n2')]),
        slice('x', 'other', [ep('10.9.9.9', 'n1')]),
      ],
    );
    expect(keys(resolveBackends(c, s, port0(s), 'host'))).toEqual(['10.0.0.1:8080', '10.0.0.2:8080']);
    const d = c.applyBatch([change('endpointslice', slice('web-b', 'web', []), 'delete')]);
    expect([...d.backends]).toEqual(['default/web']);
    expect(keys(resolveBackends(c, s, port0(s), 'host'))).toEqual(['10.0.0.1:8080']);
  });

  it('ports by name: a multi-port service takes each port from the slice port of its name', () => {
    const s = svc('mp', {
      selector: undefined,
      ports: [
        { name: 'http', port: 80 },
        { name: 'metrics', port: 9090 },
      ],
    });
    const sl: EndpointSlice = {
      ...slice('mp-1', 'mp', [ep('10.0.0.1', 'n1')]),
      ports: [
        { name: 'metrics', port: 19090, protocol: 'TCP' },
        { name: 'http', port: 18080, protocol: 'TCP' },
      ],
    };
    const c = catalog([s], [sl]);
    expect(keys(resolveBackends(c, s, s.spec!.ports![0], 'host'))).toEqual(['10.0.0.1:18080']);
    expect(keys(resolveBackends(c, s, s.spec!.ports![1], 'host'))).toEqual(['10.0.0.1:19090']);
  });

  it('an empty slice means no backend (the pods of the selector are not consulted)', () => {
    const s = svc('none');
    const c = catalog(
      [s],
      [{ ...slice('none-empty', 'none', []), ports: [{ name: 'http', protocol: 'TCP' }] }],
    );
    c.applyBatch([
      change('pod', {
        metadata: { name: 'p', namespace: 'default', labels: { app: 'none' } },
        spec: { nodeName: 'n1', hostNetwork: true, containers: [{ ports: [{ containerPort: 80 }] }] },
        status: { phase: 'Running', hostIP: '10.0.0.5' },
      } as any),
    ]);
    expect(resolveBackends(c, s, port0(s), 'host')).toEqual([]);
  });

  it('Endpoints objects are converted on the way in: ready addresses serve, notReadyAddresses do not', () => {
    const s = svc('legacy', { selector: undefined });
    const c = catalog([s], []);
    c.applyBatch([
      change('endpoints', {
        metadata: { name: 'legacy', namespace: 'default' },
        subsets: [
          {
            addresses: [{ ip: '10.0.0.1', nodeName: 'n1' }],
            notReadyAddresses: [{ ip: '10.0.0.2' }],
            ports: [{ name: 'http', port: 81 }],
          },
        ],
      } as any),
    ]);
    expect(keys(resolveBackends(c, s, port0(s), 'host'))).toEqual(['10.0.0.1:81']);
    c.applyBatch([change('endpoints', { metadata: { name: 'legacy' } }, 'delete')]);
    expect(resolveBackends(c, s, port0(s), 'host')).toEqual([]);
    expect(c.slices.size).toBe(0);
  });
});

describe('traffic rules (lb/topology)', () => {
  it('terminating endpoints take nothing new while one is ready; serving-terminating ones when none is (KEP-1669)', () => {
    const s = svc('t');
    const eps = [
      ep('10.0.0.1', 'n1'),
      ep('10.0.0.2', 'n1', { conditions: { ready: false, serving: true, terminating: true } }),
      ep('10.0.0.3', 'n1', { conditions: { ready: false, serving: false, terminating: true } }),
    ];
    expect(keys(resolveBackends(catalog([s], [slice('t1', 't', eps)]), s, port0(s), 'host'))).toEqual([
      '10.0.0.1:8080',
    ]);
    const only = resolveBackends(catalog([s], [slice('t1', 't', eps.slice(1))]), s, port0(s), 'host');
    expect(only.map((b) => [b.key, b.terminating])).toEqual([['10.0.0.2:8080', true]]);
  });

  it('internalTrafficPolicy Local: this node only, and none is none (no fallback)', () => {
    const s = svc('loc', { internalTrafficPolicy: 'Local' });
    const c = catalog([s], [slice('l1', 'loc', [ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2')])]);
    expect(keys(resolveBackends(c, s, port0(s), 'host', { here: { node: 'n2' } }))).toEqual([
      '10.0.0.2:8080',
    ]);
    expect(resolveBackends(c, s, port0(s), 'host', { here: { node: 'n3' } })).toEqual([]);
    expect(resolveBackends(c, s, port0(s), 'host', {})).toEqual([]);
  });

  it('publishNotReadyAddresses: not-ready endpoints serve (terminating ones still do not)', () => {
    const s = svc('pnr', { publishNotReadyAddresses: true });
    const c = catalog(
      [s],
      [
        slice('p1', 'pnr', [
          ep('10.0.0.1', 'n1', { conditions: { ready: false } }),
          ep('10.0.0.2', 'n1', { conditions: { ready: false, terminating: true } }),
        ]),
      ],
    );
    expect(keys(resolveBackends(c, s, port0(s), 'host'))).toEqual(['10.0.0.1:8080']);
  });

  it('trafficDistribution gives tiers: node, zone (endpoint zone, or hints), site, elsewhere', () => {
    const eps = [
      ep('10.0.0.1', 'n1', { zone: 'z1' }),
      ep('10.0.0.2', 'n2', { zone: 'z1' }),
      ep('10.0.0.3', 'n3', { zone: 'z2' }),
      ep('10.0.0.4', 'n4', { zone: 'z2', hints: { forZones: [{ name: 'z1' }] } }),
    ];
    const tiers = (s: Service) =>
      Object.fromEntries(
        resolveBackends(catalog([s], [slice('d', s.metadata.name, eps)]), s, port0(s), 'host', {
          here: { node: 'n1', zone: 'z1' },
        }).map((b) => [b.host, b.tier]),
      );
    expect(tiers(svc('a', { trafficDistribution: 'PreferSameNode' }))).toEqual({
      '10.0.0.1': 0,
      '10.0.0.2': 1,
      '10.0.0.3': 2,
      '10.0.0.4': 1,
    });
    expect(tiers(svc('b', { trafficDistribution: 'PreferSameZone' }))).toEqual({
      '10.0.0.1': 1,
      '10.0.0.2': 1,
      '10.0.0.3': 2,
      '10.0.0.4': 1,
    });
    expect(tiers(svc('c'))).toEqual({
      '10.0.0.1': undefined,
      '10.0.0.2': undefined,
      '10.0.0.3': undefined,
      '10.0.0.4': undefined,
    });
  });

  it('the site is a tier between zone and fleet: an endpoint through the tunnel comes last', () => {
    const s = svc('s', { trafficDistribution: 'PreferClose' });
    const c = catalog(
      [s],
      [
        slice('s1', 's', [
          ep('10.0.0.1', 'far'),
          ep('10.0.0.2', 'near'),
          ep('10.0.0.3', 'mine', { zone: 'z1' }),
        ]),
      ],
    );
    c.applyBatch(
      (
        [
          ['far', 'site-2', 'z9'],
          ['near', 'site-1', 'z8'],
        ] as const
      ).map(([name, site, zone]) =>
        change('nodestatus', { metadata: { name }, status: 'online', site, zone } as never),
      ),
    );
    const paths = new SitePaths(c, {
      node: 'me',
      site: 'site-1',
      open: async () => undefined as never,
      datagram: async () => undefined as never,
    });
    const tiers = Object.fromEntries(
      resolveBackends(c, s, port0(s), 'host', { paths, here: { node: 'me', zone: 'z1' } }).map((b) => [
        b.host,
        [b.tier, !!b.tunnel],
      ]),
    );
    expect(tiers).toEqual({ '10.0.0.1': [3, true], '10.0.0.2': [2, false], '10.0.0.3': [1, false] });
    // a node's zone as it publishes it counts for endpoints without one; a change re-resolves
    const d = c.applyBatch([
      change('nodestatus', {
        metadata: { name: 'near' },
        status: 'online',
        site: 'site-1',
        zone: 'z1',
      } as never),
    ]);
    expect(d.backends.has('default/s')).toBe(true);
    expect(
      resolveBackends(c, s, port0(s), 'host', { paths, here: { node: 'me', zone: 'z1' } }).find(
        (b) => b.host === '10.0.0.2',
      )!.tier,
    ).toBe(1);
  });

  it('the load balancer picks the nearest tier with a healthy endpoint; the next tier takes over, and back', () => {
    const s = svc('z', { trafficDistribution: 'PreferSameZone' });
    const c = catalog(
      [s],
      [slice('z1', 'z', [ep('10.0.0.1', 'n1', { zone: 'z1' }), ep('10.0.0.2', 'n2', { zone: 'z2' })])],
    );
    const list = resolveBackends(c, s, port0(s), 'host', { here: { node: 'n9', zone: 'z1' } });
    const lb = new LoadBalancer(new RoundRobin(), { baseEjectMs: 60_000 });
    for (let i = 0; i < 5; i++) expect(lb.pick(list, 'z', '1.1.1.1')!.host).toBe('10.0.0.1');
    lb.fail(list[0]);
    for (let i = 0; i < 5; i++) expect(lb.pick(list, 'z', '1.1.1.1')!.host).toBe('10.0.0.2');
    lb.succeed(list[0]);
    expect(lb.pick(list, 'z', '1.1.1.1')!.host).toBe('10.0.0.1');
  });
});

describe('per-service load-balancing policy', () => {
  const warnings: unknown[] = [];
  const log = {
    warn: (o: unknown) => warnings.push(o),
    info() {},
    debug() {},
    error() {},
    child: () => log,
  } as unknown as Logger;
  const names = () => BUILTIN_LB_STRATEGIES.map((s) => s.name);
  const dr = (name: string, spec: Record<string, unknown>) => ({
    metadata: { name, namespace: 'default', resourceVersion: '1' },
    spec,
  });
  beforeEach(() => (warnings.length = 0));

  it('annotation, DestinationRule (by name or host) and sessionAffinity ClientIP', () => {
    const p = new ServicePolicies(names, log);
    expect(p.of(svc('a'), [])).toBeUndefined();
    expect(p.of(svc('a', {}, { 'edgecore.io/lb-strategy': 'LeastConnections' }), [])).toMatchObject({
      strategy: 'LeastConnections',
    });
    const rules = new Map([
      ['default/b', dr('b', { host: 'b', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } })],
      [
        'default/other',
        dr('other', {
          host: 'c.default.svc.cluster.local',
          trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } },
        }),
      ],
      ['default/d', dr('d', { trafficPolicy: { loadBalancer: { consistentHash: { useSourceIp: true } } } })],
    ]);
    expect(p.of(svc('b'), rules)).toMatchObject({ strategy: 'Random', source: 'destinationrule/default/b' });
    expect(p.of(svc('c'), rules)).toMatchObject({ strategy: 'ConsistentHash', hashHeader: 'x-user' });
    expect(p.of(svc('d'), rules)).toMatchObject({ strategy: 'ConsistentHash', hashHeader: null });
    expect(
      p.of(
        svc('e', {
          sessionAffinity: 'ClientIP',
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
        }),
        [],
      ),
    ).toEqual({ affinityMs: 60_000 });
    expect(p.of(svc('f', { sessionAffinity: 'ClientIP' }), [])).toEqual({ affinityMs: 10_800_000 });
    expect(warnings).toEqual([]);
  });

  it('an unknown field or value: one warning naming it, the rest applies, never a throw', () => {
    const p = new ServicePolicies(names, log);
    const rules = new Map([
      [
        'default/u',
        dr('u', {
          host: 'u',
          subsets: [{ name: 'v1' }],
          trafficPolicy: {
            connectionPool: {},
            loadBalancer: { simple: 'LEAST_REQUEST', warmupDurationSecs: 3 },
          },
        }),
      ],
      ['default/v', dr('v', { trafficPolicy: { loadBalancer: { simple: 'PASSTHROUGH' } } })],
    ]);
    expect(p.of(svc('u'), rules)).toMatchObject({ strategy: 'LeastConnections' });
    p.of(svc('u'), rules); // again: no second warning
    expect(p.of(svc('v'), rules)).toBeUndefined();
    expect(p.of(svc('w', {}, { 'edgecore.io/lb-strategy': 'Fastest' }), [])).toBeUndefined();
    expect(warnings.map((w: any) => w.field)).toEqual([
      'spec.subsets',
      'spec.trafficPolicy.connectionPool',
      'spec.trafficPolicy.loadBalancer.warmupDurationSecs',
      'spec.trafficPolicy.loadBalancer.simple',
      'edgecore.io/lb-strategy',
    ]);
  });

  it('DestinationRule outlierDetection (Istio fields, Envoy defaults) and the annotations', () => {
    const p = new ServicePolicies(names, log);
    const rules = new Map([
      [
        'default/o',
        dr('o', {
          trafficPolicy: {
            outlierDetection: {
              consecutive5xxErrors: 4,
              baseEjectionTime: '2s',
              maxEjectionPercent: 50,
              interval: '1s',
            },
          },
        }),
      ],
      ['default/g', dr('g', { trafficPolicy: { outlierDetection: { consecutiveGatewayErrors: 2 } } })],
      ['default/d', dr('d', { trafficPolicy: { outlierDetection: {} } })],
      [
        'default/bad',
        dr('bad', {
          trafficPolicy: {
            outlierDetection: { baseEjectionTime: 'soon', splitExternalLocalOriginErrors: true },
          },
        }),
      ],
    ]);
    expect(p.of(svc('o'), rules)?.outlier).toEqual({
      consecutive5xx: 4,
      consecutiveGateway: undefined,
      baseEjectionMs: 2000,
      maxEjectionPercent: 50,
    });
    expect(p.of(svc('g'), rules)?.outlier).toEqual({
      consecutive5xx: undefined,
      consecutiveGateway: 2,
      baseEjectionMs: 30_000,
      maxEjectionPercent: 10,
    });
    expect(p.of(svc('d'), rules)?.outlier).toEqual({
      consecutive5xx: 5,
      consecutiveGateway: undefined,
      baseEjectionMs: 30_000,
      maxEjectionPercent: 10,
    });
    expect(p.of(svc('bad'), rules)?.outlier?.baseEjectionMs).toBe(30_000);
    expect(warnings.map((w: any) => w.field)).toEqual([
      'spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors',
      'spec.trafficPolicy.outlierDetection.baseEjectionTime',
    ]);
    expect(p.of(svc('a', {}, { 'edgecore.io/outlier-consecutive-5xx': '3' }), [])?.outlier).toEqual({
      consecutive5xx: 3,
      baseEjectionMs: 30_000,
      maxEjectionPercent: 10,
    });
  });

  it('side by side on one load balancer: each service its own strategy, affinity by client IP', () => {
    const c = catalog(
      [
        svc('rr'),
        svc('lc', {}, { 'edgecore.io/lb-strategy': 'LeastConnections' }),
        svc('aff', { sessionAffinity: 'ClientIP' }),
        svc(
          'hash',
          {},
          { 'edgecore.io/lb-strategy': 'ConsistentHash', 'edgecore.io/consistent-hash-header': 'x-k' },
        ),
      ],
      ['rr', 'lc', 'aff', 'hash'].map((n) =>
        slice(`${n}-1`, n, [ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n1'), ep('10.0.0.3', 'n1')]),
      ),
    );
    const lb = new LoadBalancer(new RoundRobin(), {}, BUILTIN_LB_STRATEGIES);
    const idx = new BackendIndex(c, 'host', undefined, {}, new ServicePolicies(() => lb.strategyNames));
    const of = (n: string) =>
      idx.of({
        key: `default/${n}:80/TCP`,
        serviceKey: `default/${n}`,
        namespace: 'default',
        service: n,
        vip: '',
        port: 80,
        transport: 'TCP',
        protocol: 'http',
      });
    const picks = (n: string, ip: string, k = 6) =>
      Array.from({ length: k }, () => lb.pick(of(n), n, ip)!.host);
    expect(new Set(picks('rr', '1.1.1.1')).size).toBe(3);
    expect(new Set(picks('aff', '1.1.1.1')).size).toBe(1);
    expect(
      new Set(['2.2.2.2', '3.3.3.3', '4.4.4.4', '5.5.5.5'].map((ip) => picks('aff', ip, 1)[0])).size,
    ).toBeGreaterThan(1);
    // LeastConnections: a busy backend is passed over
    const busy = of('lc').find((b) => b.host === '10.0.0.1')!;
    lb.acquire(busy);
    expect(picks('lc', '1.1.1.1')).not.toContain('10.0.0.1');
    expect(policyOf(of('hash'))).toMatchObject({ strategy: 'ConsistentHash' });
    expect(hashHeaderFor(of('hash'), 'x-node')).toBe('x-k');
    expect(hashHeaderFor(of('rr'), 'x-node')).toBe('x-node');
    const byKey = (k: string) =>
      Array.from({ length: 5 }, () => lb.pick(of('hash'), 'hash', '1.1.1.1', k)!.host);
    expect(new Set(byKey('user-1')).size).toBe(1);
  });
});

describe('appProtocol', () => {
  it('http and kubernetes.io/ws → HTTP/1; h2c and grpc → HTTP/2; https → by its first byte; wss and unknown values → L4; else the port name', () => {
    const p = (appProtocol?: string, name = 'http') => portProtocol({ port: 80, name, appProtocol });
    expect(p('http', 'web')).toBe('http');
    expect(p('kubernetes.io/ws', 'web')).toBe('http');
    for (const a of ['kubernetes.io/h2c', 'grpc']) expect(p(a)).toBe('h2');
    expect(p('https')).toBe('https');
    for (const a of ['kubernetes.io/wss', 'example.com/custom']) expect(p(a)).toBe('tcp');
    for (const n of ['grpc', 'grpc-1', 'h2c', 'http2']) expect(p(undefined, n)).toBe('h2');
    expect(p(undefined, 'grpcx')).toBe('tcp');
    expect(p(undefined)).toBe('http');
    expect(p(undefined, 'http-2')).toBe('http');
    expect(p(undefined, 'db')).toBe('tcp');
    expect(portProtocol({ port: 53, protocol: 'UDP', appProtocol: 'http' })).toBe('udp');
  });
});
