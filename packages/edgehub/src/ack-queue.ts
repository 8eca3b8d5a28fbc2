/**
 * PUBACKs in the order the PUBLISHes came (MQTT 3.1.1 §4.6), each sent only once its message is
 * committed — while later messages are already being committed, so a batch of the broker's
 * in-flight window shares one MetaManager transaction instead of one round trip each.
 */
export class AckQueue {
  private readonly entries: { ack: () => void; done: boolean }[] = [];

  get pending(): number {
    return this.entries.length;
  }

  /** Take a place in line; call the returned function once the message may be acknowledged. */
  enqueue(ack: () => void): () => void {
    const e = { ack, done: false };
    this.entries.push(e);
    return () => {
      e.done = true;
      while (this.entries.length && this.entries[0].done) this.entries.shift()!.ack();
    };
  }

  /** The link is gone: nothing queued is acknowledged (the broker redelivers it). */
  clear(): void {
    this.entries.length = 0;
  }
}

/**
 * PUBACKs written together: those added in one turn of the event loop (what one commit releases,
 * its promises' reactions included) leave in one write, in the order they were added, once the
 * turn's microtasks are done. A PUBACK of success without properties is 4 bytes in MQTT 3.1.1 and
 * 5 alike (type 4, remaining length 2, the packet identifier; MQTT 5 §3.4.2.1 lets the reason code
 * and property length be left out) — what mqtt.js writes for one. The link's stream is asked for
 * at the write (`streamOf`): none, the link went away meanwhile, and they are dropped (the broker
 * redelivers); `clear()` on a new link drops them too.
 */
export class AckWriter<L> {
  private ids: number[] = [];
  private link?: L;
  private scheduled = false;

  constructor(private readonly streamOf: (link: L) => { write(b: Buffer): unknown } | undefined) {}

  /** The PUBACK of `messageId`, received over `link` (the one link of every id added since the last write). */
  add(messageId: number, link: L): void {
    this.ids.push(messageId);
    this.link = link;
    if (this.scheduled) return;
    this.scheduled = true;
    process.nextTick(() => this.flush());
  }

  /** A new link: nothing added is written. */
  clear(): void {
    this.ids = [];
    this.link = undefined;
  }

  private flush(): void {
    this.scheduled = false;
    const { ids, link } = this;
    this.clear();
    const stream = link === undefined ? undefined : this.streamOf(link);
    if (!ids.length || !stream) return;
    const b = Buffer.allocUnsafe(4 * ids.length);
    for (let i = 0; i < ids.length; i++) {
      b[4 * i] = 0x40;
      b[4 * i + 1] = 2;
      b.writeUInt16BE(ids[i], 4 * i + 2);
    }
    stream.write(b);
  }
}
