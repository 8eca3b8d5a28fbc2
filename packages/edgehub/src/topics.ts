import { isDnsLabel, isDnsSubdomain } from '@edgecore/beehive';

/**
 * MQTT topic layout (see README):
 *   {prefix}/objects/{ns}/{type}/{name}   retained, QoS 1: latest state of every object, all nodes
 *                                         (a deletion is a retained tombstone message)
 *   {prefix}/nodes/{node}/down            QoS 1: cloud → one node (replies, per-node objects)
 *   {prefix}/nodes/{node}/up              QoS 1: node → cloud (remote queries, replies)
 *   {prefix}/nodes/{node}/status          retained: {"status":"online|offline",…}; offline is the will;
 *                                         every node keeps the others' (site, tunnel relays)
 *   {prefix}/digest/{type}                retained, QoS 1: {"count","hash"} of the live objects of a
 *                                         type, published by the cloud after its objects
 *   {prefix}/nodes/{node}/sync/{id}       QoS 0: a node's own fence while it reads retained state
 */
export class Topics {
  constructor(readonly prefix = 'edgecore') {}

  objects(): string {
    return `${this.prefix}/objects/#`;
  }
  object(namespace: string, type: string, name: string): string {
    return `${this.prefix}/objects/${namespace}/${type}/${name}`;
  }
  /** The objects of one type in every namespace (a resync reads these). */
  objectsOfType(type: string, namespace = '+'): string {
    return `${this.prefix}/objects/${namespace}/${type}/+`;
  }
  digests(): string {
    return `${this.prefix}/digest/+`;
  }
  digest(type: string): string {
    return `${this.prefix}/digest/${type}`;
  }
  /** The type of a digest topic, or undefined. */
  digestType(topic: string): string | undefined {
    const head = `${this.prefix}/digest/`;
    if (!topic.startsWith(head)) return undefined;
    const type = topic.slice(head.length);
    return /^[a-z][a-z0-9]*$/.test(type) ? type : undefined;
  }
  fence(node: string, id: string): string {
    return `${this.prefix}/nodes/${node}/sync/${id}`;
  }
  down(node: string): string {
    return `${this.prefix}/nodes/${node}/down`;
  }
  up(node: string): string {
    return `${this.prefix}/nodes/${node}/up`;
  }
  status(node: string): string {
    return `${this.prefix}/nodes/${node}/status`;
  }
  /** Every node's status (a node keeps the others' site and tunnel reachability). */
  statuses(): string {
    return `${this.prefix}/nodes/+/status`;
  }
  /** The node of a status topic, or undefined. */
  statusNode(topic: string): string | undefined {
    const head = `${this.prefix}/nodes/`;
    if (!topic.startsWith(head) || !topic.endsWith('/status')) return undefined;
    const node = topic.slice(head.length, -'/status'.length);
    return isDnsSubdomain(node) ? node : undefined;
  }

  /** The resource string `<ns>/<type>/<name>` of an object topic, or undefined. */
  objectResource(topic: string): string | undefined {
    const head = `${this.prefix}/objects/`;
    if (!topic.startsWith(head)) return undefined;
    const parts = topic.slice(head.length).split('/');
    if (parts.length !== 3) return undefined;
    const [ns, type, name] = parts;
    if (!isDnsLabel(ns) || !/^[a-z][a-z0-9]*$/.test(type) || !isDnsSubdomain(name)) return undefined;
    return `${ns}/${type}/${name}`;
  }
}

/** Kubernetes kind ↔ beehive resource type. */
export const KIND_TO_TYPE: Record<string, string> = {
  Service: 'service',
  Endpoints: 'endpoints',
  Pod: 'pod',
  ConfigMap: 'configmap',
};
export const TYPE_TO_KIND: Record<string, string> = {
  service: 'Service',
  endpoints: 'Endpoints',
  pod: 'Pod',
  configmap: 'ConfigMap',
};
