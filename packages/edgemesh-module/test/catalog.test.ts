import type { MetaChange, MetaClient } from '@edgecore/metamanager';
import { createServer, type AddressInfo } from 'node:net';
import {
  flatKey,
  IndexMap,
  portalPortRange,
  proxiedByUs,
  resolveBackends,
  ServiceCatalog,
  VipAllocator,
  VipTable,
  type Pod,
  type Service,
} from '../src';
import { pod, service, startMesh, tmpDir } from './helpers';

const put = (type: string, o: Service | Pod): MetaChange => ({
  operation: 'update',
  namespace: o.metadata.namespace ?? 'default',
  type,
  name: o.metadata.name,
  object: o,
});
const del = (type: string, ns: string, name: string): MetaChange => ({
  operation: 'delete',
  namespace: ns,
  type,
  name,
  object: null,
});
const hosts = (c: ServiceCatalog, s: string): string[] =>
  resolveBackends(
    c,
    c.services.get(`default/${s}`)!,
    c.services.get(`default/${s}`)!.spec!.ports![0],
    'host',
  ).map((b) => b.key);

describe('ServiceCatalog batches', () => {
  it('a batch says which services it touched and whose backends may have changed', () => {
    const c = new ServiceCatalog();
    c.load([service('web'), service('api'), service('db')], [], [pod('w1', 'web', 9001)]);
    const d = c.applyBatch([
      put('pod', pod('w2', 'web', 9002)),
      put('service', service('new')),
      del('service', 'default', 'db'),
      put('pod', pod('other', 'nobody', 9009)),
      { ...put('pod', pod('x', 'x', 1)), type: 'configmap' }, // not the catalog's
    ]);
    expect(d.applied).toBe(4);
    expect([...d.services.keys()].sort()).toEqual(['default/db', 'default/new']);
    expect(d.services.get('default/db')!.current).toBeUndefined();
    expect(d.services.get('default/new')!.previous).toBeUndefined();
    // the web pod touches web only; the pod no selector picks touches nothing
    expect([...d.backends].sort()).toEqual(['default/db', 'default/new', 'default/web']);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9001', '127.0.0.1:9002']);
  });

  it('pods are found through their labels: relabelled, deleted, in another namespace', () => {
    const c = new ServiceCatalog();
    c.load([service('web'), service('api')], [], [pod('w1', 'web', 9001), pod('w2', 'web', 9002)]);
    const moved = pod('w1', 'api', 9001);
    const d = c.applyBatch([put('pod', moved), put('pod', pod('w3', 'web', 9003, { ns: 'other' }))]);
    expect([...d.backends].sort()).toEqual(['default/api', 'default/web']);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9002']);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:9001']);
    c.applyBatch([del('pod', 'default', 'w2')]);
    expect(hosts(c, 'web')).toEqual([]);
    // a status update with the same labels keeps the pod's place (backend order unchanged)
    c.applyBatch([put('pod', pod('a', 'api', 9100)), put('pod', pod('w1', 'api', 9001))]);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:9001', '127.0.0.1:9100']);
  });

  it('an update moves an object in the indexes by what changed: a new selector, new labels, a slice of another service', () => {
    const c = new ServiceCatalog();
    c.load([service('web'), service('api')], [], [pod('w1', 'web', 9001), pod('a1', 'api', 9101)]);
    // web now selects api's pods (and a tier label no pod has yet)
    const d = c.applyBatch([put('service', service('web', 'default', { selector: { app: 'api' } }))]);
    expect(d.services.get('default/web')!.previous?.spec?.selector).toEqual({ app: 'web' });
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9101']);
    expect([...c.applyBatch([put('pod', pod('w8', 'web', 9008))]).backends]).toEqual([]); // nobody selects app=web
    // w1 relabelled to api: both services pick it; a later pod of app=web is nobody's now
    const relabelled = pod('w1', 'api', 9001);
    const d2 = c.applyBatch([put('pod', relabelled), put('pod', pod('w9', 'web', 9009))]);
    expect([...d2.backends].sort()).toEqual(['default/api', 'default/web']);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9101', '127.0.0.1:9001']);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:9101', '127.0.0.1:9001']);
    // a pod with an extra label keeps its place under the label it kept
    c.applyBatch([
      put('pod', {
        ...pod('a1', 'api', 9101),
        metadata: { name: 'a1', namespace: 'default', labels: { app: 'api', v: '2' } },
      }),
    ]);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:9101', '127.0.0.1:9001']);
    // a slice that moves from web to api: web's backends come from pods again, api's from it
    const slice = (svc: string) => ({
      operation: 'update' as const,
      namespace: 'default',
      type: 'endpointslice',
      name: 'moving',
      object: {
        kind: 'EndpointSlice',
        metadata: { name: 'moving', namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
        addressType: 'IPv4',
        endpoints: [{ addresses: ['127.0.0.1'] }],
        ports: [{ name: 'http-0', port: 7000, protocol: 'TCP' }],
      },
    });
    const d3 = c.applyBatch([slice('web')]);
    expect([...d3.backends]).toEqual(['default/web']);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:7000']);
    const d4 = c.applyBatch([slice('api')]);
    expect([...d4.backends].sort()).toEqual(['default/api', 'default/web']);
    expect(c.hasSlices('default/web')).toBe(false);
    expect(hosts(c, 'web')).toEqual(['127.0.0.1:9101', '127.0.0.1:9001']);
    expect(hosts(c, 'api')).toEqual(['127.0.0.1:7000']);
    c.applyBatch([del('endpointslice', 'default', 'moving'), del('service', 'default', 'web')]);
    expect(c.hasSlices('default/api')).toBe(false);
    expect(c.hasNamespace('default')).toBe(true);
    c.applyBatch([del('service', 'default', 'api')]);
    expect(c.hasNamespace('default')).toBe(false);
  });

  it('a service deleted and made again in one batch is one change from its first state to its last', () => {
    const c = new ServiceCatalog();
    c.load([service('web')], [], []);
    const again = service('web', 'default', { clusterIP: '10.96.0.10' });
    const d = c.applyBatch([del('service', 'default', 'web'), put('service', again)]);
    expect(d.services.get('default/web')!.previous?.spec?.clusterIP).toBe('None');
    expect(d.services.get('default/web')!.current).toBe(c.getService('default', 'web'));
    expect(d.services.get('default/web')!.current?.spec?.clusterIP).toBe('10.96.0.10');
    expect(c.hasNamespace('default')).toBe(true);
  });
});

