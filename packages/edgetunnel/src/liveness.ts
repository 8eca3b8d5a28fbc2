import type { Http2Session } from 'node:http2';

/** Sessions with a PING in flight (not pinged again until it is answered or times out). */
const waiting = new WeakSet<Http2Session>();

/**
 * Link liveness for nodes and relays alike: each open session is pinged; one that does not
 * answer within `timeoutMs` is closed (its streams fail, and whoever dialled it dials again). The
 * timeout is two ping intervals, so a peer whose event loop is busy for a moment (a burst of a
 * thousand streams on two cores) is not taken for a dead one; a peer whose process died is seen
 * at once anyway (the kernel resets its connections).
 */
export function pingAll(sessions: Iterable<Http2Session>, timeoutMs: number): void {
  for (const s of sessions) {
    if (s.closed || s.destroyed || s.connecting || waiting.has(s)) continue;
    waiting.add(s);
    const t = setTimeout(() => s.destroy(), timeoutMs);
    t.unref();
    const done = (): void => {
      clearTimeout(t);
      waiting.delete(s);
    };
    try {
      s.ping((err) => {
        done();
        if (err && !s.destroyed) s.destroy();
      });
    } catch {
      done();
    }
  }
}
