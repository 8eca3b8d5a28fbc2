import { newMessage, toWire } from '@edgecore/beehive';
import { Topics, TYPE_TO_KIND } from '@edgecore/edgehub';
import { connectAsync, type MqttClient } from 'mqtt';
import type { PlannedObject } from './manifest';

/**
 * Publishes objects as retained QoS 1 messages on `{prefix}/objects/{ns}/{type}/{name}`; a delete
 * is a retained tombstone (operation delete) so nodes that were away converge when they return.
 */
export class ObjectPublisher {
  private rvSeq = 0;
  private constructor(
    private readonly client: MqttClient,
    private readonly topics: Topics,
  ) {}

  static async connect(
    server: string,
    opts: { username?: string; password?: string; prefix?: string } = {},
  ): Promise<ObjectPublisher> {
    const client = await connectAsync(server, {
      clientId: `edgectl-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      username: opts.username,
      password: opts.password,
    });
    return new ObjectPublisher(client, new Topics(opts.prefix));
  }

  /**
   * resourceVersions from the clock (µs resolution plus a sequence) so that a later apply wins on
   * every node, as Kubernetes' etcd revision would.
   */
  nextResourceVersion(): number {
    return Date.now() * 1000 + (this.rvSeq++ % 1000);
  }

  async apply(o: PlannedObject): Promise<void> {
    const rv = String(this.nextResourceVersion());
    const object = { ...o.object, metadata: { ...o.object.metadata, resourceVersion: rv } };
    const resource = `${o.namespace}/${o.type}/${o.name}`;
    const msg = newMessage(object, {
      source: 'edgectl',
      group: 'resource',
      operation: 'update',
      resource,
      resourceVersion: rv,
    });
    await this.client.publishAsync(this.topics.object(o.namespace, o.type, o.name), toWire(msg), {
      qos: 1,
      retain: true,
    });
  }

  async delete(o: PlannedObject): Promise<void> {
    const rv = String(this.nextResourceVersion());
    const tomb = {
      apiVersion: 'v1',
      kind: TYPE_TO_KIND[o.type],
      metadata: { name: o.name, namespace: o.namespace, resourceVersion: rv },
    };
    const resource = `${o.namespace}/${o.type}/${o.name}`;
    const msg = newMessage(tomb, {
      source: 'edgectl',
      group: 'resource',
      operation: 'delete',
      resource,
      resourceVersion: rv,
    });
    await this.client.publishAsync(this.topics.object(o.namespace, o.type, o.name), toWire(msg), {
      qos: 1,
      retain: true,
    });
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}
