/*
 * http_engine: the native path of EdgeMesh's L7 proxy (HTTP/1.x over keep-alive connections).
 *
 * Node's streams and a promise per step cost ~40 µs of CPU per proxied request on the reference
 * machine; nginx spends ~20 µs in all. Here the sockets of a client connection and of its upstream
 * connections are driven by C on Node's own event loop (one epoll set, watched by one uv_poll
 * handle; no threads): request and response heads are parsed and rewritten in place, bodies are
 * relayed through fixed buffers with back-pressure, and idle upstream connections are pooled per
 * backend. JavaScript keeps every decision: it picks the backend of each request (the injectable
 * LB strategies, passive health, retries), counts statuses, and serves whatever this path does not
 * take — the engine hands such a connection back, at a request boundary, with the bytes it read.
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
 * fresh one. Which backend, the retry after a failure, ejection and the words of the answers to a
 * failed pick come from the rulebook (src/proxy/http/policy.ts), through onPick.
 *
 * JavaScript API (see src/proxy/http/native-engine.ts):
 *   create(opts, onPick, onDone, onHandback, onClosed, doneBuf) -> engine
 *     opts: Uint32Array [maxHead, idleMs, headMs, connectMs, responseMs, poolIdleMs, maxIdle,
 *                        coalesceUs]
 *     doneBuf: Int32Array, records of ended requests: (id, backend or -1, status; 0: aborted)
 *     onPick(id, idempotent, hashValue|undefined, failedBackend, reason|undefined, stale, ended,
 *            authority|undefined) -> backend id | -1 (hand back) | [status, message, close]
 *            `authority`: forward mode, a request's first pick
 *            `ended` records wait in doneBuf: JavaScript takes them before it picks
 *     onDone(ended)                records wait in doneBuf
 *     onHandback(id, fd, bytes)    JavaScript owns fd from here on
 *     onClosed(id)
 *   backend(engine, id, ip, port) -> boolean (false: not an IP address)
 *   adopt(engine, fd, clientIp, hashHeader, forward) -> id   (dups fd; the caller closes its own)
 *   closeAll(engine)             every client and upstream connection closed
 *   close(engine)
 *   stats(engine) -> [clients, upstreams, pooled, coalescedWakeups]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include "common.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_HEADERS 128
#define MAX_CONN_TOKENS 16
#define UP_BUF (64 * 1024)       /* upstream receive buffer: response heads up to this, bodies */
#define MIN_CLIENT_BUF (16 * 1024)
#define EVENTS 256
#define COALESCE_MAX_US 1000 /* longest coalescing wait */
#define COALESCE_INFLIGHT 16  /* exchanges in flight from which a wake-up waits for more events */
#define LINGER_MS 5000
/* Above this many client connections, an idle keep-alive connection gives its buffer back. */
#define KEEP_BUFFERS 512
#define MAX_BACKENDS 65536

enum { T_IDLE, T_HEAD, T_CONNECT, T_RESPONSE, T_POOL, T_LINGER, T_COUNT };
enum { EV_CLIENT = 1, EV_UP = 2, EV_KICK = 3 };
enum { C_HEAD, C_CONNECT, C_FWD, C_RESPOND, C_LINGER, C_DEAD };
enum { B_NONE, B_LENGTH, B_CHUNKED, B_EOF };
enum { R_HEAD, R_BODY };
enum { CH_SIZE, CH_DATA, CH_DCRLF, CH_TRAILER, CH_DONE };

typedef struct tnode {
  struct tnode *prev, *next;
  uint64_t due;
  int kind; /* -1: not linked */
} tnode_t;

struct engine;

typedef struct ev {
  int type;
  int fd;
  struct engine *e;
  tnode_t t;
  struct ev *zombie_next;
  int dead;
} ev_t;

typedef struct {
  char *p;
  uint32_t cap, start, end;
} buf_t;

typedef struct {
  char *p;
  uint32_t len, cap, off; /* off: bytes already written */
} obuf_t;

typedef struct {
  int st;
  uint64_t left;
  uint32_t line;
  int digits, in_ext, ws_after, cr;
} chunk_t;

struct client;

typedef struct up {
  ev_t ev;
  struct up *prev, *next;   /* all upstream connections */
  struct up *pprev, *pnext; /* idle list of its backend */
  int backend;
  struct client *c;
  int connecting, reused, pooled, rd_ready, wr_ready, eof;
  int hup; /* EPOLLRDHUP seen: a short read no longer means drained (the EOF is still to read) */
  buf_t in;
} up_t;

typedef struct client {
  ev_t ev;
  uint32_t id;
  struct client *prev, *next;
  struct client *dprev, *dnext; /* deferred: more work than one turn allows */
  int deferred;
  int state;
  int rd_ready, wr_ready, eof, hup;
  buf_t in;
  obuf_t out;  /* to the client: heads, errors */
  obuf_t uout; /* request head for upstream (kept for a replay) */
  up_t *up;
  char ip[INET6_ADDRSTRLEN];
  char hash_hdr[64];
  uint32_t hash_len;
  uint32_t scan;
  int forward;                 /* explicit forward proxy: absolute-form targets, routed per request */
  uint32_t auth_off, auth_len; /* forward: the target's authority, in the current head */
  /* request */
  uint32_t head_len;
  int keep, v10, head_method, idempotent, has_body, body_sent, req_done;
  int req_mode;
  uint64_t req_left;
  chunk_t req_ch;
  uint32_t req_scanned;
  int backend, fresh_retry, close_after, head_consumed;
  /* response */
  int rstate, status, resp_mode, client_keep, resp_reusable, sent_any;
  uint64_t resp_left;
  chunk_t resp_ch;
  uint32_t resp_scanned;
} client_t;

typedef struct {
  struct sockaddr_storage sa;
  socklen_t salen;
  char key[72];
  up_t *idle;
  uint32_t nidle;
  int set;
} backend_t;

typedef struct engine {
  napi_env env;
  uv_loop_t *loop;
  int epfd;
  uv_poll_t poll;
  uv_timer_t timer;
  int closed, finalized, uv_open, timer_armed, polling_ref;
  uint64_t timer_due;
  tnode_t lists[T_COUNT];
  uint64_t dur[T_COUNT];
  uint32_t max_head, max_idle;
  backend_t *backends;
  uint32_t nbackends;
  client_t *clients;
  up_t *ups;
  uint32_t nclients, nups, npooled, next_id;
  ev_t *zombies;
  client_t *deferred; /* deferred == 1: waiting for the next turn */
  client_t *running;  /* deferred == 2: being run this turn */
  int kickfd;
  ev_t kick;
  int silent; /* finalizing: no calls into JavaScript */
  int depth;      /* > 0 while inside a wake-up or a call from JavaScript */
  int need_drain; /* a JavaScript callback may have queued microtasks */
  uint32_t coalesce_us;      /* 0: off */
  uint32_t last_wake_events; /* events the previous wake-up handled */
  double coalesced;          /* wake-ups that waited */
  napi_ref cb_pick, cb_done, cb_handback, cb_closed, cb_noop, done_ref;
  int32_t *done_buf;
  uint32_t done_cap, done_n;
  napi_async_context async;
  struct epoll_event evs[EVENTS];
} engine_t;

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static int buf_ensure(buf_t *b, uint32_t cap) {
  if (b->p) return 0;
  b->p = malloc(cap);
  if (!b->p) return -1;
  b->cap = cap;
  b->start = b->end = 0;
  return 0;
}
static void buf_free(buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->cap = b->start = b->end = 0;
}
static inline uint32_t buf_len(const buf_t *b) { return b->end - b->start; }
/* Room at the tail, moving the unread bytes to the front when that gains room. */
static uint32_t buf_room(buf_t *b) {
  if (b->start == b->end) b->start = b->end = 0;
  else if (b->start > 0 && b->end == b->cap) {
    memmove(b->p, b->p + b->start, b->end - b->start);
    b->end -= b->start;
    b->start = 0;
  }
  return b->cap - b->end;
}

static int ob_put(obuf_t *o, const char *s, size_t n) {
  if (o->len + n > o->cap) {
    uint32_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + n) cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) return -1;
    o->p = p;
    o->cap = cap;
  }
  memcpy(o->p + o->len, s, n);
  o->len += (uint32_t)n;
  return 0;
}
#define OB_LIT(o, s) ob_put(o, s, sizeof(s) - 1)
static inline uint32_t ob_pending(const obuf_t *o) { return o->len - o->off; }
static void ob_reset(obuf_t *o) { o->len = o->off = 0; }
static void ob_free(obuf_t *o) {
  free(o->p);
  o->p = NULL;
  o->len = o->cap = o->off = 0;
}

static inline int lc(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }
static int ieq(const char *a, size_t al, const char *lower, size_t bl) {
  if (al != bl) return 0;
  for (size_t i = 0; i < al; i++)
    if (lc((unsigned char)a[i]) != lower[i]) return 0;
  return 1;
}
static int ieq2(const char *a, size_t al, const char *b, size_t bl) {
  if (al != bl) return 0;
  for (size_t i = 0; i < al; i++)
    if (lc((unsigned char)a[i]) != lc((unsigned char)b[i])) return 0;
  return 1;
}
static const unsigned char TOKEN_CHARS[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};
static int is_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!TOKEN_CHARS[(unsigned char)s[i]]) return 0;
  return 1;
}

static const char *reason_of(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 408: return "Request Timeout";
  case 431: return "Request Header Fields Too Large";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Error";
  }
}

