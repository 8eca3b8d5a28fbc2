/** EdgeHub configuration (edgecore.yaml `modules.edgeHub`). */
export const EdgeHubOptions = Symbol.for('edgecore.EdgeHubOptions');
export interface EdgeHubOptions {
  enable?: boolean;
  /** MQTT client id and the node's topics (default: hostname). */
  nodeName: string;
  nodeIP?: string;
  mqtt: {
    /** `tcp://`, `mqtt://`, `mqtts://` URL of the broker. */
    server: string;
    username?: string;
    password?: string;
    tls?: { caFile?: string; certFile?: string; keyFile?: string };
    /** Seconds (default 30). */
    keepalive?: number;
    embeddedBroker?: { enable?: boolean; listen?: string };
  };
  /** Topic prefix (default `edgecore`). */
  topicPrefix?: string;
  /** Reconnect backoff: first delay, growth factor, cap (ms). */
  reconnect?: { initialMs?: number; growth?: number; maxMs?: number };
  /** How long an incoming object may wait for MetaManager's commit before the link is reset (default 30 s). */
  commitTimeoutMs?: number;
  /**
   * Object messages whose commit may be under way at once; their PUBACKs go out in order as the
   * commits finish (default 1000; the broker's own window, mosquitto's `max_inflight_messages`,
   * 20 by default, is usually the smaller).
   */
  maxInflight?: number;
  /** Digest checks against the cloud (see README: "Nothing lost, and the node knows"). */
  sync?: {
    /** Also check this often while connected (default 60 000 ms; 0: only on connect and on a new digest). */
    checkIntervalMs?: number;
    /** Quiet time (no object message, none waiting for its commit) before a check (default 100 ms). */
    settleMs?: number;
  };
}

export const HUB_MODULE_NAME = 'edgehub';
