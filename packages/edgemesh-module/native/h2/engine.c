/*
 * h2/engine.c: the native path of EdgeMesh's HTTP/2 portals (issue #22).
 *
 * Node's HTTP/2 puts both sides of every stream through JavaScript objects and events: ~150 µs of
 * CPU per proxied request on the reference machine, where haproxy spends ~36. Here a portal's
 * client connections and the HTTP/2 connections to its backends are driven by nghttp2 — the
 * library inside Node itself: its symbols are exported by the node binary, as OpenSSL's are for
 * the TLS pump; the header is Debian's libnghttp2-dev — on Node's own event loop (one epoll set
 * watched by one uv_poll handle, no threads). Frames are read and parsed in C, header blocks
 * decoded and encoded by nghttp2, bodies relayed through per-stream queues under HTTP/2's own
 * flow control both ways (a stream's window is reopened only as its bytes leave on the other
 * side: back-pressure end to end), and the writes of one wake-up leave each socket in one call.
 *
 * JavaScript keeps every decision, as with the HTTP/1 engine: for each stream it picks the
 * backend (the rulebook of src/proxy/http/policy.ts: the LB strategy, passive health, retries,
 * the retry budget), says what a failure leads to (a failed connect, a refused stream, a
 * connection that went away, a reset, a deadline, an answer the service retries on) and words
 * every answer of ours; the engine frames it (gRPC's trailers-only form, or a text body).
 *
 * Per stream: the request's header block forwarded without connection fields, X-Forwarded-For
 * appended; its body kept while it may be sent again (≤ replayBytes, until the answer starts);
 * the answer relayed, 1xx dropped, trailers relayed after the body, a reset passed on as a reset.
 * Per upstream connection: streams within the backend's SETTINGS_MAX_CONCURRENT_STREAMS and our
 * own cap (else another connection), a PING every interval (unanswered by the next: closed),
 * closed when idle, drained with GOAWAY when its backend leaves (`drain`). Per client
 * connection: the connection preface checked first (anything else is handed back to JavaScript
 * with the bytes read: the 505 for an HTTP/1 client is worded there), the stream cap and header
 * list size in our SETTINGS, a client that resets streams faster than maxResetsPerSecond ends
 * with GOAWAY(ENHANCE_YOUR_CALM) (rapid reset, CVE-2023-44487), and nghttp2's own limits against
 * CONTINUATION, SETTINGS and PING floods; a protocol error ends only that connection.
 *
 * JavaScript API (src/proxy/h2/native-h2.ts):
 *   create(opts, onDecide, onDone, onHandback, onClosed, doneBuf, io) -> engine
 *     opts: Uint32Array [maxStreams, maxHeaderListBytes, replayBytes, pingIntervalMs,
 *                        idleTimeoutMs, maxResetsPerSecond, connectTimeoutMs]
 *     doneBuf: Int32Array, records of ended streams: (token, backend or -1, status; 0: aborted)
 *     io: Int32Array; io[0]: the deadline (ms, 0: none) JavaScript sets at a pick
 *     onDecide(conn, token, event, backend, arg, reason|undefined, flags, hashValue|undefined,
 *              grpcTimeout|undefined, ended) -> backend id | FRESH (-2) | RELAY (-3) | GOAWAY (-4)
 *              | REHASH (-5: ask again, the connection's hash header
 *              changed) | [httpStatus, grpcStatus (-1: not gRPC), message]
 *       events (E_* below): a pick; a failed connect (reason: errno name or timeout); a refused
 *       stream; a connection that went away under an unanswered stream (reason closed|reset);
 *       an upstream stream that ended unanswered (reason); a deadline (arg: ms); an answer the
 *       service may retry on (arg: status; flags: F_UNAVAILABLE)
 *     onDone(ended)                 records wait in doneBuf
 *     onHandback(conn, fd, bytes)   not HTTP/2: JavaScript owns fd from here on
 *     onClosed(conn)
 *   backend(engine, id, ip, port) -> boolean (false: not an IP address)
 *   adopt(engine, fd, clientIp, hashHeader|undefined) -> conn id (dups fd; the caller closes its own)
 *   drain(engine, backendId)        its connections: GOAWAY, open streams finish
 *   hashHeader(engine, conn, name|undefined)  the ConsistentHash header of a client connection
 *   closeAll(engine), close(engine)
 *   stats(engine) -> [clients, upstreams, streams, resetFloods, protocolErrors]
 */
#define _GNU_SOURCE
#include <node_api.h>
#include "../common.h"

#if defined(__has_include)
#if __has_include(<nghttp2/nghttp2.h>)
#define HAVE_NGHTTP2 1
#endif
#endif

#ifndef HAVE_NGHTTP2
/* Built without nghttp2's header (Debian: libnghttp2-dev): no `h2` binding, and HTTP/2 portals
 * are served by Node's HTTP/2 in JavaScript. */
napi_value h2_engine_init(napi_env env, napi_value exports) { return NULL; }
#else

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#if NGHTTP2_VERSION_NUM < 0x013900
/* In the nghttp2 Node links (1.57 and later), absent from older headers. */
NGHTTP2_EXTERN void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *option, uint64_t burst,
                                                               uint64_t rate);
#endif

enum { K_CLIENT = 1, K_UP = 2 };
enum { E_PICK, E_CONNECT_FAILED, E_REFUSED, E_STALE, E_FAILED, E_TIMEOUT, E_ANSWERED_BADLY };
enum { F_IDEMPOTENT = 1, F_REPLAYABLE = 2, F_GRPC = 4, F_UNAVAILABLE = 8 };
enum { R_FRESH = -2, R_RELAY = -3, R_GOAWAY = -4, R_REHASH = -5 };
#define EVENTS 256
#define READ_BUF (64 * 1024)
#define OUT_BATCH (64 * 1024)
#define STREAM_WINDOW (1024 * 1024)
#define CONN_WINDOW (16 * 1024 * 1024)
#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN 24
#define TICK_MS 25

struct engine;
struct strm;

typedef struct conn {
  int fd, kind, dead, connecting, closing, out_armed, dirty, handshake;
  struct engine *e;
  nghttp2_session *s;
  uint32_t id;
  int backend;
  uint32_t nstreams;
  struct strm *streams; /* streams on this connection (client: its own; upstream: relayed ones) */
  struct conn *prev, *next, *dnext;
  uint8_t *out;
  size_t olen, ooff, ocap;
  uint64_t last_io, since, ping_at;
  uint64_t rst_window;
  uint32_t rsts;
  uint8_t *hs; /* handshake: what was read before the preface was whole */
  uint32_t hslen;
  int cerr; /* a connect refused at once: its errno */
  char ip[INET6_ADDRSTRLEN];
  char hash[64];
  uint32_t hash_len;
} conn_t;

typedef struct chunk {
  struct chunk *next;
  uint32_t len;
  uint8_t data[];
} chunk_t;

/* A body on its way: chunks in order; `cur`/`off` the next byte to send; with `keep`, the sent
 * chunks stay (a request that may be sent again). */
typedef struct {
  chunk_t *head, *tail, *cur;
  uint32_t off;
  uint64_t total, sent, consumed;
  int eof, deferred;
} body_t;

/* A header block: name\0value\0 pairs in one buffer. */
typedef struct {
  char *p;
  uint32_t len, cap, n, bytes;
} hblock_t;

typedef struct strm {
  uint32_t token;
  int known; /* JavaScript holds its state (a pick was asked) */
  conn_t *c;
  int32_t sid;
  conn_t *u;
  int32_t usid;
  struct strm *cprev, *cnext, *uprev, *unext, *tprev, *tnext;
  int backend;
  int grpc, idempotent, status;
  int req_headers, resp_headers, started, finished, client_closed, keep, timed, rehashed;
  uint64_t deadline;
  uint32_t deadline_ms;
  hblock_t req_h, req_t, resp_h, resp_t;
  body_t req, resp;
  uint8_t *reply;
  uint32_t reply_len, reply_off;
  uint32_t resp_unconsumed;
} strm_t;

