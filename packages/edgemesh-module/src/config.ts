/** EdgeMesh configuration (edgecore.yaml `modules.edgeMesh`), KubeEdge's keys plus `dns`. */
export const EdgeMeshOptions = Symbol.for('edgecore.EdgeMeshOptions');
export interface EdgeMeshOptions {
  enable?: boolean;
  mode?: 'auto' | 'iptables' | 'unprivileged';
  lbStrategy?: string;
  listenInterface?: string;
  /** VIP pool for headless services (default 198.18.0.0/16, RFC 2544 space). */
  subNet?: string;
  listenPort?: number;
  clusterDomain?: string;
  dns?: {
    /** Default: 53 on the listen address when privileged, 5353 on 127.0.0.1 otherwise. */
    listenPort?: number;
    /** Default listen address (overrides the mode's choice). */
    listenAddress?: string;
    hijack?: 'iptables' | 'resolvconf' | 'none';
    /** `IP` or `IP:PORT`; default: nameservers of /etc/resolv.conf minus our own address. */
    upstreams?: string[];
    /** TTL of our answers in seconds (default 5). */
    ttl?: number;
    /** Source ranges allowed to query (CIDRs). Default: loopback, this node's addresses, the bridge subnet. */
    allowFrom?: string[];
    /** Max cached upstream answers (default 10,000). */
    cacheSize?: number;
    /** Per-upstream timeout in ms (default 2000). */
    upstreamTimeoutMs?: number;
    /** resolv.conf to read upstreams from (default /etc/resolv.conf). */
    resolvConf?: string;
    /** UDP I/O of the DNS server: `auto` (default: the native batch addon when built), `native`, `dgram`. */
    udpBackend?: 'auto' | 'native' | 'dgram';
  };
  /** host: backends at hostIP:hostPort (the seed); container: podIP:targetPort. */
  networking?: 'host' | 'container';
  /** ConsistentHash key header (default: the client IP). */
  consistentHashHeader?: string;
  /** L7 portals: the native engine when built (`auto`, default), required (`native`), or never (`js`). */
  httpEngine?: 'auto' | 'native' | 'js';
  /**
   * iptables mode, TCP ports that are not HTTP: `portal` (default) — DNAT to our L4 portal, which
   * balances per connection with passive health and every strategy; `dnat` — kube-proxy's iptables
   * mode: DNAT straight to a backend picked at random by the kernel (no userspace hop, no passive
   * health; RoundRobin, Random and SessionStickiness — with another strategy the ports keep the
   * portal). UDP ports too when conntrack-tools is installed (a gone backend's flows are
   * deleted); HTTP ports keep the L7 portal either way.
   */
  l4Mode?: 'portal' | 'dnat';
  /** Native L7 engine under load: µs a wake-up waits for more events (default 15, 0: off; see
   * HttpProxyOptions.coalesceUs). */
  httpCoalesceUs?: number;
  /**
   * Ports the portals listen on, taken next-fit (kube-proxy's userspace `--proxy-port-range`):
   * `auto` (default) — the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), the ports a
   * random bind would use; `FROM-TO`; `0` — a random bind per portal. A random bind searches the
   * range for a free port, and that search grows with the ports in use (64 µs per listener with
   * none, 690 µs with 10,000 here); a chosen port is one lookup (8–14 µs).
   */
  portalPortRange?: string;
  proxy?: {
    connectTimeoutMs?: number;
    /** L7: the upstream's time to answer, counted from the last request bytes it took (504 after
     * it), and the longest a response body may stall, either side (both connections close).
     * Default 60 s, as nginx's proxy_read_timeout and send_timeout. */
    responseTimeoutMs?: number;
    headTimeoutMs?: number;
    maxHeadBytes?: number;
    tcpIdleTimeoutMs?: number;
    /** L4: move bytes with the native splice engine when the addon is built (default true). */
    splice?: boolean;
    udpIdleTimeoutMs?: number;
    /** Passive health: first ejection and cap (ms). */
    ejectBaseMs?: number;
    ejectMaxMs?: number;
  };
  /** Which iptables: the system's `iptables` alternative (auto), or iptables-nft / iptables-legacy. */
  iptablesBackend?: 'auto' | 'nft' | 'legacy';
  /** iptables mode: period of the rule re-ensure (default 30 s). */
  iptablesSyncIntervalMs?: number;
  /** Our value of the service-proxy-name label (default `edgemesh`). */
  proxyName?: string;
  /** Modules that must be ready first (default ['metamanager']); [] when MetaClient is rebound. */
  dependencies?: string[];
}

export const MESH_MODULE_NAME = 'edgemesh';
export const DEFAULT_SUBNET = '198.18.0.0/16';
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';
