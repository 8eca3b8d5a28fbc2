import { createRequire } from 'node:module';
import type { IClientOptions } from 'mqtt';

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

/** Takes no parameters: the arguments of a call are never gathered into an array. */
const silent = (() => undefined) as NonNullable<IClientOptions['log']>;

/**
 * Options every MQTT client of ours passes to mqtt.js. Its client logs each packet several times
 * through `debug`, whose `(...args)` gathers the arguments into an array even when that log is off:
 * 2.3 KB of garbage per publish, a tenth of what edgectl allocates in a large apply. Its log is
 * therefore a function without parameters — unless `DEBUG` names `mqttjs`, which keeps mqtt.js's
 * own log for whoever asks for it.
 */
export function mqttClientDefaults(env: NodeJS.ProcessEnv = process.env): Pick<IClientOptions, 'log'> {
  return /mqttjs|\*/.test(env.DEBUG ?? '') ? {} : { log: silent };
}