typedef struct {
  backend_addr_t addr; /* first: js_set_backend */
  conn_t *conns;
} backend_t;

typedef struct engine {
  napi_env env;
  uv_loop_t *loop;
  int epfd, closed, finalized, uv_open, silent, depth, referenced;
  uv_poll_t poll;
  uv_timer_t timer;
  uint32_t max_streams, max_header_list, replay_bytes, ping_ms, idle_ms, max_resets, connect_ms;
  backend_t *backends;
  uint32_t nbackends;
  conn_t *clients, *dirty, *zombies;
  uint32_t nclients, nups, nstreams, next_id, next_token;
  double reset_floods, protocol_errors;
  uint32_t coalesce_us, last_wake_events;
  int need_drain; /* a JavaScript callback that may queue microtasks ran (closed, handback) */
  uint64_t last_wake_end;
  strm_t *timed; /* streams with a deadline */
  uint64_t last_sweep;
  napi_ref cb_decide, cb_done, cb_handback, cb_closed, cb_noop, done_ref, io_ref;
  int32_t *done_buf, *io;
  uint32_t done_cap, done_n;
  napi_async_context async;
  nghttp2_session_callbacks *server_cbs, *client_cbs;
  nghttp2_option *server_opt, *client_opt;
  uint8_t rbuf[READ_BUF];
  struct epoll_event evs[EVENTS];
} engine_t;

static void conn_close(conn_t *c);
static void on_timer(uv_timer_t *h);
static void up_start(strm_t *st, int fresh);
static void strm_reply(strm_t *st, int http, int grpc, const char *msg, size_t mlen);
static void strm_detach_up(strm_t *st, uint32_t code);

static uint64_t now_ms(engine_t *e) { return uv_now(e->loop); }

static const char *errname(int err) {
  switch (err) {
  case ECONNREFUSED: return "ECONNREFUSED";
  case ETIMEDOUT: return "ETIMEDOUT";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case ENETUNREACH: return "ENETUNREACH";
  case ECONNRESET: return "ECONNRESET";
  case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
  case EMFILE: return "EMFILE";
  default: return "EIO";
  }
}

/* ---- buffers ------------------------------------------------------------------------------ */

static int hb_add(hblock_t *h, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl) {
  size_t need = h->len + nl + vl + 2;
  if (need > h->cap) {
    size_t cap = h->cap ? h->cap : 512;
    while (cap < need) cap *= 2;
    char *p = realloc(h->p, cap);
    if (!p) return -1;
    h->p = p;
    h->cap = (uint32_t)cap;
  }
  memcpy(h->p + h->len, n, nl);
  h->p[h->len + nl] = 0;
  memcpy(h->p + h->len + nl + 1, v, vl);
  h->p[h->len + nl + 1 + vl] = 0;
  h->len = (uint32_t)need;
  h->n++;
  h->bytes += (uint32_t)(nl + vl + 32); /* RFC 9113 §6.5.2's size of a field */
  return 0;
}

static void hb_free(hblock_t *h) {
  free(h->p);
  memset(h, 0, sizeof *h);
}

/* The value of field `name` in block h (the first), or NULL. */
static const char *hb_get(const hblock_t *h, const char *name, size_t *vl) {
  uint32_t i = 0;
  while (i < h->len) {
    const char *n = h->p + i;
    size_t nl = strlen(n);
    const char *v = n + nl + 1;
    size_t l = strlen(v);
    if (strcmp(n, name) == 0) {
      if (vl) *vl = l;
      return v;
    }
    i += (uint32_t)(nl + l + 2);
  }
  return NULL;
}

/* Fields that describe a connection, not a message (RFC 9113 §8.2.2): never forwarded. */
static int connection_field(const char *n) {
  return !strcmp(n, "connection") || !strcmp(n, "keep-alive") || !strcmp(n, "proxy-connection") ||
         !strcmp(n, "transfer-encoding") || !strcmp(n, "upgrade") || !strcmp(n, "http2-settings");
}

/* The block as an nghttp2_nv array (pointing into it): `pseudo` 0 drops pseudo-fields but
 * :status, 1 keeps them all; `xff` appends the client to X-Forwarded-For. */
static nghttp2_nv *hb_nv(const hblock_t *h, int pseudo, const char *xff_ip, char **xff_buf, size_t *n) {
  nghttp2_nv *nv = malloc(sizeof(nghttp2_nv) * (h->n + 1));
  if (!nv) return NULL;
  size_t k = 0;
  int had_xff = 0;
  *xff_buf = NULL;
  uint32_t i = 0;
  while (i < h->len) {
    char *nm = h->p + i;
    size_t nl = strlen(nm);
    char *v = nm + nl + 1;
    size_t vl = strlen(v);
    i += (uint32_t)(nl + vl + 2);
    if (connection_field(nm)) continue;
    if (nm[0] == ':' && !pseudo && strcmp(nm, ":status")) continue;
    if (xff_ip && !had_xff && !strcmp(nm, "x-forwarded-for")) {
      had_xff = 1;
      size_t il = strlen(xff_ip);
      *xff_buf = malloc(vl + il + 3);
      if (!*xff_buf) {
        free(nv);
        return NULL;
      }
      memcpy(*xff_buf, v, vl);
      memcpy(*xff_buf + vl, ", ", 2);
      memcpy(*xff_buf + vl + 2, xff_ip, il + 1);
      v = *xff_buf;
      vl = vl + il + 2;
    }
    nv[k++] = (nghttp2_nv){(uint8_t *)nm, (uint8_t *)v, nl, vl, NGHTTP2_NV_FLAG_NONE};
  }
  if (xff_ip && !had_xff) {
    nv = realloc(nv, sizeof(nghttp2_nv) * (k + 1));
    if (!nv) return NULL;
    nv[k++] = (nghttp2_nv){(uint8_t *)"x-forwarded-for", (uint8_t *)xff_ip, 15, strlen(xff_ip),
                           NGHTTP2_NV_FLAG_NONE};
  }
  *n = k;
  return nv;
}

static int body_add(body_t *b, const uint8_t *d, size_t len) {
  chunk_t *c = malloc(sizeof(chunk_t) + len);
  if (!c) return -1;
  c->next = NULL;
  c->len = (uint32_t)len;
  memcpy(c->data, d, len);
  if (b->tail) b->tail->next = c;
  else b->head = c;
  b->tail = c;
  if (!b->cur) {
    b->cur = c;
    b->off = 0;
  }
  b->total += len;
  return 0;
}

/* Free the chunks before `cur` (sent, and no longer kept). */
static void body_trim(body_t *b) {
  while (b->head && b->head != b->cur) {
    chunk_t *c = b->head;
    b->head = c->next;
    free(c);
  }
  if (!b->head) b->tail = NULL;
}

static void body_free(body_t *b) {
  while (b->head) {
    chunk_t *c = b->head;
    b->head = c->next;
    free(c);
  }
  memset(b, 0, sizeof *b);
}

/* Copy up to len bytes from the body's cursor. */
static size_t body_take(body_t *b, uint8_t *out, size_t len, int keep) {
  size_t n = 0;
  while (n < len && b->cur) {
    size_t k = b->cur->len - b->off;
    if (k > len - n) k = len - n;
    memcpy(out + n, b->cur->data + b->off, k);
    n += k;
    b->off += (uint32_t)k;
    if (b->off == b->cur->len) {
      b->cur = b->cur->next;
      b->off = 0;
    }
  }
  b->sent += n;
  if (!keep) body_trim(b);
  return n;
}

/* ---- JavaScript ----------------------------------------------------------------------------- */

static int js_failed(engine_t *e, napi_status st) { return js_call_failed(e->env, st); }

