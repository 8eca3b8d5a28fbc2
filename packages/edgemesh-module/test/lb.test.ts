import {
  ConsistentHash,
  createStrategy,
  LeastConnections,
  LoadBalancer,
  RandomStrategy,
  resolveBackends,
  RoundRobin,
  ServiceCatalog,
  SessionStickiness,
  type Backend,
  type PickContext,
} from '../src';
import { pod, service } from './helpers';

const B = (n: number): Backend[] =>
  Array.from({ length: n }, (_, i) => ({
    host: '10.0.0.' + (i + 1),
    port: 80,
    key: `10.0.0.${i + 1}:80`,
  }));
const ctx = (clientIp = '1.2.3.4', extra: Partial<PickContext> = {}): PickContext => ({
  clientIp,
  active: new Map(),
  scope: 's',
  ...extra,
});

describe('LB strategies', () => {
  it('RoundRobin cycles; scopes are independent', () => {
    const s = new RoundRobin();
    const b = B(3);
    expect([0, 1, 2, 3].map(() => s.pick(b, ctx()).key)).toEqual([
      '10.0.0.1:80',
      '10.0.0.2:80',
      '10.0.0.3:80',
      '10.0.0.1:80',
    ]);
    expect(s.pick(b, ctx('x', { scope: 'other' })).key).toBe('10.0.0.1:80');
  });

  it('Random hits every backend roughly evenly', () => {
    const s = new RandomStrategy();
    const counts = new Map<string, number>();
    for (let i = 0; i < 6000; i++) {
      const k = s.pick(B(3)).key;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const c of counts.values()) expect(c).toBeGreaterThan(1500);
    expect(counts.size).toBe(3);
  });

  it('SessionStickiness: a client IP stays on its backend; expires after the timeout', async () => {
    const s = new SessionStickiness(50);
    const b = B(3);
    const first = s.pick(b, ctx('9.9.9.9')).key;
    for (let i = 0; i < 10; i++) expect(s.pick(b, ctx('9.9.9.9')).key).toBe(first);
    const other = new Set(['1.1.1.1', '2.2.2.2', '3.3.3.3'].map((ip) => s.pick(b, ctx(ip)).key));
    expect(other.size).toBeGreaterThan(1);
    // its backend leaves: re-homed
    expect(
      s.pick(
        b.filter((x) => x.key !== first),
        ctx('9.9.9.9'),
      ).key,
    ).not.toBe(first);
  });

  it('ConsistentHash: same key → same backend; a leaving backend only moves its own keys', () => {
    const s = new ConsistentHash();
    const b = B(4);
    const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
    const before = new Map(keys.map((k) => [k, s.pick(b, ctx('x', { hashKey: k })).key]));
    for (const k of keys.slice(0, 50)) expect(s.pick(b, ctx('x', { hashKey: k })).key).toBe(before.get(k));
    const gone = b[2].key;
    const after = new Map(
      keys.map((k) => [
        k,
        s.pick(
          b.filter((x) => x.key !== gone),
          ctx('x', { hashKey: k }),
        ).key,
      ]),
    );
    let moved = 0;
    for (const k of keys) {
      if (before.get(k) !== gone) expect(after.get(k)).toBe(before.get(k));
      else moved++;
    }
    expect(moved).toBeGreaterThan(300); // ~1/4 of the keys, and only those
    expect(moved).toBeLessThan(700);
    // spread: every backend owns a fair share
    const share = new Map<string, number>();
    for (const v of before.values()) share.set(v, (share.get(v) ?? 0) + 1);
    for (const c of share.values()) expect(c).toBeGreaterThan(250);
  });

  it('LeastConnections picks the least loaded', () => {
    const s = new LeastConnections();
    const b = B(3);
    const active = new Map([
      ['10.0.0.1:80', 5],
      ['10.0.0.2:80', 1],
      ['10.0.0.3:80', 3],
    ]);
    expect(s.pick(b, ctx('x', { active })).key).toBe('10.0.0.2:80');
  });

  it('createStrategy knows the five names and rejects others', () => {
    for (const n of ['RoundRobin', 'Random', 'SessionStickiness', 'ConsistentHash', 'LeastConnections'])
      expect(createStrategy(n).name).toBe(n);
    expect(() => createStrategy('Fastest')).toThrow(/unknown lbStrategy/);
  });
});

