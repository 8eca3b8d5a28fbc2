/** The Kubernetes fields EdgeMesh reads (a subset of core/v1). */
export interface ServicePort {
  name?: string;
  port: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  targetPort?: number | string;
  appProtocol?: string;
}
export interface Service {
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    resourceVersion?: string;
  };
  spec?: {
    clusterIP?: string;
    selector?: Record<string, string>;
    ports?: ServicePort[];
    type?: string;
    /** `type: ExternalName`: the DNS name the service is an alias of. */
    externalName?: string;
    /** Endpoints that are not ready are endpoints all the same (headless peer discovery). */
    publishNotReadyAddresses?: boolean;
    /** `Local`: only endpoints on this node; none → the connection fails (no fallback). */
    internalTrafficPolicy?: 'Cluster' | 'Local' | string;
    /** `PreferSameNode`, `PreferSameZone`, `PreferClose`: nearer endpoints first (see lb/topology). */
    trafficDistribution?: string;
    sessionAffinity?: 'None' | 'ClientIP' | string;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
  };
}

/** `discovery.k8s.io/v1` EndpointSlice: one of the slices of a service (label `kubernetes.io/service-name`). */
export interface EndpointSlice {
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  addressType?: 'IPv4' | 'IPv6' | 'FQDN' | string;
  endpoints?: SliceEndpoint[];
  ports?: { name?: string; port?: number; protocol?: string; appProtocol?: string }[];
}
export interface SliceEndpoint {
  addresses: string[];
  /** Unset `ready`/`serving` mean ready/serving (the API's rule); unset `terminating` means not. */
  conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
  hostname?: string;
  nodeName?: string;
  zone?: string;
  hints?: { forZones?: { name: string }[]; forNodes?: { name: string }[] };
  /** The cloud's slice controller sets it; the node's catalog does not keep it (nothing there reads it). */
  targetRef?: { kind?: string; name?: string; namespace?: string };
}

/**
 * Labels that hand a service to a proxy by name: Kubernetes' own (kube-proxy leaves a service that
 * has it to the proxy it names) and standalone EdgeMesh's.
 */
export const PROXY_NAME_LABELS = [
  'service.kubernetes.io/service-proxy-name',
  'service.edgemesh.kubeedge.io/service-proxy-name',
] as const;
/** `noproxy: edgemesh` leaves a service to others (standalone EdgeMesh's label). */
export const NOPROXY_LABEL = 'noproxy';
/**
 * The labels of a service EdgeMesh reads (iptables' `proxiedByUs`); the catalog keeps these and
 * drops the rest. A new service label EdgeMesh reads must be listed here.
 */
export const READ_SERVICE_LABELS: readonly string[] = [NOPROXY_LABEL, ...PROXY_NAME_LABELS];

/** The label that joins a slice to its service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** `networking.istio.io` DestinationRule: the part EdgeMesh reads (standalone EdgeMesh's LB policy). */
export interface DestinationRule {
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  spec?: { host?: string; trafficPolicy?: Record<string, unknown> } & Record<string, unknown>;
}

/**
 * An ExternalName service (Kubernetes DNS spec §2.5) is a DNS alias only: a CNAME, never a VIP, a
 * portal or an interception rule.
 */
export function isExternalName(s: Service | undefined): boolean {
  return s?.spec?.type === 'ExternalName';
}

export interface Pod {
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    /** Set while the pod terminates: it serves what it has, takes nothing new while others are ready. */
    deletionTimestamp?: string;
  };
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean;
    /** With `subdomain` equal to a headless service's name: the pod's DNS name under it. */
    hostname?: string;
    subdomain?: string;
    containers?: {
      name?: string;
      ports?: { name?: string; containerPort: number; hostPort?: number; protocol?: string }[];
    }[];
  };
  status?: {
    phase?: string;
    hostIP?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
  };
}
export interface Endpoints {
  kind?: string;
  metadata: { name: string; namespace?: string };
  subsets?: {
    addresses?: { ip: string; nodeName?: string; hostname?: string }[];
    notReadyAddresses?: { ip: string; nodeName?: string; hostname?: string }[];
    ports?: { name?: string; port: number; protocol?: string }[];
  }[];
}

/**
 * Another node's status as it publishes it (EdgeHub's retained status topic, kept by MetaManager
 * as `kube-node-lease/nodestatus/<node>`): its site, and how EdgeTunnel reaches it.
 */
export interface NodeStatus {
  kind?: string;
  metadata: { name: string; namespace?: string };
  status?: 'online' | 'offline';
  nodeIP?: string;
  site?: string;
  /** Its `topology.kubernetes.io/zone`. */
  zone?: string;
  addresses?: string[];
  tunnel?: {
    /** Relays (by certificate name) that hold a link to the node. */
    relays?: string[];
    /** `host:port` where the node takes direct tunnel dials. */
    address?: string;
  };
}