static const char *errname(int err) {
  switch (err) {
  case ECONNREFUSED: return "ECONNREFUSED";
  case ECONNRESET: return "ECONNRESET";
  case ETIMEDOUT: return "ETIMEDOUT";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case ENETUNREACH: return "ENETUNREACH";
  case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
  case ECONNABORTED: return "ECONNABORTED";
  case EPIPE: return "EPIPE";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case ENOBUFS: return "ENOBUFS";
  default: return "EIO";
  }
}

/* ------------------------------------------------------------------------------------------ */
/* timers: one FIFO list per kind (a kind has one duration, so the head is always the earliest) */

static void timer_unlink(tnode_t *t) {
  if (t->kind < 0) return;
  t->prev->next = t->next;
  t->next->prev = t->prev;
  t->kind = -1;
}
static void on_timer(uv_timer_t *h);
static void timer_arm(engine_t *e, uint64_t due) {
  uint64_t now = uv_now(e->loop);
  uv_timer_start(&e->timer, on_timer, due > now ? due - now : 0, 0);
  e->timer_armed = 1;
  e->timer_due = due;
}
static void timer_set(engine_t *e, tnode_t *t, int kind) {
  timer_unlink(t);
  if (e->dur[kind] == 0) return;
  t->due = uv_now(e->loop) + e->dur[kind];
  t->kind = kind;
  tnode_t *h = &e->lists[kind];
  t->prev = h->prev;
  t->next = h;
  h->prev->next = t;
  h->prev = t;
  if (!e->timer_armed || t->due < e->timer_due) timer_arm(e, t->due);
}

/* ------------------------------------------------------------------------------------------ */
/* calls into JavaScript */

static int js_failed(engine_t *e, napi_status st) {
  if (st == napi_ok) return 0;
  bool pending = false;
  napi_is_exception_pending(e->env, &pending);
  if (pending) {
    napi_value err;
    napi_get_and_clear_last_exception(e->env, &err);
    napi_fatal_exception(e->env, err); /* a bug in a callback: uncaughtException, as elsewhere */
  }
  return 1;
}

static napi_status js_call(engine_t *e, napi_ref fn, size_t argc, napi_value *argv, napi_value *res) {
  if (e->silent) return napi_generic_failure;
  napi_value cb, recv;
  napi_get_reference_value(e->env, fn, &cb);
  napi_get_undefined(e->env, &recv);
  return napi_call_function(e->env, recv, cb, argc, argv, res);
}

/* Ended requests are recorded in a buffer JavaScript shares (id, backend, status per record) and
 * handed over in one call: before the next pick (so connection counts are exact when a strategy
 * looks at them), or at the end of the wake-up. One call into JavaScript per request, not two. */
static void flush_done(engine_t *e) {
  if (e->done_n == 0) return;
  napi_value argv[1];
  napi_create_uint32(e->env, e->done_n, &argv[0]);
  e->done_n = 0;
  js_failed(e, js_call(e, e->cb_done, 1, argv, NULL));
}

static void js_done(engine_t *e, client_t *c, int backend, int status) {
  if (e->done_n == e->done_cap) flush_done(e);
  int32_t *r = e->done_buf + 3 * e->done_n++;
  r[0] = (int32_t)c->id;
  r[1] = backend;
  r[2] = status;
}

/* ------------------------------------------------------------------------------------------ */
/* connection lifetimes */

static void zombie(engine_t *e, ev_t *ev) {
  ev->dead = 1;
  timer_unlink(&ev->t);
  if (ev->fd >= 0) {
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, ev->fd, NULL);
    close(ev->fd);
    ev->fd = -1;
  }
  ev->zombie_next = e->zombies;
  e->zombies = ev;
}

static void pool_unlink(engine_t *e, up_t *u) {
  if (!u->pooled) return;
  backend_t *b = &e->backends[u->backend];
  if (u->pprev) u->pprev->pnext = u->pnext;
  else b->idle = u->pnext;
  if (u->pnext) u->pnext->pprev = u->pprev;
  u->pprev = u->pnext = NULL;
  u->pooled = 0;
  b->nidle--;
  e->npooled--;
}

static void up_close(engine_t *e, up_t *u) {
  if (u->ev.dead) return;
  pool_unlink(e, u);
  if (u->prev) u->prev->next = u->next;
  else e->ups = u->next;
  if (u->next) u->next->prev = u->prev;
  e->nups--;
  if (u->c && u->c->up == u) u->c->up = NULL;
  u->c = NULL;
  zombie(e, &u->ev);
}

static void update_ref(engine_t *e) {
  int want = e->nclients > 0;
  if (want == e->polling_ref || e->closed) return;
  if (want) uv_ref((uv_handle_t *)&e->poll);
  else uv_unref((uv_handle_t *)&e->poll);
  e->polling_ref = want;
}

static void deferred_unlink(engine_t *e, client_t *c) {
  if (!c->deferred) return;
  client_t **head = c->deferred == 1 ? &e->deferred : &e->running;
  if (c->dprev) c->dprev->dnext = c->dnext;
  else *head = c->dnext;
  if (c->dnext) c->dnext->dprev = c->dprev;
  c->dprev = c->dnext = NULL;
  c->deferred = 0;
}

static void client_unlink(engine_t *e, client_t *c) {
  deferred_unlink(e, c);
  if (c->prev) c->prev->next = c->next;
  else e->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  e->nclients--;
  update_ref(e);
}

/* Close a client connection (and an upstream mid-request: its state is unknown). */
static void client_close(client_t *c) {
  engine_t *e = c->ev.e;
  if (c->ev.dead) return;
  if (c->up) {
    up_close(e, c->up);
    if (c->backend >= 0) js_done(e, c, c->backend, 0);
  }
  c->backend = -1;
  c->state = C_DEAD;
  client_unlink(e, c);
  zombie(e, &c->ev);
  if (e->silent) return;
  napi_value argv[1];
  napi_create_uint32(e->env, c->id, &argv[0]);
  e->need_drain = 1;
  js_failed(e, js_call(e, e->cb_closed, 1, argv, NULL));
}

static void client_linger(client_t *c) {
  engine_t *e = c->ev.e;
  shutdown(c->ev.fd, SHUT_WR);
  c->state = C_LINGER;
  buf_free(&c->in);
  timer_set(e, &c->ev.t, T_LINGER);
}

static void handback(client_t *c) {
  engine_t *e = c->ev.e;
  napi_value argv[3];
  int fd = c->ev.fd;
  epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
  c->ev.fd = -1; /* JavaScript owns it now */
  napi_create_uint32(e->env, c->id, &argv[0]);
  napi_create_int32(e->env, fd, &argv[1]);
  napi_create_buffer_copy(e->env, buf_len(&c->in), c->in.p ? c->in.p + c->in.start : "", NULL, &argv[2]);
  c->state = C_DEAD;
  client_unlink(e, c);
  zombie(e, &c->ev);
  e->need_drain = 1;
  js_failed(e, js_call(e, e->cb_handback, 3, argv, NULL));
}

/* ------------------------------------------------------------------------------------------ */
/* chunked bodies (RFC 9112 §7.1): where one ends, the bytes forwarded unchanged.
 * Returns the number of bytes of p[0..n) that belong to the body; sets ch->st = CH_DONE at its
 * end; -1 on a malformed size line. */

static long chunk_feed(chunk_t *ch, const char *p, size_t n) {
  size_t i = 0;
  while (i < n && ch->st != CH_DONE) {
    unsigned char b = (unsigned char)p[i];
    switch (ch->st) {
    case CH_SIZE:
      i++;
      if (++ch->line > 1024) return -1;
      if (b == '\n') {
        if (ch->digits == 0) return -1;
        ch->st = ch->left == 0 ? CH_TRAILER : CH_DATA;
        ch->line = 0;
        ch->digits = ch->in_ext = ch->ws_after = ch->cr = 0;
        break;
      }
      if (ch->cr) return -1; /* CR not followed by LF */
      if (ch->in_ext) break;
      if (b == '\r') ch->cr = 1;
      else if (b == ';') ch->in_ext = 1;
      else if (b == ' ' || b == '\t') {
        if (ch->digits) ch->ws_after = 1;
      } else {
        int v = b >= '0' && b <= '9' ? b - '0' : b >= 'a' && b <= 'f' ? b - 'a' + 10 : b >= 'A' && b <= 'F' ? b - 'A' + 10 : -1;
        if (v < 0 || ch->ws_after || ++ch->digits > 12) return -1;
        ch->left = ch->left * 16 + (uint64_t)v;
      }
      break;
    case CH_DATA: {
      size_t k = n - i < ch->left ? n - i : (size_t)ch->left;
      i += k;
      ch->left -= k;
      if (ch->left == 0) {
        ch->st = CH_DCRLF;
        ch->left = 2;
      }
      break;
    }
    case CH_DCRLF: {
      size_t k = n - i < ch->left ? n - i : (size_t)ch->left;
      i += k;
      ch->left -= k;
      if (ch->left == 0) ch->st = CH_SIZE;
      break;
    }
    case CH_TRAILER:
      i++;
      if (b == '\n') {
        if (ch->line == 0) ch->st = CH_DONE;
        ch->line = 0;
      } else if (b != '\r' || ch->line > 0) {
        if (++ch->line > 16384) return -1;
      }
      break;
    }
  }
  return (long)i;
}

/* ------------------------------------------------------------------------------------------ */
/* heads */

typedef struct {
  uint32_t name, nlen, val, vlen;
} hline_t;

