import { connect, type MqttClient } from 'mqtt';
import { mqttClientDefaults } from '../src';

/** mqtt.js's client as it logs (its `log`, an internal). */
const logOf = (c: MqttClient) =>
  (c as unknown as { log: ((...a: unknown[]) => void) & { namespace?: string } }).log;

describe('mqttClientDefaults: what every MQTT client of ours passes to mqtt.js', () => {
  it("silences mqtt.js's per-packet log with a function that takes no arguments", () => {
    const o = mqttClientDefaults({});
    // no parameters: a call never gathers its arguments into an array
    expect(o.log).toBeInstanceOf(Function);
    expect(o.log!.length).toBe(0);
    // the client logs through it (port 9: nothing listens, the client is ended at once)
    const c = connect('mqtt://127.0.0.1:9', { ...o, reconnectPeriod: 0 });
    try {
      expect(logOf(c)).toBe(o.log);
    } finally {
      c.end(true);
    }
  });

  it("keeps mqtt.js's own log when DEBUG asks for it", () => {
    for (const debug of ['mqttjs*', 'mqttjs:client', 'edgecore,*']) {
      const o = mqttClientDefaults({ DEBUG: debug });
      expect(o).toEqual({});
      const c = connect('mqtt://127.0.0.1:9', { ...o, reconnectPeriod: 0 });
      try {
        expect(logOf(c).namespace).toBe('mqttjs:client');
      } finally {
        c.end(true);
      }
    }
  });
});
