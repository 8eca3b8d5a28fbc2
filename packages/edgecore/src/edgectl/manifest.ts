import { isDnsLabel, isDnsSubdomain } from '@edgecore/beehive';
import { isIPv4 } from 'node:net';
import { parseAllDocuments } from 'yaml';
import { EdgeCoreError } from '../edgecore-errors';

/** One object edgectl publishes: a Service, Endpoints or Pod (Deployments expand into Pods). */
export interface PlannedObject {
  type: 'service' | 'endpoints' | 'endpointslice' | 'destinationrule' | 'pod' | 'configmap';
  namespace: string;
  name: string;
  /** A pod's node: pods go to their node only. */
  node?: string;
  object: Record<string, any>;
}

/** What a manifest document turned into, plus the line kubectl would print for it. */
export interface PlannedDocument {
  display: string; // e.g. service/nginx-svc, deployment.apps/nginx-deployment
  objects: PlannedObject[];
  /** A Deployment's: the pods it owns that the broker holds and this plan does not are removed. */
  owner?: { kind: 'Deployment'; namespace: string; name: string };
}

export class ManifestError extends EdgeCoreError {
  constructor(
    readonly file: string,
    readonly documentIndex: number | undefined,
    reason: string,
  ) {
    super(
      'EDGECTL_MANIFEST',
      `${file}${documentIndex !== undefined ? `: document ${documentIndex}` : ''}: ${reason}`,
    );
  }
}

export interface PlanOptions {
  /** Node name → host IP, for Deployment pods and Pods without status.hostIP. */
  nodeIPs: Record<string, string>;
}

/**
 * Parse multi-document Kubernetes YAML into objects to publish. Every document is validated first;
 * any invalid one fails the whole file (nothing is published from it).
 */
export function planManifest(text: string, file: string, opts: PlanOptions): PlannedDocument[] {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw new ManifestError(file, undefined, 'not a YAML stream');
  const out: PlannedDocument[] = [];
  docs.forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length)
      throw new ManifestError(file, index, `invalid YAML: ${doc.errors[0].message.split('\n')[0]}`);
    const o = doc.toJS() as Record<string, any> | null;
    if (o === null || o === undefined) return; // an empty document (e.g. a trailing ---)
    out.push(planDocument(o, file, index, opts));
  });
  if (out.length === 0) throw new ManifestError(file, undefined, 'no objects');
  return out;
}

function planDocument(
  o: Record<string, any>,
  file: string,
  index: number,
  opts: PlanOptions,
): PlannedDocument {
  const fail = (reason: string): never => {
    throw new ManifestError(file, index, reason);
  };
  if (typeof o !== 'object' || Array.isArray(o)) fail('not a mapping');
  const kind = o.kind;
  if (typeof kind !== 'string') fail('missing kind');
  if (typeof o.apiVersion !== 'string') fail('missing apiVersion');
  const meta = o.metadata;
  if (!meta || typeof meta !== 'object') fail('missing metadata');
  const name = meta.name;
  if (typeof name !== 'string' || !isDnsSubdomain(name))
    fail(`metadata.name ${JSON.stringify(name)} is not a valid RFC 1123 name`);
  const namespace = meta.namespace ?? 'default';
  if (typeof namespace !== 'string' || !isDnsLabel(namespace))
    fail(`metadata.namespace ${JSON.stringify(namespace)} is not a valid RFC 1123 label`);
  const base = { ...o, metadata: { ...meta, namespace } };
  switch (kind) {
    case 'Service':
      validateService(base, fail);
      return { display: `service/${name}`, objects: [{ type: 'service', namespace, name, object: base }] };
    case 'Endpoints':
      if (o.subsets !== undefined && !Array.isArray(o.subsets)) fail('subsets must be a list');
      return {
        display: `endpoints/${name}`,
        objects: [{ type: 'endpoints', namespace, name, object: base }],
      };
    case 'Pod': {
      const pod = completePod(base, opts, fail);
      return {
        display: `pod/${name}`,
        objects: [{ type: 'pod', namespace, name, node: pod.spec.nodeName, object: pod }],
      };
    }
    case 'EndpointSlice':
      validateSlice(base, fail);
      return {
        display: `endpointslice.discovery.k8s.io/${name}`,
        objects: [{ type: 'endpointslice', namespace, name, object: base }],
      };
    case 'DestinationRule':
      // read by EdgeMesh, which ignores (with a warning) what it does not know: only the shape here
      if (o.spec !== undefined && (typeof o.spec !== 'object' || Array.isArray(o.spec)))
        fail('spec must be a mapping');
      return {
        display: `destinationrule.networking.istio.io/${name}`,
        objects: [{ type: 'destinationrule', namespace, name, object: base }],
      };
    case 'Deployment':
      return {
        display: `deployment.apps/${name}`,
        objects: expandDeployment(base, opts, fail),
        owner: { kind: 'Deployment', namespace, name },
      };
    case 'ConfigMap':
      if (o.data !== undefined && (typeof o.data !== 'object' || Array.isArray(o.data)))
        fail('data must be a mapping');
      for (const [k, val] of Object.entries(o.data ?? {}))
        if (typeof val !== 'string') fail(`data.${k} must be a string`);
      return {
        display: `configmap/${name}`,
        objects: [{ type: 'configmap', namespace, name, object: base }],
      };
    default:
      return fail(
        `unsupported kind "${kind}" (supported: Pod, Service, Endpoints, EndpointSlice, Deployment, ConfigMap, DestinationRule)`,
      );
  }
}