static napi_status js_call(engine_t *e, napi_ref fn, size_t argc, napi_value *argv, napi_value *res) {
  return js_call_ref(e->env, e->silent, fn, argc, argv, res);
}

static void flush_done(engine_t *e) { js_flush_done(e->env, e->silent, e->cb_done, &e->done_n); }

/* A stream JavaScript knows of has ended: its backend (if it still holds one) and status. */
static void js_done(strm_t *st) {
  engine_t *e = st->c->e;
  if (!st->known) return;
  st->known = 0;
  if (e->silent) return;
  if (e->done_n == e->done_cap) flush_done(e);
  int32_t *r = e->done_buf + 3 * e->done_n++;
  r[0] = (int32_t)st->token;
  r[1] = st->backend;
  r[2] = st->finished && st->backend >= 0 ? st->status : 0;
  st->backend = -1;
}

static napi_value str_or_undef(napi_env env, const char *s, size_t l) {
  napi_value v;
  if (s) napi_create_string_latin1(env, s, l, &v);
  else napi_get_undefined(env, &v);
  return v;
}

/* Ask the rulebook; apply what it says (a backend, the same one afresh, an answer of ours, the
 * connection to JavaScript, or relay for an answer it may retry on). Returns the raw result. */
static int decide(strm_t *st, int event, int arg, const char *reason, int flags) {
  engine_t *e = st->c->e;
  if (e->silent || e->closed) return -100;
  napi_env env = e->env;
  napi_value argv[10], res;
  int prev = st->backend;
  if (st->keep && !st->started) flags |= F_REPLAYABLE;
  if (st->idempotent) flags |= F_IDEMPOTENT;
  if (st->grpc) flags |= F_GRPC;
  napi_create_uint32(env, st->c->id, &argv[0]);
  napi_create_uint32(env, st->token, &argv[1]);
  napi_create_int32(env, event, &argv[2]);
  napi_create_int32(env, prev, &argv[3]);
  napi_create_int32(env, arg, &argv[4]);
  argv[5] = str_or_undef(env, reason, reason ? strlen(reason) : 0);
  napi_create_int32(env, flags, &argv[6]);
  size_t hl = 0, tl = 0;
  const char *hv = event == E_PICK && st->c->hash_len ? hb_get(&st->req_h, st->c->hash, &hl) : NULL;
  const char *tv = event == E_PICK && st->grpc ? hb_get(&st->req_h, "grpc-timeout", &tl) : NULL;
  argv[7] = str_or_undef(env, hv, hl);
  argv[8] = str_or_undef(env, tv, tl);
  uint32_t ended = e->done_n;
  e->done_n = 0;
  napi_create_uint32(env, ended, &argv[9]);
  e->io[0] = 0;
  st->known = 1;
  if (js_failed(e, js_call(e, e->cb_decide, 10, argv, &res))) {
    st->backend = -1;
    strm_reply(st, 500, 13, "internal error in the proxy", 27);
    return -100;
  }
  napi_valuetype t;
  napi_typeof(env, res, &t);
  if (t == napi_number) {
    int32_t r = -1;
    napi_get_value_int32(env, res, &r);
    if (event == E_PICK && e->io[0] > 0) {
      st->deadline_ms = (uint32_t)e->io[0];
      st->deadline = now_ms(e) + (uint64_t)e->io[0];
      if (!st->timed) {
        st->timed = 1;
        st->tprev = NULL;
        st->tnext = e->timed;
        if (e->timed) e->timed->tprev = st;
        e->timed = st;
      }
    }
    if (r == R_RELAY) return r;
    if (r == R_REHASH && event == E_PICK && !st->rehashed) {
      /* the connection's ConsistentHash header was changed: ask again with its value */
      st->rehashed = 1;
      return decide(st, E_PICK, 0, NULL, 0);
    }
    if (r == R_GOAWAY) {
      /* the service's backends are no longer all this engine's to reach: this stream is refused
       * (a client may send it again) and the connection drained, its next one served by JS */
      st->backend = -1;
      st->finished = 1;
      nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_REFUSED_STREAM);
      if (!st->c->closing) {
        st->c->closing = 1;
        nghttp2_submit_goaway(st->c->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(st->c->s),
                              NGHTTP2_NO_ERROR, NULL, 0);
      }
      return r;
    }
    if (st->u) strm_detach_up(st, NGHTTP2_CANCEL); /* a try abandoned (an answer retried on) */
    if (r == R_FRESH) {
      st->backend = prev;
      up_start(st, 1);
      return r;
    }
    if (r >= 0 && (uint32_t)r < e->nbackends && e->backends[r].addr.set) {
      st->backend = r;
      up_start(st, 0);
      return r;
    }
    st->backend = -1;
    strm_reply(st, 500, 13, "no usable backend id", 20);
    return r;
  }
  /* [httpStatus, grpcStatus, message]: an answer of ours, counted by the rulebook */
  napi_value v;
  int32_t http = 502, grpc = -1;
  char msg[512];
  size_t ml = 0;
  napi_get_element(env, res, 0, &v);
  napi_get_value_int32(env, v, &http);
  napi_get_element(env, res, 1, &v);
  napi_get_value_int32(env, v, &grpc);
  napi_get_element(env, res, 2, &v);
  napi_get_value_string_utf8(env, v, msg, sizeof msg, &ml);
  st->backend = -1;
  strm_reply(st, http, grpc, msg, ml);
  return -1;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void mark_dirty(conn_t *c) {
  if (c->dirty || c->dead) return;
  c->dirty = 1;
  c->dnext = c->e->dirty;
  c->e->dirty = c;
}

static void arm_out(conn_t *c, int on) {
  if (c->out_armed == on || c->dead) return;
  c->out_armed = on;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(c->e->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what the session has to send, batched: one write() of up to OUT_BATCH bytes at a time. */
static void conn_flush(conn_t *c) {
  if (c->dead || c->connecting || c->handshake) return;
  for (int round = 0; round < 64; round++) {
    while (c->olen < OUT_BATCH) {
      const uint8_t *d;
      ssize_t n = nghttp2_session_mem_send(c->s, &d);
      if (n < 0) return conn_close(c);
      if (n == 0) break;
      if (c->olen + (size_t)n > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 16384;
        while (cap < c->olen + (size_t)n) cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p) return conn_close(c);
        c->out = p;
        c->ocap = cap;
      }
      memcpy(c->out + c->olen, d, (size_t)n);
      c->olen += (size_t)n;
    }
    if (c->ooff == c->olen) break;
    while (c->ooff < c->olen) {
      ssize_t w = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          arm_out(c, 1);
          return;
        }
        return conn_close(c);
      }
      c->ooff += (size_t)w;
      c->last_io = now_ms(c->e);
    }
    c->olen = c->ooff = 0;
    if (c->ocap > 4 * OUT_BATCH) {
      free(c->out);
      c->out = NULL;
      c->ocap = 0;
    }
  }
  arm_out(c, c->ooff < c->olen);
  if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) && c->ooff == c->olen)
    conn_close(c);
}

static void flush_dirty(engine_t *e) {
  for (int i = 0; i < 16 && e->dirty; i++) {
    conn_t *list = e->dirty;
    e->dirty = NULL;
    while (list) {
      conn_t *c = list;
      list = c->dnext;
      c->dirty = 0;
      conn_flush(c);
    }
  }
}

static void strm_timed_unlink(strm_t *st) {
  if (!st->timed) return;
  engine_t *e = st->c->e;
  if (st->tprev) st->tprev->tnext = st->tnext;
  else e->timed = st->tnext;
  if (st->tnext) st->tnext->tprev = st->tprev;
  st->timed = 0;
}

