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

/* Each part under its own name; a part built without what it needs (h2: nghttp2's header) returns
 * NULL and is left out. */
static const struct {
  const char *name;
  napi_value (*init)(napi_env, napi_value);
} parts[] = {
    {"udp", udp_batch_init}, {"splice", splice_init}, {"http", http_engine_init},
    {"listeners", listeners_init}, {"tls", tls_pump_init}, {"h2", h2_engine_init},
};

static napi_value init(napi_env env, napi_value exports) {
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    napi_value o;
    napi_create_object(env, &o);
    if (parts[i].init(env, o)) napi_set_named_property(env, exports, parts[i].name, o);
  }
  napi_value trim;
  napi_create_function(env, "trimMalloc", NAPI_AUTO_LENGTH, js_trim_malloc, NULL, &trim);
  napi_set_named_property(env, exports, "trimMalloc", trim);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
