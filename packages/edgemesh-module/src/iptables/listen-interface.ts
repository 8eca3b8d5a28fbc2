import type { z } from 'zod/v3';
import { listenInterfaceOptionsSchema, resolveMeshOptions } from '../config';
import { Logger, silentLogger } from '@edgecore/beehive';
import { EdgeMeshError } from '../edgemesh-errors';
import { interfaceIPv4 } from '../listen';
import { run } from './exec';

export class ListenInterfaceError extends EdgeMeshError {
  constructor(name: string, reason: string) {
    super('EDGEMESH_LISTEN_INTERFACE', `listen interface "${name}": ${reason}`);
  }
}

/**
 * The listen address: the IPv4 of `listenInterface` (the seed's docker0), or for `edgemesh0` an
 * interface EdgeMesh creates with a link-local address so any container runtime works (a dummy
 * device; a bridge without ports where the kernel has no dummy driver). Plus a route for the VIP
 * subnet via it, so a node with no default route still sends VIP traffic into OUTPUT.
 */
export class ListenInterface {
  private created = false;
  private routed?: string;
  address?: string;
  private readonly log: Logger;
  private readonly opts: z.output<typeof listenInterfaceOptionsSchema>;

  constructor(
    readonly name: string,
    options: z.input<typeof listenInterfaceOptionsSchema> & { log?: Logger } = {},
  ) {
    this.opts = resolveMeshOptions(listenInterfaceOptionsSchema, options, 'listenInterface');
    this.log = options.log ?? silentLogger;
  }

  async ensure(): Promise<string> {
    let a = interfaceIPv4(this.name);
    if (!a && this.name === 'edgemesh0') {
      const cidr = this.opts.createAddress;
      let r = await run('ip', ['link', 'add', this.name, 'type', 'dummy']);
      if (r.code !== 0) r = await run('ip', ['link', 'add', this.name, 'type', 'bridge']);
      if (r.code !== 0) throw new ListenInterfaceError(this.name, `cannot create it: ${r.stderr.trim()}`);
      this.created = true;
      for (const args of [
        ['addr', 'add', cidr, 'dev', this.name],
        ['link', 'set', this.name, 'up'],
      ]) {
        const x = await run('ip', args);
        if (x.code !== 0)
          throw new ListenInterfaceError(this.name, `ip ${args.join(' ')}: ${x.stderr.trim()}`);
      }
      this.log.info({ interface: this.name, address: cidr }, 'created listen interface');
      a = { address: cidr.split('/')[0], prefix: Number(cidr.split('/')[1]) };
    }
    if (!a)
      throw new ListenInterfaceError(
        this.name,
        'missing, or has no IPv4 address (only edgemesh0 is created by EdgeMesh)',
      );
    this.address = a.address;
    return a.address;
  }

  /**
   * The VIP route carries loopback's MTU: a node's own connection to a VIP is DNAT'd to a portal
   * on this node (in DNAT mode, to a backend, often on this node too), and with the bridge's 1500 its segments
   * were cut to 1448 bytes where loopback takes 32 KiB: iperf3 from a node process through a VIP
   * DNAT'd to a backend on the node measured 0.64–0.72 of direct with the bridge's MTU, 0.76–0.92
   * (median 0.85, bench/l4-dnat.sh) with this one (65520, the kernel's cap for a route). A
   * backend on another host still gets its own path's size: its SYN-ACK advertises
   * the MSS of its link, and path-MTU discovery lowers this route's MTU per destination.
   */
  async routeSubnet(subnet: string): Promise<void> {
    const r = await run('ip', ['route', 'replace', subnet, 'dev', this.name, 'mtu', '65520']);
    if (r.code !== 0) throw new ListenInterfaceError(this.name, `route ${subnet}: ${r.stderr.trim()}`);
    this.routed = subnet;
  }

  async teardown(): Promise<void> {
    if (this.routed) await run('ip', ['route', 'del', this.routed, 'dev', this.name]);
    this.routed = undefined;
    if (this.created) await run('ip', ['link', 'del', this.name]);
    this.created = false;
  }
}
