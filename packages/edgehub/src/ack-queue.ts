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
