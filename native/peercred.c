/*
 * peercred: read the credentials of the process at the other end of a
 * connected Unix-domain socket (Linux SO_PEERCRED). Plain Node-API, no C++.
 *
 *   getPeerCred(fd: number): { pid: number, uid: number, gid: number }
 *
 * Throws an Error whose `code` is the errno name ("EBADF", "ENOTSOCK", ...)
 * when getsockopt fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <node_api.h>

#define CHECK(env, call)                                              \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error((env), NULL, "peercred: Node-API call failed"); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static const char *errno_name(int e) {
  switch (e) {
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EFAULT: return "EFAULT";
    default: return "EIO";
  }
}

static napi_value set_uint(napi_env env, napi_value obj, const char *key, uint32_t v) {
  napi_value n;
  CHECK(env, napi_create_uint32(env, v, &n));
  CHECK(env, napi_set_named_property(env, obj, key, n));
  return obj;
}

static napi_value get_peer_cred(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "getPeerCred(fd): fd is required");
    return NULL;
  }
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[0], &t));
  if (t != napi_number) {
    napi_throw_type_error(env, NULL, "getPeerCred(fd): fd must be a number");
    return NULL;
  }
  int32_t fd;
  CHECK(env, napi_get_value_int32(env, argv[0], &fd));
  if (fd < 0) {
    napi_throw_range_error(env, NULL, "getPeerCred(fd): fd must be >= 0");
    return NULL;
  }

  struct ucred cred;
  socklen_t len = sizeof(cred);
  memset(&cred, 0, sizeof(cred));
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    char msg[160];
    snprintf(msg, sizeof(msg), "getsockopt(SO_PEERCRED) failed: %s", strerror(e));
    napi_throw_error(env, errno_name(e), msg);
    return NULL;
  }
  if (len != sizeof(cred)) {
    napi_throw_error(env, "EIO", "getsockopt(SO_PEERCRED) returned a short ucred");
    return NULL;
  }

  napi_value out;
  CHECK(env, napi_create_object(env, &out));
  if (set_uint(env, out, "pid", (uint32_t)cred.pid) == NULL) return NULL;
  if (set_uint(env, out, "uid", (uint32_t)cred.uid) == NULL) return NULL;
  if (set_uint(env, out, "gid", (uint32_t)cred.gid) == NULL) return NULL;
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  CHECK(env, napi_create_function(env, "getPeerCred", NAPI_AUTO_LENGTH, get_peer_cred, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "getPeerCred", fn));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
