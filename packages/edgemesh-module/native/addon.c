/* edgemesh_native: the batched UDP socket (udp_batch.c), the L4 splice engine (splice.c), the
 * L7 engine (http/engine.c), the portals' listening sockets (listeners.c), the TLS pump of tunnel streams (tls_pump.c), the
 * HTTP/2 engine (h2/engine.c; only when built with nghttp2's header) and
 * malloc's trim. */
#include <node_api.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

napi_value udp_batch_init(napi_env env, napi_value exports);
napi_value splice_init(napi_env env, napi_value exports);
napi_value http_engine_init(napi_env env, napi_value exports);
napi_value listeners_init(napi_env env, napi_value exports);
napi_value tls_pump_init(napi_env env, napi_value exports);
napi_value h2_engine_init(napi_env env, napi_value exports);

/* trimMalloc(): glibc keeps the pages freed inside its arenas (all but the top of the main one)
 * for reuse; after a burst is over they are resident for nothing. true when some were given back;
 * false where there is no malloc_trim (musl). */
static napi_value js_trim_malloc(napi_env env, napi_callback_info info) {
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  napi_value out;
  napi_get_boolean(env, released != 0, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value udp;
  napi_create_object(env, &udp);
  udp_batch_init(env, udp);
  napi_set_named_property(env, exports, "udp", udp);
  napi_value sp;
  napi_create_object(env, &sp);
  splice_init(env, sp);
  napi_set_named_property(env, exports, "splice", sp);
  napi_value http;
  napi_create_object(env, &http);
  http_engine_init(env, http);
  napi_set_named_property(env, exports, "http", http);
  napi_value ls;
  napi_create_object(env, &ls);
  listeners_init(env, ls);
  napi_set_named_property(env, exports, "listeners", ls);
  napi_value tls;
  napi_create_object(env, &tls);
  tls_pump_init(env, tls);
  napi_set_named_property(env, exports, "tls", tls);
  napi_value h2;
  napi_create_object(env, &h2);
  if (h2_engine_init(env, h2)) napi_set_named_property(env, exports, "h2", h2);
  napi_value trim;
  napi_create_function(env, "trimMalloc", NAPI_AUTO_LENGTH, js_trim_malloc, NULL, &trim);
  napi_set_named_property(env, exports, "trimMalloc", trim);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