/** An EndpointSlice a user writes (a service without selector): the fields EdgeMesh reads. */
function validateSlice(o: Record<string, any>, fail: (r: string) => never): void {
  if (typeof o.metadata.labels?.['kubernetes.io/service-name'] !== 'string')
    fail('EndpointSlice needs the label kubernetes.io/service-name (the service it belongs to)');
  if (o.addressType !== undefined && !['IPv4', 'IPv6', 'FQDN'].includes(o.addressType))
    fail('addressType must be IPv4, IPv6 or FQDN');
  if (o.endpoints !== undefined && !Array.isArray(o.endpoints)) fail('endpoints must be a list');
  (o.endpoints ?? []).forEach((e: any, i: number) => {
    if (!Array.isArray(e?.addresses) || e.addresses.length === 0)
      fail(`endpoints[${i}].addresses must be a non-empty list`);
    if ((o.addressType ?? 'IPv4') === 'IPv4')
      e.addresses.forEach((a: unknown, j: number) => {
        if (typeof a !== 'string' || !isIPv4(a))
          fail(`endpoints[${i}].addresses[${j}] is not an IPv4 address`);
      });
    for (const c of ['ready', 'serving', 'terminating'])
      if (e.conditions?.[c] !== undefined && typeof e.conditions[c] !== 'boolean')
        fail(`endpoints[${i}].conditions.${c} must be true or false`);
  });
  if (o.ports !== undefined && !Array.isArray(o.ports)) fail('ports must be a list');
  (o.ports ?? []).forEach((p: any, i: number) => {
    if (p?.port !== undefined && (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535))
      fail(`ports[${i}].port must be 1-65535`);
    if (p?.protocol !== undefined && !['TCP', 'UDP', 'SCTP'].includes(p.protocol))
      fail(`ports[${i}].protocol must be TCP, UDP or SCTP`);
  });
}

