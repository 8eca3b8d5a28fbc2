import { constants, type Http2Stream } from 'node:http2';
import { resetSocket } from '@edgecore/beehive';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * Join two byte streams, each an HTTP/2 stream or a TCP socket: data both ways with back-pressure
 * (pipe), a half-close crosses as a half-close (END_STREAM ⇄ FIN), and an abort as an abort —
 * a reset stream resets the socket, a reset socket ends the stream with CONNECT_ERROR (RFC 9113
 * §8.5). `count` sees the bytes each way (for metrics; never their content).
 */
export function join(a: Duplex, b: Duplex, count?: (aToB: number, bToA: number) => void): void {
  if (count) {
    a.on('data', (d: Buffer) => count(d.length, 0));
    b.on('data', (d: Buffer) => count(0, d.length));
  }
  a.pipe(b);
  b.pipe(a);
  let done = false;
  const abort = (from: Duplex, to: Duplex): void => {
    if (done) return;
    done = true;
    kill(to, from);
  };
  a.on('error', () => abort(a, b));
  b.on('error', () => abort(b, a));
  a.on('close', () => (aborted(a) ? abort(a, b) : undefined));
  b.on('close', () => (aborted(b) ? abort(b, a) : undefined));
}

/** Closed before both directions ended (a reset, an error, its link gone). */
function aborted(s: Duplex): boolean {
  if (!s.readableEnded || !s.writableFinished) return true;
  const code = (s as Http2Stream).rstCode;
  return code !== undefined && code !== constants.NGHTTP2_NO_ERROR;
}

/** How to end a stream abruptly when destroying it would not (see runsOver, endsBy). */
const killers = new WeakMap<Duplex, () => void>();

/**
 * `tls` runs over `raw`: ending `tls` abruptly ends `raw` too (TLS has no reset of its own). The TLS
 * socket goes first — destroying or resetting the TCP socket under a live TLS socket crashes Node 20
 * (a segmentation fault) — and its close takes `raw` with it (a FIN); `raw` is reset only if it
 * outlived it.
 */
export function runsOver(tls: Duplex, raw: Socket): void {
  killers.set(tls, () => {
    tls.destroy();
    resetSocket(raw);
  });
}

/**
 * `s` is one end of a stream that `abort` ends abruptly — a stream in the native TLS pump, which
 * holds its connections: destroying `s` alone would not reset them.
 */
export function endsBy(s: Duplex, abort: () => void): void {
  killers.set(s, abort);
}

/** End `s` abruptly because `cause` failed. */
export function kill(s: Duplex, cause?: Duplex): void {
  if (s.destroyed) return;
  const k = killers.get(s);
  if (k) return k();
  if (s instanceof Socket) {
    resetSocket(s);
    return;
  }
  if (typeof (s as Partial<Http2Stream>).close !== 'function') {
    s.destroy(); // a stream of no connection (a UDP flow's UdpStream): nothing to reset
    return;
  }
  const code = cause instanceof Socket ? constants.NGHTTP2_CONNECT_ERROR : constants.NGHTTP2_CANCEL;
  (s as Http2Stream).close(code);
}
