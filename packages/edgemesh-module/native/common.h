/* Shared by the addon's parts. */
#ifndef EDGEMESH_NATIVE_COMMON_H
#define EDGEMESH_NATIVE_COMMON_H
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

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

#endif
