import { parseDigest } from '@edgecore/beehive';
import { randomUUID } from 'node:crypto';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { publishLinksFor } from './publish-link';
import { Topics } from './topics';
import { mqttClientDefaults } from './mqtt-packet-tuning';

/** One line of `edgecore check`: what was looked at, and what a node will see because of it. */
export interface BrokerFinding {
  level: 'ok' | 'info' | 'warn' | 'error';
  /** What the finding is about: `connect`, `protocol`, `retain`, `queue`, `digest`, `persistence`. */
  key: string;
  message: string;
}

export interface BrokerCheckOptions {
  server: string;
  /** Client options shared by every connection of the check (credentials, TLS). */
  client?: IClientOptions;
  topicPrefix?: string;
  /** Messages published to a session of the check while it is away (measures the queue). */
  probeCount?: number;
  timeoutMs?: number;
}

const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Publishes in flight below which a broker paces the cloud's applies: edgectl keeps within an MQTT
 * 5 broker's Receive Maximum on each link (MQTT 5 says a client must), over up to
 * MAX_PUBLISH_LINKS links (publishLinksFor), so a catalog goes that many times it per round trip.
 */
export const RECEIVE_MAXIMUM_FOR_APPLIES = 1000;

/**
 * Look at a broker the way a node depends on it, over MQTT only: the protocol it speaks (MQTT 5
 * lets a node set its in-flight window; 3.1.1 leaves it to the broker's `max_inflight_messages`),
 * retained messages, how many messages it keeps for a node that is away (its queue limit, measured
 * with a session of the check's own), and the cloud's digests. Everything the check publishes is
 * under `{prefix}/check/<id>/` and is cleared again; its session is ended.
 */
