/* Shared by the addon's parts. */
#ifndef EDGEMESH_NATIVE_COMMON_H
#define EDGEMESH_NATIVE_COMMON_H
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A method entry of a napi_property_descriptor table. */
#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
#define DEFINE_METHODS(env, exports, table)                                                        \
  napi_define_properties(env, exports, sizeof(table) / sizeof((table)[0]), table)

/*
 * The arguments of a call whose first argument is a handle (an external): the handle's pointer, or
 * NULL with a TypeError thrown (`code`; messages prefixed with `what`).
 */
static inline void *handle_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv,
                                const char *code, const char *what) {
  size_t argc = want;
  void *p = NULL;
  char msg[96];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    snprintf(msg, sizeof msg, "%s: missing arguments", what);
    napi_throw_type_error(env, code, msg);
    return NULL;
  }
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) {
    snprintf(msg, sizeof msg, "%s: not a handle", what);
    napi_throw_type_error(env, code, msg);
    return NULL;
  }
  return p;
}

/* Throws `what: strerror(err)` with the errno's name as `code` (EADDRINUSE, ...; like node:net). */
static inline napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value e, code, m;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  const char *name = err == EADDRINUSE      ? "EADDRINUSE"
                     : err == EACCES        ? "EACCES"
                     : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                     : err == EINVAL        ? "EINVAL"
                     : err == EMFILE        ? "EMFILE"
                     : err == ENFILE        ? "ENFILE"
                                            : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_set_named_property(env, e, "code", code);
  napi_throw(env, e);
  return NULL;
}

/*
 * A call into JavaScript failed: an exception it threw goes to uncaughtException (a bug in a
 * callback, as elsewhere in Node). Returns 1 when `st` is a failure.
 */
static inline int js_call_failed(napi_env env, napi_status st) {
  if (st == napi_ok) return 0;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  return 1;
}

/* Call the function `fn` refers to, `this` undefined (a failure when `silent`: finalizing). */
static inline napi_status js_call_ref(napi_env env, int silent, napi_ref fn, size_t argc, napi_value *argv,
                                      napi_value *res) {
  if (silent) return napi_generic_failure;
  napi_value cb, recv;
  napi_get_reference_value(env, fn, &cb);
  napi_get_undefined(env, &recv);
  return napi_call_function(env, recv, cb, argc, argv, res);
}

/* An IPv4 or IPv6 address and a port as a socket address; 0: `ip` is not an address. */
static inline int sockaddr_of(const char *ip, uint32_t port, struct sockaddr_storage *sa, socklen_t *len) {
  struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
  memset(sa, 0, sizeof *sa);
  if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return 1;
  }
  if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof *a6;
    return 1;
  }
  return 0;
}

/* Grow a zeroed array of `size`-byte records (capacity *n, doubling from 16) to hold index id;
 * -1: out of memory. */
static inline int grow_to(void **arr, uint32_t *n, size_t size, uint32_t id) {
  if (id < *n) return 0;
  uint32_t c = *n ? *n : 16;
  while (c <= id) c *= 2;
  char *p = realloc(*arr, (size_t)c * size);
  if (!p) return -1;
  memset(p + (size_t)*n * size, 0, (size_t)(c - *n) * size);
  *arr = p;
  *n = c;
  return 0;
}

/* Records in the shared buffer of ended requests/streams are handed to JavaScript in one call
 * (`cb(count)`), before the next pick or at the end of a wake-up: one call per batch, not per
 * request. *n: how many are waiting; 0 after. */
static inline void js_flush_done(napi_env env, int silent, napi_ref cb, uint32_t *n) {
  if (*n == 0) return;
  napi_value argv[1];
  napi_create_uint32(env, *n, &argv[0]);
  *n = 0;
  js_call_failed(env, js_call_ref(env, silent, cb, 1, argv, NULL));
}

#define MAX_BACKENDS 65536

/* A backend's address: the first member of each engine's backend record. */
typedef struct {
  struct sockaddr_storage sa;
  socklen_t salen;
  int set;
} backend_addr_t;

/* engine.backend(engine, id, ip, port) of an engine whose backends are `*arr` (records of `size`
 * bytes, each starting with a backend_addr_t; grown to hold id): record id takes the address. The
 * JavaScript boolean (false: a closed engine, a bad id, port or address), or NULL after throwing
 * `code` (out of memory). */
static inline napi_value js_set_backend(napi_env env, napi_value *argv, int closed, void **arr, uint32_t *n,
                                        size_t size, const char *code) {
  napi_value out;
  uint32_t id, port;
  char ip[64];
  size_t il;
  napi_get_value_uint32(env, argv[1], &id);
  napi_get_value_string_utf8(env, argv[2], ip, sizeof ip, &il);
  napi_get_value_uint32(env, argv[3], &port);
  if (closed || id >= MAX_BACKENDS || port == 0 || port > 65535) {
    napi_get_boolean(env, false, &out);
    return out;
  }
  if (grow_to(arr, n, size, id) < 0) {
    napi_throw_error(env, code, "backend: out of memory");
    return NULL;
  }
  backend_addr_t *b = (backend_addr_t *)((char *)*arr + (size_t)id * size);
  int ok = sockaddr_of(ip, port, &b->sa, &b->salen);
  if (ok) b->set = 1;
  napi_get_boolean(env, ok, &out);
  return out;
}

/* A duplicate of an adopted socket, non-blocking, Nagle off; -1: dup failed. */
static inline int adopt_fd(int fd) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0) return -1;
  fcntl(d, F_SETFL, fcntl(d, F_GETFL) | O_NONBLOCK);
  int one = 1;
  setsockopt(d, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return d;
}

#endif
