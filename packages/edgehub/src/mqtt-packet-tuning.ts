import { createRequire } from 'node:module';

/**
 * mqtt-packet, the encoder under mqtt.js, builds a cache of 65,536 two-byte Buffers (every packet
 * id and length it may write) on its first packet: 6 MiB of heap in every process that speaks
 * MQTT — a third of an idle node's heap — for numbers a node writes a few of per second. Turned off
 * here (each number is then written as it comes), for mqtt.js's own copy of the module.
 */
export function lightenMqttEncoder(): void {
  const fromMqtt = createRequire(require.resolve('mqtt'));
  const generate = (fromMqtt('mqtt-packet') as { writeToStream: { cacheNumbers: boolean } }).writeToStream;
  generate.cacheNumbers = false;
}

lightenMqttEncoder();
