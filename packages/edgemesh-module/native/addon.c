/* edgemesh_native: the batched UDP socket (udp_batch.c) and the L4 splice engine (splice.c). */
#include <node_api.h>

napi_value udp_batch_init(napi_env env, napi_value exports);

static napi_value init(napi_env env, napi_value exports) {
  napi_value udp;
  napi_create_object(env, &udp);
  udp_batch_init(env, udp);
  napi_set_named_property(env, exports, "udp", udp);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