static void strm_up_unlink(strm_t *st) {
  conn_t *u = st->u;
  if (!u) return;
  if (st->uprev) st->uprev->unext = st->unext;
  else u->streams = st->unext;
  if (st->unext) st->unext->uprev = st->uprev;
  st->uprev = st->unext = NULL;
  st->u = NULL;
  st->usid = 0;
}

static void strm_free(strm_t *st) {
  conn_t *c = st->c;
  strm_timed_unlink(st);
  strm_up_unlink(st);
  if (st->cprev) st->cprev->cnext = st->cnext;
  else c->streams = st->cnext;
  if (st->cnext) st->cnext->cprev = st->cprev;
  hb_free(&st->req_h);
  hb_free(&st->req_t);
  hb_free(&st->resp_h);
  hb_free(&st->resp_t);
  body_free(&st->req);
  body_free(&st->resp);
  free(st->reply);
  c->e->nstreams--;
  free(st);
}

/* The upstream stream of st is no longer relayed: reset (code), its window given back. */
static void strm_detach_up(strm_t *st, uint32_t code) {
  conn_t *u = st->u;
  if (!u) return;
  if (!u->dead) {
    nghttp2_session_set_stream_user_data(u->s, st->usid, NULL);
    nghttp2_submit_rst_stream(u->s, NGHTTP2_FLAG_NONE, st->usid, code);
    if (st->resp_unconsumed) nghttp2_session_consume_connection(u->s, st->resp_unconsumed);
    mark_dirty(u);
  }
  st->resp_unconsumed = 0;
  body_free(&st->resp);
  hb_free(&st->resp_h);
  hb_free(&st->resp_t);
  st->resp_headers = 0;
  strm_up_unlink(st);
}

/* Tear a connection down: its streams told, its session deleted. */
static void conn_destroy(conn_t *c) {
  engine_t *e = c->e;
  if (c->kind == K_CLIENT) {
    while (c->streams) {
      strm_t *st = c->streams;
      if (st->u) strm_detach_up(st, NGHTTP2_CANCEL);
      js_done(st);
      strm_free(st);
    }
    if (c->prev) c->prev->next = c->next;
    else e->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    e->nclients--;
    if (!e->silent) {
      napi_value argv[1];
      napi_create_uint32(e->env, c->id, &argv[0]);
      e->need_drain = 1;
      js_failed(e, js_call(e, e->cb_closed, 1, argv, NULL));
    }
  } else {
    backend_t *b = &e->backends[c->backend];
    if (c->prev) c->prev->next = c->next;
    else b->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    e->nups--;
    /* its streams: the connection went away under them */
    while (c->streams) {
      strm_t *st = c->streams;
      strm_up_unlink(st);
      body_free(&st->resp);
      st->resp_unconsumed = 0;
      if (st->finished || st->client_closed) continue;
      if (st->started) {
        st->finished = 1;
        st->status = 0;
        nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_INTERNAL_ERROR);
        mark_dirty(st->c);
      } else if (c->connecting) {
        decide(st, E_CONNECT_FAILED, 0, c->connecting == 2 ? "timeout" : errname(c->cerr), 0);
      } else {
        decide(st, E_STALE, 0, "closed", 0);
      }
      mark_dirty(st->c);
    }
  }
  if (c->s) nghttp2_session_del(c->s);
  c->s = NULL;
  free(c->out);
  c->out = NULL;
  free(c->hs);
  c->hs = NULL;
  c->dnext = e->zombies;
  e->zombies = c;
}

/* Close a connection (never from inside its own session's callbacks: none of them closes one);
 * its memory is freed after the wake-up, so pointers to it stay valid until then. */
static void conn_close(conn_t *c) {
  if (c->dead) return;
  c->dead = 1;
  epoll_ctl(c->e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  conn_destroy(c);
}

static void update_ref(engine_t *e) {
  if (!e->closed) {
    int any = e->nclients + e->nups > 0;
    if (any && !uv_is_active((uv_handle_t *)&e->timer)) uv_timer_start(&e->timer, on_timer, TICK_MS, TICK_MS);
    else if (!any && uv_is_active((uv_handle_t *)&e->timer)) uv_timer_stop(&e->timer);
  }
  int want = e->nclients > 0;
  if (want == e->referenced || e->closed) return;
  e->referenced = want;
  if (want) {
    uv_ref((uv_handle_t *)&e->poll);
    uv_ref((uv_handle_t *)&e->timer);
  } else {
    uv_unref((uv_handle_t *)&e->poll);
    uv_unref((uv_handle_t *)&e->timer);
  }
}

/* ---- streams -------------------------------------------------------------------------------- */

/* The data provider of every relayed body (and of our own answers' bodies). */
static ssize_t read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) {
  strm_t *st = src->ptr;
  conn_t *conn = ud;
  if (!st) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }
  if (conn->kind == K_CLIENT && st->reply) {
    size_t n = st->reply_len - st->reply_off;
    if (n > len) n = len;
    memcpy(buf, st->reply + st->reply_off, n);
    st->reply_off += (uint32_t)n;
    if (st->reply_off == st->reply_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
  }
  int up = conn->kind == K_UP;
  body_t *b = up ? &st->req : &st->resp;
  size_t n = body_take(b, buf, len, up && st->keep);
  if (n) {
    if (up) {
      /* the client's window reopens as its bytes leave (once per byte, a resend excepted) */
      if (b->sent > b->consumed) {
        uint64_t k = b->sent - b->consumed;
        b->consumed = b->sent;
        if (!st->client_closed) nghttp2_session_consume(st->c->s, st->sid, (size_t)k);
        mark_dirty(st->c);
      }
    } else if (st->u) {
      nghttp2_session_consume(st->u->s, st->usid, n);
      st->resp_unconsumed -= (uint32_t)(n > st->resp_unconsumed ? st->resp_unconsumed : n);
      mark_dirty(st->u);
    }
  }
  if (!b->cur && b->eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    hblock_t *t = up ? &st->req_t : &st->resp_t;
    if (t->n) {
      size_t nn;
      char *x;
      nghttp2_nv *nv = hb_nv(t, 0, NULL, &x, &nn);
      if (nv && nghttp2_submit_trailer(s, sid, nv, nn) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      free(nv);
    }
    if (!up) st->finished = 1;
    return (ssize_t)n;
  }
  if (n == 0) {
    b->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

static void resume(conn_t *conn, int32_t sid, body_t *b) {
  if (!b->deferred || !conn || conn->dead) return;
  b->deferred = 0;
  nghttp2_session_resume_data(conn->s, sid);
  mark_dirty(conn);
}

/* An answer of ours: gRPC's trailers-only form for a gRPC call, else a text body. */
static void strm_reply(strm_t *st, int http, int grpc, const char *msg, size_t mlen) {
  conn_t *c = st->c;
  strm_timed_unlink(st);
  if (st->u) strm_detach_up(st, NGHTTP2_CANCEL);
  st->finished = 1;
  st->status = http;
  if (st->client_closed) return;
  if (st->started) {
    nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_INTERNAL_ERROR);
    mark_dirty(c);
    return;
  }
  st->started = 1;
  char status[8];
  snprintf(status, sizeof status, "%d", grpc >= 0 ? 200 : http);
  if (grpc >= 0) {
    char gs[12];
    snprintf(gs, sizeof gs, "%d", grpc);
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        {(uint8_t *)"grpc-status", (uint8_t *)gs, 11, strlen(gs), 0},
        {(uint8_t *)"grpc-message", (uint8_t *)msg, 12, mlen, 0},
    };
    nghttp2_submit_response(c->s, st->sid, nv, 4, NULL);
  } else {
    st->reply = malloc(mlen + 1);
    if (st->reply) {
      memcpy(st->reply, msg, mlen);
      st->reply[mlen] = '\n';
      st->reply_len = (uint32_t)mlen + 1;
    }
    char cl[16];
    snprintf(cl, sizeof cl, "%u", st->reply_len);
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), 0},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain; charset=utf-8", 12, 25, 0},
        {(uint8_t *)"content-length", (uint8_t *)cl, 14, strlen(cl), 0},
    };
    nghttp2_data_provider p = {.source.ptr = st, .read_callback = read_cb};
    nghttp2_submit_response(c->s, st->sid, nv, 3, &p);
  }
  mark_dirty(c);
}

