/*
 * The L4 splice engine: moves the bytes of established TCP proxy connections between the client
 * and the backend socket with splice(2) through a pipe per direction (zero copy: the data never
 * enters user space), on one engine thread with its own epoll, off the JavaScript thread.
 *
 * JavaScript connects to the backend (load balancing, retries, passive health stay there), stops
 * Node reading on both sockets, then hands their file descriptors over. The engine dups them, so
 * Node's sockets stay the owners; when a connection ends (both directions at EOF, an error, the
 * idle timeout, or abort) the engine closes its dups and reports to JavaScript on the event loop
 * (uv_async), which then destroys the Node sockets.
 *
 * Half-close: at EOF of one direction's source, after the pipe is drained, shutdown(SHUT_WR) of
 * the destination — the other direction keeps flowing.
 *
 * JavaScript API (see src/proxy/l4/splice.ts):
 *   start(clientFd, backendFd, idleMs) -> id           (throws on fd/pipe errors)
 *   abort(id) -> boolean                                (ends it with reason "aborted")
 *   setOnDone((id, reason, bytesUp, bytesDown) => void) reason: eof | error | idle | aborted
 *   active() -> number
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include "common.h"
#include "engine_thread.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define PIPE_SIZE (1 << 20) /* F_SETPIPE_SZ: fewer wake-ups per MiB moved; falls back silently */
#define CHUNK (1 << 20)

enum { R_EOF = 0, R_ERROR, R_IDLE, R_ABORTED };
static const char *REASONS[] = {"eof", "error", "idle", "aborted"};

typedef struct conn {
  uint32_t id;
  int fd[2];      /* dups: 0 client, 1 backend */
  int pipe[2][2]; /* direction d moves fd[d] -> fd[1-d] through pipe[d] */
  size_t pending[2];
  int eof[2];
  uint64_t bytes[2];
  int64_t idle_ms;
  int64_t last_ms;
  int aborted;
  struct conn *prev, *next;
  struct conn *next_add;
} conn_t;

typedef struct done {
  uint32_t id;
  int reason;
  uint64_t bytes[2];
  struct done *next;
} done_t;

typedef struct {
  engine_thread_t t; /* the thread, its epoll set, the async to the JS thread */
  napi_env env;
  pthread_mutex_t mu;
  conn_t *conns; /* live connections (the engine thread links and unlinks them) */
  conn_t *adds;  /* handed over by the JS thread, not yet registered by the engine */
  uint32_t active;
  uint32_t next_id;
  done_t *done_head, *done_tail;
  napi_ref on_done;
} engine_t;

static void close_conn_fds(conn_t *c) {
  for (int i = 0; i < 2; i++) {
    if (c->fd[i] >= 0) close(c->fd[i]);
    for (int j = 0; j < 2; j++)
      if (c->pipe[i][j] >= 0) close(c->pipe[i][j]);
  }
}

/* Engine thread: unlink, close, queue the report. */
static void finish(engine_t *e, conn_t *c, int reason) {
  epoll_ctl(e->t.epfd, EPOLL_CTL_DEL, c->fd[0], NULL);
  epoll_ctl(e->t.epfd, EPOLL_CTL_DEL, c->fd[1], NULL);
  close_conn_fds(c);
  done_t *d = malloc(sizeof(done_t));
  pthread_mutex_lock(&e->mu);
  if (c->prev) c->prev->next = c->next;
  else e->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  e->active--;
  if (d) {
    d->id = c->id;
    d->reason = reason;
    d->bytes[0] = c->bytes[0];
    d->bytes[1] = c->bytes[1];
    d->next = NULL;
    if (e->done_tail) e->done_tail->next = d;
    else e->done_head = d;
    e->done_tail = d;
  }
  pthread_mutex_unlock(&e->mu);
  free(c);
  uv_async_send(&e->t.async);
}