typedef struct {
  hline_t h[MAX_HEADERS];
  int n;
  uint32_t tok[MAX_CONN_TOKENS][2];
  int ntok;
  int conn_close, conn_keep, conn_upgrade;
  int64_t content_length; /* -1: none */
  int te_count, te_chunked;
  int hosts, upgrade, xff;
  int hash_idx;
} hinfo_t;

static int hop_by_hop(const char *n, uint32_t l) {
  switch (l) {
  case 2: return ieq(n, l, "te", 2);
  case 7: return ieq(n, l, "trailer", 7) || ieq(n, l, "upgrade", 7);
  case 10: return ieq(n, l, "connection", 10) || ieq(n, l, "keep-alive", 10);
  case 16: return ieq(n, l, "proxy-connection", 16);
  case 17: return ieq(n, l, "transfer-encoding", 17);
  case 18: return ieq(n, l, "proxy-authenticate", 18);
  case 19: return ieq(n, l, "proxy-authorization", 19);
  default: return 0;
  }
}

/*
 * Header lines of h[from..to) (to excludes the final CRLFCRLF's last CRLF), conservatively: any
 * line the JavaScript parser might judge differently makes this return -1 (hand back / malformed).
 */
static int parse_fields(const char *h, uint32_t from, uint32_t to, hinfo_t *hi, const char *hash, uint32_t hash_len) {
  hi->n = hi->ntok = 0;
  hi->conn_close = hi->conn_keep = hi->conn_upgrade = 0;
  hi->content_length = -1;
  hi->te_count = hi->te_chunked = hi->hosts = hi->upgrade = hi->xff = 0;
  hi->hash_idx = -1;
  uint32_t i = from;
  while (i < to) {
    const char *nl = memchr(h + i, '\r', to - i);
    uint32_t e = nl ? (uint32_t)(nl - h) : to;
    if (e < to && h[e + 1] != '\n') return -1;
    if (e == i) { /* empty line inside the head cannot happen before the end */
      i = e + 2;
      continue;
    }
    if (h[i] == ' ' || h[i] == '\t') return -1; /* obs-fold */
    const char *colon = memchr(h + i, ':', e - i);
    if (!colon) return -1;
    uint32_t nlen = (uint32_t)(colon - (h + i));
    if (!is_token(h + i, nlen)) return -1;
    uint32_t v = nlen + i + 1, ve = e;
    for (uint32_t k = v; k < ve; k++) {
      unsigned char b = (unsigned char)h[k];
      if (b == 0 || b == '\n' || b == '\r') return -1;
    }
    while (v < ve && (h[v] == ' ' || h[v] == '\t')) v++;
    while (ve > v && (h[ve - 1] == ' ' || h[ve - 1] == '\t')) ve--;
    if (ve > v) { /* whitespace JavaScript's trim() would also take */
      unsigned char a = (unsigned char)h[v], z = (unsigned char)h[ve - 1];
      if (a == 0x0b || a == 0x0c || a == 0xa0 || z == 0x0b || z == 0x0c || z == 0xa0) return -1;
    }
    if (hi->n == MAX_HEADERS) return -1;
    hline_t *L = &hi->h[hi->n];
    L->name = i;
    L->nlen = nlen;
    L->val = v;
    L->vlen = ve - v;
    const char *nm = h + i, *val = h + v;
    uint32_t vl = ve - v;
    if (hash_len && hi->hash_idx < 0 && ieq(nm, nlen, hash, hash_len)) hi->hash_idx = hi->n;
    switch (nlen) {
    case 4:
      if (ieq(nm, nlen, "host", 4)) hi->hosts++;
      break;
    case 7:
      if (ieq(nm, nlen, "upgrade", 7)) hi->upgrade = 1;
      break;
    case 10:
      if (ieq(nm, nlen, "connection", 10)) {
        uint32_t a = 0;
        while (a <= vl) {
          uint32_t b = a;
          while (b < vl && val[b] != ',') b++;
          uint32_t s = a, t = b;
          while (s < t && (val[s] == ' ' || val[s] == '\t')) s++;
          while (t > s && (val[t - 1] == ' ' || val[t - 1] == '\t')) t--;
          if (t > s) {
            if (ieq(val + s, t - s, "close", 5)) hi->conn_close = 1;
            else if (ieq(val + s, t - s, "keep-alive", 10)) hi->conn_keep = 1;
            else if (ieq(val + s, t - s, "upgrade", 7)) hi->conn_upgrade = 1;
            if (hi->ntok == MAX_CONN_TOKENS) return -1;
            hi->tok[hi->ntok][0] = v + s;
            hi->tok[hi->ntok][1] = t - s;
            hi->ntok++;
          }
          a = b + 1;
        }
      }
      break;
    case 14:
      if (ieq(nm, nlen, "content-length", 14)) {
        if (vl == 0 || vl > 15) return -1;
        int64_t n = 0;
        for (uint32_t k = 0; k < vl; k++) {
          if (val[k] < '0' || val[k] > '9') return -1;
          n = n * 10 + (val[k] - '0');
        }
        if (hi->content_length >= 0 && hi->content_length != n) return -1;
        hi->content_length = n;
      }
      break;
    case 15:
      if (ieq(nm, nlen, "x-forwarded-for", 15)) hi->xff++;
      break;
    case 17:
      if (ieq(nm, nlen, "transfer-encoding", 17)) {
        hi->te_count++;
        hi->te_chunked = ieq(val, vl, "chunked", 7);
      }
      break;
    }
    hi->n++;
    i = e + 2;
  }
  return 0;
}

static int dropped(const char *h, const hinfo_t *hi, const hline_t *L) {
  if (hop_by_hop(h + L->name, L->nlen)) return 1;
  for (int t = 0; t < hi->ntok; t++)
    if (ieq2(h + L->name, L->nlen, h + hi->tok[t][0], hi->tok[t][1])) return 1;
  return 0;
}

static const unsigned char IDEMPOTENT_FIRST[256] = {['G'] = 1, ['H'] = 1, ['O'] = 1, ['T'] = 1, ['P'] = 1, ['D'] = 1};
static int idempotent_method(const char *m, uint32_t l) {
  if (!IDEMPOTENT_FIRST[(unsigned char)m[0]]) return 0;
  return (l == 3 && (!memcmp(m, "GET", 3) || !memcmp(m, "PUT", 3))) || (l == 4 && !memcmp(m, "HEAD", 4)) ||
         (l == 7 && !memcmp(m, "OPTIONS", 7)) || (l == 5 && !memcmp(m, "TRACE", 5)) ||
         (l == 6 && !memcmp(m, "DELETE", 6));
}

/*
 * Parse the request head at the front of c->in and build the upstream head in c->uout.
 * 0: ready to forward; 1: hand back to JavaScript; -1: out of memory.
 */