describe('what the catalog keeps of an object', () => {
  // a service, a slice and a pod as the API server hands them out: managedFields, annotations
  // EdgeMesh never reads, status it does not use
  const managedFields = [
    { manager: 'kubectl', operation: 'Update', fieldsV1: { 'f:spec': { 'f:ports': {} } } },
  ];
  const apiService = (name: string) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: 'shop',
      uid: 'b9c1',
      resourceVersion: '77',
      labels: { app: name, 'service.edgemesh.kubeedge.io/service-proxy-name': 'edgemesh' },
      annotations: {
        'kubectl.kubernetes.io/last-applied-configuration': '{"apiVersion":"v1","kind":"Service"}',
        'edgecore.io/lb-strategy': 'random',
        'service.kubernetes.io/topology-mode': 'Auto',
      },
      managedFields,
    },
    spec: {
      clusterIP: '10.96.0.7',
      clusterIPs: ['10.96.0.7'],
      ipFamilies: ['IPv4'],
      selector: { app: name },
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }],
      sessionAffinity: 'None',
    },
    status: { loadBalancer: {} },
  });
  const apiSlice = (name: string, ip: string) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${name}-x1`,
      namespace: 'shop',
      labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'ctl' },
      managedFields,
    },
    addressType: 'IPv4',
    endpoints: [
      {
        addresses: [ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: 'edge-1',
        zone: 'z1',
        targetRef: { kind: 'Pod', name: `${name}-0`, namespace: 'shop', uid: 'p1' },
      },
    ],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });
  const apiPod = (name: string) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'shop', labels: { app: 'web' }, managedFields },
    spec: {
      nodeName: 'edge-1',
      containers: [
        {
          name: 'web',
          image: 'nginx:1.27',
          env: [{ name: 'A', value: 'b' }],
          ports: [{ name: 'http', containerPort: 8080, hostPort: 18080, protocol: 'TCP' }],
        },
      ],
    },
    status: {
      phase: 'Running',
      hostIP: '192.0.2.1',
      podIP: '10.244.0.9',
      conditions: [
        { type: 'Initialized', status: 'True' },
        { type: 'Ready', status: 'True' },
      ],
      containerStatuses: [{ name: 'web', ready: true, restartCount: 0 }],
    },
  });
  const change = (type: string, o: { metadata: { name: string } }): MetaChange => ({
    operation: 'update',
    namespace: 'shop',
    type,
    name: o.metadata.name,
    object: o,
  });

  it('keeps the labels the service filter reads: a service handed to another proxy stays so once kept', () => {
    const c = new ServiceCatalog();
    const labelled = (name: string, labels: Record<string, string>) =>
      change('service', { ...apiService(name), metadata: { ...apiService(name).metadata, labels } });
    c.applyBatch([
      labelled('mine', { app: 'x', 'service.kubernetes.io/service-proxy-name': 'edgemesh' }),
      labelled('kp', { app: 'x', 'service.kubernetes.io/service-proxy-name': 'cilium' }),
      labelled('em', { 'service.edgemesh.kubeedge.io/service-proxy-name': 'other' }),
      labelled('off', { noproxy: 'edgemesh', tier: 'web' }),
      labelled('plain', { app: 'x', tier: 'web' }),
    ]);
    const by = (n: string, ours = 'edgemesh') => proxiedByUs(c.getService('shop', n)!.metadata.labels, ours);
    expect(['mine', 'kp', 'em', 'off', 'plain'].map((n) => by(n))).toEqual([true, false, false, false, true]);
    expect(by('kp', 'cilium')).toBe(true);
    expect(c.getService('shop', 'plain')!.metadata.labels).toBeUndefined(); // nothing it reads
    expect(c.getService('shop', 'off')!.metadata.labels).toEqual({ noproxy: 'edgemesh' });
  });

  it('keeps the fields EdgeMesh reads, the labels and annotations it reads, and one copy of what objects repeat', () => {
    const c = new ServiceCatalog();
    c.applyBatch([
      change('service', apiService('web')),
      change('service', apiService('api')),
      change('endpointslice', apiSlice('web', '192.0.2.1')),
      change('endpointslice', apiSlice('api', '192.0.2.2')),
      change('pod', apiPod('web-0')),
      change('pod', apiPod('web-1')),
    ]);
    const web = c.getService('shop', 'web')!;
    expect(web).toEqual({
      metadata: {
        name: 'web',
        namespace: 'shop',
        labels: { 'service.edgemesh.kubeedge.io/service-proxy-name': 'edgemesh' },
        annotations: { 'edgecore.io/lb-strategy': 'random', 'service.kubernetes.io/topology-mode': 'Auto' },
        resourceVersion: '77',
      },
      spec: {
        clusterIP: '10.96.0.7',
        selector: { app: 'web' },
        ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }],
        sessionAffinity: 'None',
      },
    });
    const [sl] = c.slicesOf('shop/web');
    // (as JSON: an endpoint is kept as one object reading its zone from a shared part; no targetRef)
    expect(JSON.parse(JSON.stringify(sl))).toEqual({
      metadata: { name: 'web-x1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [
        {
          addresses: ['192.0.2.1'],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: 'edge-1',
          zone: 'z1',
        },
      ],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
    const p0 = c.pods.get('shop/web-0')!;
    expect(p0).toEqual({
      metadata: { name: 'web-0', namespace: 'shop', labels: { app: 'web' } },
      spec: {
        nodeName: 'edge-1',
        containers: [{ ports: [{ name: 'http', containerPort: 8080, hostPort: 18080, protocol: 'TCP' }] }],
      },
      status: {
        phase: 'Running',
        hostIP: '192.0.2.1',
        podIP: '10.244.0.9',
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    });
    // shared, and frozen because shared
    const [other] = c.slicesOf('shop/api');
    expect(other.ports).toBe(sl.ports);
    expect(other.endpoints![0].conditions).toBe(sl.endpoints![0].conditions);
    expect(c.pods.get('shop/web-1')!.spec).toBe(p0.spec); // one template, one spec
    expect(Object.isFrozen(p0.spec)).toBe(true);
    // found by what it holds: another node, another flag, another spec (each one copy); a pod that
    // names itself (a hostname) keeps its own; one Ready condition per status
    const variant = (name: string, spec: Record<string, unknown>, ready = 'True') => {
      const p = apiPod(name);
      return change('pod', {
        ...p,
        spec: { ...p.spec, ...spec },
        status: { ...p.status, conditions: [{ type: 'Ready', status: ready }] },
      });
    };
    c.applyBatch([
      variant('e2-a', { nodeName: 'edge-2' }),
      variant('e2-b', { nodeName: 'edge-2' }, 'False'),
      variant('e2-h', { nodeName: 'edge-2', hostNetwork: true }),
      variant('e2-n', { nodeName: 'edge-2', hostname: 'n' }),
      variant('e2-bad', { nodeName: 7 }),
      variant('e2-bad2', { nodeName: 7 }),
    ]);
    const spec = (n: string) => c.pods.get(`shop/${n}`)!.spec!;
    expect(spec('e2-a')).toEqual({ nodeName: 'edge-2', containers: p0.spec!.containers });
    expect(spec('e2-a').containers).toBe(p0.spec!.containers);
    expect(spec('e2-b')).toBe(spec('e2-a'));
    expect(spec('e2-a')).not.toBe(p0.spec);
    expect(spec('e2-h')).toEqual({ nodeName: 'edge-2', hostNetwork: true, containers: p0.spec!.containers });
    expect(spec('e2-h')).not.toBe(spec('e2-a'));
    expect(spec('e2-n')).toEqual({ nodeName: 'edge-2', hostname: 'n', containers: p0.spec!.containers });
    expect(spec('e2-bad2')).toBe(spec('e2-bad')); // malformed, by its JSON all the same
    expect(Object.isFrozen(spec('e2-h'))).toBe(true);
    const cond = (n: string) => c.pods.get(`shop/${n}`)!.status!.conditions;
    expect(cond('e2-a')).toBe(p0.status!.conditions);
    expect(cond('e2-b')).toEqual([{ type: 'Ready', status: 'False' }]);
    expect(cond('e2-b')).not.toBe(cond('e2-a'));
    for (const n of ['e2-a', 'e2-b', 'e2-h', 'e2-n', 'e2-bad', 'e2-bad2'])
      c.apply({ ...change('pod', apiPod(n)), operation: 'delete' });
    expect(c.getService('shop', 'api')!.spec!.ports).toBe(web.spec!.ports);
    expect(Object.isFrozen(sl.endpoints![0].conditions)).toBe(true);
    expect(() => {
      'use strict';
      (sl.ports![0] as { port: number }).port = 1;
    }).toThrow(TypeError);
    // what the objects were made of is not frozen or kept
    const given = apiSlice('db', '192.0.2.3');
    c.apply(change('endpointslice', given));
    expect(Object.isFrozen(given.ports)).toBe(false);
    // and what it keeps is what the rules need: the named targetPort found on the compact pod
    expect(resolveBackends(c, web, web.spec!.ports![0], 'host').map((b) => `${b.host}:${b.port}`)).toEqual([
      '192.0.2.1:8080',
    ]);
  });

  it("whole: the objects as given (the cloud's slice controller compares what it holds)", () => {
    const c = new ServiceCatalog({ whole: true });
    const s = apiService('web');
    const sl = apiSlice('web', '192.0.2.1');
    const p = apiPod('web-0');
    c.applyBatch([change('service', s), change('endpointslice', sl), change('pod', p)]);
    expect(c.getService('shop', 'web')).toBe(s);
    expect([...c.slicesOf('shop/web')][0]).toBe(sl);
    expect(c.pods.get('shop/web-0')).toBe(p);
  });
});

describe('IndexMap', () => {
  it('keeps a lone value inline, a set from the second, and drops the key with its last value', () => {
    const m = new IndexMap();
    m.add('k', 'a');
    m.add('k', 'a');
    expect([...m.values('k')]).toEqual(['a']);
    expect(m.count('k')).toBe(1);
    m.add('k', 'b');
    m.add('k', 'c');
    expect([...m.values('k')]).toEqual(['a', 'b', 'c']);
    expect(m.holds('k', 'b')).toBe(true);
    m.delete('k', 'a');
    m.delete('k', 'c');
    expect([...m.values('k')]).toEqual(['b']);
    expect(m.count('k')).toBe(1);
    m.delete('k', 'x');
    expect(m.has('k')).toBe(true);
    m.delete('k', 'b');
    expect(m.has('k')).toBe(false);
    expect([...m.values('k')]).toEqual([]);
    expect(m.count('nope')).toBe(0);
    m.add('j', 'a');
    m.add('j', 'b');
    m.deleteKey('j');
    expect(m.size).toBe(0);
  });

  it('flatKey leaves a key as it was (Kubernetes names and label pairs are ASCII)', () => {
    const ns = 'kube-system';
    const name = 'a-very-long-service-name-0123456789'.slice(2);
    for (const k of [`${ns}/${name}`, `${ns}\0app.kubernetes.io/name=${name}`, 'x'])
      expect(flatKey(k)).toBe(k);
  });
});

/** A MetaClient that stores nothing: `over` replaces what a test watches. */
function metaStub(over: Partial<MetaClient> = {}): MetaClient {
  return {
    get: async () => undefined,
    list: async () => [],
    put: async () => undefined,
    delete: async () => undefined,
    ...over,
  } as MetaClient;
}

/** A VipTable whose log says nothing. */
const quietTable = (meta: MetaClient): VipTable =>
  new VipTable('198.18.9.0/29', meta, { error: () => undefined, warn: () => undefined } as never);

describe('VipAllocator.allocateMany', () => {
  it('takes every VIP in one pass with one cursor write, and reports the ones the pool cannot serve', async () => {
    const writes: string[] = [];
    const meta = metaStub({
      put: async (_ns: string, type: string, name: string) => void writes.push(`${type}/${name}`),
    });
    const v = new VipAllocator('198.18.9.0/29', meta); // .1 … .6
    const got = await v.allocateMany(['default/a', 'default/b', 'default/a2']);
    expect(got).toEqual(['198.18.9.1', '198.18.9.2', '198.18.9.3']);
    expect(writes.filter((w) => w.startsWith('vipcursor/'))).toHaveLength(1);
    const more = await v.allocateMany(['x/1', 'x/2', 'x/3', 'x/4', 'default/a']);
    expect(more.slice(0, 3)).toEqual(['198.18.9.4', '198.18.9.5', '198.18.9.6']);
    expect(more[3]).toBeInstanceOf(Error);
    expect((more[3] as Error & { code: string }).code).toBe('EDGEMESH_VIP_EXHAUSTED');
    expect(more[4]).toBe('198.18.9.1'); // already had one
  });

  it('with putMany, the pass is one request: the new records and the cursor together', async () => {
    const calls: string[][] = [];
    const meta = metaStub({
      put: async () => {
        throw new Error('put per record');
      },
      putMany: async (items) => void calls.push(items.map((i) => `${i.type}/${i.name}`)),
    });
    const v = new VipAllocator('198.18.9.0/29', meta);
    expect(await v.allocateMany(['default/a', 'default/b'])).toEqual(['198.18.9.1', '198.18.9.2']);
    expect(calls).toHaveLength(1);
    expect(calls[0].filter((c) => c.startsWith('vipcursor/'))).toHaveLength(1);
    expect(calls[0]).toHaveLength(3);
    expect(await v.allocateMany(['default/a'])).toEqual(['198.18.9.1']); // had one: nothing written
    expect(calls).toHaveLength(1);
  });

  it('VipTable.updateMany: the VIPs of the services that went are released in one request', async () => {
    const deletes: string[][] = [];
    const t = quietTable(
      metaStub({
        putMany: async () => undefined,
        delete: async () => {
          throw new Error('delete per record');
        },
        deleteMany: async (items) => void deletes.push(items.map((i) => `${i.type}/${i.name}`)),
      }),
    );
    const svc = (clusterIP: string): Service => ({ metadata: { name: 'x' }, spec: { clusterIP } });
    await t.ensure([
      ['ns/a', svc('None')],
      ['ns/b', svc('None')],
      ['ns/c', svc('None')],
    ]);
    const c = t.vipOf('ns/c');
    const need = await t.updateMany(
      new Map([
        ['ns/a', { previous: svc('None'), current: undefined }],
        ['ns/b', { previous: svc('None'), current: undefined }],
        ['ns/c', { previous: svc('None'), current: svc('None') }],
      ]),
    );
    expect(need.map(([k]) => k)).toEqual(['ns/c']);
    expect(deletes).toEqual([['vip/ns.a', 'vip/ns.b']]);
    expect(t.vipOf('ns/a')).toBeUndefined();
    expect(t.vipOf('ns/c')).toBe(c);
    expect(t.allocated).toBe(1);
  });
});

describe('portal ports (portalPortRange, next-fit as kube-proxy --proxy-port-range)', () => {
  it('a portal takes its port from the range, skips one in use, and waits for the range to free up', async () => {
    // the test holds the only port of the range: no portal can open until it lets go
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', () => r()));
    const port = (held.address() as AddressInfo).port;
    const d = tmpDir();
    const n = await startMesh(d.db, { portalPortRange: `${port}-${port}` });
    try {
      await n.put(service('first'));
      expect(n.mesh.portals.table()).toEqual([]); // logged 'cannot open portal'; nothing else broke
      await new Promise<void>((r) => held.close(() => r()));
      await n.put(service('second'));
      expect(n.mesh.portals.table().map((p) => [p.service, p.listenPort])).toEqual([['second', port]]);
    } finally {
      held.close();
      await n.stop();
      d.cleanup();
    }
  });

  it.each([
    ['auto', true],
    ['0', false],
    ['2000-2001', true],
  ])('portalPortRange %s', (spec, ranged) => {
    const r = portalPortRange(spec);
    expect(r !== undefined).toBe(ranged);
    if (spec === '2000-2001') expect(r).toEqual({ from: 2000, to: 2001 });
  });

  it('a bad range is a typed error naming the key', () => {
    expect(() => portalPortRange('9-3')).toThrow(
      expect.objectContaining({ code: 'EDGEMESH_INVALID_OPTION' }),
    );
    expect(() => portalPortRange('9-3')).toThrow(/portalPortRange/);
  });
});

describe('VipTable both ways', () => {
  it('a VIP names its service: allocated, a real ClusterIP in or outside the pool; never an endpoint, a dropped or a conflicting one', async () => {
    const t = quietTable(metaStub());
    const svc = (clusterIP: string): Service => ({ metadata: { name: 'x' }, spec: { clusterIP } });
    await t.ensure([
      ['ns/alloc', svc('None')],
      ['ns/inpool', svc('198.18.9.5')],
      ['ns/outside', svc('10.96.0.10')],
      ['ns/clash', svc('198.18.9.5')], // the same real address as ns/inpool: no VIP
    ]);
    const alloc = t.vipOf('ns/alloc')!;
    expect(t.serviceOf(alloc)).toBe('ns/alloc');
    expect(t.serviceOf('198.18.9.5')).toBe('ns/inpool');
    expect(t.serviceOf('10.96.0.10')).toBe('ns/outside');
    expect(t.vipOf('ns/clash')).toBeUndefined();
    expect(t.serviceOf('198.18.9.6')).toBeUndefined(); // free
    expect(t.serviceOf('not an address')).toBeUndefined();
    // an endpoint VIP is the endpoint's, not a service's
    await t.ensureEndpoints('ns/alloc', ['web-0']);
    const ep = t.endpointVip('ns/alloc', 'web-0')!;
    expect(t.serviceOf(ep)).toBeUndefined();
    expect(t.endpointOf(ep)).toEqual({ service: 'ns/alloc', label: 'web-0' });
    // a ClusterIP that changed: the old address no longer names it, the new one does
    expect(
      await t.updateMany([['ns/outside', { previous: svc('10.96.0.10'), current: svc('10.96.0.11') }]]),
    ).toHaveLength(1); // still needs a VIP
    await t.ensure([['ns/outside', svc('10.96.0.11')]]);
    expect(t.serviceOf('10.96.0.10')).toBeUndefined();
    expect(t.serviceOf('10.96.0.11')).toBe('ns/outside');
    // gone: none of its addresses names it
    await t.updateMany([
      ['ns/alloc', { previous: svc('None'), current: undefined }],
      ['ns/inpool', { previous: svc('198.18.9.5'), current: undefined }],
    ]);
    expect(t.serviceOf(alloc)).toBeUndefined();
    expect(t.serviceOf('198.18.9.5')).toBeUndefined();
  });
});
