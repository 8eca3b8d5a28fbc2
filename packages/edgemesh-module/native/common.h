/* Shared by the addon's parts. */
#ifndef EDGEMESH_NATIVE_COMMON_H
#define EDGEMESH_NATIVE_COMMON_H
#include <node_api.h>

/* A method entry of a napi_property_descriptor table. */
#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
#define DEFINE_METHODS(env, exports, table)                                                        \
  napi_define_properties(env, exports, sizeof(table) / sizeof((table)[0]), table)

#endif
