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
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; resourceVersion?: string };
  spec?: {
    clusterIP?: string;
    selector?: Record<string, string>;
    ports?: ServicePort[];
    type?: string;
    /** `type: ExternalName`: the DNS name the service is an alias of. */
    externalName?: string;
  };
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
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
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
    notReadyAddresses?: { ip: string }[];
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
  addresses?: string[];
  tunnel?: {
    /** Relays (by certificate name) that hold a link to the node. */
    relays?: string[];
    /** `host:port` where the node takes direct tunnel dials. */
    address?: string;
  };
}