export async function checkBroker(o: BrokerCheckOptions): Promise<BrokerFinding[]> {
  const out: BrokerFinding[] = [];
  const topics = new Topics(o.topicPrefix);
  const id = randomUUID().slice(0, 8);
  const base = `${topics.prefix}/check/${id}`;
  const timeout = o.timeoutMs ?? 10_000;
  const common: IClientOptions = {
    ...mqttClientDefaults(),
    ...o.client,
    reconnectPeriod: 0,
    connectTimeout: timeout,
  };
  const n = o.probeCount ?? 1500;

  // 1. protocol: 5, or 3.1.1 from a broker that refuses 5 (CONNACK 1 or 132)
  let main: MqttClient | undefined;
  let version: 4 | 5 = 5;
  for (const v of [5, 4] as const) {
    try {
      main = await connectAsync(o.server, {
        ...common,
        clientId: `edgecore-check-${id}`,
        protocolVersion: v,
        clean: true,
      });
      version = v;
      break;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (v === 5 && (code === 1 || code === 132)) continue;
      out.push({
        level: 'error',
        key: 'connect',
        message: `cannot connect to ${o.server}: ${(e as Error).message}`,
      });
      return out;
    }
  }
  if (!main) return out;
  const v5 = version === 5;
  /** What an MQTT 5 broker takes unanswered from a client at once (3.1.1: no such limit). */
  let receiveMaximum = 65_535;
  out.push({ level: 'ok', key: 'connect', message: `connected to ${o.server}` });
  if (v5) {
    const p = (main as unknown as { connackPacket?: { properties?: Record<string, unknown> } }).connackPacket
      ?.properties;
    out.push({
      level: 'ok',
      key: 'protocol',
      message:
        'MQTT 5: a node sets its own in-flight window (mqtt.receiveMaximum), whatever max_inflight_messages says',
    });
    if (typeof p?.receiveMaximum === 'number') receiveMaximum = p.receiveMaximum;
    // edgectl keeps within it on each of its links
    const links = publishLinksFor(RECEIVE_MAXIMUM_FOR_APPLIES, receiveMaximum);
    const perRoundTrip = Math.min(RECEIVE_MAXIMUM_FOR_APPLIES, receiveMaximum * links);
    if (perRoundTrip < RECEIVE_MAXIMUM_FOR_APPLIES)
      out.push({
        level: 'warn',
        key: 'inflight',
        message: `the broker takes ${receiveMaximum} QoS 1 publishes from a client at a time (its Receive Maximum; mosquitto max_inflight_messages): edgectl applies ${perRoundTrip} per round trip (${receiveMaximum} on each of its ${links} links); set it to 1000 or more on the broker edgectl publishes to`,
      });
    if (p?.retainAvailable === false)
      out.push({
        level: 'error',
        key: 'retain',
        message: 'the broker says it has no retained messages: nodes cannot join late or resync',
      });
    if (p?.maximumQoS === 0)
      out.push({
        level: 'error',
        key: 'qos',
        message: 'the broker takes QoS 0 only: nothing is acknowledged after the commit',
      });
    if (typeof p?.maximumPacketSize === 'number' && p.maximumPacketSize < 1 << 20)
      out.push({
        level: 'warn',
        key: 'packet-size',
        message: `the broker refuses packets over ${p.maximumPacketSize} bytes (message_size_limit): a larger object never reaches a node`,
      });
  } else {
    out.push({
      level: 'warn',
      key: 'protocol',
      message:
        'MQTT 3.1.1 only: the broker bounds what a node takes per round trip (mosquitto max_inflight_messages, 20 by default); set it to 1000 or more',
    });
  }

  try {
    // 2. retained messages
    const retainedTopic = `${base}/retained`;
    await main.publishAsync(retainedTopic, 'edgecore-check', { qos: 1, retain: true });
    const got = await readRetained(o.server, { ...common, protocolVersion: version }, retainedTopic, timeout);
    await main.publishAsync(retainedTopic, '', { qos: 1, retain: true });
    out.push(
      got.has(retainedTopic)
        ? { level: 'ok', key: 'retain', message: 'retained messages are kept and delivered on subscribe' }
        : {
            level: 'error',
            key: 'retain',
            message: 'a retained message did not come back: nodes cannot join late or resync',
          },
    );

    // 3. the queue of a node that is away
    const session = `edgecore-check-${id}-away`;
    const away: IClientOptions = {
      ...common,
      clientId: session,
      protocolVersion: version,
      clean: false,
      ...(v5 ? { properties: { sessionExpiryInterval: 300, receiveMaximum: 65535 } } : {}),
    };
    const s1 = await connectAsync(o.server, away); // a new client id: a new persistent session
    await s1.subscribeAsync(`${base}/queue`, { qos: 1 });
    await s1.endAsync();
    // within the broker's Receive Maximum (MQTT 5 says a client must), as edgectl's publishes: a
    // window that slides (each answer lets the next go); batches that waited for their last
    // answer took 44 ms each on mosquitto (its PUBACKs wait for our delayed ACK)
    let next = 0;
    const sender = async (): Promise<void> => {
      while (next < n) await main!.publishAsync(`${base}/queue`, String(next++), { qos: 1 });
    };
    await Promise.all(Array.from({ length: Math.min(n, receiveMaximum) }, sender));
    let received = 0;
    // the handler is there before the CONNACK: the queued messages follow it at once
    const back = connect(o.server, away);
    back.on('message', () => (received += 1));
    await new Promise<void>((resolve, reject) => {
      back.once('connect', () => resolve());
      back.once('error', reject);
    });
    let last = -1;
    const end = Date.now() + timeout;
    while (received !== last && Date.now() < end) {
      last = received;
      await wait(300);
    }
    // end the session: a clean connection discards it
    await back.endAsync();
    const gone = await connectAsync(o.server, {
      ...away,
      clean: true,
      ...(v5 ? { properties: { sessionExpiryInterval: 0 } } : {}),
    });
    await gone.endAsync();
    if (received >= n)
      out.push({
        level: 'ok',
        key: 'queue',
        message: `${n} messages published while a session was away all came back (max_queued_messages ≥ ${n})`,
      });
    else
      out.push({
        level: 'warn',
        key: 'queue',
        message:
          `the broker kept ${received} of ${n} messages for a session that was away (mosquitto max_queued_messages): ` +
          'a node away during a larger change reads the rest back through its digest check; raise it (e.g. 100000) for large catalogs',
      });

    // 4. the cloud's digests
    const digests = await readRetained(
      o.server,
      { ...common, protocolVersion: version },
      topics.digests(),
      timeout,
    );
    const types = [...digests].flatMap(([t, payload]) => {
      const type = topics.digestType(t);
      const d = payload.length ? parseDigest(payload.toString()) : undefined;
      return type && d ? [`${type} ${d.count}`] : [];
    });
    out.push(
      types.length
        ? { level: 'ok', key: 'digest', message: `the cloud's digests are retained: ${types.join(', ')}` }
        : {
            level: 'warn',
            key: 'digest',
            message: `no digest under ${topics.digests()}: nothing published yet (edgectl publishes them), or another topic prefix`,
          },
    );
    out.push({
      level: 'info',
      key: 'persistence',
      message:
        'not visible over MQTT: a broker restart without persistence (mosquitto `persistence true`) forgets every retained object',
    });
  } finally {
    await main.endAsync(true);
  }
  return out;
}

/** The retained messages of `filter`, read over a clean connection until none comes for 300 ms. */
async function readRetained(
  server: string,
  client: IClientOptions,
  filter: string,
  timeoutMs: number,
): Promise<Map<string, Buffer>> {
  const c = await connectAsync(server, {
    ...mqttClientDefaults(),
    ...client,
    clientId: `edgecore-check-read-${randomUUID().slice(0, 8)}`,
    clean: true,
  });
  const got = new Map<string, Buffer>();
  let at = Date.now();
  c.on('message', (t, p, packet) => {
    if (packet.retain) got.set(t, p);
    at = Date.now();
  });
  try {
    await c.subscribeAsync(filter, { qos: 0 });
    const end = Date.now() + timeoutMs;
    while (Date.now() - at < 300 && Date.now() < end) await wait(50);
  } finally {
    await c.endAsync(true);
  }
  return got;
}
