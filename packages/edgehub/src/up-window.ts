import type { MqttClient } from 'mqtt';

/**
 * The node's own QoS 1 publishes (what modules send up, its presence) within the broker's Receive
 * Maximum: MQTT 5 says a client must not have more publishes awaiting their PUBACK than the
 * CONNACK allows, and brokers that hold to it (EMQX, HiveMQ) close the connection of one that does
 * (reason 0x93). mqtt.js sends past it; here the rest wait, in order, and go as PUBACKs come.
 * (edgectl's publishes keep within it in PublishLink; this is the node's side.)
 *
 * Each CONNACK sets the limit (a 3.1.1 link, or one without the property: 65,535). A publish that
 * waits goes to the client of the moment it leaves; with no client it fails. What mqtt.js resends
 * when its link comes back awaited its PUBACK before: never more than the limit. A new client (the
 * next broker) starts a count of its own: the given-up one's publishes no longer hold room.
 */
export class UpWindow {
  private limit = 65_535;
  private out = 0;
  private epoch = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly client: () => MqttClient | undefined) {}

  /** A new client: what its predecessor had out is no longer counted. */
  newClient(): void {
    this.epoch++;
    this.out = 0;
    this.next();
  }

  /** A new link's Receive Maximum (undefined: none given). */
  setLimit(receiveMaximum: number | undefined): void {
    this.limit = receiveMaximum && receiveMaximum > 0 ? receiveMaximum : 65_535;
    this.next();
  }

  /**
   * A QoS 1 publish; `done` at its PUBACK (or the failure). `via`: this client, not the one of the
   * moment (a link being closed, no longer the module's).
   */
  publish(
    topic: string,
    payload: string | Buffer,
    opts: { retain?: boolean },
    done?: (err?: Error) => void,
    via?: MqttClient,
  ): void {
    const go = (): void => {
      const c = via ?? this.client();
      if (!c) {
        done?.(new Error('the cloud link is closed'));
        return;
      }
      const epoch = this.epoch;
      this.out++;
      c.publish(topic, payload, { qos: 1, retain: opts.retain ?? false }, (err) => {
        if (epoch === this.epoch) {
          this.out--;
          this.next();
        }
        done?.(err ?? undefined);
      });
    };
    if (this.out < this.limit && this.waiting.length === 0) go();
    else this.waiting.push(go);
  }

  private next(): void {
    while (this.out < this.limit && this.waiting.length) this.waiting.shift()!();
  }
}
