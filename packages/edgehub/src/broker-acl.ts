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
