/*
 * http/engine.c: the native path of EdgeMesh's L7 proxy (HTTP/1.x over keep-alive connections).
 *
 * Node's streams and a promise per step cost ~40 µs of CPU per proxied request on the reference
 * machine; nginx spends ~20 µs in all. Here the sockets of a client connection and of its upstream
 * connections are driven by C on Node's own event loop (one epoll set, watched by one uv_poll
 * handle; no threads): request and response heads are parsed and rewritten in place, bodies are
 * relayed through fixed buffers with back-pressure, and idle upstream connections are pooled per
 * backend. JavaScript keeps every decision: it picks the backend of each request (the injectable
 * LB strategies, passive health, retries), says what a failure leads to and makes the bytes of
 * every answer of ours, counts statuses, and serves whatever this path does not take — the engine
 * hands such a connection back, at a request boundary, with the bytes it read. The protocol tables
 * (hop-by-hop fields, idempotent methods) and the parser limits come from JavaScript at create.
 *
 * Handed back (JavaScript answers or serves them): a head the conservative parser here does not
 * accept (JavaScript then answers 400/431 with its messages), Upgrade (WebSocket → splice engine),
 * a client EOF inside a head, a backend that is not an IP address, on a portal a target that is
 * not origin-form (absolute-form, `*`); in forward mode (the explicit proxy) every request that is
 * not absolute-form `http://authority[/path]` (CONNECT, origin-form).
 *
 * Forward mode: each request is routed by its own authority (passed to onPick) and goes upstream
 * in origin-form (`/path`); the rest of the head is handled as on a portal.
 *
 * The framing mirrors the JavaScript engine (src/proxy/http/exchange.ts): hop-by-hop fields removed (RFC 9110 §7.6.1, and the
 * fields Connection names), X-Forwarded-For appended, keep-alive upstream in the client's HTTP
 * version (an HTTP/1.0 client never gets a chunked answer), chunked
 * bodies forwarded as they are, interim 1xx responses relayed (our status line, hop-by-hop fields
 * dropped; none to an HTTP/1.0 client, RFC 9110 §15.2), Content-Length/chunked/close
 * framing of responses, 408 for a head not complete in time, 504 for an upstream that does not
 * answer (counted from the last request bytes it took), both connections closed when a response
 * body stalls (neither side moves a byte) as long, a stale pooled connection retried once on a
 * fresh one (when the rulebook says so). Which backend, the retry after a failure, ejection and
 * the words of every answer come from the rulebook (src/proxy/http/policy.ts), through onDecide.
 *
 * The parts, in the order this file includes them (one translation unit: every function static):
 *   engine.h     types, capacities, events
 *   bytes.c      buffers, byte helpers, name tables      timers.c   one FIFO list per timeout kind
 *   js.c         calls into JavaScript                   lifetimes.c  closing, pooling, handing back
 *   chunked.c    chunked framing                         heads.c    request and response heads
 *   exchange.c   a request's course, bytes both ways     loop.c     wake-ups, events, timers
 *   napi.c       the JavaScript API
 *
 * JavaScript API (see src/proxy/http/native-engine.ts):
 *   create(opts, hopByHop, idempotent, forbiddenTrailers, onDecide, onDone, onHandback, onClosed,
 *          doneBuf) -> engine
 *     opts: Uint32Array [maxHead, idleMs, headMs, connectMs, responseMs, poolIdleMs, maxIdle,
 *                        coalesceUs, chunkLine, trailer, chunkDigits, lengthDigits, responseHead,
 *                        underscoresInHeaders]
 *     hopByHop, idempotent, forbiddenTrailers: arrays of field names and methods
 *                        (src/proxy/http/protocol.ts)
 *     doneBuf: Int32Array, records of ended requests: (id, backend or -1, status; 0: aborted)
 *     onDecide(id, event, backend, reason|undefined, flags, hashValue|undefined, ended,
 *              authority|undefined) -> backend id | -1 (hand back) | -2 (the same backend on a
 *              fresh connection) | [answer bytes, keep]
 *            events (D_* in http/engine.h): a pick; a failed connect (`reason`: errno name or
 *            timeout); an upstream that closed before its answer (`reason`: closed, reset); a
 *            response timeout; a malformed (or too large) response head; a bad request chunk; a
 *            request head not complete in time
 *            `authority`: forward mode, a request's first pick
 *            `ended` records wait in doneBuf: JavaScript takes them before it decides
 *     onDone(ended)                records wait in doneBuf
 *     onHandback(id, fd, bytes)    JavaScript owns fd from here on
 *     onClosed(id)
 *   backend(engine, id, ip, port) -> boolean (false: not an IP address)
 *   adopt(engine, fd, clientIp, hashHeader, forward) -> id   (dups fd; the caller closes its own)
 *   closeAll(engine)             every client and upstream connection closed
 *   close(engine)
 *   stats(engine) -> [clients, upstreams, pooled, coalescedWakeups]
 */
#include "engine.h"

#include "bytes.c"
#include "timers.c"
#include "js.c"
#include "lifetimes.c"
#include "chunked.c"
#include "heads.c"
#include "exchange.c"
#include "loop.c"
#include "napi.c"
