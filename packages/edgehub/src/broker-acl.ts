import { hostname } from 'node:os';
import { Topics } from './topics';

/**
 * The mosquitto `acl_file` of a fleet where each node has its own broker identity (its username is
 * its node name) and only the cloud identity writes objects: a node reads the objects and digests
 * every node gets, its own objects, digests and `down` topic, and every node's status (EdgeTunnel
 * reads the others' sites); it writes only its own `up`, `status` and `sync` topics. A node whose
 * credentials leak can then rewrite nothing of the fleet: the broker refuses its publish to
 * `objects/…` (MQTT 5: PUBACK "not authorized"), and another node's `down` never reaches it.
 */
export function brokerAcl(opts: { prefix?: string; cloudUser?: string } = {}): string {
  const t = new Topics(opts.prefix);
  const p = t.prefix;
  const cloud = opts.cloudUser ?? 'edgectl';
  return [
    `# edgecore broker ACL (mosquitto acl_file) for topic prefix "${p}"`,
    '# each node connects with its node name as username; the cloud (edgectl) as ' + cloud,
    '',
    `user ${cloud}`,
    `topic readwrite ${p}/#`,
    '',
    '# every node, by its username (%u):',
    `pattern read ${t.objects()}`,
    `pattern read ${t.digests()}`,
    `pattern read ${t.nodeObjects('%u')}`,
    `pattern read ${t.nodeDigests('%u')}`,
    `pattern read ${t.down('%u')}`,
    `pattern read ${t.statuses()}`,
    `pattern write ${t.up('%u')}`,
    `pattern readwrite ${t.status('%u')}`,
    `pattern readwrite ${p}/nodes/%u/sync/#`,
    '',
  ].join('\n');
}

export interface BrokerBridgeOptions {
  /** The cloud broker, host:port. */
  cloud: string;
  /**
   * This regional broker's name, unique in the fleet: the bridge's client id on the cloud broker
   * (two bridges with one id take each other's session over, again and again). Default: the host
   * name, as mosquitto's own default.
   */
  name?: string;
  prefix?: string;
  /** The bridge's identity on the cloud broker (its ACL: the cloud's, or one that reads all). */
  username?: string;
  password?: string;
  /** The CA of the cloud broker's certificate (TLS bridge). */
  cafile?: string;
}

/**
 * The mosquitto configuration of a regional broker bridged to the cloud's: what the nodes read
 * (objects, digests, their own objects and `down`) comes in, what they write (`up`) goes out, and
 * every node's retained status travels both ways (EdgeTunnel reads the others'). The fences of
 * retained reads (`nodes/+/sync/…`) stay on each broker.
 *
 * The cloud → regional hop is QoS 0 with a clean session: each bridge connect then reads the
 * cloud's whole retained state (a stock cloud broker queues at most `max_queued_messages`, 1,000,
 * of a QoS 1 retained replay beyond the bridge's in-flight window, and drops the rest; at QoS 0 it
 * writes them all). The regional broker passes objects and digests on at that QoS 0: mosquitto
 * cannot tell that replay from live changes, and every bridge connect (the cloud broker's restart,
 * a link flap) sends it to every node subscribed there — at QoS 1 that was a PUBACK per object
 * per node and a backlog queued in the session of each node that was away; at QoS 0 a node that
 * is away is queued nothing. What a node misses so (a change while it was away, a burst past the
 * broker's queue, a message lost while the bridge reconnects) its digest check finds and reads
 * back. `down` stays QoS 1 end to end. MQTT 5, so a tombstone keeps its expiry across the bridge.
 */
export function brokerBridge(o: BrokerBridgeOptions): string {
  const t = new Topics(o.prefix);
  const p = t.prefix;
  return [
    `# edgecore: a regional broker bridged to the cloud broker ${o.cloud} (topic prefix "${p}")`,
    `connection edgecore-cloud`,
    `address ${o.cloud}`,
    `remote_clientid edgecore-bridge-${o.name ?? hostname()}`,
    'bridge_protocol_version mqttv50',
    'cleansession true',
    'try_private true',
    'notifications false',
    'restart_timeout 1 15',
    ...(o.username ? [`remote_username ${o.username}`] : []),
    ...(o.password ? [`remote_password ${o.password}`] : []),
    ...(o.cafile ? [`bridge_cafile ${o.cafile}`] : []),
    '# cloud -> nodes at QoS 0: the whole retained state on every bridge connect, passed on to the',
    "# nodes connected then (a node's digest check reads back what it missed)",
    `topic ${t.objects()} in 0`,
    `topic ${t.digests().replace(/\+$/, '#')} in 0`,
    `topic ${t.nodeObjects('+')} in 0`,
    `topic ${t.nodeDigests('+').replace(/\+$/, '#')} in 0`,
    `topic ${t.down('+')} in 1`,
    '# nodes -> cloud',
    `topic ${t.up('+')} out 1`,
    '# the status of every node, on every broker',
    `topic ${t.status('+')} both 0`,
    '',
  ].join('\n');
}
