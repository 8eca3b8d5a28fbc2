import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  appendRevocation,
  caFiles,
  createCa,
  identityFiles,
  issue,
  revokedConfigMap,
} from '@edgecore/edgetunnel';
import { isIPv4 } from 'node:net';
import { parseArgs } from 'node:util';
import { ManifestError, planManifest, type PlannedDocument } from '../edgectl/manifest';
import { durationMs, mkdirs, splitHostPort } from '@edgecore/beehive';
import { brokerAcl, brokerBridge, TYPE_TO_KIND } from '@edgecore/edgehub';
import { ObjectPublisher } from '../edgectl/publisher';
import { publishPlanned } from '../edgectl/publish-planned';

const HELP = `edgectl — the cloud-side tool: publish Kubernetes objects to the edge, read a node's MetaServer

Usage:
  edgectl [--server tcp://HOST:1883] apply  -f FILE|- [-f FILE…] [--node-ip NODE=IP…]
                                    [--networking host|container]
  edgectl [--server tcp://HOST:1883] delete -f FILE|- [-f FILE…]
                                    Services and pods applied or deleted update the services'
                                    EndpointSlices (edgectl is the endpoint-slice controller); a
                                    pod goes to its node only. --networking: where a pod serves
                                    other nodes, hostIP:hostPort (host, the seed's) or podIP:port
  edgectl get services|pods|endpoints|endpointslices|destinationrules [-n NAMESPACE | -A]
                                    [--metaserver http://127.0.0.1:10550]
  edgectl get endpoints -o wide [-n NAMESPACE | -A] [--observability http://127.0.0.1:10351]
                                    every service port's backends as the node's EdgeMesh resolved
                                    them, with the node and the path (direct, or tunnel to a site)
  edgectl explain svc/NAME [-n NAMESPACE] [--node http://HOST:10351]
                                    a service's path through a node (its observability
                                    address): name → VIP → rules or portal → backends with
                                    their health, and the step where it breaks (exit 1)
  edgectl [--server URL] gc [--tombstone-ttl DURATION]
                                    clear the retained tombstones (deleted objects) older than
                                    DURATION (default 24h; 0: all) — for a broker without MQTT 5
                                    message expiry, which otherwise forgets them by itself after
                                    --tombstone-ttl of the delete; nodes away longer converge
                                    through the digests. Run it when no apply is under way
  edgectl broker bridge --cloud HOST:PORT [--name N] [--username U --password P] [--cafile F]
                                    the mosquitto bridge section of a regional broker that
                                    carries the fleet's topics to and from the cloud broker
                                    (MQTT 5, so tombstones keep their expiry)
  edgectl broker acl [--username CLOUD] [--prefix P]
                                    the mosquitto acl_file of a fleet where each node's username
                                    is its node name and only CLOUD (default edgectl) writes
                                    objects (see edgehub's README for the password file)
  edgectl certs init --dir DIR                       a fleet CA (ca.crt, ca.key)
  edgectl certs node NAME --dir DIR [--address A…]   a node's key and certificate
  edgectl certs relay NAME --dir DIR --address A…    a relay's (its addresses as subjectAltNames)
  edgectl certs revoke NAME --dir DIR                add NAME's certificate to DIR/revoked.json
  edgectl certs configmap --dir DIR                  the deny list as a ConfigMap for the nodes:
                                                     edgectl certs configmap --dir DIR | edgectl apply -f -

Kinds: Pod, Service, Endpoints, EndpointSlice, Deployment (pods on spec.template.spec.nodeName),
ConfigMap, DestinationRule (networking.istio.io: a service's load-balancing policy).
Options: --username, --password, --prefix (topic prefix, default edgecore), --cafile (mqtts://: the
CA of the broker's certificate, verified with its name; no fallback to plain MQTT).
`;

interface Io {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  stdin: () => string;
}

const defaultIo: Io = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  stdin: () => readFileSync(0, 'utf8'),
};