static int parse_request(client_t *c, hinfo_t *hi, const char **hash_val, uint32_t *hash_vlen) {
  const char *h = c->in.p + c->in.start;
  uint32_t len = c->head_len - 2; /* up to the CRLF that ends the last line */
  const char *le = memchr(h, '\r', len);
  if (!le || le[1] != '\n') return 1;
  uint32_t rl = (uint32_t)(le - h);
  const char *sp1 = memchr(h, ' ', rl);
  if (!sp1) return 1;
  uint32_t ml = (uint32_t)(sp1 - h);
  if (!is_token(h, ml)) return 1;
  const char *tgt = sp1 + 1;
  const char *sp2 = memchr(tgt, ' ', rl - ml - 1);
  if (!sp2 || sp2 == tgt) return 1;
  uint32_t tl = (uint32_t)(sp2 - tgt);
  for (uint32_t k = 0; k < tl; k++)
    if ((unsigned char)tgt[k] <= 0x20 || tgt[k] == 0x7f) return 1;
  /* forward proxy: `http://authority[/path]` is routed by its authority and sent upstream in
   * origin-form; anything else (origin-form, CONNECT, another scheme) is JavaScript's */
  const char *path = tgt;
  uint32_t pl = tl;
  c->auth_len = 0;
  if (c->forward) {
    if (tl < 8 || !ieq(tgt, 7, "http://", 7)) return 1;
    uint32_t al = 0;
    while (7 + al < tl && tgt[7 + al] != '/' && tgt[7 + al] != '?' && tgt[7 + al] != '#') al++;
    if (al == 0) return 1;
    c->auth_off = (uint32_t)(tgt + 7 - h);
    c->auth_len = al;
    path = tgt + 7 + al;
    pl = tl - 7 - al;
  } else if (tgt[0] != '/')
    return 1; /* absolute-form or asterisk-form on a portal: JavaScript's (rewritten or kept) */
  uint32_t vl = rl - ml - 1 - tl - 1;
  const char *ver = sp2 + 1;
  if (vl != 8 || memcmp(ver, "HTTP/1.", 7) || (ver[7] != '0' && ver[7] != '1')) return 1;
  c->v10 = ver[7] == '0';
  if (parse_fields(h, rl + 2, len, hi, c->hash_hdr, c->hash_len) < 0) return 1;
  if (hi->hosts > 1 || (hi->hosts == 0 && !c->v10)) return 1;
  if (hi->te_count > 1 || (hi->te_count == 1 && (!hi->te_chunked || hi->content_length >= 0))) return 1;
  if (hi->upgrade && hi->conn_upgrade) return 1; /* Upgrade: JavaScript (and the splice engine) */
  c->keep = c->v10 ? hi->conn_keep : !hi->conn_close;
  c->head_method = ml == 4 && !memcmp(h, "HEAD", 4);
  c->idempotent = idempotent_method(h, ml);
  c->req_mode = hi->te_chunked ? B_CHUNKED : hi->content_length > 0 ? B_LENGTH : B_NONE;
  c->req_left = hi->content_length > 0 ? (uint64_t)hi->content_length : 0;
  c->has_body = c->req_mode != B_NONE;
  memset(&c->req_ch, 0, sizeof c->req_ch);
  c->req_scanned = 0;
  if (hi->hash_idx >= 0) {
    *hash_val = h + hi->h[hi->hash_idx].val;
    *hash_vlen = hi->h[hi->hash_idx].vlen;
  }
  /* the upstream head */
  obuf_t *o = &c->uout;
  ob_reset(o);
  /* the client's version: an HTTP/1.0 client must never get a chunked answer (RFC 9112 §7.1),
   * and an upstream asked in HTTP/1.0 does not send one */
  int bad = ob_put(o, h, ml + 1);
  if (pl == 0 || path[0] != '/') bad |= OB_LIT(o, "/"); /* http://host?q → /?q */
  bad |= ob_put(o, path, pl) | (c->v10 ? OB_LIT(o, " HTTP/1.0\r\n") : OB_LIT(o, " HTTP/1.1\r\n"));
  if (c->auth_len) { /* forward: Host is the target's authority, userinfo dropped (RFC 9112 §3.2.2) */
    const char *a = h + c->auth_off;
    uint32_t al = c->auth_len;
    for (uint32_t k = al; k > 0; k--)
      if (a[k - 1] == '@') {
        a += k;
        al -= k;
        break;
      }
    bad |= OB_LIT(o, "Host: ") | ob_put(o, a, al) | OB_LIT(o, "\r\n");
  }
  int first_xff = 1;
  for (int k = 0; k < hi->n; k++) {
    const hline_t *L = &hi->h[k];
    if (L->nlen == 15 && ieq(h + L->name, 15, "x-forwarded-for", 15)) continue;
    if (c->auth_len && L->nlen == 4 && ieq(h + L->name, 4, "host", 4)) continue;
    if (dropped(h, hi, L)) continue;
    bad |= ob_put(o, h + L->name, L->nlen) | OB_LIT(o, ": ") | ob_put(o, h + L->val, L->vlen) | OB_LIT(o, "\r\n");
  }
  bad |= OB_LIT(o, "X-Forwarded-For: ");
  uint32_t xff_start = o->len;
  for (int k = 0; k < hi->n && hi->xff; k++) {
    const hline_t *L = &hi->h[k];
    if (!(L->nlen == 15 && ieq(h + L->name, 15, "x-forwarded-for", 15))) continue;
    if (!first_xff && o->len > xff_start) bad |= OB_LIT(o, ", ");
    bad |= ob_put(o, h + L->val, L->vlen);
    first_xff = 0;
  }
  if (o->len > xff_start) bad |= OB_LIT(o, ", ");
  bad |= ob_put(o, c->ip, strlen(c->ip)) | OB_LIT(o, "\r\n");
  if (c->req_mode == B_CHUNKED) bad |= OB_LIT(o, "Transfer-Encoding: chunked\r\n");
  bad |= OB_LIT(o, "Connection: keep-alive\r\n\r\n");
  return bad ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* responses to the client */

static int client_write(client_t *c, const char *extra, uint32_t n, uint32_t *wrote_extra);

static void respond(client_t *c, int status, const char *msg, size_t mlen, int keep) {
  char head[256], body_pre[64];
  const char *reason = reason_of(status);
  int bl = snprintf(body_pre, sizeof body_pre, "%d %s: ", status, reason);
  size_t body_len = (size_t)bl + mlen + 1;
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s\r\n",
                    status, reason, body_len, keep ? "" : "Connection: close\r\n");
  ob_put(&c->out, head, (size_t)hl);
  ob_put(&c->out, body_pre, (size_t)bl);
  ob_put(&c->out, msg, mlen);
  OB_LIT(&c->out, "\n");
  c->close_after = !keep;
  c->state = C_RESPOND;
  timer_unlink(&c->ev.t);
}

static void start_next(client_t *c);

/* ------------------------------------------------------------------------------------------ */
/* upstream connections */

static up_t *up_connect(engine_t *e, int backend, int *err) {
  backend_t *b = &e->backends[backend];
  int fd = socket(b->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return NULL;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int r = connect(fd, (struct sockaddr *)&b->sa, b->salen);
  if (r < 0 && errno != EINPROGRESS) {
    *err = errno;
    close(fd);
    return NULL;
  }
  up_t *u = calloc(1, sizeof(up_t));
  if (!u) {
    *err = ENOMEM;
    close(fd);
    return NULL;
  }
  u->ev.type = EV_UP;
  u->ev.fd = fd;
  u->ev.e = e;
  u->ev.t.kind = -1;
  u->backend = backend;
  u->connecting = r < 0;
  u->wr_ready = r == 0;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = u};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    *err = errno;
    close(fd);
    free(u);
    return NULL;
  }
  u->next = e->ups;
  if (e->ups) e->ups->prev = u;
  e->ups = u;
  e->nups++;
  if (u->connecting) timer_set(e, &u->ev.t, T_CONNECT);
  return u;
}

static void pick_backend(client_t *c, int failed, int stale, const char *reason, const char *hash, uint32_t hash_len);

/* The upstream is attached and connected: start the exchange. */
static void exchange_begin(client_t *c) {
  engine_t *e = c->ev.e;
  if (!c->head_consumed) {
    c->in.start += c->head_len;
    c->head_consumed = 1;
  }
  c->state = C_FWD;
  c->rstate = R_HEAD;
  c->sent_any = 0;
  c->uout.off = 0;
  timer_set(e, &c->up->ev.t, T_RESPONSE);
}

static void attach(client_t *c, int backend) {
  engine_t *e = c->ev.e;
  backend_t *b = &e->backends[backend];
  c->backend = backend;
  up_t *u = b->idle;
  if (u) {
    pool_unlink(e, u);
    u->reused = 1;
    u->c = c;
    c->up = u;
    exchange_begin(c);
    return;
  }
  int err = 0;
  u = up_connect(e, backend, &err);
  if (!u) {
    pick_backend(c, backend, 0, errname(err), NULL, 0);
    return;
  }
  u->c = c;
  c->up = u;
  if (u->connecting) {
    c->state = C_CONNECT;
    timer_unlink(&c->ev.t);
  } else
    exchange_begin(c);
}

/* Ask JavaScript for a backend (again, after `failed` with `reason`, when failed >= 0). */
static void pick_backend(client_t *c, int failed, int stale, const char *reason, const char *hash, uint32_t hash_len) {
  engine_t *e = c->ev.e;
  napi_env env = e->env;
  napi_value argv[8], res;
  napi_create_uint32(env, c->id, &argv[0]);
  napi_get_boolean(env, c->idempotent, &argv[1]);
  if (hash) napi_create_string_latin1(env, hash, hash_len, &argv[2]);
  else napi_get_undefined(env, &argv[2]);
  napi_create_int32(env, failed, &argv[3]);
  if (reason) napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &argv[4]);
  else napi_get_undefined(env, &argv[4]);
  napi_get_boolean(env, stale, &argv[5]);
  napi_create_uint32(env, e->done_n, &argv[6]); /* ended requests JavaScript takes first */
  e->done_n = 0;
  if (failed < 0 && c->auth_len && !c->head_consumed) /* forward proxy: the request's authority */
    napi_create_string_latin1(env, c->in.p + c->in.start + c->auth_off, c->auth_len, &argv[7]);
  else
    napi_get_undefined(env, &argv[7]);
  c->backend = -1;
  if (js_failed(e, js_call(e, e->cb_pick, 8, argv, &res)) || c->ev.dead) {
    if (!c->ev.dead) client_close(c);
    return;
  }
  napi_valuetype t;
  napi_typeof(env, res, &t);
  if (t == napi_number) {
    int32_t id = -1;
    napi_get_value_int32(env, res, &id);
    if (id >= 0 && (uint32_t)id < e->nbackends && e->backends[id].set) {
      attach(c, id);
      return;
    }
    if (failed < 0 && !c->body_sent) {
      handback(c);
      return;
    }
    client_close(c);
    return;
  }
  /* [status, message, close] */
  napi_value v;
  int32_t status = 502;
  bool close_it = true;
  char msg[512];
  size_t ml = 0;
  if (napi_get_element(env, res, 0, &v) == napi_ok) napi_get_value_int32(env, v, &status);
  if (napi_get_element(env, res, 1, &v) == napi_ok) napi_get_value_string_utf8(env, v, msg, sizeof msg, &ml);
  if (napi_get_element(env, res, 2, &v) == napi_ok) napi_get_value_bool(env, v, &close_it);
  /* a request whose body is still (partly) unread cannot keep its connection; nor can a client
   * that asked for close */
  int keep = !close_it && (!c->has_body || c->req_done) && c->keep;
  if (!c->head_consumed) { /* the head is answered */
    c->in.start += c->head_len;
    c->head_consumed = 1;
  }
  respond(c, status, msg, ml, keep);
}

/* ------------------------------------------------------------------------------------------ */
/* the request path */

