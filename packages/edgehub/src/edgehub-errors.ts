/** EdgeHub errors, each with a stable code. */
export class EdgeHubError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

export const HubCode = {
  Disconnected: 'HUB_DISCONNECTED',
  MalformedPayload: 'HUB_MALFORMED_PAYLOAD',
  BadTopic: 'HUB_BAD_TOPIC',
  BrokerListen: 'HUB_BROKER_LISTEN',
} as const;

/** A payload that cannot become a beehive write: the topic and the reason are kept for the log. */
export class MalformedPayloadError extends EdgeHubError {
  constructor(
    readonly topic: string,
    reason: string,
  ) {
    super(HubCode.MalformedPayload, `malformed payload on "${topic}": ${reason}`);
  }
}
