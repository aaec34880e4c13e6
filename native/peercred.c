/*
 * peercred: read the credentials of the process at the other end of a
 * connected Unix-domain socket (Linux SO_PEERCRED). Plain Node-API, no C++.
 *
 *   getPeerCred(fd: number): { pid: number, uid: number, gid: number }
 *
 *   getPeerGroups(fd: number): number[]
 *     The supplementary group ids of the process that connected, as the
 *     kernel recorded them at connect(2) (SO_PEERGROUPS, Linux 4.13+).
 *
 *   getPeerPidfd(fd: number): number
 *     A pidfd of the process that connected (SO_PEERPIDFD, Linux 6.5+): it
 *     names that very process, whatever its pid names later. Close it with
 *     fs.closeSync.
 *   openPidfd(pid: number): number
 *     pidfd_open(2) (Linux 5.3+): a pidfd of the process `pid` names now.
 *   pidfdExited(pidfd: number): boolean
 *     Whether the process of a pidfd has exited (poll(2) reports it readable).
 *     While it has not, its pid cannot name any other process.
 *
 * Throws an Error whose `code` is the errno name ("EBADF", "ENOTSOCK",
 * "ENOPROTOOPT" from a kernel without SO_PEERPIDFD, "ENOSYS" without
 * pidfd_open, "ESRCH", ...) when the system call fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>

/* Older C library headers lack these; the numbers are the kernel's ABI. */
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

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
    case ESRCH: return "ESRCH";
    case ENOSYS: return "ENOSYS";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case ERANGE: return "ERANGE";
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

/* The single non-negative int32 argument of `name`, or -1 with a TypeError/RangeError thrown. */
static int32_t fd_arg(napi_env env, napi_callback_info info, const char *name) {
  size_t argc = 1;
  napi_value argv[1];
  char msg[96];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "peercred: Node-API call failed");
    return -1;
  }
  napi_valuetype t = napi_undefined;
  if (argc >= 1 && napi_typeof(env, argv[0], &t) != napi_ok) t = napi_undefined;
  if (t != napi_number) {
    snprintf(msg, sizeof(msg), "%s: argument must be a number", name);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  int32_t v;
  if (napi_get_value_int32(env, argv[0], &v) != napi_ok || v < 0) {
    snprintf(msg, sizeof(msg), "%s: argument must be a non-negative integer", name);
    napi_throw_range_error(env, NULL, msg);
    return -1;
  }
  return v;
}

static napi_value throw_errno(napi_env env, const char *what, int e) {
  char msg[160];
  snprintf(msg, sizeof(msg), "%s failed: %s", what, strerror(e));
  napi_throw_error(env, errno_name(e), msg);
  return NULL;
}

static napi_value make_fd(napi_env env, int fd) {
  napi_value n;
  if (napi_create_int32(env, fd, &n) != napi_ok) {
    close(fd);
    napi_throw_error(env, NULL, "peercred: Node-API call failed");
    return NULL;
  }
  return n;
}

static napi_value get_peer_pidfd(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info, "getPeerPidfd");
  if (fd < 0) return NULL;
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) return throw_errno(env, "getsockopt(SO_PEERPIDFD)", errno);
  if (len != sizeof(pidfd) || pidfd < 0) {
    if (pidfd >= 0) close(pidfd);
    napi_throw_error(env, "EIO", "getsockopt(SO_PEERPIDFD) returned no descriptor");
    return NULL;
  }
  return make_fd(env, pidfd);
}

static napi_value open_pidfd(napi_env env, napi_callback_info info) {
  int32_t pid = fd_arg(env, info, "openPidfd");
  if (pid < 0) return NULL;
  if (pid == 0) {
    napi_throw_range_error(env, NULL, "openPidfd: pid must be positive");
    return NULL;
  }
  long pidfd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (pidfd < 0) return throw_errno(env, "pidfd_open", errno);
  return make_fd(env, (int)pidfd);
}

static napi_value pidfd_exited(napi_env env, napi_callback_info info) {
  int32_t pidfd = fd_arg(env, info, "pidfdExited");
  if (pidfd < 0) return NULL;
  struct pollfd p = {.fd = pidfd, .events = POLLIN, .revents = 0};
  int r;
  do {
    r = poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, "poll(pidfd)", errno);
  if (r > 0 && (p.revents & POLLNVAL)) return throw_errno(env, "poll(pidfd)", EBADF);
  napi_value out;
  CHECK(env, napi_get_boolean(env, r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0, &out));
  return out;
}

/* SO_PEERGROUPS: the peer's supplementary groups at connect time. */
static napi_value get_peer_groups(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info, "getPeerGroups");
  if (fd < 0) return NULL;
  gid_t stack[64];
  gid_t *groups = stack;
  socklen_t len = sizeof(stack);
  gid_t *heap = NULL;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
    if (errno != ERANGE || len == 0 || len > 65536 * sizeof(gid_t)) return throw_errno(env, "getsockopt(SO_PEERGROUPS)", errno);
    /* The kernel set len to the size needed (NGROUPS_MAX is 65536). */
    heap = malloc(len);
    if (heap == NULL) return throw_errno(env, "getsockopt(SO_PEERGROUPS)", ENOMEM);
    groups = heap;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
      int e = errno;
      free(heap);
      return throw_errno(env, "getsockopt(SO_PEERGROUPS)", e);
    }
  }
  size_t n = len / sizeof(gid_t);
  napi_value out;
  if (napi_create_array_with_length(env, n, &out) != napi_ok) {
    free(heap);
    napi_throw_error(env, NULL, "peercred: Node-API call failed");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    napi_value v;
    if (napi_create_uint32(env, (uint32_t)groups[i], &v) != napi_ok || napi_set_element(env, out, (uint32_t)i, v) != napi_ok) {
      free(heap);
      napi_throw_error(env, NULL, "peercred: Node-API call failed");
      return NULL;
    }
  }
  free(heap);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"getPeerCred", get_peer_cred},
      {"getPeerGroups", get_peer_groups},
      {"getPeerPidfd", get_peer_pidfd},
      {"openPidfd", open_pidfd},
      {"pidfdExited", pidfd_exited},
  };
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value fn;
    CHECK(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn));
    CHECK(env, napi_set_named_property(env, exports, fns[i].name, fn));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