static uint32_t find_head_end(client_t *c) {
  const char *p = c->in.p + c->in.start;
  uint32_t n = buf_len(&c->in);
  uint32_t from = c->scan > 3 ? c->scan - 3 : 0;
  if (n < 4 || from >= n) {
    c->scan = n;
    return 0;
  }
  const char *f = memmem(p + from, n - from, "\r\n\r\n", 4);
  if (!f) {
    c->scan = n;
    return 0;
  }
  return (uint32_t)(f - p) + 4;
}

/* One read of an edge-triggered socket into `b`, for client and upstream connections alike.
 * 1: got bytes; 0: nothing (EAGAIN / full); -1: EOF; -2 error. A short read means drained (the
 * next edge says when more comes) unless EPOLLRDHUP was seen: then the EOF is still to read. */
static int sock_read(int fd, buf_t *b, int hup, int *rd_ready, int *eof) {
  if (!*rd_ready || *eof) return *eof ? -1 : 0;
  uint32_t room = buf_room(b);
  if (room == 0) return 0;
  ssize_t n = read(fd, b->p + b->end, room);
  if (n > 0) {
    b->end += (uint32_t)n;
    if ((uint32_t)n < room && !hup) *rd_ready = 0;
    return 1;
  }
  if (n == 0) {
    *eof = 1;
    *rd_ready = 0;
    return -1;
  }
  if (errno == EAGAIN || errno == EINTR) {
    *rd_ready = 0;
    return 0;
  }
  return -2;
}

/* Read from the client into c->in (allocated on first use). */
static int client_read(client_t *c) {
  engine_t *e = c->ev.e;
  if (!c->rd_ready || c->eof) return c->eof ? -1 : 0;
  uint32_t cap = e->max_head + 4096 > MIN_CLIENT_BUF ? e->max_head + 4096 : MIN_CLIENT_BUF;
  if (buf_ensure(&c->in, cap) < 0) return -2;
  return sock_read(c->ev.fd, &c->in, c->hup, &c->rd_ready, &c->eof);
}

static void head_step(client_t *c) {
  engine_t *e = c->ev.e;
  for (;;) {
    uint32_t avail = c->in.p ? buf_len(&c->in) : 0;
    if (avail) {
      if (c->ev.t.kind != T_HEAD) timer_set(e, &c->ev.t, T_HEAD); /* a head has started */
      uint32_t end = find_head_end(c);
      if (end) {
        c->scan = 0;
        if (end > e->max_head) return handback(c); /* 431 from JavaScript */
        c->head_len = end;
        hinfo_t hi;
        const char *hv = NULL;
        uint32_t hvl = 0;
        int r = parse_request(c, &hi, &hv, &hvl);
        if (r != 0) return r > 0 ? handback(c) : client_close(c);
        c->fresh_retry = 0;
        c->body_sent = 0;
        c->head_consumed = 0;
        c->req_done = !c->has_body;
        timer_unlink(&c->ev.t);
        pick_backend(c, -1, 0, NULL, hv, hvl);
        return;
      }
      if (avail > e->max_head) return handback(c);
    }
    if (c->eof) {
      if (avail == 0) {
        if (c->in.p) buf_free(&c->in);
        return client_linger(c); /* the client is done: our FIN, then close */
      }
      return handback(c); /* "closed inside the request head" → 400 from JavaScript */
    }
    int r = client_read(c);
    if (r == -2) return client_close(c);
    if (r == 0) {
      if (avail == 0 && c->in.p && !c->rd_ready && e->nclients > KEEP_BUFFERS) {
        buf_free(&c->in); /* idle keep-alive connections hold no buffer */
        c->scan = 0;
      }
      return;
    }
  }
}

/* Write c->out then `extra`; returns 0, or -1 when the client is gone. */
static int client_write(client_t *c, const char *extra, uint32_t n, uint32_t *wrote_extra) {
  *wrote_extra = 0;
  if (!c->wr_ready) return 0;
  struct iovec iov[2];
  int cnt = 0;
  uint32_t pend = ob_pending(&c->out);
  if (pend) iov[cnt++] = (struct iovec){c->out.p + c->out.off, pend};
  if (n) iov[cnt++] = (struct iovec){(void *)extra, n};
  if (!cnt) return 0;
  ssize_t w = writev(c->ev.fd, iov, cnt);
  if (w < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      c->wr_ready = 0;
      return 0;
    }
    return -1;
  }
  uint32_t total = pend + n;
  if ((uint32_t)w < total) c->wr_ready = 0;
  if ((uint32_t)w >= pend) {
    ob_reset(&c->out);
    *wrote_extra = (uint32_t)w - pend;
  } else
    c->out.off += (uint32_t)w;
  if ((uint32_t)w > 0) c->sent_any = 1;
  return 0;
}

/* The current exchange cannot go on: no answer was relayed yet → `status` to the client. */
static void exchange_fail(client_t *c, int status, const char *msg) {
  engine_t *e = c->ev.e;
  int b = c->backend;
  if (c->up) up_close(e, c->up);
  c->up = NULL;
  c->backend = -1;
  if (b >= 0) js_done(e, c, b, c->rstate == R_BODY ? 0 : status);
  if (c->ev.dead) return;
  if (c->rstate == R_BODY || !msg) return client_close(c); /* a response is half sent */
  respond(c, status, msg, strlen(msg), 0);
}

/* The upstream closed (or failed) before its response head. */
static void upstream_stale(client_t *c, const char *why) {
  engine_t *e = c->ev.e;
  up_t *u = c->up;
  int b = c->backend;
  int replayable = !c->body_sent && !c->sent_any && !ob_pending(&c->out);
  if (replayable && u->reused && !c->fresh_retry) {
    /* a pooled connection the upstream had closed: the same request on a fresh one */
    c->fresh_retry = 1;
    up_close(e, u);
    c->up = NULL;
    int err = 0;
    up_t *n = up_connect(e, b, &err);
    if (!n) return pick_backend(c, b, 0, errname(err), NULL, 0);
    n->c = c;
    c->up = n;
    if (n->connecting) c->state = C_CONNECT;
    else exchange_begin(c);
    return;
  }
  if (replayable && (c->idempotent || !c->has_body)) {
    up_close(e, u);
    c->up = NULL;
    return pick_backend(c, b, 1, why, NULL, 0);
  }
  char msg[160];
  snprintf(msg, sizeof msg, "upstream %s closed the connection", e->backends[b].key);
  exchange_fail(c, 502, c->sent_any && c->rstate == R_BODY ? NULL : msg);
}

static int parse_response(client_t *c, uint32_t end);

static void finish_exchange(client_t *c) {
  engine_t *e = c->ev.e;
  up_t *u = c->up;
  int b = c->backend;
  int reusable = c->resp_reusable && c->req_done && !u->eof && buf_len(&u->in) == 0;
  c->up = NULL;
  c->backend = -1;
  u->c = NULL;
  if (reusable && e->backends[b].nidle < e->max_idle) {
    backend_t *be = &e->backends[b];
    u->pooled = 1;
    u->pprev = NULL;
    u->pnext = be->idle;
    if (be->idle) be->idle->pprev = u;
    be->idle = u;
    be->nidle++;
    e->npooled++;
    u->in.start = u->in.end = 0;
    timer_set(e, &u->ev.t, T_POOL);
  } else
    up_close(e, u);
  js_done(e, c, b, c->status);
  if (c->ev.dead) return;
  if (c->client_keep && c->req_done) start_next(c);
  else client_linger(c);
}

static void start_next(client_t *c) {
  engine_t *e = c->ev.e;
  c->state = C_HEAD;
  c->scan = 0;
  timer_set(e, &c->ev.t, buf_len(&c->in) ? T_HEAD : T_IDLE);
}

/* Read from the upstream into u->in. */
static int up_read(up_t *u) { return sock_read(u->ev.fd, &u->in, u->hup, &u->rd_ready, &u->eof); }

/*
 * Move what can move, both directions, until nothing does.
 * The exchange's timer (T_RESPONSE, on the upstream) restarts whenever bytes move to or from the
 * upstream or to the client: before the response head it is the upstream's time to answer,
 * counted from the last request bytes it took (as nginx's proxy_read_timeout starts once the
 * request is sent: a long upload that flows is not cut off); in the body, the time either side may
 * stall (nginx's proxy_read_timeout and send_timeout) before both connections are closed.
 */
