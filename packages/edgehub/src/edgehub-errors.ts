import { BeehiveError } from '@edgecore/beehive';
/** EdgeHub errors, each with a stable code. */
/** Base of this package's errors: a BeehiveError, so every edgecore error has a stable `code`. */
export class EdgeHubError extends BeehiveError {}

export const HubCode = {
  Disconnected: 'HUB_DISCONNECTED',
  MalformedPayload: 'HUB_MALFORMED_PAYLOAD',
  BadTopic: 'HUB_BAD_TOPIC',
  BrokerListen: 'HUB_BROKER_LISTEN',
  RetainedRead: 'HUB_RETAINED_READ',
  InvalidOption: 'HUB_INVALID_OPTION',
  ConnectRefused: 'HUB_CONNECT_REFUSED',
  PublishRefused: 'HUB_PUBLISH_REFUSED',
} as const;

/** An EdgeHub option that is missing or not what its key takes. */
export class InvalidEdgeHubOptionError extends EdgeHubError {
  constructor(
    readonly key: string,
    value: unknown,
    expected: string,
  ) {
    super(
      HubCode.InvalidOption,
      `option ${key}: ${JSON.stringify(value) ?? 'undefined'} is not valid: ${expected}`,
    );
  }
}

/** Reading a filter's retained state failed (the link closed, or the broker went quiet). */
export class RetainedReadError extends EdgeHubError {
  constructor(
    readonly filter: string,
    reason: string,
  ) {
    super(HubCode.RetainedRead, `reading the retained state of "${filter}" failed: ${reason}`);
  }
}

/** A payload that cannot become a beehive write: the topic and the reason are kept for the log. */
export class MalformedPayloadError extends EdgeHubError {
  constructor(
    readonly topic: string,
    reason: string,
  ) {
    super(HubCode.MalformedPayload, `malformed payload on "${topic}": ${reason}`);
  }
}