/** Returns the exit code. */
export async function edgectl(argv: string[], io: Io = defaultIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        server: { type: 'string', short: 's', default: 'tcp://127.0.0.1:1883' },
        filename: { type: 'string', short: 'f', multiple: true },
        'node-ip': { type: 'string', multiple: true },
        networking: { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        'all-namespaces': { type: 'boolean', short: 'A' },
        metaserver: { type: 'string', default: 'http://127.0.0.1:10550' },
        observability: { type: 'string', default: 'http://127.0.0.1:10351' },
        node: { type: 'string' },
        output: { type: 'string', short: 'o' },
        username: { type: 'string' },
        cafile: { type: 'string' },
        password: { type: 'string' },
        prefix: { type: 'string' },
        dir: { type: 'string' },
        address: { type: 'string', multiple: true },
        days: { type: 'string' },
        'tombstone-ttl': { type: 'string' },
        cloud: { type: 'string' },
        name: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    io.stderr(`edgectl: ${(e as Error).message}\n`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const [verb, what] = positionals;
  if (v.help || !verb) {
    io.stdout(HELP);
    return verb || v.help ? 0 : 2;
  }
  try {
    switch (verb) {
      case 'apply':
      case 'delete':
        return await applyOrDelete(verb, v, io);
      case 'get':
        return await get(what, v, io);
      case 'certs':
        return await certs(what, positionals[2], v, io);
      case 'explain':
        return await explain(what, v, io);
      case 'gc':
        return await gc(v, io);
      case 'broker':
        if (what === 'bridge') {
          const cloud = v.cloud ?? '';
          try {
            splitHostPort(cloud);
          } catch {
            io.stderr('edgectl broker bridge: --cloud HOST:PORT is required\n');
            return 2;
          }
          io.stdout(
            brokerBridge({
              cloud,
              name: v.name,
              prefix: v.prefix,
              username: v.username,
              password: v.password,
              cafile: v.cafile,
            }),
          );
          return 0;
        }
        if (what !== 'acl') {
          io.stderr('edgectl broker: expected acl or bridge\n');
          return 2;
        }
        io.stdout(brokerAcl({ prefix: v.prefix, cloudUser: v.username }));
        return 0;
      default:
        io.stderr(`edgectl: unknown command "${verb}"\n\n${HELP}`);
        return 2;
    }
  } catch (e) {
    io.stderr(`edgectl: ${(e as Error).message}\n`);
    return 1;
  }
}

/** `get endpoints -o wide`: the node's own view of backends and paths (its observability server). */
async function endpointsWide(ns: string | undefined, v: Record<string, any>, io: Io): Promise<number> {
  const url = `${String(v.observability).replace(/\/$/, '')}/debug/endpoints`;
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  const items = (await res.json()) as {
    namespace: string;
    service: string;
    port: string;
    backend: string;
    node?: string;
    path: string;
  }[];
  const rows = [[...(ns ? [] : ['NAMESPACE']), 'NAME', 'PORT', 'ENDPOINT', 'NODE', 'PATH']];
  for (const r of items)
    if (!ns || r.namespace === ns)
      rows.push([...(ns ? [] : [r.namespace]), r.service, r.port, r.backend, r.node ?? '<none>', r.path]);
  io.stdout(table(rows, ns));
  return 0;
}

/**
 * `edgectl explain svc/NAME`: the node's view of one service (its observability address,
 * `/debug/explain`): each step of name → VIP → rules or portal → backends with their health, and
 * where it breaks. Exit 1 when it breaks somewhere.
 */
async function explain(what: string | undefined, v: Record<string, any>, io: Io): Promise<number> {
  const m = /^(?:svc|service|services)\/([a-z0-9.-]+)$/.exec(what ?? '');
  if (!m) {
    io.stderr('edgectl explain: expected svc/NAME\n');
    return 2;
  }
  const ns = v.namespace ?? 'default';
  const base = String(v.node ?? v.observability).replace(/\/$/, '');
  const url = `${base}/debug/explain?service=${encodeURIComponent(`${ns}/${m[1]}`)}`;
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status} ${(await res.text()).trim()}`);
  const r = (await res.json()) as {
    service: string;
    brokenAt?: string;
    steps: { step: string; ok: boolean; detail: string; backends?: Record<string, any>[] }[];
  };
  const out: string[] = [`service ${r.service}`];
  for (const s of r.steps) {
    out.push(`  ${s.ok ? 'ok ' : 'BAD'} ${s.step.padEnd(9)} ${s.detail}`);
    for (const b of s.backends ?? []) {
      const extra = [
        b.node && `node ${b.node}`,
        b.path,
        b.tier !== undefined && `tier ${b.tier}`,
        b.terminating && 'terminating',
        b.latencyMs !== undefined && `${Number(b.latencyMs).toFixed(1)} ms`,
        b.active && `${b.active} active`,
        b.lastError && `last error: ${b.lastError}`,
      ].filter(Boolean);
      out.push(
        `        ${b.port.padEnd(10)} ${String(b.key).padEnd(24)} ${b.state.padEnd(9)} ${extra.join(', ')}`,
      );
    }
  }
  out.push(r.brokenAt ? `broken at: ${r.brokenAt}` : 'every step holds');
  io.stdout(out.join('\n') + '\n');
  return r.brokenAt ? 1 : 0;
}

/** `edgectl certs`: the fleet's identities for EdgeTunnel (openssl underneath; see edgetunnel's README). */
async function certs(
  what: string | undefined,
  name: string | undefined,
  v: Record<string, any>,
  io: Io,
): Promise<number> {
  const dir: string | undefined = v.dir;
  if (!dir) {
    io.stderr('edgectl certs: --dir DIR is required\n');
    return 2;
  }
  const ca = caFiles(dir);
  const days = v.days === undefined ? undefined : Number(v.days);
  if (days !== undefined && !(Number.isInteger(days) && days > 0)) {
    io.stderr(`edgectl certs: --days ${v.days}: expected a positive integer\n`);
    return 2;
  }
  if (what === 'init') {
    mkdirs(dir, 0o700);
    const f = await createCa(dir, days);
    io.stdout(`fleet CA: ${f.cert} (key ${f.key}, 0600)\n`);
    return 0;
  }
  if ((what === 'node' || what === 'relay' || what === 'revoke') && !name) {
    io.stderr(`edgectl certs ${what}: NAME is required\n`);
    return 2;
  }
  if (what === 'node' || what === 'relay') {
    if (what === 'relay' && !v.address?.length) {
      io.stderr('edgectl certs relay: --address is required (what nodes dial)\n');
      return 2;
    }
    const f = await issue(ca, { role: what, name: name!, altNames: v.address, days });
    io.stdout(`${what} ${name}: ${f.cert} (key ${f.key}, 0600)\n`);
    return 0;
  }
  if (what === 'configmap') {
    io.stdout(revokedConfigMap(join(dir, 'revoked.json')));
    return 0;
  }
  if (what === 'revoke') {
    const file = identityFiles(dir, name!).cert;
    const fingerprint256 = new X509Certificate(readFileSync(file)).fingerprint256;
    appendRevocation(join(dir, 'revoked.json'), { node: name, fingerprint256 });
    io.stdout(`revoked ${name} (${fingerprint256}) in ${join(dir, 'revoked.json')}\n`);
    return 0;
  }
  io.stderr(`edgectl certs: unknown "${what ?? ''}" (init, node, relay, revoke, configmap)\n`);
  return 2;
}

async function applyOrDelete(verb: 'apply' | 'delete', v: Record<string, any>, io: Io): Promise<number> {
  const files: string[] = v.filename ?? [];
  if (!files.length) {
    io.stderr(`edgectl ${verb}: -f FILE is required\n`);
    return 2;
  }
  const nodeIPs: Record<string, string> = {};
  for (const pair of (v['node-ip'] ?? []) as string[]) {
    const [node, ip] = pair.split('=');
    if (!node || !ip || !isIPv4(ip)) {
      io.stderr(`edgectl: --node-ip expects NODE=IPv4, got "${pair}"\n`);
      return 2;
    }
    nodeIPs[node] = ip;
  }
  const networking = v.networking ?? 'host';
  if (networking !== 'host' && networking !== 'container') {
    io.stderr(`edgectl: --networking expects host or container, got "${networking}"\n`);
    return 2;
  }
  // Plan every file before publishing anything: one invalid document means nothing is sent.
  const planned: PlannedDocument[] = [];
  try {
    for (const f of files) {
      const text = f === '-' ? io.stdin() : readFile(f);
      // A delete needs no host IPs; give pods a placeholder so planning can run.
      planned.push(
        ...planManifest(text, f === '-' ? '<stdin>' : f, {
          nodeIPs: verb === 'delete' ? new Proxy({}, { get: () => '0.0.0.0' }) : nodeIPs,
        }),
      );
    }
  } catch (e) {
    if (e instanceof ManifestError) {
      io.stderr(`edgectl: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  const ttl =
    v['tombstone-ttl'] === undefined ? undefined : parseDuration(v['tombstone-ttl'], '--tombstone-ttl');
  const pub = await connectPublisher(v, ttl);
  try {
    await publishPlanned(pub, planned, verb, networking, io.stdout);
  } finally {
    await pub.close();
  }
  return 0;
}

function connectPublisher(v: Record<string, any>, ttlMs?: number): Promise<ObjectPublisher> {
  return ObjectPublisher.connect(v.server, {
    username: v.username,
    password: v.password,
    prefix: v.prefix,
    ca: v.cafile ? readFileSync(v.cafile) : undefined,
    tombstoneTtlSeconds: ttlMs === undefined ? undefined : Math.ceil(ttlMs / 1000),
  });
}

/** `30s`, `15m`, `24h`, `7d` or seconds → ms; anything else an error naming the option. */
export function parseDuration(text: string, option: string): number {
  const ms = durationMs(/^\s*\d+(\.\d+)?\s*$/.test(text) ? `${text.trim()}s` : text, { days: true });
  if (ms === undefined)
    throw new Error(`${option}: expected a duration such as 30s, 15m, 24h or 7d, got "${text}"`);
  return ms;
}

/** `edgectl gc`: clear retained tombstones older than --tombstone-ttl (every object type). */
async function gc(v: Record<string, any>, io: Io): Promise<number> {
  const ttl = parseDuration(v['tombstone-ttl'] ?? '24h', '--tombstone-ttl');
  const pub = await connectPublisher(v);
  try {
    await pub.begin(Object.keys(TYPE_TO_KIND));
    const found = pub.tombstones.length;
    const cleared = await pub.collectTombstones(ttl);
    io.stdout(
      `${cleared} tombstone(s) cleared, ${found - cleared} younger than ${v['tombstone-ttl'] ?? '24h'} kept\n`,
    );
  } finally {
    await pub.close();
  }
  return 0;
}

function readFile(f: string): string {
  try {
    return readFileSync(f, 'utf8');
  } catch (e) {
    throw new ManifestError(f, undefined, `cannot read: ${(e as Error).message}`);
  }
}

async function get(what: string | undefined, v: Record<string, any>, io: Io): Promise<number> {
  const plural = (
    {
      svc: 'services',
      service: 'services',
      services: 'services',
      po: 'pods',
      pod: 'pods',
      pods: 'pods',
      ep: 'endpoints',
      endpoints: 'endpoints',
      endpointslice: 'endpointslices',
      endpointslices: 'endpointslices',
      destinationrule: 'destinationrules',
      destinationrules: 'destinationrules',
      dr: 'destinationrules',
    } as Record<string, string>
  )[what ?? ''];
  if (!plural) {
    io.stderr('edgectl get: expected services, pods, endpoints, endpointslices or destinationrules\n');
    return 2;
  }
  const ns = v['all-namespaces'] ? undefined : (v.namespace ?? 'default');
  if (v.output !== undefined && !(v.output === 'wide' && plural === 'endpoints')) {
    io.stderr(`edgectl get: -o ${v.output}: only "-o wide" of endpoints is known\n`);
    return 2;
  }
  if (v.output === 'wide') return endpointsWide(ns, v, io);
  const base = String(v.metaserver).replace(/\/$/, '');
  const api =
    {
      endpointslices: 'apis/discovery.k8s.io/v1',
      destinationrules: 'apis/networking.istio.io/v1beta1',
    }[plural] ?? 'api/v1';
  const url = ns
    ? `${base}/${api}/namespaces/${encodeURIComponent(ns)}/${plural}`
    : `${base}/${api}/${plural}`;
  const res = await fetch(url);
  const body = (await res.json()) as { items?: any[]; message?: string };
  if (!res.ok) throw new Error(`${url}: ${res.status} ${body.message ?? ''}`);
  const items = body.items ?? [];
  const rows: string[][] = [];
  const nsCol = ns ? [] : ['NAMESPACE'];
  if (plural === 'services') {
    rows.push([...nsCol, 'NAME', 'TYPE', 'CLUSTER-IP', 'PORT(S)']);
    for (const s of items) {
      const ports = (s.spec?.ports ?? []).map((p: any) => `${p.port}/${p.protocol ?? 'TCP'}`).join(',');
      rows.push([
        ...(ns ? [] : [s.metadata.namespace]),
        s.metadata.name,
        s.spec?.type ?? 'ClusterIP',
        s.spec?.clusterIP ?? 'None',
        ports || '<none>',
      ]);
    }
  } else if (plural === 'pods') {
    rows.push([...nsCol, 'NAME', 'STATUS', 'IP', 'NODE']);
    for (const p of items)
      rows.push([
        ...(ns ? [] : [p.metadata.namespace]),
        p.metadata.name,
        p.status?.phase ?? 'Unknown',
        p.status?.podIP ?? p.status?.hostIP ?? '<none>',
        p.spec?.nodeName ?? '<none>',
      ]);
  } else if (plural === 'endpointslices') {
    // kubectl's columns: NAME ADDRESSTYPE PORTS ENDPOINTS (the first three addresses, "+ N more…")
    rows.push([...nsCol, 'NAME', 'ADDRESSTYPE', 'PORTS', 'ENDPOINTS']);
    for (const sl of items) {
      const ports = (sl.ports ?? []).map((p: any) => p.port ?? '<unset>').join(',') || '<unset>';
      const addrs = (sl.endpoints ?? []).flatMap((e: any) => e.addresses ?? []);
      const shown = addrs.slice(0, 3).join(',') + (addrs.length > 3 ? ` + ${addrs.length - 3} more...` : '');
      rows.push([
        ...(ns ? [] : [sl.metadata.namespace]),
        sl.metadata.name,
        sl.addressType ?? 'IPv4',
        ports,
        shown || '<unset>',
      ]);
    }
  } else if (plural === 'destinationrules') {
    rows.push([...nsCol, 'NAME', 'HOST']);
    for (const d of items)
      rows.push([...(ns ? [] : [d.metadata.namespace]), d.metadata.name, d.spec?.host ?? '']);
  } else {
    rows.push([...nsCol, 'NAME', 'ENDPOINTS']);
    for (const e of items) {
      const eps = (e.subsets ?? []).flatMap((s: any) =>
        (s.addresses ?? []).flatMap((a: any) =>
          (s.ports ?? [{ port: '' }]).map((p: any) => `${a.ip}:${p.port}`),
        ),
      );
      rows.push([...(ns ? [] : [e.metadata.namespace]), e.metadata.name, eps.join(',') || '<none>']);
    }
  }
  io.stdout(table(rows, ns));
  return 0;
}

/** kubectl's columns: a header row and rows padded to the widest cell (or "No resources found"). */
function table(rows: string[][], ns: string | undefined): string {
  if (rows.length === 1) return `No resources found${ns ? ` in ${ns} namespace` : ''}.\n`;
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i] + 3))).join('') + '\n')
    .join('');
}

export function main(argv: string[]): void {
  edgectl(argv).then(
    (code) => (process.exitCode = code),
    (e) => {
      process.stderr.write(`edgectl: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
