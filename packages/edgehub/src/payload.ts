import { fromWire, Group, isWriteOperation, newMessage, Operation, type Message } from '@edgecore/beehive';
import { MalformedPayloadError } from './edgehub-errors';
import { KIND_TO_TYPE, type Topics } from './topics';

/**
 * An MQTT payload → a beehive message, validated against its topic (an object topic carries a
 * write of that very object); throws MalformedPayloadError.
 */
export function decodePayload(topics: Topics, topic: string, payload: Buffer): Message<unknown> | undefined {
  const objResource = topics.objectResource(topic);
  const isObjectTopic = topics.isObjectTopic(topic);
  if (isObjectTopic && !objResource)
    throw new MalformedPayloadError(topic, 'topic is not {prefix}/objects/<ns>/<type>/<name>');
  if (payload.length === 0) {
    // An empty retained payload clears the object's topic: treat it as an unversioned delete.
    if (!objResource) return undefined;
    return newMessage(null, {
      source: 'cloud',
      group: Group.Meta,
      operation: Operation.Delete,
      resource: objResource,
    });
  }
  let msg: Message<unknown>;
  try {
    msg = fromWire(payload);
  } catch (e) {
    throw new MalformedPayloadError(topic, (e as Error).message);
  }
  if (!objResource) return msg;
  const op = msg.route.operation ?? '';
  if (!isWriteOperation(op))
    throw new MalformedPayloadError(topic, `operation "${op}" is not insert/update/patch/delete`);
  if (msg.route.resource !== objResource)
    throw new MalformedPayloadError(
      topic,
      `route.resource "${msg.route.resource ?? ''}" does not match the topic`,
    );
  const type = objResource.split('/')[1];
  const obj = msg.content as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } } | null;
  if (op !== Operation.Delete) {
    if (!obj || typeof obj !== 'object') throw new MalformedPayloadError(topic, 'content is not an object');
    if (typeof obj.kind !== 'string' || KIND_TO_TYPE[obj.kind] !== type)
      throw new MalformedPayloadError(
        topic,
        `kind ${JSON.stringify(obj.kind)} does not match type "${type}"`,
      );
    if (typeof obj.metadata?.name !== 'string' || obj.metadata.name === '')
      throw new MalformedPayloadError(topic, 'missing metadata.name');
    if (obj.metadata.name !== objResource.split('/')[2])
      throw new MalformedPayloadError(topic, 'metadata.name does not match the topic');
  }
  msg.route.source = 'cloud';
  msg.route.group = Group.Meta;
  return msg;
}