static int fwd_step(client_t *c) {
  int moved = 0, progress = 0;
  for (int round = 0; round < 64; round++) {
    if (c->state != C_FWD || c->ev.dead) return 0;
    up_t *u = c->up;
    moved = 0;
    /* client → upstream: the head, then body bytes */
    if (!c->req_done || ob_pending(&c->uout)) {
      if (!c->req_done && c->in.start == c->in.end && c->eof) return (exchange_fail(c, 400, NULL), 0);
      if (!c->req_done) {
        int r = client_read(c);
        if (r == -2) return (exchange_fail(c, 0, NULL), 0);
        if (r == 1) moved = 1;
      }
      uint32_t avail = c->in.p ? buf_len(&c->in) : 0, body = 0;
      int body_end = 0;
      if (!c->req_done && avail) {
        if (c->req_mode == B_LENGTH) {
          body = avail < c->req_left ? avail : (uint32_t)c->req_left;
          body_end = body == c->req_left;
        } else {
          if (c->req_scanned < avail) {
            long k = chunk_feed(&c->req_ch, c->in.p + c->in.start + c->req_scanned, avail - c->req_scanned);
            if (k < 0) return (exchange_fail(c, 400, c->sent_any ? NULL : "bad chunk in the request body"), 0);
            c->req_scanned += (uint32_t)k;
          }
          body = c->req_scanned;
          body_end = c->req_ch.st == CH_DONE;
        }
      }
      if (u->wr_ready && (ob_pending(&c->uout) || body)) {
        struct iovec iov[2];
        int cnt = 0;
        uint32_t pend = ob_pending(&c->uout);
        if (pend) iov[cnt++] = (struct iovec){c->uout.p + c->uout.off, pend};
        if (body) iov[cnt++] = (struct iovec){c->in.p + c->in.start, body};
        ssize_t w = writev(u->ev.fd, iov, cnt);
        if (w < 0) {
          if (errno != EAGAIN && errno != EINTR) return (upstream_stale(c, "closed the connection"), 0);
          u->wr_ready = 0;
        } else {
          moved = progress = 1;
          uint32_t wb = 0;
          if ((uint32_t)w >= pend) {
            c->uout.off = c->uout.len;
            wb = (uint32_t)w - pend;
          } else
            c->uout.off += (uint32_t)w;
          if (wb) {
            c->body_sent = 1;
            c->in.start += wb;
            if (c->req_mode == B_LENGTH) c->req_left -= wb;
            else c->req_scanned -= wb;
            if (wb == body && body_end) c->req_done = 1;
          }
          if ((uint32_t)w < pend + body) u->wr_ready = 0;
        }
      }
    }
    /* upstream → client */
    if (c->rstate == R_HEAD) {
      for (;;) {
        uint32_t avail = buf_len(&u->in);
        if (avail >= 4) {
          const char *f = memmem(u->in.p + u->in.start, avail, "\r\n\r\n", 4);
          if (f) {
            uint32_t end = (uint32_t)(f - (u->in.p + u->in.start)) + 4;
            int r = parse_response(c, end);
            if (r < 0) { /* 502 at once, as nginx: no retry, no ejection (the connect worked) */
              char msg[160];
              snprintf(msg, sizeof msg, "upstream %s sent a malformed response head", c->ev.e->backends[c->backend].key);
              return (exchange_fail(c, 502, msg), 0);
            }
            moved = 1;
            if (r == 1) continue; /* an interim response was queued; the next head */
            break;
          }
        }
        if (u->eof) return (upstream_stale(c, "closed the connection"), 0);
        if (!u->rd_ready) break;
        if (buf_ensure(&u->in, UP_BUF) < 0) return (exchange_fail(c, 502, "out of memory"), 0);
        if (buf_room(&u->in) == 0) return (upstream_stale(c, "sent a response head larger than 64 KiB"), 0);
        int r = up_read(u);
        if (r == -2) return (upstream_stale(c, "reset the connection"), 0);
        if (r == 1) moved = progress = 1;
      }
      /* interim heads queued in c->out go out now */
      if (c->rstate == R_HEAD && ob_pending(&c->out)) {
        uint32_t x;
        if (client_write(c, NULL, 0, &x) < 0) return (exchange_fail(c, 0, NULL), 0);
      }
    }
    if (c->rstate == R_BODY) {
      uint32_t avail = buf_len(&u->in), body = 0;
      int body_end = 0;
      if (c->resp_mode == B_NONE) body_end = 1;
      else if (c->resp_mode == B_LENGTH) {
        body = avail < c->resp_left ? avail : (uint32_t)c->resp_left;
        body_end = body == c->resp_left;
      } else if (c->resp_mode == B_CHUNKED) {
        if (c->resp_scanned < avail) {
          long k = chunk_feed(&c->resp_ch, u->in.p + u->in.start + c->resp_scanned, avail - c->resp_scanned);
          if (k < 0) return (exchange_fail(c, 0, NULL), 0);
          c->resp_scanned += (uint32_t)k;
        }
        body = c->resp_scanned;
        body_end = c->resp_ch.st == CH_DONE;
      } else {
        body = avail;
        body_end = u->eof;
      }
      uint32_t wb = 0;
      if (ob_pending(&c->out) || body) {
        if (client_write(c, u->in.p + u->in.start, body, &wb) < 0) return (exchange_fail(c, 0, NULL), 0);
        if (wb) {
          moved = progress = 1;
          u->in.start += wb;
          if (c->resp_mode == B_LENGTH) c->resp_left -= wb;
          else if (c->resp_mode == B_CHUNKED) c->resp_scanned -= wb;
        }
      }
      if (body_end && wb == body && !ob_pending(&c->out)) {
        if (c->resp_mode == B_EOF) c->resp_reusable = 0;
        return (finish_exchange(c), 0);
      }
      /* more of the body from upstream */
      if (u->rd_ready && !u->eof) {
        int r = up_read(u);
        if (r == -2) return (exchange_fail(c, 0, NULL), 0);
        if (r != 0) moved = progress = 1;
      } else if (u->eof && c->resp_mode != B_EOF && !body_end && buf_len(&u->in) == 0)
        return (exchange_fail(c, 0, NULL), 0); /* the upstream closed inside the body */
    }
    if (!moved) break;
  }
  if (progress && c->up && !c->ev.dead && c->state == C_FWD) timer_set(c->ev.e, &c->up->ev.t, T_RESPONSE);
  return moved; /* 1: more to move, the rest on a later turn */
}

/*
 * A response head's status line, as ours ("HTTP/1.1 NNN reason"), and its end-to-end fields, into
 * `o` (without the blank line). Nonzero: out of memory.
 */
static int put_head(obuf_t *o, const char *h, const hinfo_t *hi, const char *reason, uint32_t reason_len) {
  char sl[13] = "HTTP/1.1 000 ";
  memcpy(sl + 9, h + 9, 3);
  int bad = ob_put(o, sl, sizeof sl) | ob_put(o, reason, reason_len) | OB_LIT(o, "\r\n");
  for (int k = 0; k < hi->n; k++) {
    const hline_t *L = &hi->h[k];
    if (dropped(h, hi, L)) continue;
    bad |= ob_put(o, h + L->name, L->nlen) | OB_LIT(o, ": ") | ob_put(o, h + L->val, L->vlen) | OB_LIT(o, "\r\n");
  }
  return bad;
}

/*
 * The response head of length `end` at the front of the upstream buffer. 0: the final head, in
 * c->out; 1: an interim (1xx) head, queued (or dropped for an HTTP/1.0 client); -1: malformed.
 */
