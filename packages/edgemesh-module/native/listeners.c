/*
 * listeners: the portals' listening sockets, all in one epoll set watched by one uv_poll handle on
 * Node's own event loop.
 *
 * A portal per service port means 10,000 listeners on a node with 10,000 services. Each through
 * node:net costs a net.Server, its TCP handle and libuv's watcher: 1.1 KiB (heap and malloc) per
 * listener, 11 MiB of a 120 MiB edgecore holding that catalog. Here a listener is its descriptor
 * and an entry in the epoll set; JavaScript keeps only its own portal record. Accepted
 * connections are handed to JavaScript a batch per wake-up (listener, connection descriptor pairs
 * in a slab JavaScript owns), which wraps each in a net.Socket. No threads.
 *
 * JavaScript API (see src/proxy/listeners.ts):
 *   create(slab, onAccept) -> handle
 *       slab: Int32Array of 2 * n words; onAccept(count) is called with the pairs written to it.
 *   listen(handle, host, port, backlog) -> [fd, port]
 *       host: an IPv4 or IPv6 address; port 0 takes a free port. Errors carry the errno name as
 *       `code` (EADDRINUSE, EACCES, EADDRNOTAVAIL, EINVAL, EMFILE, EIO), like node:net.
 *   close(handle, fd) -> boolean    stops listening (accepted connections are not touched)
 *   stats(handle) -> [listening, refused]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <node_api.h>
#include "common.h"
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* Ready listeners taken per epoll_wait, and connections accepted per listener per wake-up (a
 * listener with more waiting stays ready: level-triggered, served again next turn of the loop). */
#define EVENTS 64
#define ACCEPTS_PER_LISTENER 16

typedef struct {
  napi_env env;
  int epfd;
  int reserve; /* a spare descriptor: given up to accept and refuse a connection at EMFILE (libuv's way) */
  int closed;
  int uv_done;
  int finalized;
  int referenced; /* the poll keeps the loop alive only while something listens (like net.Server) */
  uv_poll_t poll;
  napi_ref on_accept;
  napi_ref slab_ref;
  napi_async_context async;
  int32_t *slab;
  size_t pairs; /* capacity of the slab in pairs */
  uint32_t listening;
  double refused; /* connections refused for want of descriptors */
  /* the wake-up's ready listeners: one that JavaScript closes meanwhile is struck out here, so its
   * descriptor number, if reused at once, is never accepted on as that listener */
  struct epoll_event ev[EVENTS];
  int nev;
} set_t;

#define set_args(env, info, want, argv)                                                            \
  ((set_t *)handle_args(env, info, want, argv, "EDGEMESH_LISTENERS", "listeners"))

static void on_closed(uv_handle_t *h) {
  set_t *s = (set_t *)h->data;
  s->uv_done = 1;
  if (s->finalized) free(s);
}

static void finalize(napi_env env, void *data, void *hint) {
  set_t *s = (set_t *)data;
  (void)hint;
  s->finalized = 1;
  if (!s->closed) {
    /* the JavaScript side is gone: so is every portal; close what is still listening */
    s->closed = 1;
    uv_poll_stop(&s->poll);
    close(s->epfd); /* the listeners' descriptors are closed by their own close() or at exit */
    if (s->reserve >= 0) close(s->reserve);
    napi_delete_reference(env, s->on_accept);
    napi_delete_reference(env, s->slab_ref);
    napi_async_destroy(env, s->async);
    uv_close((uv_handle_t *)&s->poll, on_closed);
  } else if (s->uv_done)
    free(s);
}

/* Out of descriptors: accept the oldest waiting connection with the spare one and close it, so the
 * client sees a reset instead of a listener that stays ready (and a loop that spins) forever. */
