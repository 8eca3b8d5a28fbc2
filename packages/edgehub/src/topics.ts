import { isDnsLabel, isDnsSubdomain } from '@edgecore/beehive';

/**
 * Types the cloud sends to one node only (its own pods): on `{prefix}/nodes/{node}/objects/…`, with
 * the digest on `{prefix}/nodes/{node}/digest/{type}`. Every other type goes to every node.
 */
export const NODE_SCOPED_TYPES: ReadonlySet<string> = new Set(['pod']);

/**
 * MQTT topic layout (see README):
 *   {prefix}/objects/{ns}/{type}/{name}   retained, QoS 1: latest state of every object, all nodes
 *                                         (a deletion is a retained tombstone message)
 *   {prefix}/nodes/{node}/objects/{ns}/{type}/{name}
 *                                         the same for the objects of one node (NODE_SCOPED_TYPES)
 *   {prefix}/nodes/{node}/digest/{type}   the digest of those
 *   {prefix}/nodes/{node}/down            QoS 1: cloud → one node (replies, per-node objects)
 *   {prefix}/nodes/{node}/up              QoS 1: node → cloud (remote queries, replies)
 *   {prefix}/nodes/{node}/status          retained: {"status":"online|offline",…}; offline is the will;
 *                                         every node keeps the others' (site, tunnel relays)
 *   {prefix}/digest/{type}                retained, QoS 1: {"count","hash"} of the live objects of a
 *                                         type, published by the cloud after its objects
 *   {prefix}/nodes/{node}/sync/{id}       QoS 0: a node's own fence while it reads retained state
 */
export class Topics {
  constructor(
    readonly prefix = 'edgecore',
    /** The node these topics are read by (its own objects and digests); unset for the cloud. */
    readonly node?: string,
  ) {}

  objects(): string {
    return `${this.prefix}/objects/#`;
  }
  /** This node's own objects (NODE_SCOPED_TYPES). */
  nodeObjects(node = this.node!): string {
    return `${this.prefix}/nodes/${node}/objects/#`;
  }
  /** An object's topic; a node-scoped type's names its node (`node`, required for those). */
  object(namespace: string, type: string, name: string, node?: string): string {
    if (NODE_SCOPED_TYPES.has(type)) {
      if (!node)
        throw new Error(`a ${type} is published to its node: no node given for ${namespace}/${name}`);
      return `${this.prefix}/nodes/${node}/objects/${namespace}/${type}/${name}`;
    }
    return `${this.prefix}/objects/${namespace}/${type}/${name}`;
  }
  /**
   * The objects of one type in a namespace (`+`: every one) — a resync reads these. A node-scoped
   * type's: this node's, or `node`'s (`+`: every node's, what the cloud reads back).
   */
  objectsOfType(type: string, namespace = '+', node = this.node ?? '+'): string {
    if (NODE_SCOPED_TYPES.has(type)) return `${this.prefix}/nodes/${node}/objects/${namespace}/${type}/+`;
    return `${this.prefix}/objects/${namespace}/${type}/+`;
  }
  digests(): string {
    return `${this.prefix}/digest/+`;
  }
  /** This node's digests (of its node-scoped types). */
  nodeDigests(node = this.node!): string {
    return `${this.prefix}/nodes/${node}/digest/+`;
  }
  /** A type's digest topic; a node-scoped type's is per node. */
  digest(type: string, node?: string): string {
    if (NODE_SCOPED_TYPES.has(type)) {
      if (!node) throw new Error(`the ${type} digest is per node: no node given`);
      return `${this.prefix}/nodes/${node}/digest/${type}`;
    }
    return `${this.prefix}/digest/${type}`;
  }
  /**
   * The type of a digest topic, or undefined: a fleet digest of a fleet-wide type, or this node's
   * digest of a node-scoped type.
   */
  digestType(topic: string): string | undefined {
    const fleet = `${this.prefix}/digest/`;
    const mine = this.node ? `${this.prefix}/nodes/${this.node}/digest/` : undefined;
    let type: string;
    if (topic.startsWith(fleet)) {
      type = topic.slice(fleet.length);
      if (NODE_SCOPED_TYPES.has(type)) return undefined; // an older cloud's: the node's own counts
    } else if (mine && topic.startsWith(mine)) {
      type = topic.slice(mine.length);
      if (!NODE_SCOPED_TYPES.has(type)) return undefined;
    } else return undefined;
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

  /** Whether a topic is an object topic (fleet-wide or a node's), well-formed or not. */
  isObjectTopic(topic: string): boolean {
    if (topic.startsWith(`${this.prefix}/objects/`)) return true;
    const head = `${this.prefix}/nodes/`;
    if (!topic.startsWith(head)) return false;
    return topic.slice(head.length).split('/')[1] === 'objects';
  }

  /**
   * The resource string `<ns>/<type>/<name>` of an object topic, or undefined: a fleet-wide one,
   * or a node's of a node-scoped type (this node's, or any node's when the topics have no node).
   */
  objectResource(topic: string): string | undefined {
    return this.objectAt(topic)?.resource;
  }

  /** An object topic's resource and, for a node's object, its node. */
  objectAt(topic: string): { resource: string; node?: string } | undefined {
    const fleet = `${this.prefix}/objects/`;
    const nodes = `${this.prefix}/nodes/`;
    let parts: string[];
    let node: string | undefined;
    if (topic.startsWith(fleet)) parts = topic.slice(fleet.length).split('/');
    else if (topic.startsWith(nodes)) {
      const p = topic.slice(nodes.length).split('/');
      if (p[1] !== 'objects' || (this.node && p[0] !== this.node) || !isDnsSubdomain(p[0])) return undefined;
      node = p[0];
      parts = p.slice(2);
    } else return undefined;
    if (parts.length !== 3) return undefined;
    const [ns, type, name] = parts;
    if (!isDnsLabel(ns) || !/^[a-z][a-z0-9]*$/.test(type) || !isDnsSubdomain(name)) return undefined;
    if (node !== undefined && !NODE_SCOPED_TYPES.has(type)) return undefined;
    return { resource: `${ns}/${type}/${name}`, node };
  }
}

/** Kubernetes kind ↔ beehive resource type. */
export const KIND_TO_TYPE: Record<string, string> = {
  Service: 'service',
  Endpoints: 'endpoints',
  EndpointSlice: 'endpointslice',
  DestinationRule: 'destinationrule',
  Pod: 'pod',
  ConfigMap: 'configmap',
};
export const TYPE_TO_KIND: Record<string, string> = Object.fromEntries(
  Object.entries(KIND_TO_TYPE).map(([k, t]) => [t, k]),
);
