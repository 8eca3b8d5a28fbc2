import { fromWire, type Logger } from '@edgecore/beehive';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { parseDenyList, REVOKED_CONFIGMAP, type DenyList } from './deny-list';

export interface RevokedFeedOptions {
  /** The fleet's broker (`mqtt://`, `mqtts://`), as the nodes reach it. */
  server: string;
  /** Topic prefix (default `edgecore`). */
  prefix?: string;
  /** MQTT client options: credentials, the CA of an mqtts broker. */
  client?: IClientOptions;
  log: Logger;
}

/**
 * The cloud's deny list for a relay: the `kube-system/edgetunnel-revoked` ConfigMap that
 * `edgectl certs configmap | edgectl apply -f -` publishes, read from the broker's retained
 * object and followed (a relay is no MetaManager node: it subscribes to that one topic). Its
 * entries join the relay's file (`DenyList.setDistributed`); a node it names is cut at once. A
 * malformed ConfigMap is logged and leaves the last good list in force; a deleted one clears the
 * cloud's part. The connection retries as the client's reconnect does.
 */
export async function followRevokedConfigMap(denied: DenyList, o: RevokedFeedOptions): Promise<MqttClient> {
  const c = REVOKED_CONFIGMAP;
  const topic = `${o.prefix ?? 'edgecore'}/objects/${c.namespace}/configmap/${c.name}`;
  const client = await connectAsync(o.server, {
    clientId: `edgerelay-${Math.random().toString(16).slice(2, 10)}`,
    clean: true,
    reconnectPeriod: 2000,
    connectTimeout: 10_000,
    ...o.client,
  });
  client.on('error', (e) => o.log.warn({ err: e.message }, 'revoked ConfigMap: broker connection error'));
  client.on('message', (_t, payload) => {
    try {
      if (!payload.length) return denied.setDistributed([]);
      const msg = fromWire(payload);
      if (msg.route.operation === 'delete') return denied.setDistributed([]);
      const data = (msg.content as { data?: Record<string, string> } | null)?.data ?? {};
      const text = data[c.key];
      if (text === undefined) throw new Error(`no data.${c.key}`);
      const entries = parseDenyList(text, `configmap ${c.namespace}/${c.name}`);
      denied.setDistributed(entries);
      o.log.info({ entries: entries.length }, 'deny list from the cloud applied');
    } catch (e) {
      o.log.warn(
        { err: (e as Error).message },
        'ignoring a malformed revoked ConfigMap (the last good list stays)',
      );
    }
  });
  await client.subscribeAsync(topic, { qos: 1 });
  return client;
}