static conn_t *up_connect(engine_t *e, int bid);

/* A connection to st's backend with room for one more stream (a new one when none has, or when
 * `fresh`), and the stream submitted on it. */
static void up_start(strm_t *st, int fresh) {
  engine_t *e = st->c->e;
  backend_t *b = &e->backends[st->backend];
  conn_t *u = NULL;
  if (!fresh)
    for (conn_t *x = b->conns; x; x = x->next) {
      if (x->dead || x->closing) continue;
      uint32_t remote = x->connecting ? e->max_streams
                                      : nghttp2_session_get_remote_settings(x->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
      uint32_t cap = remote < e->max_streams ? remote : e->max_streams;
      if (x->nstreams < cap) {
        u = x;
        break;
      }
    }
  if (!u) u = up_connect(e, st->backend);
  if (!u) {
    decide(st, E_CONNECT_FAILED, 0, "EMFILE", 0);
    return;
  }
  /* the request body from its start (a request sent again) */
  st->req.cur = st->req.head;
  st->req.off = 0;
  st->req.sent = 0;
  st->req.deferred = 0;
  size_t n;
  char *xff;
  nghttp2_nv *nv = hb_nv(&st->req_h, 1, st->c->ip, &xff, &n);
  if (!nv) {
    decide(st, E_FAILED, 0, "closed", 0);
    return;
  }
  int body = !(st->req.eof && !st->req.head && !st->req_t.n);
  nghttp2_data_provider p = {.source.ptr = st, .read_callback = read_cb};
  int32_t usid = nghttp2_submit_request(u->s, NULL, nv, n, body ? &p : NULL, st);
  free(nv);
  free(xff);
  if (usid < 0) {
    /* stream ids spent on this connection: no new stream on it, another connection */
    u->closing = 1;
    if (!fresh) return up_start(st, 1);
    decide(st, E_FAILED, 0, "closed", 0);
    return;
  }
  st->u = u;
  st->usid = usid;
  st->uprev = NULL;
  st->unext = u->streams;
  if (u->streams) u->streams->uprev = st;
  u->streams = st;
  u->nstreams++;
  mark_dirty(u);
}

/* An upstream's final answer head: relayed (or, when the service retries on it, another try). */
static void on_response(strm_t *st, int end_stream) {
  size_t sl = 0;
  const char *sv = hb_get(&st->resp_h, ":status", &sl);
  int status = sv ? atoi(sv) : 502;
  size_t gl = 0;
  const char *gs = st->grpc && end_stream ? hb_get(&st->resp_h, "grpc-status", &gl) : NULL;
  int unavailable = gs && gl == 2 && !memcmp(gs, "14", 2);
  if (st->keep && !st->started && (status >= 500 || unavailable)) {
    /* the rulebook may send it to another backend (the service's retry-on): nothing relayed */
    int r = decide(st, E_ANSWERED_BADLY, status, NULL, unavailable ? F_UNAVAILABLE : 0);
    if (r != R_RELAY) return;
  }
  st->started = 1;
  st->status = status;
  st->keep = 0;
  body_trim(&st->req);
  if (!st->grpc) strm_timed_unlink(st);
  size_t n;
  char *x;
  nghttp2_nv *nv = hb_nv(&st->resp_h, 0, NULL, &x, &n);
  if (!nv) {
    strm_detach_up(st, NGHTTP2_INTERNAL_ERROR);
    st->finished = 1;
    st->status = 0;
    nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_INTERNAL_ERROR);
    mark_dirty(st->c);
    return;
  }
  if (end_stream) {
    nghttp2_submit_response(st->c->s, st->sid, nv, n, NULL);
    st->resp.eof = 1;
    st->finished = 1;
    strm_timed_unlink(st);
  } else {
    nghttp2_data_provider p = {.source.ptr = st, .read_callback = read_cb};
    nghttp2_submit_response(st->c->s, st->sid, nv, n, &p);
  }
  free(nv);
  mark_dirty(st->c);
}

static int is_grpc(const char *ct, size_t l) {
  if (!ct || l < 16 || strncmp(ct, "application/grpc", 16)) return 0;
  return l == 16 || ct[16] == '+' || ct[16] == ';';
}