static int parse_response(client_t *c, uint32_t end) {
  engine_t *e = c->ev.e;
  up_t *u = c->up;
  const char *h = u->in.p + u->in.start;
  const char *le = memchr(h, '\r', end - 2);
  if (!le || le[1] != '\n') return -1;
  uint32_t rl = (uint32_t)(le - h);
  if (rl < 12 || memcmp(h, "HTTP/1.", 7) || (h[7] != '0' && h[7] != '1') || h[8] != ' ') return -1;
  for (int k = 9; k < 12; k++)
    if (h[k] < '0' || h[k] > '9') return -1;
  if (rl > 12 && h[12] != ' ') return -1;
  int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
  const char *reason = rl > 12 ? h + 13 : h + 12;
  uint32_t reason_len = rl > 12 ? rl - 13 : 0;
  hinfo_t hi;
  if (parse_fields(h, rl + 2, end - 2, &hi, NULL, 0) < 0) return -1;
  if (status < 200 && status != 101) {
    /* interim: relayed like a final head (our status line, hop-by-hop fields dropped), but never
     * to an HTTP/1.0 client, which has no 1xx (RFC 9110 §15.2) */
    uint32_t mark = c->out.len;
    if (!c->v10 && (put_head(&c->out, h, &hi, reason, reason_len) | OB_LIT(&c->out, "\r\n")))
      return (c->out.len = mark, -1); /* nothing half-written goes before the 502 */
    u->in.start += end;
    timer_set(e, &u->ev.t, T_RESPONSE);
    return 1;
  }
  if (status == 101) return -1; /* not asked for: upgrades go through JavaScript */
  c->status = status;
  int v10 = h[7] == '0';
  int no_body = c->head_method || status == 204 || status == 304;
  int chunked = hi.te_count > 0 && hi.te_chunked && hi.te_count == 1;
  /* as nginx: a transfer coding other than chunked alone (we cannot undo gzip, say, and the field
   * is hop-by-hop), or Transfer-Encoding with Content-Length (RFC 9112 §6.3), is a bad upstream */
  if (hi.te_count > 0 && (!chunked || hi.content_length >= 0)) return -1;
  if (no_body) c->resp_mode = B_NONE;
  else if (chunked) c->resp_mode = B_CHUNKED; /* any other TE was refused above */
  else if (hi.content_length >= 0) c->resp_mode = hi.content_length ? B_LENGTH : B_NONE;
  else c->resp_mode = B_EOF;
  c->resp_left = c->resp_mode == B_LENGTH ? (uint64_t)hi.content_length : 0;
  memset(&c->resp_ch, 0, sizeof c->resp_ch);
  c->resp_scanned = 0;
  /* an upload still running when the answer comes ends with the connection: say so now */
  c->client_keep = c->keep && c->resp_mode != B_EOF && c->req_done;
  c->resp_reusable = !v10 && !hi.conn_close && c->resp_mode != B_EOF;
  obuf_t *o = &c->out;
  uint32_t mark = o->len;
  int bad = put_head(o, h, &hi, reason, reason_len);
  if (chunked && !no_body) bad |= OB_LIT(o, "Transfer-Encoding: chunked\r\n");
  if (!c->client_keep) bad |= OB_LIT(o, "Connection: close\r\n\r\n");
  else if (c->v10) bad |= OB_LIT(o, "Connection: keep-alive\r\n\r\n");
  else bad |= OB_LIT(o, "\r\n");
  if (bad) return (o->len = mark, -1); /* nothing half-written goes before the 502 */
  u->in.start += end;
  c->rstate = R_BODY;
  timer_set(e, &u->ev.t, T_RESPONSE); /* from here: the body may not stall longer */
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the state machine entry points */

static void respond_step(client_t *c) {
  uint32_t x;
  if (client_write(c, NULL, 0, &x) < 0) return client_close(c);
  if (ob_pending(&c->out)) return;
  if (c->close_after) return client_linger(c);
  start_next(c);
}

static int linger_step(client_t *c) {
  char sink[4096];
  for (int i = 0; i < 16; i++) {
    ssize_t n = read(c->ev.fd, sink, sizeof sink);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    client_close(c);
    return 0;
  }
  return 1;
}

/* Edge-triggered: a connection that stops with work left gets no new event, so it is queued and
 * the engine wakes itself (an eventfd in its own epoll set) on the next turn of the loop. */
static void defer(client_t *c) {
  engine_t *e = c->ev.e;
  if (c->deferred == 1) return;
  deferred_unlink(e, c);
  c->deferred = 1;
  c->dprev = NULL;
  c->dnext = e->deferred;
  if (e->deferred) e->deferred->dprev = c;
  e->deferred = c;
  uint64_t one = 1;
  if (write(e->kickfd, &one, sizeof one) < 0) { /* already signalled */
  }
}

static void client_run(client_t *c) {
  int busy = 1;
  for (int i = 0; i < 64 && !c->ev.dead; i++) {
    int s = c->state;
    busy = 0;
    switch (s) {
    case C_HEAD: head_step(c); break;
    case C_FWD: busy = fwd_step(c); break;
    case C_RESPOND: respond_step(c); break;
    case C_LINGER: busy = linger_step(c); break;
    default: return;
    }
    if (c->ev.dead) return;
    if (busy || c->state == s) break;
    busy = 1;
  }
  if (busy) defer(c);
}

static void run_deferred(engine_t *e) {
  uint64_t v;
  if (read(e->kickfd, &v, sizeof v) < 0) { /* nothing pending */
  }
  e->running = e->deferred;
  e->deferred = NULL;
  for (client_t *c = e->running; c; c = c->dnext) c->deferred = 2;
  while (e->running) {
    client_t *c = e->running;
    deferred_unlink(e, c);
    if (!c->ev.dead && c->state != C_CONNECT) client_run(c);
  }
}

static void up_connected(up_t *u) {
  engine_t *e = u->ev.e;
  client_t *c = u->c;
  int err = 0;
  socklen_t l = sizeof err;
  if (getsockopt(u->ev.fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
  if (err == 0) {
    u->connecting = 0;
    u->wr_ready = 1;
    exchange_begin(c);
    return client_run(c);
  }
  int b = u->backend;
  up_close(e, u);
  c->up = NULL;
  pick_backend(c, b, 0, errname(err), NULL, 0);
  if (!c->ev.dead) client_run(c);
}

static void handle_event(engine_t *e, struct epoll_event *ev) {
  ev_t *x = ev->data.ptr;
  if (x->dead) return;
  if (x->type == EV_KICK) return run_deferred(e);
  uint32_t m = ev->events;
  if (x->type == EV_CLIENT) {
    client_t *c = (client_t *)x;
    /* reset, or both directions shut: nothing more can reach this client */
    if (m & (EPOLLERR | EPOLLHUP)) return client_close(c);
    if (m & EPOLLRDHUP) c->hup = 1;
    if (m & (EPOLLIN | EPOLLRDHUP)) c->rd_ready = 1;
    if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->wr_ready = 1;
    if (c->state == C_CONNECT) return;
    client_run(c);
    return;
  }
  up_t *u = (up_t *)x;
  if (u->pooled || !u->c) {
    if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) up_close(e, u); /* bytes or EOF while idle */
    return;
  }
  if (m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) u->hup = 1;
  if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) u->rd_ready = 1;
  if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR)) u->wr_ready = 1;
  if (u->connecting) {
    if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR)) up_connected(u);
    return;
  }
  client_run(u->c);
}

static void free_zombies(engine_t *e) {
  while (e->zombies) {
    ev_t *z = e->zombies;
    e->zombies = z->zombie_next;
    if (z->type == EV_CLIENT) {
      client_t *c = (client_t *)z;
      buf_free(&c->in);
      ob_free(&c->out);
      ob_free(&c->uout);
    } else
      buf_free(&((up_t *)z)->in);
    free(z);
  }
}

/* After a wake-up: freed connections, and microtasks queued by callbacks run (as after any of
 * Node's own callbacks). */
