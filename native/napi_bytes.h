/*
 * Shared by warrant's Node-API addons: reading a Uint8Array argument.
 */
#ifndef WARRANT_NAPI_BYTES_H
#define WARRANT_NAPI_BYTES_H
#include <stdint.h>
#include <node_api.h>

/* The bytes of a Uint8Array (its view, not the whole buffer); 0 for anything else. */
static inline int get_bytes(napi_env env, napi_value v, const uint8_t **out, size_t *len) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  napi_typedarray_type type;
  void *data;
  napi_value buf;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, &data, &buf, &off) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  *out = (const uint8_t *)data;
  return 1;
}

#endif
