/* The L7 engine's types, limits and the parts' shared declarations (one translation unit: engine.c
 * includes this header and then each part, so every function stays static and can be inlined). */
#ifndef EDGEMESH_HTTP_ENGINE_H
#define EDGEMESH_HTTP_ENGINE_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include "../common.h"
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

/* Capacities of this engine (not protocol rules): a head with more fields, or a Connection field
 * with more tokens, is handed to JavaScript, which has no such bound. */
#define MAX_HEADERS 128
#define MAX_CONN_TOKENS 16
/* The protocol tables it is handed at create (src/proxy/http/protocol.ts), at most: */
#define MAX_TABLE 32
#define MAX_TABLE_NAME 31
#define MIN_CLIENT_BUF (16 * 1024)
#define EVENTS 256
#define COALESCE_MAX_US 1000 /* longest coalescing wait */
#define COALESCE_INFLIGHT 16  /* exchanges in flight from which a wake-up waits for more events */
#define COALESCE_RECENT_NS 1000000 /* ... and only when the previous wake-up ended within this (1 ms) */
#define LINGER_MS 5000
/* Above this many client connections, an idle keep-alive connection gives its buffer back. */
#define KEEP_BUFFERS 512
/* A chunked request body re-framed and not yet taken by the upstream, at most (back-pressure). */
#define REFRAMED_MAX (64 * 1024)

enum { T_IDLE, T_HEAD, T_CONNECT, T_RESPONSE, T_POOL, T_LINGER, T_COUNT };
enum { EV_CLIENT = 1, EV_UP = 2, EV_KICK = 3 };
enum { C_HEAD, C_CONNECT, C_FWD, C_RESPOND, C_LINGER, C_DEAD };
enum { B_NONE, B_LENGTH, B_CHUNKED, B_EOF };
enum { R_HEAD, R_BODY };
enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_END, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF, CH_END_LF, CH_DONE };
/* Events of a request that JavaScript's rulebook decides (src/proxy/http/native-engine.ts names
 * them the same): a pick, a failed connect, an upstream that closed before its answer; then the
 * answers the rulebook words (the engine only sends their bytes). */
enum { D_PICK, D_CONNECT_FAILED, D_STALE, D_TIMEOUT, D_MALFORMED, D_BAD_BODY, D_HEAD_TIMEOUT };
/* Flags of a decision's request. */
enum { F_IDEMPOTENT = 1, F_CAN_KEEP = 2, F_REUSED = 4, F_REPLAYABLE = 8 };
/* What a decision may return besides a backend id. */
enum { PICK_HANDBACK = -1, PICK_FRESH = -2 };

/* A name table (lower case), and the parser limits, from JavaScript at create. */
typedef struct {
  uint8_t n;
  uint8_t len[MAX_TABLE];
  char name[MAX_TABLE][MAX_TABLE_NAME + 1];
} names_t;

typedef struct {
  uint32_t chunk_line;     /* bytes of a chunk-size line, extensions included */
  uint32_t trailer;        /* bytes of a chunked body's trailer section */
  uint32_t chunk_digits;   /* hex digits of a chunk size */
  uint32_t length_digits;  /* decimal digits of a Content-Length */
  uint32_t response_head;  /* bytes of a response head (the upstream buffer) */
} limits_t;

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
  uint32_t line;     /* bytes of the current size or trailer line */
  uint32_t trailer;  /* bytes of the trailer section */
  int digits, sig, ws; /* hex digits of the size, significant ones, whitespace after them */
  int colon;         /* the current trailer line has its colon (at name_len) */
  uint32_t name_len;
  uint32_t tstart;   /* re-framing: where the current trailer line starts in the output */
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
  obuf_t ubody; /* a chunked request body, re-framed, on its way upstream */
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
  int backend, close_after, head_consumed;
  /* response */
  int rstate, status, resp_mode, client_keep, resp_reusable, sent_any;
  uint64_t resp_left;
  chunk_t resp_ch;
  uint32_t resp_scanned;
} client_t;

typedef struct {
  backend_addr_t addr; /* first: js_set_backend */
  up_t *idle;
  uint32_t nidle;
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
  limits_t lim;
  names_t hop;        /* hop-by-hop fields (RFC 9110 §7.6.1) */
  names_t idempotent; /* methods that may be sent again (RFC 9110 §9.2.2) */
  names_t forbidden_trailers; /* fields that must not be trailers (RFC 9110 §6.5.1) */
  int underscores;    /* forward field names with an underscore (nginx's underscores_in_headers) */
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
  uint64_t last_wake_end;    /* when it ended (uv_hrtime, ns) */
  double coalesced;          /* wake-ups that waited */
  napi_ref cb_decide, cb_done, cb_handback, cb_closed, cb_noop, done_ref;
  int32_t *done_buf;
  uint32_t done_cap, done_n;
  napi_async_context async;
  struct epoll_event evs[EVENTS];
} engine_t;

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

/* Declared ahead: the parts call each other. */
static void on_timer(uv_timer_t *h);
static int client_write(client_t *c, const char *extra, uint32_t n, uint32_t *wrote_extra);
static void start_next(client_t *c);
static void decide(client_t *c, int event, int backend, const char *reason, int flags, const char *hash,
                   uint32_t hash_len);
static int parse_response(client_t *c, uint32_t end);
static void client_run(client_t *c);

#endif
