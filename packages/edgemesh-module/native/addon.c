/* edgemesh_native: the batched UDP socket (udp_batch.c), the L4 splice engine (splice.c), the
 * L7 engine (http/engine.c) and the portals' listening sockets (listeners.c). */
#include <node_api.h>

napi_value udp_batch_init(napi_env env, napi_value exports);
napi_value splice_init(napi_env env, napi_value exports);
napi_value http_engine_init(napi_env env, napi_value exports);
napi_value listeners_init(napi_env env, napi_value exports);

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
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