static void end_of_wake(engine_t *e) {
  if (!e->closed) flush_done(e);
  free_zombies(e);
  if (e->need_drain && !e->closed) {
    e->need_drain = 0;
    napi_value cb, recv;
    napi_get_reference_value(e->env, e->cb_noop, &cb);
    napi_get_global(e->env, &recv);
    napi_status st = napi_make_callback(e->env, e->async, recv, cb, 0, NULL, NULL);
    js_failed(e, st);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  engine_t *e = p->data;
  if (e->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(e->env, &scope);
  e->depth++;
  /* Event coalescing (coalesceUs): under load — COALESCE_INFLIGHT or more exchanges in flight and
   * the previous wake-up had more than one event — wait coalesce_us (plus the kernel's timer
   * slack, 50 µs by default) before taking the events, so that one wake-up serves a batch. While
   * we wait, the processes writing to our sockets find no one to wake: no inter-processor
   * interrupt for them to send (in a VM, no exit to the hypervisor on either side), and here one
   * epoll round, one JavaScript turn, one flush of ended requests serve many requests instead of
   * two or three. With few exchanges in flight the wait would only add latency (throughput is
   * in-flight / latency there), so it never happens then, nor for a lone event. */
  if (e->coalesce_us && e->nups - e->npooled >= COALESCE_INFLIGHT && e->last_wake_events > 1) {
    struct timespec d = {0, (long)e->coalesce_us * 1000};
    nanosleep(&d, NULL);
    e->coalesced++;
  }
  uint32_t got = 0;
  for (int round = 0; round < 8 && !e->closed; round++) {
    int n = epoll_wait(e->epfd, e->evs, EVENTS, 0);
    if (n > 0) got += (uint32_t)n;
    for (int i = 0; i < n && !e->closed; i++) handle_event(e, &e->evs[i]);
    if (n < EVENTS) break;
  }
  e->last_wake_events = got;
  e->depth--;
  end_of_wake(e);
  napi_close_handle_scope(e->env, scope);
}

static void expire(engine_t *e, ev_t *x, int kind) {
  if (x->type == EV_CLIENT) {
    client_t *c = (client_t *)x;
    if (kind == T_HEAD) {
      char msg[96];
      int n = snprintf(msg, sizeof msg, "request head not complete in %llu ms", (unsigned long long)e->dur[T_HEAD]);
      js_done(e, c, -1, 408);
      if (c->ev.dead) return;
      respond(c, 408, msg, (size_t)n, 0);
      client_run(c);
    } else
      client_close(c); /* idle keep-alive, linger */
    return;
  }
  up_t *u = (up_t *)x;
  client_t *c = u->c;
  if (kind == T_POOL || !c) return up_close(e, u);
  if (kind == T_CONNECT) {
    int b = u->backend;
    up_close(e, u);
    c->up = NULL;
    pick_backend(c, b, 0, "timeout", NULL, 0);
    if (!c->ev.dead) client_run(c);
    return;
  }
  if (c->rstate == R_BODY) { /* the response body stalled: both connections close */
    exchange_fail(c, 0, NULL);
    return;
  }
  /* T_RESPONSE: no response head in time */
  char msg[160];
  snprintf(msg, sizeof msg, "upstream %s did not answer in %llu ms", e->backends[u->backend].key,
           (unsigned long long)e->dur[T_RESPONSE]);
  c->rstate = R_HEAD;
  exchange_fail(c, 504, msg);
  if (!c->ev.dead) client_run(c);
}

static void on_timer(uv_timer_t *h) {
  engine_t *e = h->data;
  e->timer_armed = 0;
  if (e->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(e->env, &scope);
  e->depth++;
  uint64_t now = uv_now(e->loop);
  for (int k = 0; k < T_COUNT; k++) {
    tnode_t *head = &e->lists[k];
    while (head->next != head && head->next->due <= now) {
      tnode_t *t = head->next;
      timer_unlink(t);
      expire(e, (ev_t *)((char *)t - offsetof(ev_t, t)), k);
    }
  }
  uint64_t min = UINT64_MAX;
  for (int k = 0; k < T_COUNT; k++)
    if (e->lists[k].next != &e->lists[k] && e->lists[k].next->due < min) min = e->lists[k].next->due;
  if (min != UINT64_MAX && (!e->timer_armed || min < e->timer_due)) timer_arm(e, min);
  e->depth--;
  end_of_wake(e);
  napi_close_handle_scope(e->env, scope);
}

/* ------------------------------------------------------------------------------------------ */
/* JavaScript API */

#define THROW(env, msg)                                                                            \
  do {                                                                                             \
    napi_throw_error(env, "EDGEMESH_HTTP_ENGINE", "http_engine: " msg);                           \
    return NULL;                                                                                   \
  } while (0)

/* The arguments of a call whose first argument is an engine: the engine, or NULL (thrown). */
#define engine_args(env, info, want, argv)                                                         \
  ((engine_t *)handle_args(env, info, want, argv, "EDGEMESH_HTTP_ENGINE", "http_engine"))

static void close_everything(engine_t *e) {
  e->depth++;
  while (e->clients) client_close(e->clients);
  while (e->ups) up_close(e, e->ups);
  if (!e->silent) flush_done(e);
  e->depth--;
  if (e->depth == 0) free_zombies(e);
}

static void on_handle_closed(uv_handle_t *h) {
  engine_t *e = h->data;
  if (--e->uv_open == 0 && e->finalized) free(e);
}

static void release(engine_t *e) {
  if (e->closed) return;
  close_everything(e);
  e->closed = 1;
  if (e->depth == 0) free_zombies(e); /* inside a wake-up: after it (the stack may hold them) */
  uv_poll_stop(&e->poll);
  uv_timer_stop(&e->timer);
  close(e->epfd);
  close(e->kickfd);
  napi_delete_reference(e->env, e->cb_pick);
  napi_delete_reference(e->env, e->cb_done);
  napi_delete_reference(e->env, e->done_ref);
  napi_delete_reference(e->env, e->cb_handback);
  napi_delete_reference(e->env, e->cb_closed);
  napi_delete_reference(e->env, e->cb_noop);
  napi_async_destroy(e->env, e->async);
  free(e->backends);
  e->backends = NULL;
  uv_close((uv_handle_t *)&e->poll, on_handle_closed);
  uv_close((uv_handle_t *)&e->timer, on_handle_closed);
}

static void finalize(napi_env env, void *data, void *hint) {
  engine_t *e = data;
  (void)env;
  (void)hint;
  e->finalized = 1;
  e->silent = 1;
  if (!e->closed) release(e); /* on_handle_closed frees */
  else if (e->uv_open == 0) free(e);
}

static napi_value noop(napi_env env, napi_callback_info info) { return NULL; }

static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6) THROW(env, "create: 6 arguments expected");
  napi_typedarray_type dt;
  size_t dcount;
  void *ddata;
  if (napi_get_typedarray_info(env, argv[5], &dt, &dcount, &ddata, NULL, NULL) != napi_ok || dt != napi_int32_array ||
      dcount < 3)
    THROW(env, "create: the done buffer must be an Int32Array of 3 or more");
  napi_typedarray_type t;
  size_t count, off;
  void *data;
  napi_value ab;
  if (napi_get_typedarray_info(env, argv[0], &t, &count, &data, &ab, &off) != napi_ok || t != napi_uint32_array ||
      count < 8)
    THROW(env, "create: options must be a Uint32Array of 8");
  uint32_t *o = data;
  engine_t *e = calloc(1, sizeof(engine_t));
  if (!e) THROW(env, "create: out of memory");
  e->env = env;
  e->done_buf = ddata;
  e->done_cap = (uint32_t)(dcount / 3);
  e->max_head = o[0] ? o[0] : 16384;
  e->dur[T_IDLE] = o[1];
  e->dur[T_HEAD] = o[2];
  e->dur[T_CONNECT] = o[3];
  e->dur[T_RESPONSE] = o[4];
  e->dur[T_POOL] = o[5];
  e->dur[T_LINGER] = LINGER_MS;
  e->max_idle = o[6];
  e->coalesce_us = o[7] > COALESCE_MAX_US ? COALESCE_MAX_US : o[7];
  for (int k = 0; k < T_COUNT; k++) e->lists[k].next = e->lists[k].prev = &e->lists[k];
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  e->kick.type = EV_KICK;
  e->kick.fd = e->kickfd;
  e->kick.t.kind = -1;
  struct epoll_event kev = {.events = EPOLLIN, .data.ptr = &e->kick};
  if (e->epfd < 0 || e->kickfd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->kickfd, &kev) < 0) {
    if (e->epfd >= 0) close(e->epfd);
    if (e->kickfd >= 0) close(e->kickfd);
    free(e);
    THROW(env, "create: epoll or eventfd failed");
  }
  napi_get_uv_event_loop(env, &e->loop);
  uv_poll_init(e->loop, &e->poll, e->epfd);
  uv_timer_init(e->loop, &e->timer);
  e->poll.data = e->timer.data = e;
  e->uv_open = 2;
  uv_poll_start(&e->poll, UV_READABLE, on_poll);
  uv_unref((uv_handle_t *)&e->poll); /* referenced only while it has clients */
  uv_unref((uv_handle_t *)&e->timer);
  napi_create_reference(env, argv[1], 1, &e->cb_pick);
  napi_create_reference(env, argv[2], 1, &e->cb_done);
  napi_create_reference(env, argv[3], 1, &e->cb_handback);
  napi_create_reference(env, argv[4], 1, &e->cb_closed);
  napi_create_reference(env, argv[5], 1, &e->done_ref); /* keeps the shared buffer alive */
  napi_value fn, name;
  napi_create_function(env, "drain", NAPI_AUTO_LENGTH, noop, NULL, &fn);
  napi_create_reference(env, fn, 1, &e->cb_noop);
  napi_create_string_utf8(env, "EdgeMeshHttpEngine", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &e->async);
  napi_value handle;
  napi_create_external(env, e, finalize, NULL, &handle);
  return handle;
}

static napi_value js_backend(napi_env env, napi_callback_info info) {
  napi_value argv[4], out;
  engine_t *e = engine_args(env, info, 4, argv);
  if (!e) return NULL;
  uint32_t id, port;
  char ip[64];
  size_t il;
  napi_get_value_uint32(env, argv[1], &id);
  napi_get_value_string_utf8(env, argv[2], ip, sizeof ip, &il);
  napi_get_value_uint32(env, argv[3], &port);
  if (e->closed || id >= MAX_BACKENDS || port == 0 || port > 65535) {
    napi_get_boolean(env, false, &out);
    return out;
  }
  if (id >= e->nbackends) {
    uint32_t n = e->nbackends ? e->nbackends : 16;
    while (n <= id) n *= 2;
    backend_t *nb = realloc(e->backends, n * sizeof(backend_t));
    if (!nb) THROW(env, "backend: out of memory");
    memset(nb + e->nbackends, 0, (n - e->nbackends) * sizeof(backend_t));
    e->backends = nb;
    e->nbackends = n;
  }
  backend_t *b = &e->backends[id];
  memset(&b->sa, 0, sizeof b->sa);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&b->sa;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&b->sa;
  int ok = 0;
  if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    b->salen = sizeof *a4;
    ok = 1;
  } else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    b->salen = sizeof *a6;
    ok = 1;
  }
  if (ok) {
    snprintf(b->key, sizeof b->key, "%s:%u", ip, port);
    b->set = 1;
  }
  napi_get_boolean(env, ok, &out);
  return out;
}

static napi_value js_adopt(napi_env env, napi_callback_info info) {
  napi_value argv[5], out;
  engine_t *e = engine_args(env, info, 5, argv);
  if (!e) return NULL;
  if (e->closed) THROW(env, "adopt: engine closed");
  int32_t fd;
  napi_get_value_int32(env, argv[1], &fd);
  client_t *c = calloc(1, sizeof(client_t));
  if (!c) THROW(env, "adopt: out of memory");
  size_t l;
  napi_get_value_string_utf8(env, argv[2], c->ip, sizeof c->ip, &l);
  napi_valuetype vt;
  napi_typeof(env, argv[3], &vt);
  if (vt == napi_string) {
    size_t hl;
    napi_get_value_string_utf8(env, argv[3], c->hash_hdr, sizeof c->hash_hdr, &hl);
    for (size_t k = 0; k < hl; k++) c->hash_hdr[k] = (char)lc((unsigned char)c->hash_hdr[k]);
    c->hash_len = (uint32_t)hl;
  }
  bool fwd = false;
  napi_get_value_bool(env, argv[4], &fwd); /* not a boolean: false */
  c->forward = fwd;
  int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dfd < 0) {
    free(c);
    THROW(env, "adopt: dup failed");
  }
  int fl = fcntl(dfd, F_GETFL);
  fcntl(dfd, F_SETFL, fl | O_NONBLOCK);
  int one = 1;
  setsockopt(dfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->ev.type = EV_CLIENT;
  c->ev.fd = dfd;
  c->ev.e = e;
  c->ev.t.kind = -1;
  c->backend = -1;
  c->id = ++e->next_id;
  c->state = C_HEAD;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, dfd, &ev) < 0) {
    close(dfd);
    free(c);
    THROW(env, "adopt: epoll_ctl failed");
  }
  c->next = e->clients;
  if (e->clients) e->clients->prev = c;
  e->clients = c;
  e->nclients++;
  update_ref(e);
  timer_set(e, &c->ev.t, T_IDLE);
  napi_create_uint32(env, c->id, &out);
  return out;
}

static napi_value js_close_all(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  if (!e->closed) close_everything(e);
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
  napi_create_array_with_length(env, 4, &out);
  double vals[4] = {e->nclients, e->nups, e->npooled, e->coalesced};
  for (uint32_t i = 0; i < 4; i++) {
    napi_create_double(env, vals[i], &v);
    napi_set_element(env, out, i, v);
  }
  return out;
}

napi_value http_engine_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      METHOD("create", js_create), METHOD("backend", js_backend), METHOD("adopt", js_adopt),
      METHOD("closeAll", js_close_all), METHOD("close", js_close), METHOD("stats", js_stats),
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}
