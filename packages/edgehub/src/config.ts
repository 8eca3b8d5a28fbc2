import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import type { IClientOptions } from 'mqtt';
import { optionsResolver } from '@edgecore/beehive';
import { z } from 'zod/v3';
import { InvalidEdgeHubOptionError } from './edgehub-errors';

/**
 * EdgeHub's configuration, stated once: edgecore.yaml's `modules.edgeHub` as a zod schema with
 * every default, and the library's options (the same keys, plus the few edgecore does not expose).
 */

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port');
const ipv4 = z.string().refine((s) => isIPv4(s), 'expected an IPv4 address');
const url = z
  .string()
  .regex(
    /^(tcp|mqtt|mqtts|ssl|tls|ws|wss):\/\/[^\s]+$/,
    'expected tcp://, mqtt://, mqtts://, ws:// or wss:// URL',
  );
const nodeName = z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected an RFC 1123 name');

/** edgecore.yaml `modules.edgeHub`. Strict: an unknown key is an error naming it. */
export const edgeHubConfigSchema = z.strictObject({
  enable: z.boolean().default(true),
  /** MQTT client id and the node's topics (edgecore's default: the hostname). */
  nodeName: nodeName.optional(),
  nodeIP: ipv4.optional(),
  /**
   * The node's labels (KubeEdge's `nodeLabels`), e.g. `topology.kubernetes.io/zone`: published in
   * its status (`labels`; the zone also as `zone`, which the cloud writes into EndpointSlices).
   */
  nodeLabels: z.record(z.string().min(1).max(317), z.string().max(63)).default({}),
  /**
   * Keep every other node's status (`{prefix}/nodes/+/status`: site, tunnel relays) in MetaManager
   * as `kube-node-lease/nodestatus/<node>`. EdgeTunnel needs it; edgecore turns it on with
   * `modules.edgeTunnel.enable`.
   */
  nodeStatuses: z.boolean().default(false),
  mqtt: z
    .strictObject({
      /** `tcp://`, `mqtt://`, `mqtts://` URL of the broker. */
      server: url.default('tcp://127.0.0.1:1883'),
      /**
       * Several brokers of one fleet (bridged to the cloud's, or nodes of one clustered broker), in
       * order of preference; replaces `server`. The node holds one link; when it drops or cannot
       * be made, the next broker is tried (the whole list once before the backoff grows).
       */
      servers: z.array(url).min(1).max(16).optional(),
      username: z.string().optional(),
      password: z.string().optional(),
      tls: z
        .strictObject({
          caFile: z.string().optional(),
          certFile: z.string().optional(),
          keyFile: z.string().optional(),
        })
        .optional(),
      /** Seconds. */
      keepalive: z.number().int().min(1).max(3600).default(30),
      /**
       * MQTT version: `auto` (5, then 3.1.1 from the first refusal of 5), `5` or `4` (3.1.1). With 5
       * the node sets the broker's in-flight window itself (`receiveMaximum`): a stock mosquitto
       * sends 20 unacknowledged messages to a 3.1.1 client.
       */
      protocolVersion: z.union([z.literal('auto'), z.literal(5), z.literal(4)]).default('auto'),
      /**
       * MQTT 5 Receive Maximum: QoS 1 messages the broker may send before their PUBACKs. Messages in
       * flight are not in the broker's queue, so a large window is what keeps a burst from
       * overflowing a stock queue (`max_queued_messages` 1000): the node still commits at most
       * `maxInflight` at once, and TCP holds the rest.
       */
      receiveMaximum: z.number().int().min(1).max(65535).default(65535),
      embeddedBroker: z
        .strictObject({
          enable: z.boolean().default(false),
          listen: hostPort.default('127.0.0.1:1883'),
        })
        .default({}),
    })
    .default({}),
  /**
   * Object messages whose commit may be under way at once; their PUBACKs go out in order as the
   * commits finish (over 3.1.1 the broker's own window, mosquitto's `max_inflight_messages`, 20 by
   * default, is usually the smaller).
   */
  maxInflight: z.number().int().min(1).max(65535).default(1000),
  /** Digest checks against the cloud (README: "Nothing lost, and the node knows"). */
  sync: z
    .strictObject({
      /** Also check this often while connected (0: only on connect and on a new digest). */
      checkIntervalSeconds: z.number().min(0).max(86400).default(60),
      /** Quiet time (no object message, none waiting for its commit) before a check. */
      settleMs: z.number().int().min(0).max(60000).default(100),
      /** A check not ended after this long is abandoned (its read cut) so that later ones run. */
      maxCheckSeconds: z.number().min(1).max(86400).default(300),
    })
    .default({}),
});