static void refuse_one(set_t *s, int lfd) {
  if (s->reserve < 0) return;
  close(s->reserve);
  int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (c >= 0) {
    close(c);
    s->refused++;
  }
  s->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void flush(set_t *s, size_t n) {
  if (!n) return;
  napi_env env = s->env;
  napi_value cb, recv, argv[1];
  napi_get_reference_value(env, s->on_accept, &cb);
  napi_get_global(env, &recv);
  napi_create_uint32(env, (uint32_t)n, &argv[0]);
  napi_status st = napi_make_callback(env, s->async, recv, cb, 1, argv, NULL);
  if (st == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

static void on_readable(uv_poll_t *p, int status, int events) {
  set_t *s = (set_t *)p->data;
  (void)events;
  if (s->closed || status < 0) return;
  struct epoll_event *ev = s->ev;
  int n = epoll_wait(s->epfd, ev, EVENTS, 0);
  if (n <= 0) return;
  s->nev = n;
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  size_t k = 0;
  for (int i = 0; i < n && !s->closed; i++) {
    int lfd = ev[i].data.fd;
    if (lfd < 0) continue;
    for (int a = 0; a < ACCEPTS_PER_LISTENER; a++) {
      int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) refuse_one(s, lfd);
        break; /* EAGAIN: drained; EBADF: closed by JavaScript during this wake-up */
      }
      if (k == s->pairs) {
        flush(s, k); /* JavaScript has taken the slab's pairs; it may have closed listeners */
        k = 0;
      }
      s->slab[2 * k] = lfd;
      s->slab[2 * k + 1] = c;
      k++;
    }
  }
  s->nev = 0;
  if (!s->closed) flush(s, k);
  else
    for (size_t i = 0; i < k; i++) close(s->slab[2 * i + 1]);
  napi_close_handle_scope(s->env, scope);
}

static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "EDGEMESH_LISTENERS", "listeners.create(slab, onAccept)");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_int32_array || length < 2) {
    napi_throw_type_error(env, "EDGEMESH_LISTENERS", "listeners.create: the slab must be an Int32Array of pairs");
    return NULL;
  }
  set_t *s = calloc(1, sizeof(set_t));
  if (!s) return throw_errno(env, "listeners.create", ENOMEM);
  s->env = env;
  s->slab = data;
  s->pairs = length / 2;
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (s->epfd < 0) {
    int en = errno;
    free(s);
    return throw_errno(env, "listeners.create: epoll_create1", en);
  }
  s->reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  if (uv_poll_init(loop, &s->poll, s->epfd) != 0 || uv_poll_start(&s->poll, UV_READABLE, on_readable) != 0) {
    close(s->epfd);
    if (s->reserve >= 0) close(s->reserve);
    free(s);
    return throw_errno(env, "listeners.create: uv_poll", EIO);
  }
  s->poll.data = s;
  uv_unref((uv_handle_t *)&s->poll);
  napi_create_reference(env, argv[0], 1, &s->slab_ref);
  napi_create_reference(env, argv[1], 1, &s->on_accept);
  napi_value res_name;
  napi_create_string_utf8(env, "EdgeMeshListeners", NAPI_AUTO_LENGTH, &res_name);
  napi_async_init(env, NULL, res_name, &s->async);
  napi_value handle;
  if (napi_create_external(env, s, finalize, NULL, &handle) != napi_ok) return NULL;
  return handle;
}

static void set_referenced(set_t *s) {
  int want = s->listening > 0;
  if (want == s->referenced) return;
  s->referenced = want;
  if (want) uv_ref((uv_handle_t *)&s->poll);
  else uv_unref((uv_handle_t *)&s->poll);
}

static napi_value js_listen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  set_t *s = set_args(env, info, 4, argv);
  if (!s) return NULL;
  if (s->closed) return throw_errno(env, "listeners.listen", EBADF);
  char host[64];
  size_t hl;
  uint32_t port, backlog;
  if (napi_get_value_string_utf8(env, argv[1], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &port) != napi_ok || port > 65535 ||
      napi_get_value_uint32(env, argv[3], &backlog) != napi_ok) {
    napi_throw_type_error(env, "EDGEMESH_LISTENERS", "listeners.listen(handle, host, port, backlog)");
    return NULL;
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len;
  int family;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    family = a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    len = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    family = a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    len = sizeof *a6;
  } else
    return throw_errno(env, "listeners.listen: not an IP address", EINVAL);
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "listeners.listen: socket", errno);
  int one = 1;
  /* as libuv does for every TCP listener: a port in TIME_WAIT can be bound again */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, (int)backlog) < 0) {
    int en = errno;
    close(fd);
    return throw_errno(env, "listeners.listen", en);
  }
  len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  uint32_t bound = ntohs(family == AF_INET ? a4->sin_port : a6->sin6_port);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    int en = errno;
    close(fd);
    return throw_errno(env, "listeners.listen: epoll_ctl", en);
  }
  s->listening++;
  set_referenced(s);
  napi_value out, v;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, fd, &v);
  napi_set_element(env, out, 0, v);
  napi_create_uint32(env, bound, &v);
  napi_set_element(env, out, 1, v);
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  set_t *s = set_args(env, info, 2, argv);
  if (!s) return NULL;
  int32_t fd;
  if (napi_get_value_int32(env, argv[1], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EDGEMESH_LISTENERS", "listeners.close(handle, fd)");
    return NULL;
  }
  int ok = !s->closed && epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL) == 0;
  if (ok) {
    for (int i = 0; i < s->nev; i++)
      if (s->ev[i].data.fd == fd) s->ev[i].data.fd = -1;
    close(fd);
    s->listening--;
    set_referenced(s);
  }
  napi_get_boolean(env, ok, &out);
  return out;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  set_t *s = set_args(env, info, 1, argv);
  if (!s) return NULL;
  napi_create_array_with_length(env, 2, &out);
  napi_create_uint32(env, s->listening, &v);
  napi_set_element(env, out, 0, v);
  napi_create_double(env, s->refused, &v);
  napi_set_element(env, out, 1, v);
  return out;
}

napi_value listeners_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      METHOD("create", js_create),
      METHOD("listen", js_listen),
      METHOD("close", js_close),
      METHOD("stats", js_stats),
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}
