import { openFileLimit, portalCapacity, portalPorts, run, type Service } from '@edgecore/edgemesh-module';
import { MetaStore } from '@edgecore/metamanager';
import { createSocket } from 'node:dgram';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { dirname } from 'node:path';
import type { EdgeCoreConfig } from '../config/config';

/** One line of `edgecore check`: ok, warn or error, what was checked, and the fix when it fails. */
export interface Finding {
  level: 'ok' | 'warn' | 'error';
  key: string;
  message: string;
}

/**
 * The seed's "Environment Check", done by the program: what EdgeMesh needs of the node before it
 * can serve — name resolution through DNS, IP forwarding, the listen interface, one iptables
 * flavour and no rules of an old EdgeMesh, port 53 free, an upstream resolver, a writable database.
 * Each failing check says how to fix it.
 */
export async function checkEnvironment(cfg: EdgeCoreConfig): Promise<Finding[]> {
  const out: Finding[] = [];
  const f = (level: Finding['level'], key: string, message: string): void =>
    void out.push({ level, key, message });
  const mesh = cfg.modules.edgeMesh;
  const iptablesMode = mesh.enable && mesh.mode !== 'unprivileged';

  // nsswitch: `hosts:` must ask DNS, or no program on the node resolves a service name
  try {
    const hosts = /^hosts:(.*)$/m.exec(readFileSync('/etc/nsswitch.conf', 'utf8'))?.[1]?.trim() ?? '';
    if (!/\bdns\b/.test(hosts))
      f(
        'error',
        'nsswitch',
        `/etc/nsswitch.conf hosts: "${hosts}" has no dns: add it (e.g. "hosts: files dns")`,
      );
    else f('ok', 'nsswitch', `hosts: ${hosts}`);
  } catch {
    f('warn', 'nsswitch', '/etc/nsswitch.conf not readable: glibc resolves with "files dns" by default');
  }

  // IP forwarding: containers reach backends on other hosts through this node
  const fwd = readText('/proc/sys/net/ipv4/ip_forward');
  if (fwd === '1') f('ok', 'ip_forward', 'net.ipv4.ip_forward = 1');
  else
    f(
      iptablesMode ? 'warn' : 'ok',
      'ip_forward',
      `net.ipv4.ip_forward = ${fwd ?? 'unknown'}: containers cannot reach backends on other hosts; fix: sysctl -w net.ipv4.ip_forward=1 (and in /etc/sysctl.d)`,
    );

  // the listen interface: docker0 (or a CNI bridge) must exist; edgemesh0 EdgeMesh makes itself
  if (mesh.enable) {
    const ifc = mesh.listenInterface;
    const has = existsSync(`/sys/class/net/${ifc}`) || ifc in networkInterfaces();
    if (has || ifc === 'edgemesh0')
      f('ok', 'listenInterface', `${ifc}${has ? '' : ' (EdgeMesh creates it)'}`);
    else
      f(
        iptablesMode ? 'error' : 'ok',
        'listenInterface',
        `${ifc} does not exist: start docker, or set modules.edgeMesh.listenInterface: edgemesh0 (a dummy interface EdgeMesh creates)`,
      );
  }

  // iptables: one flavour, no chain of an old EdgeMesh
  if (iptablesMode) {
    const v = await run('iptables', ['--version']);
    if (v.code !== 0) f('error', 'iptables', 'iptables not found: apt-get install iptables');
    else {
      const system = /nf_tables/.test(v.stdout) ? 'nft' : 'legacy';
      const other = system === 'nft' ? 'iptables-legacy-save' : 'iptables-nft-save';
      const mine = await run(system === 'nft' ? 'iptables-nft-save' : 'iptables-legacy-save', ['-t', 'nat']);
      const theirs = await run(other, ['-t', 'nat']);
      const chosen = mesh.iptablesBackend === 'auto' ? system : mesh.iptablesBackend;
      f(
        chosen === system ? 'ok' : 'warn',
        'iptables',
        `${v.stdout.trim()}; EdgeMesh uses ${chosen}${chosen === system ? '' : ` but the system's iptables is ${system}: rules in two tables are hard to read`}`,
      );
      const old = [mine, theirs]
        .filter((r) => r.code === 0)
        .flatMap((r) => r.stdout.split('\n'))
        .filter((l) => /^(:|-N |-A )EDGE-MESH\b/.test(l) || / -j EDGE-MESH\b/.test(l));
      if (old.length)
        f(
          'error',
          'old-edgemesh',
          `rules of an old EdgeMesh in the nat table (chain EDGE-MESH; "If you ever used EdgeMesh of old version, check your iptables rules"); fix: iptables -t nat -D OUTPUT -j EDGE-MESH; iptables -t nat -D PREROUTING -j EDGE-MESH; iptables -t nat -F EDGE-MESH; iptables -t nat -X EDGE-MESH`,
        );
      else f('ok', 'old-edgemesh', 'no rules of an old EdgeMesh');
    }
  }

  // port 53 on the listen address (iptables mode): something else there (systemd-resolved) clashes
  if (iptablesMode && (mesh.dns.listenPort ?? 53) === 53) {
    const addr = mesh.dns.listenAddress ?? ifcAddress(mesh.listenInterface);
    if (addr) {
      const free = await udpFree(addr, 53);
      if (free === 'busy')
        f(
          'error',
          'dns-port',
          `udp ${addr}:53 is taken (another resolver?): stop it, or set modules.edgeMesh.dns.listenPort`,
        );
      else
        f('ok', 'dns-port', free === 'free' ? `udp ${addr}:53 free` : `udp ${addr}:53 not tried (${free})`);
    }
  }

  // resolv.conf: an upstream for names outside the cluster
  try {
    const ns = [...readFileSync(mesh.dns.resolvConf, 'utf8').matchAll(/^nameserver\s+(\S+)/gm)].map(
      (m) => m[1],
    );
    if (!ns.length && !mesh.dns.upstreams.length)
      f(
        'error',
        'resolv.conf',
        `${mesh.dns.resolvConf} has no nameserver and dns.upstreams is empty: names outside the cluster cannot be resolved`,
      );
    else
      f(
        'ok',
        'resolv.conf',
        `upstreams: ${(mesh.dns.upstreams.length ? mesh.dns.upstreams : ns).join(', ')}`,
      );
  } catch (e) {
    f(
      'warn',
      'resolv.conf',
      `${mesh.dns.resolvConf}: ${(e as NodeJS.ErrnoException).code}: set modules.edgeMesh.dns.upstreams`,
    );
  }

  // open files: a portal per service port besides everything else; Node raises the soft limit to
  // the hard one at start, so the hard one is the node's room
  if (mesh.enable) {
    const lim = openFileLimit();
    if (!lim) f('warn', 'open-files', '/proc/self/limits not readable: the open-file limit is unknown');
    else {
      const room = portalCapacity(lim.hard);
      const ports = servicePorts(cfg.database.dataSource);
      const held = ports === undefined ? '' : `; the database holds ${ports} service ports`;
      if (ports !== undefined && ports > room)
        f(
          'warn',
          'open-files',
          `hard limit ${lim.hard}: room for about ${room} portals${held} — the rest get none (the explicit proxy still serves them, iptables mode cannot reach them); fix: LimitNOFILE=${Math.max(65_536, 2 ** Math.ceil(Math.log2(ports * 2)))} in edgecore's systemd unit, or ulimit -Hn`,
        );
      else
        f(
          'ok',
          'open-files',
          `hard limit ${lim.hard} (Node raises the soft one to it): room for about ${room} portals${held}`,
        );
    }
  }

  // the database: writable, or its nearest existing directory is (edgecore creates the rest);
  // a check looks and never creates anything
  const db = cfg.database.dataSource;
  try {
    let d = dirname(db);
    while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
    accessSync(d, constants.W_OK);
    if (existsSync(db)) accessSync(db, constants.W_OK);
    f('ok', 'database', `${db} writable`);
  } catch (e) {
    f(
      'error',
      'database',
      `${db}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}: make its directory writable by edgecore`,
    );
  }
  return out;
}

/**
 * The ports of the services in the node's database that get a portal (`portalPorts`), read-only;
 * undefined when there is no database yet or it cannot be read.
 */
function servicePorts(path: string): number | undefined {
  if (!existsSync(path)) return undefined;
  let store: MetaStore | undefined;
  try {
    store = new MetaStore(path, { readonly: true });
    let n = 0;
    for (const v of store.listValues('*', 'service')) n += portalPorts(JSON.parse(v) as Service).length;
    return n;
  } catch {
    return undefined;
  } finally {
    store?.close();
  }
}

function readText(p: string): string | undefined {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function ifcAddress(name: string): string | undefined {
  return networkInterfaces()[name]?.find((a) => a.family === 'IPv4')?.address;
}

/** Whether a UDP port can be bound: free, busy, or why it was not tried (no privilege). */
function udpFree(host: string, port: number): Promise<'free' | 'busy' | string> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', (e: NodeJS.ErrnoException) => {
      s.close();
      resolve(e.code === 'EADDRINUSE' ? 'busy' : (e.code ?? e.message));
    });
    s.bind(port, host, () => s.close(() => resolve('free')));
  });
}
