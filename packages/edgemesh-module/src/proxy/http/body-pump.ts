import type { Socket } from 'node:net';
import { type SocketReader, writeAll } from '../socket-reader';
import type { ChunkedParser } from './chunked';

/** When bytes last moved in an exchange (for the stall guard and the response timeout). */
export interface Progress {
  at: number;
}

/**
 * Forward exactly one body (Content-Length `n`, or chunked when `tracker`) from `from` to `to`;
 * the bytes past its end go back to the reader. `prefix` (a head) leaves with the first body bytes:
 * one write, one segment for small replies. `reframe`: a chunked body goes out as the parser
 * re-frames it (a request's), not as it came (a response's).
 */
export async function pumpBody(
  from: SocketReader,
  to: Socket,
  tracker: ChunkedParser | undefined,
  n: number,
  prefix?: string,
  progress?: Progress,
  reframe = false,
): Promise<void> {
  let remaining = n;
  for (;;) {
    if (!tracker && remaining === 0) return;
    await from.wait();
    const chunk = from.take();
    if (chunk.length === 0) throw new Error('peer closed inside a body');
    let use = chunk;
    if (tracker) {
      const out: Buffer[] | undefined = reframe ? [] : undefined;
      const end = tracker.feed(chunk, 0, out);
      if (end >= 0) {
        use = chunk.subarray(0, end);
        from.unshift(chunk.subarray(end));
      }
      if (out) use = out.length === 1 ? out[0] : Buffer.concat(out);
    } else if (chunk.length > remaining) {
      use = chunk.subarray(0, remaining);
      from.unshift(chunk.subarray(remaining));
    }
    if (!tracker) remaining -= use.length;
    if (prefix !== undefined) {
      await writeAll(to, Buffer.concat([Buffer.from(prefix, 'latin1'), use]));
      prefix = undefined;
    } else await writeAll(to, use);
    if (progress) progress.at = Date.now();
    if (tracker?.done) return;
  }
}

/** A close-delimited body: everything until the peer's end. */
export async function pumpUntilEnd(from: SocketReader, to: Socket, progress: Progress): Promise<void> {
  for (;;) {
    await from.wait();
    const chunk = from.take();
    if (chunk.length === 0) return;
    await writeAll(to, chunk);
    progress.at = Date.now();
  }
}

/** Calls `expire` once `progress.at` is `ms` old; the function returned stops watching. */
export function stallGuard(progress: Progress, ms: number, expire: () => void): () => void {
  let t: NodeJS.Timeout;
  const check = (): void => {
    const left = progress.at + ms - Date.now();
    if (left <= 0) expire();
    else t = setTimeout(check, left);
  };
  t = setTimeout(check, ms);
  return () => clearTimeout(t);
}

/** Bytes or the end within `ms`: true; nothing: false. */
export function waitFor(r: SocketReader, ms: number): Promise<boolean> {
  if (r.buffered > 0 || r.ended) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    void r.wait().then(() => {
      clearTimeout(t);
      resolve(true);
    });
  });
}