/* Move what can move without blocking, both directions. Returns -1 on error, 1 when done. */
static int pump(conn_t *c) {
  for (int d = 0; d < 2; d++) {
    int src = c->fd[d], dst = c->fd[1 - d];
    for (;;) {
      if (c->pending[d] > 0) {
        ssize_t n = splice(c->pipe[d][0], NULL, dst, NULL, c->pending[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
          if (errno == EAGAIN) break; /* destination full: EPOLLOUT brings us back */
          if (errno == EINTR) continue;
          return -1;
        }
        c->pending[d] -= (size_t)n;
        c->bytes[d] += (uint64_t)n;
        continue;
      }
      if (c->eof[d]) break;
      ssize_t n = splice(src, NULL, c->pipe[d][1], NULL, CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n == 0) {
        c->eof[d] = 1;
        shutdown(dst, SHUT_WR); /* half-close, after everything before it was delivered */
        break;
      }
      if (n < 0) {
        if (errno == EAGAIN) break; /* nothing to read: EPOLLIN brings us back */
        if (errno == EINTR) continue;
        return -1;
      }
      c->pending[d] += (size_t)n;
    }
  }
  return c->eof[0] && c->eof[1] && c->pending[0] == 0 && c->pending[1] == 0 ? 1 : 0;
}

/* Engine thread: link a handed-over connection and watch both sockets (edge-triggered; an ADD
 * reports data that is already waiting). */
static void register_conn(engine_t *e, conn_t *c, int64_t now) {
  pthread_mutex_lock(&e->mu);
  c->next = e->conns;
  if (e->conns) e->conns->prev = c;
  e->conns = c;
  pthread_mutex_unlock(&e->mu);
  c->last_ms = now;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
  if (epoll_ctl(e->t.epfd, EPOLL_CTL_ADD, c->fd[0], &ev) < 0 || epoll_ctl(e->t.epfd, EPOLL_CTL_ADD, c->fd[1], &ev) < 0)
    finish(e, c, R_ERROR);
}

static void *engine_main(void *arg) {
  engine_t *e = arg;
  struct epoll_event evs[256];
  int64_t last_scan = engine_now_ms();
  while (!e->t.stopping) {
    int n = epoll_wait(e->t.epfd, evs, 256, 1000);
    int64_t now = engine_now_ms();
    int woken = 0;
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        if (evs[i].events) woken = 1;
        continue;
      }
      conn_t *c = evs[i].data.ptr;
      if (c->aborted) continue; /* handled below */
      int r = pump(c);
      c->last_ms = now;
      if (r != 0) {
        /* remove this conn's other pending events in this batch before freeing it */
        for (int j = i + 1; j < n; j++)
          if (evs[j].data.ptr == c) evs[j].data.ptr = NULL, evs[j].events = 0;
        finish(e, c, r < 0 ? R_ERROR : R_EOF);
      }
    }
    if (woken) { /* the eventfd: new connections, aborts (or stop) */
      engine_woken(&e->t);
      pthread_mutex_lock(&e->mu);
      conn_t *a = e->adds;
      e->adds = NULL;
      pthread_mutex_unlock(&e->mu);
      while (a) {
        conn_t *next = a->next_add;
        register_conn(e, a, now);
        a = next;
      }
    }
    /* aborts when woken; idle connections once a second */
    int scan = now - last_scan >= 1000;
    if (scan) last_scan = now;
    if (!woken && !scan) continue;
    pthread_mutex_lock(&e->mu);
    conn_t *c = e->conns;
    pthread_mutex_unlock(&e->mu);
    while (c) {
      pthread_mutex_lock(&e->mu);
      conn_t *next = c->next;
      int aborted = c->aborted;
      pthread_mutex_unlock(&e->mu);
      if (aborted) finish(e, c, R_ABORTED);
      else if (scan && c->idle_ms > 0 && now - c->last_ms >= c->idle_ms) finish(e, c, R_IDLE);
      c = next;
    }
  }
  return NULL;
}

/* JS thread: report finished connections. */
static void on_async(uv_async_t *a) {
  engine_t *e = a->data;
  pthread_mutex_lock(&e->mu);
  done_t *d = e->done_head;
  e->done_head = e->done_tail = NULL;
  uint32_t active = e->active;
  pthread_mutex_unlock(&e->mu);
  engine_release_loop(&e->t, active);
  napi_env env = e->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb = NULL;
  if (e->on_done) napi_get_reference_value(env, e->on_done, &cb);
  while (d) {
    done_t *next = d->next;
    if (cb) {
      napi_value argv[4];
      napi_create_uint32(env, d->id, &argv[0]);
      napi_create_string_utf8(env, REASONS[d->reason], NAPI_AUTO_LENGTH, &argv[1]);
      napi_create_double(env, (double)d->bytes[0], &argv[2]);
      napi_create_double(env, (double)d->bytes[1], &argv[3]);
      engine_call_js(env, cb, 4, argv);
    }
    free(d);
    d = next;
  }
  napi_close_handle_scope(env, scope);
}

static void on_async_closed(uv_handle_t *h) {
  free(h->data);
}

/* Environment teardown: stop the thread, close everything, free the engine. */
static void engine_cleanup(void *arg) {
  engine_t *e = arg;
  if (e->t.started) {
    engine_stop(&e->t);
    for (conn_t *c = e->conns, *next; c; c = next) {
      next = c->next;
      close_conn_fds(c);
      free(c);
    }
    for (conn_t *c = e->adds, *next; c; c = next) {
      next = c->next_add;
      close_conn_fds(c);
      free(c);
    }
    for (done_t *d = e->done_head, *next; d; d = next) {
      next = d->next;
      free(d);
    }
    if (e->on_done) napi_delete_reference(e->env, e->on_done);
    uv_close((uv_handle_t *)&e->t.async, on_async_closed);
  } else {
    free(e);
  }
}