describe('passive health', () => {
  it('ejects with growing cool-down, skips ejected backends, tries anyway when all are ejected', () => {
    // the clock is Jest's: a 40 ms wait on a loaded machine could outlast the 50 ms cool-down
    jest.useFakeTimers({ now: 1_000_000 });
    try {
      ejectionCase();
    } finally {
      jest.useRealTimers();
    }
  });
});

/** Passive health's course on a clock that moves only when told. */
function ejectionCase(): void {
  const lb = new LoadBalancer(new RoundRobin(), { baseEjectMs: 30, maxEjectMs: 50 });
  const b = B(2);
  lb.fail(b[0]);
  for (let i = 0; i < 4; i++) expect(lb.pick(b, 's', 'ip')!.key).toBe(b[1].key);
  lb.fail(b[1]);
  expect(lb.pick(b, 's', 'ip')).toBeDefined(); // all ejected: still a pick
  expect(lb.stats.panicPicks).toBe(1);
  jest.advanceTimersByTime(60);
  expect(lb.isEjected(b[0].key)).toBe(false); // came back after the cool-down
  lb.fail(b[0]);
  lb.fail(b[0]); // second consecutive failure: 60 ms, capped at 50
  jest.advanceTimersByTime(40);
  expect(lb.isEjected(b[0].key)).toBe(true);
  lb.succeed(b[0]);
  expect(lb.isEjected(b[0].key)).toBe(false);
  expect(lb.pick(b, 's', 'ip', undefined, new Set(b.map((x) => x.key)))).toBeUndefined();
}

describe('backends from the catalog', () => {
  const cat = (): ServiceCatalog => {
    const c = new ServiceCatalog();
    const notReady = pod('nr', 'web', 9003);
    notReady.status!.conditions = [{ type: 'Ready', status: 'False' }];
    const pending = pod('pe', 'web', 9004);
    pending.status!.phase = 'Pending';
    const named = pod('named', 'api', 9100, { containerPort: 8080, portName: 'web' });
    named.status!.podIP = '10.244.0.7';
    const hostNet = pod('hn', 'hn', 0, { containerPort: 7000 });
    hostNet.spec!.hostNetwork = true;
    hostNet.status!.hostIP = '192.0.2.5';
    c.load(
      [
        service('web'),
        service('api', 'default', {
          selector: { app: 'api' },
          ports: [{ name: 'http', port: 80, targetPort: 'web' }],
        }),
        service('ext', 'default', { selector: undefined }),
      ],
      [
        {
          metadata: { name: 'ext', namespace: 'default' },
          subsets: [
            {
              addresses: [{ ip: '192.0.2.10' }, { ip: '192.0.2.11' }],
              ports: [{ name: 'http-0', port: 8443 }],
            },
          ],
        },
      ],
      [
        pod('a', 'web', 9001),
        pod('b', 'web', 9002),
        notReady,
        pending,
        named,
        hostNet,
        pod('other-ns', 'web', 9009, { ns: 'prod' }),
      ],
    );
    return c;
  };

  it('selector → Running and Ready pods at hostIP:hostPort (host networking)', () => {
    const c = cat();
    const b = resolveBackends(
      c,
      c.getService('default', 'web')!,
      c.getService('default', 'web')!.spec!.ports![0],
      'host',
    );
    expect(b.map((x) => x.key)).toEqual(['127.0.0.1:9001', '127.0.0.1:9002']);
  });

  it('named targetPort resolves through the container ports; container networking uses podIP', () => {
    const c = cat();
    const s = c.getService('default', 'api')!;
    expect(resolveBackends(c, s, s.spec!.ports![0], 'host').map((x) => x.key)).toEqual(['127.0.0.1:9100']);
    expect(resolveBackends(c, s, s.spec!.ports![0], 'container').map((x) => x.key)).toEqual([
      '10.244.0.7:8080',
    ]);
  });

  it('an Endpoints object wins when the service has one', () => {
    const c = cat();
    const s = c.getService('default', 'ext')!;
    expect(resolveBackends(c, s, s.spec!.ports![0], 'host').map((x) => x.key)).toEqual([
      '192.0.2.10:8443',
      '192.0.2.11:8443',
    ]);
  });
});
