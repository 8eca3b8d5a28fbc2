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
  spec?: { clusterIP?: string; selector?: Record<string, string>; ports?: ServicePort[]; type?: string };
}
export interface Pod {
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean;
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
    addresses?: { ip: string; nodeName?: string }[];
    notReadyAddresses?: { ip: string }[];
    ports?: { name?: string; port: number; protocol?: string }[];
  }[];
}