function validateService(s: Record<string, any>, fail: (r: string) => never): void {
  const spec = s.spec;
  if (!spec || typeof spec !== 'object') fail('Service without spec');
  const external = spec.type === 'ExternalName';
  if (
    external &&
    (typeof spec.externalName !== 'string' || !isDnsSubdomain(spec.externalName.replace(/\.$/, '')))
  )
    fail('an ExternalName Service needs spec.externalName, a DNS name');
  if (!external && (!Array.isArray(spec.ports) || spec.ports.length === 0))
    fail('Service spec.ports must be a non-empty list');
  // what the API server rejects, rejected here too (the names of each field's values)
  const oneOf = (field: string, v: unknown, values: string[]): void => {
    if (v !== undefined && !values.includes(v as string))
      fail(`spec.${field} must be one of ${values.join(', ')} (got ${JSON.stringify(v)})`);
  };
  oneOf('internalTrafficPolicy', spec.internalTrafficPolicy, ['Cluster', 'Local']);
  oneOf('sessionAffinity', spec.sessionAffinity, ['None', 'ClientIP']);
  oneOf('trafficDistribution', spec.trafficDistribution, ['PreferClose', 'PreferSameZone', 'PreferSameNode']);
  const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
  if (t !== undefined && (!Number.isInteger(t) || t < 1 || t > 86400))
    fail('spec.sessionAffinityConfig.clientIP.timeoutSeconds must be 1-86400');
  if (spec.publishNotReadyAddresses !== undefined && typeof spec.publishNotReadyAddresses !== 'boolean')
    fail('spec.publishNotReadyAddresses must be true or false');
  (spec.ports ?? []).forEach((p: any, i: number) => {
    if (!Number.isInteger(p?.port) || p.port < 1 || p.port > 65535)
      fail(`spec.ports[${i}].port must be 1-65535`);
    if (p.protocol !== undefined && !['TCP', 'UDP', 'SCTP'].includes(p.protocol))
      fail(`spec.ports[${i}].protocol must be TCP or UDP`);
    if (p.name !== undefined && (typeof p.name !== 'string' || !isDnsLabel(p.name)))
      fail(`spec.ports[${i}].name must be an RFC 1123 label`);
  });
  if (
    spec.clusterIP !== undefined &&
    spec.clusterIP !== 'None' &&
    spec.clusterIP !== '' &&
    !isIPv4(String(spec.clusterIP))
  )
    fail('spec.clusterIP must be None or an IPv4 address');
}

/** A Pod as a kubelet would report it: Running and Ready on its node, hostIP from status or --node-ip. */
function completePod(
  p: Record<string, any>,
  opts: PlanOptions,
  fail: (r: string) => never,
): Record<string, any> {
  const spec = p.spec;
  if (!spec || !Array.isArray(spec.containers) || spec.containers.length === 0)
    fail('Pod spec.containers must be a non-empty list');
  const node = spec.nodeName;
  if (typeof node !== 'string' || !isDnsSubdomain(node))
    fail(`pod ${p.metadata.name}: spec.nodeName is required (a pod is sent to its node only)`);
  const status = { ...(p.status ?? {}) };
  if (!status.hostIP && node) status.hostIP = opts.nodeIPs[node];
  if (!status.hostIP)
    fail(`pod ${p.metadata.name}: no status.hostIP and no --node-ip for node ${JSON.stringify(node ?? '')}`);
  if (!isIPv4(status.hostIP))
    fail(`pod ${p.metadata.name}: hostIP ${JSON.stringify(status.hostIP)} is not IPv4`);
  status.phase ??= 'Running';
  status.podIP ??= spec.hostNetwork === false ? undefined : status.hostIP;
  status.conditions ??= [{ type: 'Ready', status: 'True' }];
  return { ...p, status };
}

function expandDeployment(
  d: Record<string, any>,
  opts: PlanOptions,
  fail: (r: string) => never,
): PlannedObject[] {
  const spec = d.spec ?? fail('Deployment without spec');
  const replicas = spec.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 1000)
    fail('spec.replicas must be an integer 0-1000');
  const tpl = spec.template ?? fail('Deployment without spec.template');
  const podSpec = tpl.spec ?? fail('Deployment without spec.template.spec');
  const node = podSpec.nodeName ?? podSpec.nodeSelector?.['kubernetes.io/hostname'];
  if (typeof node !== 'string' || !node)
    fail(
      'Deployment needs spec.template.spec.nodeName (or nodeSelector kubernetes.io/hostname): edgectl places pods on a fixed node',
    );
  const labels = tpl.metadata?.labels ?? {};
  const sel = spec.selector?.matchLabels;
  if (sel && Object.entries(sel).some(([k, v]) => labels[k] !== v))
    fail('spec.selector.matchLabels does not match spec.template.metadata.labels');
  const out: PlannedObject[] = [];
  for (let i = 0; i < replicas; i++) {
    const name = `${d.metadata.name}-${i}`;
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: d.metadata.namespace,
        labels,
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata.name }],
      },
      spec: { ...podSpec, nodeName: node },
    };
    out.push({
      type: 'pod',
      namespace: d.metadata.namespace,
      name,
      node,
      object: completePod(pod, opts, fail),
    });
  }
  return out;
}