static int idempotent_method(const char *m) {
  return m && (!strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") || !strcmp(m, "DELETE") ||
               !strcmp(m, "OPTIONS") || !strcmp(m, "TRACE"));
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  conn_t *c = ud;
  if (c->kind != K_CLIENT || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  strm_t *st = calloc(1, sizeof(strm_t));
  if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  st->c = c;
  st->sid = f->hd.stream_id;
  st->backend = -1;
  st->keep = 1;
  st->token = ++c->e->next_token;
  st->cnext = c->streams;
  if (c->streams) c->streams->cprev = st;
  c->streams = st;
  c->e->nstreams++;
  nghttp2_session_set_stream_user_data(s, st->sid, st);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  conn_t *c = ud;
  strm_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!st) return 0;
  hblock_t *h;
  if (c->kind == K_CLIENT) h = st->req_headers ? &st->req_t : &st->req_h;
  else h = st->resp_headers ? &st->resp_t : &st->resp_h;
  if (h->bytes + nl + vl + 32 > c->e->max_header_list) {
    /* over the header list size we announce (or an upstream's over it): the stream ends */
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (hb_add(h, name, nl, value, vl) < 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static void client_headers_done(strm_t *st, int end_stream) {
  if (st->req_headers) { /* trailers: the request's end */
    st->req.eof = 1;
    resume(st->u, st->usid, &st->req);
    return;
  }
  st->req_headers = 1;
  if (end_stream) st->req.eof = 1;
  size_t l = 0;
  const char *ct = hb_get(&st->req_h, "content-type", &l);
  st->grpc = is_grpc(ct, l);
  st->idempotent = idempotent_method(hb_get(&st->req_h, ":method", NULL));
  decide(st, E_PICK, 0, NULL, 0);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  conn_t *c = ud;
  engine_t *e = c->e;
  int32_t sid = f->hd.stream_id;
  int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (c->kind == K_CLIENT) {
    if (f->hd.type == NGHTTP2_RST_STREAM) {
      uint64_t now = now_ms(e);
      if (now - c->rst_window > 1000) {
        c->rst_window = now;
        c->rsts = 0;
      }
      if (++c->rsts > e->max_resets && !c->closing) {
        c->closing = 1;
        e->reset_floods++;
        nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
      }
      return 0;
    }
    strm_t *st = sid ? nghttp2_session_get_stream_user_data(s, sid) : NULL;
    if (!st) return 0;
    if (f->hd.type == NGHTTP2_HEADERS) client_headers_done(st, end);
    else if (f->hd.type == NGHTTP2_DATA && end) {
      st->req.eof = 1;
      resume(st->u, st->usid, &st->req);
    }
    return 0;
  }
  /* an upstream connection */
  if (f->hd.type == NGHTTP2_GOAWAY) {
    c->closing = 1;
    return 0;
  }
  if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
    c->ping_at = 0;
    return 0;
  }
  strm_t *st = sid ? nghttp2_session_get_stream_user_data(s, sid) : NULL;
  if (!st) return 0;
  if (f->hd.type == NGHTTP2_HEADERS) {
    if (!st->resp_headers) {
      size_t l = 0;
      const char *sv = hb_get(&st->resp_h, ":status", &l);
      if (sv && sv[0] == '1') { /* interim (1xx): not relayed */
        hb_free(&st->resp_h);
        return 0;
      }
      st->resp_headers = 1;
      on_response(st, end);
    } else {
      st->resp.eof = 1;
      resume(st->c, st->sid, &st->resp);
    }
  } else if (f->hd.type == NGHTTP2_DATA && end) {
    st->resp.eof = 1;
    resume(st->c, st->sid, &st->resp);
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *d, size_t len, void *ud) {
  conn_t *c = ud;
  strm_t *st = nghttp2_session_get_stream_user_data(s, sid);
  if (c->kind == K_CLIENT) {
    if (!st || st->finished) {
      nghttp2_session_consume(s, sid, len);
      return 0;
    }
    if (st->keep && st->req.total + len > c->e->replay_bytes) {
      st->keep = 0; /* too large to send again */
      body_trim(&st->req);
    }
    if (body_add(&st->req, d, len) < 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    resume(st->u, st->usid, &st->req);
    return 0;
  }
  if (!st) {
    nghttp2_session_consume(s, sid, len);
    return 0;
  }
  if (body_add(&st->resp, d, len) < 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  st->resp_unconsumed += (uint32_t)len;
  resume(st->c, st->sid, &st->resp);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) {
  conn_t *c = ud;
  strm_t *st = nghttp2_session_get_stream_user_data(s, sid);
  if (!st) return 0;
  if (c->kind == K_CLIENT) {
    st->client_closed = 1;
    /* bytes of it never sent upstream: the connection's window has them back */
    if (st->req.total > st->req.consumed) nghttp2_session_consume_connection(s, st->req.total - st->req.consumed);
    st->req.consumed = st->req.total;
    if (!st->finished) {
      /* the client reset it (or the connection ends): passed on upstream as a reset */
      st->status = 0;
      if (st->u) strm_detach_up(st, code && code != NGHTTP2_NO_ERROR ? code : NGHTTP2_CANCEL);
    } else if (st->u)
      strm_detach_up(st, NGHTTP2_CANCEL);
    js_done(st);
    strm_free(st);
    return 0;
  }
  /* upstream */
  c->nstreams--;
  if (st->resp_unconsumed) nghttp2_session_consume_connection(s, st->resp_unconsumed);
  st->resp_unconsumed = 0;
  strm_up_unlink(st);
  if (st->client_closed || (st->finished && !st->started)) return 0;
  if (st->started) {
    if (code == NGHTTP2_NO_ERROR && st->resp.eof) return 0;
    /* reset mid-answer: the client sees a reset, not a clean end */
    st->finished = 1;
    st->status = 0;
    body_free(&st->resp);
    nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_INTERNAL_ERROR);
    mark_dirty(st->c);
    return 0;
  }
  hb_free(&st->resp_h);
  st->resp_headers = 0;
  if (c->closing || c->dead) decide(st, E_STALE, 0, code == NGHTTP2_NO_ERROR || code == NGHTTP2_REFUSED_STREAM ? "closed" : "reset", 0);
  else if (code == NGHTTP2_REFUSED_STREAM) decide(st, E_REFUSED, 0, NULL, 0);
  else decide(st, E_FAILED, 0, code == NGHTTP2_NO_ERROR ? "closed" : "reset", 0);
  mark_dirty(st->c);
  return 0;
}

/* ---- sockets ------------------------------------------------------------------------------------ */

static nghttp2_session_callbacks *callbacks(void) {
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb)) return NULL;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  return cb;
}

static conn_t *conn_new(engine_t *e, int fd, int kind) {
  conn_t *c = calloc(1, sizeof(conn_t));
  if (!c) return NULL;
  c->fd = fd;
  c->kind = kind;
  c->e = e;
  c->backend = -1;
  c->since = c->last_io = now_ms(e);
  return c;
}

static conn_t *up_connect(engine_t *e, int bid) {
  backend_t *b = &e->backends[bid];
  int fd = socket(b->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return NULL;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  conn_t *u = conn_new(e, fd, K_UP);
  if (!u) {
    close(fd);
    return NULL;
  }
  u->backend = bid;
  u->connecting = 1;
  if (connect(fd, (struct sockaddr *)&b->addr.sa, b->addr.salen) < 0 && errno != EINPROGRESS)
    u->cerr = errno; /* refused at once: its streams hear of it on the socket's event */
  if (nghttp2_session_client_new2(&u->s, e->client_cbs, u, e->client_opt)) {
    close(fd);
    free(u);
    return NULL;
  }
  nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                  {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW}};
  nghttp2_submit_settings(u->s, NGHTTP2_FLAG_NONE, set, 2);
  nghttp2_session_set_local_window_size(u->s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = u};
  u->out_armed = 1;
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    nghttp2_session_del(u->s);
    close(fd);
    free(u);
    return NULL;
  }
  u->next = b->conns;
  if (b->conns) b->conns->prev = u;
  b->conns = u;
  e->nups++;
  return u;
}

/* Not HTTP/2: the connection goes back to JavaScript with every byte read (it answers an HTTP/1
 * client's request with a 505 that says why). */
static void handback(conn_t *c) {
  engine_t *e = c->e;
  int fd = c->fd;
  epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
  c->fd = -1;
  c->dead = 1;
  if (c->prev) c->prev->next = c->next;
  else e->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  e->nclients--;
  nghttp2_session_del(c->s);
  c->s = NULL;
  napi_value argv[3];
  void *data;
  napi_create_uint32(e->env, c->id, &argv[0]);
  napi_create_int32(e->env, fd, &argv[1]);
  napi_create_buffer_copy(e->env, c->hslen, c->hs, &data, &argv[2]);
  free(c->hs);
  c->hs = NULL;
  c->dnext = e->zombies;
  e->zombies = c;
  e->need_drain = 1;
  if (js_failed(e, js_call(e, e->cb_handback, 3, argv, NULL))) close(fd);
}

static void conn_read(conn_t *c) {
  engine_t *e = c->e;
  for (int round = 0; round < 4 && !c->dead; round++) {
    ssize_t n = recv(c->fd, e->rbuf, READ_BUF, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      return conn_close(c);
    }
    if (n == 0) return conn_close(c);
    c->last_io = now_ms(e);
    const uint8_t *d = e->rbuf;
    size_t len = (size_t)n;
    if (c->handshake) {
      /* the connection preface, checked before nghttp2 sees it */
      uint8_t *hs = realloc(c->hs, c->hslen + len);
      if (!hs) return conn_close(c);
      memcpy(hs + c->hslen, d, len);
      c->hs = hs;
      c->hslen += (uint32_t)len;
      size_t k = c->hslen < PREFACE_LEN ? c->hslen : PREFACE_LEN;
      if (memcmp(c->hs, PREFACE, k)) return handback(c);
      if (c->hslen < PREFACE_LEN) continue;
      c->handshake = 0;
      d = c->hs;
      len = c->hslen;
    }
    ssize_t r = nghttp2_session_mem_recv(c->s, d, len);
    if (d != e->rbuf) {
      free(c->hs);
      c->hs = NULL;
    }
    if (r < 0) {
      /* a protocol error: nghttp2 queued its GOAWAY; only this connection ends */
      if (c->kind == K_CLIENT) e->protocol_errors++;
      conn_flush(c);
      return conn_close(c);
    }
    mark_dirty(c);
    if ((size_t)n < READ_BUF) return;
  }
}

static void up_connected(conn_t *u) {
  int err = 0;
  socklen_t l = sizeof err;
  if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
  if (!err) err = u->cerr;
  if (err) {
    u->cerr = err;
    return conn_close(u);
  }
  u->connecting = 0;
  u->last_io = now_ms(u->e);
  mark_dirty(u);
}

static void free_zombies(engine_t *e) {
  if (e->depth > 0) return; /* inside a wake-up: after it */
  while (e->zombies) {
    conn_t *z = e->zombies;
    e->zombies = z->dnext;
    free(z);
  }
}

static void end_of_wake(engine_t *e) {
  if (!e->closed) {
    flush_dirty(e);
    flush_done(e);
  }
  free_zombies(e);
  update_ref(e);
  if (e->need_drain && !e->closed && !e->silent) {
    e->need_drain = 0;
    napi_value cb, recv;
    napi_get_reference_value(e->env, e->cb_noop, &cb);
    napi_get_global(e->env, &recv);
    js_failed(e, napi_make_callback(e->env, e->async, recv, cb, 0, NULL, NULL));
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  engine_t *e = p->data;
  if (e->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(e->env, &scope);
  e->depth++;
  /* Under load (16 or more streams open, more than one event at the last wake-up, which ended
   * within 1 ms), wait coalesce_us first so that this wake-up serves a batch: fewer wake-ups,
   * reads and writes per request (as the HTTP/1 engine's httpCoalesceUs). */
  if (e->coalesce_us && e->nstreams >= 16 && e->last_wake_events > 1 && uv_hrtime() - e->last_wake_end < 1000000) {
    struct timespec d = {0, (long)e->coalesce_us * 1000};
    nanosleep(&d, NULL);
  }
  uint32_t got = 0;
  for (int round = 0; round < 8 && !e->closed; round++) {
    int n = epoll_wait(e->epfd, e->evs, EVENTS, 0);
    if (n > 0) got += (uint32_t)n;
    for (int i = 0; i < n && !e->closed; i++) {
      conn_t *c = e->evs[i].data.ptr;
      uint32_t m = e->evs[i].events;
      if (c->dead) continue;
      if (c->connecting) {
        if (m & (EPOLLOUT | EPOLLERR | EPOLLHUP)) up_connected(c);
        if (c->dead || c->connecting) continue;
      }
      if (m & EPOLLOUT) mark_dirty(c);
      if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_read(c);
    }
    flush_dirty(e);
    if (n < EVENTS) break;
  }
  e->last_wake_events = got;
  e->last_wake_end = uv_hrtime();
  e->depth--;
  end_of_wake(e);
  napi_close_handle_scope(e->env, scope);
}

/* Deadlines (every tick); idle connections, PINGs and connect timeouts (every tick too: cheap
 * per connection, and connect timeouts want it). */
static void on_timer(uv_timer_t *h) {
  engine_t *e = h->data;
  if (e->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(e->env, &scope);
  e->depth++;
  uint64_t now = now_ms(e);
  for (strm_t *st = e->timed, *next; st; st = next) {
    next = st->tnext;
    if (st->deadline > now) continue;
    strm_timed_unlink(st);
    if (st->finished || st->client_closed) continue;
    if (st->started) {
      /* mid-answer: the client sees the call cancelled */
      st->finished = 1;
      st->status = 0;
      if (st->u) strm_detach_up(st, NGHTTP2_CANCEL);
      nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->sid, NGHTTP2_CANCEL);
      mark_dirty(st->c);
      continue;
    }
    if (st->u) strm_detach_up(st, NGHTTP2_CANCEL);
    decide(st, E_TIMEOUT, (int)st->deadline_ms, NULL, 0);
    next = e->timed; /* the list may have changed under the call */
  }
  for (uint32_t bi = 0; bi < e->nbackends; bi++)
    for (conn_t *u = e->backends[bi].conns, *next; u; u = next) {
      next = u->next;
      if (u->dead) continue;
      if (u->connecting) {
        if (now - u->since >= e->connect_ms) {
          u->connecting = 2;
          conn_close(u);
        }
        continue;
      }
      if (u->nstreams == 0 && now - u->last_io >= e->idle_ms) {
        if (!u->closing) {
          u->closing = 1;
          nghttp2_session_terminate_session(u->s, NGHTTP2_NO_ERROR);
          mark_dirty(u);
        } else conn_close(u);
        continue;
      }
      if (u->ping_at && now - u->ping_at >= e->ping_ms) {
        conn_close(u); /* a PING not answered within its interval */
        continue;
      }
      if (!u->ping_at && now - u->last_io >= e->ping_ms) {
        u->ping_at = now;
        nghttp2_submit_ping(u->s, NGHTTP2_FLAG_NONE, NULL);
        mark_dirty(u);
      }
    }
  if (now - e->last_sweep >= 1000) {
    e->last_sweep = now;
    for (conn_t *c = e->clients, *next; c; c = next) {
      next = c->next;
      if (!c->streams && now - c->last_io >= e->idle_ms) {
        if (c->handshake) conn_close(c);
        else if (!c->closing) {
          c->closing = 1;
          nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
          mark_dirty(c);
        } else conn_close(c);
      }
    }
  }
  e->depth--;
  end_of_wake(e);
  napi_close_handle_scope(e->env, scope);
}

/* ---- the JavaScript API ------------------------------------------------------------------------- */

#define THROW(env, msg)                                                                            \
  do {                                                                                             \
    napi_throw_error(env, "EDGEMESH_H2_ENGINE", "h2_engine: " msg);                               \
    return NULL;                                                                                   \
  } while (0)
#define engine_args(env, info, want, argv)                                                         \
  ((engine_t *)handle_args(env, info, want, argv, "EDGEMESH_H2_ENGINE", "h2_engine"))

static void close_everything(engine_t *e) {
  e->depth++;
  while (e->clients) conn_close(e->clients);
  for (uint32_t i = 0; i < e->nbackends; i++)
    while (e->backends[i].conns) conn_close(e->backends[i].conns);
  if (!e->silent) flush_done(e);
  e->depth--;
  e->dirty = NULL;
  free_zombies(e);
  update_ref(e);
}

static void on_handle_closed(uv_handle_t *h) {
  engine_t *e = h->data;
  if (--e->uv_open == 0 && e->finalized) free(e);
}

static void release(engine_t *e) {
  if (e->closed) return;
  close_everything(e);
  e->closed = 1;
  uv_poll_stop(&e->poll);
  uv_timer_stop(&e->timer);
  close(e->epfd);
  napi_delete_reference(e->env, e->cb_decide);
  napi_delete_reference(e->env, e->cb_done);
  napi_delete_reference(e->env, e->cb_handback);
  napi_delete_reference(e->env, e->cb_closed);
  napi_delete_reference(e->env, e->cb_noop);
  napi_delete_reference(e->env, e->done_ref);
  napi_delete_reference(e->env, e->io_ref);
  napi_async_destroy(e->env, e->async);
  nghttp2_session_callbacks_del(e->server_cbs);
  nghttp2_session_callbacks_del(e->client_cbs);
  nghttp2_option_del(e->server_opt);
  nghttp2_option_del(e->client_opt);
  free(e->backends);
  e->backends = NULL;
  e->nbackends = 0;
  uv_close((uv_handle_t *)&e->poll, on_handle_closed);
  uv_close((uv_handle_t *)&e->timer, on_handle_closed);
}

static void finalize(napi_env env, void *data, void *hint) {
  engine_t *e = data;
  e->finalized = 1;
  e->silent = 1;
  if (!e->closed) release(e);
  else if (e->uv_open == 0) free(e);
}

static napi_value noop(napi_env env, napi_callback_info info) { return NULL; }

static int32_t *int32_array(napi_env env, napi_value v, size_t min, size_t *count) {
  napi_typedarray_type t;
  void *data;
  if (napi_get_typedarray_info(env, v, &t, count, &data, NULL, NULL) != napi_ok || t != napi_int32_array ||
      *count < min)
    return NULL;
  return data;
}

#define OPTS 7 /* the 8th, coalesceUs, may be left out */

static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7) THROW(env, "create: 7 arguments expected");
  napi_typedarray_type t;
  size_t count, dcount, iocount;
  void *data;
  if (napi_get_typedarray_info(env, argv[0], &t, &count, &data, NULL, NULL) != napi_ok || t != napi_uint32_array ||
      count < OPTS)
    THROW(env, "create: options must be a Uint32Array of 7");
  int32_t *done = int32_array(env, argv[5], 3, &dcount);
  int32_t *io = int32_array(env, argv[6], 1, &iocount);
  if (!done || !io) THROW(env, "create: the done and io buffers must be Int32Arrays");
  uint32_t *o = data;
  engine_t *e = calloc(1, sizeof(engine_t));
  if (!e) THROW(env, "create: out of memory");
  e->env = env;
  e->max_streams = o[0] ? o[0] : 100;
  e->max_header_list = o[1] ? o[1] : 16384;
  e->replay_bytes = o[2];
  e->ping_ms = o[3] ? o[3] : 30000;
  e->idle_ms = o[4] ? o[4] : 300000;
  e->max_resets = o[5] ? o[5] : 200;
  e->connect_ms = o[6] ? o[6] : 5000;
  e->coalesce_us = count > 7 ? (o[7] > 1000 ? 1000 : o[7]) : 0;
  e->done_buf = done;
  e->done_cap = (uint32_t)(dcount / 3);
  e->io = io;
  e->server_cbs = callbacks();
  e->client_cbs = callbacks();
  if (!e->server_cbs || !e->client_cbs || nghttp2_option_new(&e->server_opt) || nghttp2_option_new(&e->client_opt)) {
    free(e);
    THROW(env, "create: nghttp2 setup failed");
  }
  nghttp2_option_set_no_auto_window_update(e->server_opt, 1);
  nghttp2_option_set_no_auto_window_update(e->client_opt, 1);
  nghttp2_option_set_max_send_header_block_length(e->client_opt, 1 << 20);
  nghttp2_option_set_max_send_header_block_length(e->server_opt, 1 << 20);
  /* nghttp2's own rapid-reset limit, above ours (which counts the flood, and says so in GOAWAY) */
  nghttp2_option_set_stream_reset_rate_limit(e->server_opt, 2 * (uint64_t)e->max_resets, e->max_resets);
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0) {
    free(e);
    THROW(env, "create: epoll failed");
  }
  napi_get_uv_event_loop(env, &e->loop);
  uv_poll_init(e->loop, &e->poll, e->epfd);
  uv_timer_init(e->loop, &e->timer);
  e->poll.data = e->timer.data = e;
  e->uv_open = 2;
  uv_poll_start(&e->poll, UV_READABLE, on_poll);
  uv_unref((uv_handle_t *)&e->poll);
  uv_unref((uv_handle_t *)&e->timer);
  e->last_sweep = now_ms(e);
  napi_create_reference(env, argv[1], 1, &e->cb_decide);
  napi_create_reference(env, argv[2], 1, &e->cb_done);
  napi_create_reference(env, argv[3], 1, &e->cb_handback);
  napi_create_reference(env, argv[4], 1, &e->cb_closed);
  napi_create_reference(env, argv[5], 1, &e->done_ref);
  napi_create_reference(env, argv[6], 1, &e->io_ref);
  napi_value fn, name;
  napi_create_function(env, "drain", NAPI_AUTO_LENGTH, noop, NULL, &fn);
  napi_create_reference(env, fn, 1, &e->cb_noop);
  napi_create_string_utf8(env, "EdgeMeshH2Engine", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &e->async);
  napi_value handle;
  napi_create_external(env, e, finalize, NULL, &handle);
  return handle;
}

