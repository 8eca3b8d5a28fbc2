import type { z } from 'zod/v3';
import { resolveEdgeHubPart, retainedReaderOptionsSchema } from './config';
import { randomUUID } from 'node:crypto';
import { connectAsync, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { RetainedReadError } from './edgehub-errors';
import { mqttClientDefaults } from './mqtt-packet-tuning';

export type RetainedReaderOptions = z.input<typeof retainedReaderOptionsSchema>;

/**
 * Reads the retained state of a topic filter over a connection of its own, with a clean session
 * and QoS 0. QoS 0 matters: a broker delivers the retained messages of a QoS 1 subscription
 * through the client's queue, and a stock mosquitto (`max_queued_messages 1000`) drops all but
 * the first ~1,020 of them; a QoS 0 subscription of an online client is written to the socket as
 * fast as the reader takes it (TCP is the back-pressure), and none is dropped.
 *
 * The end of the retained messages is a fence: after the SUBACK the reader publishes a token on a
 * topic of its own that it subscribed to first. mosquitto queues a subscription's retained
 * messages while it handles the SUBSCRIBE, so the token comes after all of them; a broker that
 * streams them later (aedes does) may let the token overtake, so callers check what they read
 * against a digest before they act on anything missing from it. A fence can be lost like any
 * message of a slow reader: after `fenceRetryMs` without a message it is published again (any
 * copy ends the read), so a lost fence costs that silence, not the idle timeout.
 */
export class RetainedReader {
  /** Fences published again because a read fell silent before its fence came. */
  fencesResent = 0;

  private constructor(
    private readonly client: MqttClient,
    private readonly opts: z.output<typeof retainedReaderOptionsSchema>,
  ) {}

  static async open(
    server: string,
    clientOptions: IClientOptions,
    opts: RetainedReaderOptions = {},
  ): Promise<RetainedReader> {
    const o = resolveEdgeHubPart(retainedReaderOptionsSchema, {
      connectTimeoutMs: clientOptions.connectTimeout,
      ...opts,
    });
    const client = await connectAsync(server, {
      ...mqttClientDefaults(),
      ...clientOptions,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: o.connectTimeoutMs,
    });
    return new RetainedReader(client, o);
  }

  /**
   * Deliver every retained message on `filter` to `onMessage` (in broker order), then resolve with
   * how many came. A promise returned by `onMessage` holds the next message back until it settles
   * (so a slow consumer slows the socket, not memory); its rejection ends the read.
   */
  async read(
    filter: string | string[],
    fenceTopic: string,
    onMessage: (topic: string, payload: Buffer) => void | Promise<void>,
  ): Promise<number> {
    const c = this.client;
    const token = randomUUID();
    let count = 0;
    let failed: Error | undefined;
    let finish!: (e?: Error) => void;
    let over = false;
    const done = new Promise<void>((resolve, reject) => {
      finish = (e) => {
        over = true;
        clearTimeout(timer);
        if (e) reject(e);
        else resolve();
      };
    });
    // awaited below, but it may fail while a subscribe is still awaited: never unhandled
    done.catch(() => undefined);
    const idleMs = this.opts.idleTimeoutMs;
    let timer = setTimeout(() => finish(idle()), idleMs);
    // where the read waits, for the error of a read that ends on its idle timeout
    let stage = 'the SUBACK of the fence topic';
    let held = 0;
    const idle = (): Error =>
      new RetainedReadError(
        String(filter),
        `nothing arrived for ${idleMs} ms (after ${count} messages; waiting for ${stage}${held ? `, ${held} message(s) held by the consumer` : ''})`,
      );
    let lastArrival = Date.now();
    c.handleMessage = (packet: IPublishPacket, cb: (err?: Error) => void) => {
      // a message after the read ended (a live publish before the unsubscribe): not this read's
      if (over) return cb();
      lastArrival = Date.now();
      clearTimeout(timer);
      timer = setTimeout(() => finish(idle()), idleMs);
      const payload = packet.payload as Buffer;
      if (packet.topic === fenceTopic) {
        if (payload.toString() === token) finish(failed);
        cb();
        return;
      }
      count++;
      let r: void | Promise<void> = undefined;
      try {
        r = onMessage(packet.topic, payload);
      } catch (e) {
        failed ??= e as Error;
      }
      if (r && typeof r.then === 'function') {
        held++;
        r.then(
          () => {
            held--;
            cb();
          },
          (e: Error) => {
            held--;
            failed ??= e;
            cb();
          },
        );
      } else cb();
    };
    let nudge: NodeJS.Timeout | undefined;
    const onClose = (): void => finish(new RetainedReadError(String(filter), 'the connection closed'));
    c.once('close', onClose);
    try {
      // a subscription the broker refuses (its ACL: SUBACK 0x80, MQTT 5 0x87 "not authorized")
      // is an error at once, not a read that waits for a fence that cannot come
      const refused = (granted: { topic: string; qos: number }[]): void => {
        const no = granted.filter((g) => g.qos >= 0x80);
        if (no.length)
          throw new RetainedReadError(
            no.map((g) => g.topic).join(', '),
            `the broker refused the subscription (${no[0].qos === 0x87 ? 'not authorized' : `reason ${no[0].qos}`})`,
          );
      };
      // every wait also ends with the read (idle, closed): a SUBACK or PUBACK that never comes
      // must not outlast the idle timeout (a read stuck there held every later digest check)
      const ended = done.then(() => undefined);
      const untilEnded = <T>(p: Promise<T>): Promise<T | undefined> => {
        p.catch(() => undefined); // one that fails after the read ended is nobody's error
        return Promise.race([p, ended]);
      };
      refused((await untilEnded(c.subscribeAsync(fenceTopic, { qos: 0 }))) ?? []);
      // several filters: one SUBSCRIBE
      stage = 'the SUBACK of the filters';
      refused((await untilEnded(c.subscribeAsync(filter, { qos: 0 }))) ?? []);
      stage = "the fence's PUBACK";
      // QoS 1: a broker that refuses the fence (its ACL) says so in the PUBACK (MQTT 5); the fence
      // itself may come back before its PUBACK
      const fence = (): Promise<unknown> =>
        c.publishAsync(fenceTopic, token, { qos: 1 }).catch((e: Error) => {
          throw new RetainedReadError(fenceTopic, `the broker refused the fence: ${e.message}`);
        });
      // a fence the broker dropped would hold the read until its idle timeout (mosquitto 2 drops a
      // QoS 0 message to a client that has max_queued_messages packets waiting to be written to
      // it — a live subscription's retained replay during a join is such a backlog), so it goes
      // again after a silence — also while the first one's PUBACK is awaited (it is written behind
      // that backlog)
      // (the silence is looked at four times per retry period: a check every period found it up
      // to two periods late — a join that lost its fence stalled ~4 s at the 2 s default)
      const retry = this.opts.fenceRetryMs;
      nudge = setInterval(
        () => {
          if (over || Date.now() - lastArrival < retry) return;
          lastArrival = Date.now(); // the next copy after another silence as long
          this.fencesResent++;
          fence().catch(() => undefined);
        },
        Math.max(10, Math.floor(retry / 4)),
      );
      await untilEnded(fence());
      stage = 'the fence';
      await done;
    } finally {
      clearInterval(nudge);
      clearTimeout(timer);
      c.off('close', onClose);
      // a live publish before the unsubscribe is not this read's; and the handler must not keep
      // this read's consumer (a resync's set of every key it read: 1.2 MiB at 10,000 services) —
      // one made here would, through the context it shares with this function's closures
      c.handleMessage = ignoreMessage;
    }
    await c.unsubscribeAsync([...[filter].flat(), fenceTopic]).catch(() => undefined);
    return count;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true).catch(() => undefined);
  }
}

/** The reader's handler between reads: acknowledged, dropped. */
function ignoreMessage(_packet: IPublishPacket, cb: (err?: Error) => void): void {
  cb();
}
