import { Mailbox, MailboxFullError, ContextClosedError } from '../src';

describe('Mailbox', () => {
  it('keeps FIFO order across the ring wrap', () => {
    const mb = new Mailbox<number>('m', 3);
    const out: number[] = [];
    for (let i = 0; i < 10; i++) {
      expect(mb.offer(i)).toBe(true);
      if (i % 2 === 1) {
        out.push(mb.poll()!);
        out.push(mb.poll()!);
      }
    }
    expect(out).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('applies back-pressure: put waits for space, offer reports full', async () => {
    const mb = new Mailbox<number>('m', 2);
    await mb.put(1);
    await mb.put(2);
    expect(mb.offer(3)).toBe(false);
    expect(() => mb.offerOrThrow(3)).toThrow(MailboxFullError);
    let resolved = false;
    const p = mb.put(3).then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    expect(mb.waitingSenders).toBe(1);
    expect(mb.poll()).toBe(1);
    await p;
    expect(resolved).toBe(true);
    expect(mb.poll()).toBe(2);
    expect(mb.poll()).toBe(3);
  });

  it('a parked consumer gets the next item directly', async () => {
    const mb = new Mailbox<string>('m', 1);
    const next = mb.next();
    mb.offer('x');
    expect(await next).toEqual({ done: false, value: 'x' });
  });

  it('close drains queued items, then ends; waiting senders are rejected', async () => {
    const mb = new Mailbox<number>('m', 1);
    mb.offer(1);
    const blocked = mb.put(2);
    mb.close();
    await expect(blocked).rejects.toBeInstanceOf(ContextClosedError);
    expect(() => mb.offer(3)).toThrow(ContextClosedError);
    expect(await mb.next()).toEqual({ done: false, value: 1 });
    expect((await mb.next()).done).toBe(true);
  });

  it('close ends parked consumers', async () => {
    const mb = new Mailbox<number>('m', 4);
    const n = mb.next();
    mb.close();
    expect((await n).done).toBe(true);
  });

  it('rejects a bad capacity', () => {
    expect(() => new Mailbox('m', 0)).toThrow(RangeError);
  });
});