static napi_value js_backend(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  engine_t *e = engine_args(env, info, 4, argv);
  if (!e) return NULL;
  return js_set_backend(env, argv, e->closed, (void **)&e->backends, &e->nbackends, sizeof(backend_t),
                        "EDGEMESH_H2_ENGINE");
}

/* The header a ConsistentHash strategy hashes on connection c (lower case; not a string: none). */
static void set_hash_header(napi_env env, napi_value v, conn_t *c) {
  napi_valuetype vt;
  size_t hl = 0;
  napi_typeof(env, v, &vt);
  if (vt == napi_string) napi_get_value_string_utf8(env, v, c->hash, sizeof c->hash, &hl);
  for (size_t k = 0; k < hl; k++)
    if (c->hash[k] >= 'A' && c->hash[k] <= 'Z') c->hash[k] = (char)(c->hash[k] + 32);
  c->hash_len = (uint32_t)hl;
}

static napi_value js_adopt(napi_env env, napi_callback_info info) {
  napi_value argv[4], out;
  engine_t *e = engine_args(env, info, 4, argv);
  if (!e) return NULL;
  if (e->closed) THROW(env, "adopt: engine closed");
  int32_t fd;
  napi_get_value_int32(env, argv[1], &fd);
  int dfd = adopt_fd(fd);
  if (dfd < 0) THROW(env, "adopt: dup failed");
  conn_t *c = conn_new(e, dfd, K_CLIENT);
  if (!c) {
    close(dfd);
    THROW(env, "adopt: out of memory");
  }
  size_t l;
  napi_get_value_string_utf8(env, argv[2], c->ip, sizeof c->ip, &l);
  set_hash_header(env, argv[3], c);
  c->handshake = 1;
  c->id = ++e->next_id;
  if (nghttp2_session_server_new2(&c->s, e->server_cbs, c, e->server_opt)) {
    close(dfd);
    free(c);
    THROW(env, "adopt: nghttp2 session failed");
  }
  nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, e->max_streams},
                                  {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
                                  {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, e->max_header_list},
                                  {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, set, 4);
  nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, dfd, &ev) < 0) {
    nghttp2_session_del(c->s);
    close(dfd);
    free(c);
    THROW(env, "adopt: epoll_ctl failed");
  }
  c->next = e->clients;
  if (e->clients) e->clients->prev = c;
  e->clients = c;
  e->nclients++;
  update_ref(e);
  napi_create_uint32(env, c->id, &out);
  return out;
}