static engine_t *get_engine(napi_env env) {
  engine_t *e = NULL;
  napi_get_instance_data(env, (void **)&e);
  return e;
}

static napi_value throw_err(napi_env env, const char *what, int err) {
  char msg[200];
  snprintf(msg, sizeof msg, "splice engine: %s: %s", what, strerror(err));
  napi_throw_error(env, "EDGEMESH_SPLICE", msg);
  return NULL;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  int32_t fa, fb;
  double idle;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &fa) != napi_ok || napi_get_value_int32(env, argv[1], &fb) != napi_ok ||
      napi_get_value_double(env, argv[2], &idle) != napi_ok || fa < 0 || fb < 0) {
    napi_throw_type_error(env, "EDGEMESH_SPLICE", "splice.start(clientFd, backendFd, idleMs)");
    return NULL;
  }
  engine_t *e = get_engine(env);
  int err = engine_start(env, &e->t, engine_main, on_async, e);
  if (err) return throw_err(env, "start", err);
  conn_t *c = calloc(1, sizeof(conn_t));
  if (!c) return throw_err(env, "alloc", ENOMEM);
  c->fd[0] = c->fd[1] = -1;
  for (int i = 0; i < 2; i++) c->pipe[i][0] = c->pipe[i][1] = -1;
  c->fd[0] = fcntl(fa, F_DUPFD_CLOEXEC, 0);
  c->fd[1] = fcntl(fb, F_DUPFD_CLOEXEC, 0);
  if (c->fd[0] < 0 || c->fd[1] < 0 || pipe2(c->pipe[0], O_NONBLOCK | O_CLOEXEC) < 0 ||
      pipe2(c->pipe[1], O_NONBLOCK | O_CLOEXEC) < 0) {
    int en = errno;
    close_conn_fds(c);
    free(c);
    return throw_err(env, "dup/pipe", en);
  }
  for (int i = 0; i < 2; i++) {
    fcntl(c->pipe[i][1], F_SETPIPE_SZ, PIPE_SIZE);
    int fl = fcntl(c->fd[i], F_GETFL);
    fcntl(c->fd[i], F_SETFL, fl | O_NONBLOCK);
  }
  c->idle_ms = (int64_t)idle;
  pthread_mutex_lock(&e->mu);
  c->id = ++e->next_id;
  c->next_add = e->adds;
  e->adds = c;
  e->active++;
  uint32_t id = c->id;
  pthread_mutex_unlock(&e->mu);
  engine_hold_loop(&e->t); /* the loop stays alive while connections are in the engine */
  engine_wake(&e->t); /* the engine registers it; c belongs to the engine thread from here */
  napi_create_uint32(env, id, &out);
  return out;
}

static napi_value js_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  uint32_t id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &id) != napi_ok) {
    napi_throw_type_error(env, "EDGEMESH_SPLICE", "splice.abort(id)");
    return NULL;
  }
  engine_t *e = get_engine(env);
  int found = 0;
  if (e->t.started) {
    pthread_mutex_lock(&e->mu);
    for (conn_t *c = e->conns; c; c = c->next)
      if (c->id == id) {
        c->aborted = 1;
        found = 1;
        break;
      }
    for (conn_t *c = e->adds; c && !found; c = c->next_add)
      if (c->id == id) {
        c->aborted = 1;
        found = 1;
      }
    pthread_mutex_unlock(&e->mu);
    if (found) engine_wake(&e->t);
  }
  napi_get_boolean(env, found, &out);
  return out;
}

static napi_value js_set_on_done(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  engine_t *e = get_engine(env);
  if (e->on_done) napi_delete_reference(env, e->on_done);
  napi_create_reference(env, argv[0], 1, &e->on_done);
  return NULL;
}

static napi_value js_active(napi_env env, napi_callback_info info) {
  engine_t *e = get_engine(env);
  napi_value out;
  pthread_mutex_lock(&e->mu);
  uint32_t n = e->active;
  pthread_mutex_unlock(&e->mu);
  napi_create_uint32(env, n, &out);
  return out;
}

napi_value splice_init(napi_env env, napi_value exports) {
  engine_t *e = calloc(1, sizeof(engine_t));
  pthread_mutex_init(&e->mu, NULL);
  e->env = env;
  napi_set_instance_data(env, e, NULL, NULL);
  napi_add_env_cleanup_hook(env, engine_cleanup, e);
  napi_property_descriptor props[] = {
      METHOD("start", js_start),
      METHOD("abort", js_abort),
      METHOD("setOnDone", js_set_on_done),
      METHOD("active", js_active),
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}
