import { SliceController, MAX_ENDPOINTS_PER_SLICE } from '../src/edgectl/slice-controller';
import type { PlannedObject } from '../src/edgectl/manifest';
import { createHash } from 'node:crypto';

const service = (name: string, spec: Record<string, unknown> = {}): PlannedObject => ({
  type: 'service',
  namespace: 'default',
  name,
  object: {
    metadata: { name, namespace: 'default' },
    spec: { selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: 'web' }], ...spec },
  },
});
const pod = (
  name: string,
  app: string,
  node: string,
  ip: string,
  opts: { hostPort?: number; containerPort?: number; ready?: boolean; deleting?: boolean } = {},
): PlannedObject => ({
  type: 'pod',
  namespace: 'default',
  name,
  node,
  object: {
    metadata: {
      name,
      namespace: 'default',
      labels: { app },
      ...(opts.deleting ? { deletionTimestamp: '2026-12-05T00:00:00Z' } : {}),
    },
    spec: {
      nodeName: node,
      containers: [
        {
          ports: [{ name: 'web', containerPort: opts.containerPort ?? 80, hostPort: opts.hostPort ?? 8080 }],
        },
      ],
    },
    status: {
      phase: 'Running',
      hostIP: ip,
      podIP: ip,
      conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }],
    },
  },
});