export type EdgeHubConfig = z.output<typeof edgeHubConfigSchema>;

/** The library's options: edgecore.yaml's keys (a node name required), and three of its own. */
export const edgeHubOptionsSchema = z.object({
  ...edgeHubConfigSchema.shape,
  nodeName,
  /** Topic prefix. */
  topicPrefix: z.string().min(1).default('edgecore'),
  /** Reconnect backoff: the first delay, its growth per attempt, its cap (ms). */
  reconnect: z
    .strictObject({
      initialMs: z.number().int().min(1).default(500),
      growth: z.number().min(1).default(2),
      maxMs: z.number().int().min(1).default(30_000),
    })
    .default({}),
  /** How long an incoming object may wait for MetaManager's commit before the link is reset. */
  commitTimeoutMs: z.number().int().min(1).default(30_000),
  /**
   * Fields the node's status carries from the first connect — in its last will too (EdgeTunnel's
   * `site`), so that an `offline` status keeps them; `setStatus` adds more later.
   */
  statusFields: z.record(z.string(), z.unknown()).default({}),
});

export const EdgeHubOptions = Symbol.for('edgecore.EdgeHubOptions');
export type EdgeHubOptions = z.input<typeof edgeHubOptionsSchema>;
export type ResolvedEdgeHubOptions = z.output<typeof edgeHubOptionsSchema>;

/** A part's options resolved, a bad one an `InvalidEdgeHubOptionError`. */
export const resolveEdgeHubPart = optionsResolver(
  'edgeHub',
  (k, v, e) => new InvalidEdgeHubOptionError(k, v, e),
);

/** Every default filled in, or an error naming the key. */
export function resolveEdgeHubOptions(o: EdgeHubOptions): ResolvedEdgeHubOptions {
  return resolveEdgeHubPart(edgeHubOptionsSchema, o);
}

/** A read of retained state: its connect timeout, and how long it may go without a message. */
export const retainedReaderOptionsSchema = z.object({
  connectTimeoutMs: z.number().int().min(1).default(10_000),
  /** No message (nor the fence) for this long ends the read with an error. */
  idleTimeoutMs: z.number().int().min(1).default(15_000),
  /**
   * No message for this long and no fence yet: the fence is published again (a broker that drops
   * packets to a slow reader can drop the fence too; a copy too many costs one small publish). The
   * read still ends at the first fence.
   */
  fenceRetryMs: z.number().int().min(1).default(1_000),
});

export const HUB_MODULE_NAME = 'edgehub';

/** The brokers a node may link to, in order: `mqtt.servers`, else `mqtt.server`. */
export function brokerUrls(m: Pick<EdgeHubConfig['mqtt'], 'server' | 'servers'>): string[] {
  return m.servers?.length ? [...m.servers] : [m.server];
}

/** Credentials and TLS files of `mqtt` as mqtt.js client options (every connection to the broker). */
export function mqttClientAuth(
  m: Pick<EdgeHubConfig['mqtt'], 'username' | 'password' | 'tls'>,
): Pick<IClientOptions, 'username' | 'password' | 'ca' | 'cert' | 'key'> {
  return {
    username: m.username,
    password: m.password,
    ca: m.tls?.caFile ? readFileSync(m.tls.caFile) : undefined,
    cert: m.tls?.certFile ? readFileSync(m.tls.certFile) : undefined,
    key: m.tls?.keyFile ? readFileSync(m.tls.keyFile) : undefined,
  };
}
