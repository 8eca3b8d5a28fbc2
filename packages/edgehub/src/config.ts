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
}

export const HUB_MODULE_NAME = 'edgehub';