describe('the slice controller (edgectl)', () => {
  it('a service with pods gets slices; a named targetPort resolved per pod groups endpoints by ports', () => {
    const c = new SliceController('host', new Map([['n1', 'zone-a']]));
    c.load([], [], []);
    c.note(service('web'), false);
    c.note(pod('web-0', 'web', 'n1', '10.0.0.1'), false);
    c.note(pod('web-1', 'web', 'n2', '10.0.0.2'), false);
    c.note(pod('web-2', 'web', 'n2', '10.0.0.3', { hostPort: 9090 }), false);
    c.note(pod('other', 'db', 'n2', '10.0.0.9'), false);
    const { apply, remove } = c.plan();
    expect(remove).toEqual([]);
    const byPort = new Map(apply.map((o) => [o.object.ports[0].port, o.object]));
    expect([...byPort.keys()].sort()).toEqual([8080, 9090]);
    const s8080 = byPort.get(8080);
    expect(s8080.metadata.labels).toEqual({
      'kubernetes.io/service-name': 'web',
      'endpointslice.kubernetes.io/managed-by': 'edgectl.edgecore.io',
    });
    expect(s8080.endpoints).toEqual([
      {
        addresses: ['10.0.0.1'],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: 'n1',
        zone: 'zone-a',
        targetRef: { kind: 'Pod', name: 'web-0', namespace: 'default' },
      },
      {
        addresses: ['10.0.0.2'],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: 'n2',
        targetRef: { kind: 'Pod', name: 'web-1', namespace: 'default' },
      },
    ]);
    expect(s8080.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]);
  });

  it('only what changed is published again; a terminating pod is marked so; a deleted service loses its slices', () => {
    const c = new SliceController('container');
    c.load([], [], []);
    c.note(service('web'), false);
    c.note(pod('web-0', 'web', 'n1', '10.0.0.1'), false);
    c.note(service('db'), false);
    c.note(pod('db-0', 'db', 'n1', '10.0.0.5'), false);
    const first = c.plan().apply;
    expect(first.map((o) => o.object.endpoints[0].addresses[0]).sort()).toEqual(['10.0.0.1', '10.0.0.5']);
    // container networking: podIP:containerPort
    expect(first.find((o) => o.name.startsWith('web'))!.object.ports[0].port).toBe(80);
    c.note(pod('web-0', 'web', 'n1', '10.0.0.1'), false); // the same again: nothing to publish
    expect(c.plan()).toEqual({ apply: [], remove: [] });
    c.note(pod('web-0', 'web', 'n1', '10.0.0.1', { deleting: true }), false);
    const t = c.plan().apply;
    expect(t).toHaveLength(1);
    expect(t[0].object.endpoints[0].conditions).toEqual({ ready: false, serving: true, terminating: true });
    c.note(service('web'), true);
    const gone = c.plan();
    expect(gone.apply).toEqual([]);
    expect(gone.remove.map((o) => o.name)).toEqual([t[0].name]);
  });

  it('no pod: one empty slice; more than 100 endpoints: several slices; hand-made slices are left alone', () => {
    const c = new SliceController('host');
    c.load(
      [],
      [],
      [
        {
          metadata: { name: 'plc', namespace: 'default', labels: { 'kubernetes.io/service-name': 'plc' } },
          endpoints: [{ addresses: ['192.0.2.10'] }],
        },
      ],
    );
    c.note(service('lonely'), false);
    const empty = c.plan().apply;
    expect(empty.map((o) => [o.name, o.object.endpoints])).toEqual([['lonely-empty', []]]);
    c.note(service('big'), false);
    for (let i = 0; i < MAX_ENDPOINTS_PER_SLICE + 20; i++)
      c.note(pod(`big-${String(i).padStart(3, '0')}`, 'big', 'n1', `10.1.${i >> 8}.${i & 255}`), false);
    const big = c.plan().apply;
    expect(big.map((o) => o.object.endpoints.length)).toEqual([100, 20]);
    c.note(pod('lonely-0', 'lonely', 'n1', '10.0.0.7'), false);
    const filled = c.plan();
    expect(filled.remove.map((o) => o.name)).toEqual(['lonely-empty']);
    expect(filled.apply).toHaveLength(1);
    c.note(service('plc', { selector: undefined }), false);
    expect(c.plan()).toEqual({ apply: [], remove: [] });
  });

  it("a slice is named after its ports' JSON; pods serving different ports of a service are apart", () => {
    const c = new SliceController('host');
    c.load([], [], []);
    const ports = [
      { name: 'http', port: 80, targetPort: 'web' },
      { name: 'admin', port: 81, targetPort: 'admin', appProtocol: '' },
      { name: 'h2', port: 82, targetPort: 'web', appProtocol: 'kubernetes.io/h2c' },
    ];
    c.note(service('two', { ports }), false);
    const withAdmin = pod('two-0', 'two', 'n1', '10.0.0.1');
    withAdmin.object.spec.containers[0].ports.push({ name: 'admin', containerPort: 81, hostPort: 8081 });
    c.note(withAdmin, false);
    c.note(pod('two-1', 'two', 'n1', '10.0.0.2'), false); // no admin port
    const out = c.plan().apply.map((o) => o.object);
    const name = (p: unknown) =>
      `two-${createHash('sha256').update(JSON.stringify(p)).digest('hex').slice(0, 5)}`;
    const both = [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'admin', port: 8081, protocol: 'TCP', appProtocol: '' },
      { name: 'h2', port: 8080, protocol: 'TCP', appProtocol: 'kubernetes.io/h2c' },
    ];
    const webOnly = [both[0], both[2]];
    expect(
      out.map((sl) => [sl.metadata.name, sl.ports, sl.endpoints.map((e: any) => e.targetRef.name)]),
    ).toEqual(
      [
        [name(both), both, ['two-0']],
        [name(webOnly), webOnly, ['two-1']],
      ].sort((a, b) => (JSON.stringify(a[1]) < JSON.stringify(b[1]) ? -1 : 1)),
    );
  });

  it('publishNotReadyAddresses: a pod that is not ready is ready in the slice', () => {
    const c = new SliceController('host');
    c.load([], [], []);
    c.note(service('peers', { publishNotReadyAddresses: true }), false);
    c.note(pod('peers-0', 'peers', 'n1', '10.0.0.1', { ready: false }), false);
    expect(c.plan().apply[0].object.endpoints[0].conditions.ready).toBe(true);
  });
});