static napi_value js_drain(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  engine_t *e = engine_args(env, info, 2, argv);
  if (!e) return NULL;
  uint32_t id;
  napi_get_value_uint32(env, argv[1], &id);
  if (e->closed || id >= e->nbackends) return NULL;
  for (conn_t *u = e->backends[id].conns; u; u = u->next)
    if (!u->dead && !u->closing) {
      u->closing = 1;
      if (!u->connecting) nghttp2_submit_goaway(u->s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
      /* GOAWAY, open streams finish; the connection closes when nothing is left to say */
      nghttp2_session_terminate_session(u->s, NGHTTP2_NO_ERROR);
      mark_dirty(u);
    }
  e->depth++;
  flush_dirty(e);
  e->depth--;
  free_zombies(e);
  return NULL;
}

/* hashHeader(engine, conn, name|undefined): the header a ConsistentHash strategy hashes, from now
 * on for this client connection. */
static napi_value js_hash_header(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  engine_t *e = engine_args(env, info, 3, argv);
  if (!e) return NULL;
  uint32_t id;
  napi_get_value_uint32(env, argv[1], &id);
  for (conn_t *c = e->clients; c; c = c->next)
    if (c->id == id) {
      set_hash_header(env, argv[2], c);
      break;
    }
  return NULL;
}

static napi_value js_close_all(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  if (!e->closed) close_everything(e);
  update_ref(e);
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  release(e);
  return NULL;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  double vals[5] = {e->nclients, e->nups, e->nstreams, e->reset_floods, e->protocol_errors};
  napi_create_array_with_length(env, 5, &out);
  for (uint32_t i = 0; i < 5; i++) {
    napi_create_double(env, vals[i], &v);
    napi_set_element(env, out, i, v);
  }
  return out;
}

napi_value h2_engine_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      METHOD("create", js_create), METHOD("backend", js_backend), METHOD("adopt", js_adopt),
      METHOD("drain", js_drain), METHOD("hashHeader", js_hash_header), METHOD("closeAll", js_close_all), METHOD("close", js_close),
      METHOD("stats", js_stats),
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}
#endif
