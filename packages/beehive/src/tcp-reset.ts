import type { Socket } from 'node:net';

/**
 * End a connection with a TCP reset where the socket can send one (a connected, plain TCP socket
 * whose write side is still open), else with a close.
 *
 * The write side matters: Node's `resetAndDestroy()` on a socket whose shutdown is under way (its
 * FIN not yet sent) is refused by libuv (EINVAL: no SO_LINGER while shutting), and Node then emits
 * that error but leaves the handle marked as closing without closing it — its descriptor leaks, no
 * `close` ever comes, and at exit the process never ends (Node waits for that close: the jest runs
 * that spun after every suite had passed). Such a socket is destroyed instead; its FIN is on the
 * way.
 *
 * Not for the TCP socket under a live TLS socket: destroying or resetting it before the TLS socket
 * crashes Node 20 (a segmentation fault, EdgeTunnel's pipe.test). Destroy the TLS socket first; it
 * takes the TCP socket with it.
 */
export function resetSocket(s: Socket): void {
  if (s.destroyed) return;
  const handle = (s as unknown as { _handle?: { setNoDelay?: unknown } })._handle;
  const plainTcp =
    typeof s.resetAndDestroy === 'function' &&
    typeof handle?.setNoDelay === 'function' && // a socket pair's end or a pipe has none
    !(s as { encrypted?: boolean }).encrypted;
  if (plainTcp && !s.connecting && !s.writableEnded) s.resetAndDestroy();
  else s.destroy();
}
