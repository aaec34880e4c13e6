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
 *   procEventsOpen(): number
 *     A non-blocking, close-on-exec NETLINK_CONNECTOR socket subscribed to
 *     the kernel's process events (CN_IDX_PROC, PROC_CN_MCAST_LISTEN). It
 *     returns only once the kernel acknowledged the subscription: a kernel
 *     that ignores it (a listener outside the initial user or pid namespace)
 *     or refuses it (EPERM without CAP_NET_ADMIN on older kernels) throws, as
 *     does one without the connector (EPROTONOSUPPORT). Once acknowledged,
 *     the subscription is narrowed to exec, uid and gid events where the
 *     kernel can filter (Linux 6.6+; older kernels ignore that request and
 *     keep sending every event).
 *   procEventsDrain(fd: number): { tgids: number[], overflow: boolean }
 *     Reads every event queued on that socket without blocking: the thread
 *     group ids of the processes that exec'd (PROC_EVENT_EXEC) or changed a
 *     uid or gid (PROC_EVENT_UID, PROC_EVENT_GID). The kernel sends them
 *     inside the execve/setuid-family call, after the change, so an event of
 *     a call that has returned is queued before any later drain. `overflow`
 *     is true when events were lost (ENOBUFS: the socket's queue was full) or
 *     a message came truncated: the caller must then assume any process changed.
 *   procEventsClose(fd: number): void
 *     Unsubscribes (PROC_CN_MCAST_IGNORE) and closes the socket.
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
#include <time.h>
#include <unistd.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
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
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ENOBUFS: return "ENOBUFS";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOENT: return "ENOENT";
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

/* ---- process events connector ---- */

/* Linux 6.6+ (uapi cn_proc.h): a LISTEN request that also names the events wanted. */
struct warrant_proc_input {
  uint32_t mcast_op;
  uint32_t event_type;
};

/* Sends one connector message to the proc connector: `data` of `len` bytes, with `ack` as cn_msg.ack. */
static int proc_cn_send(int fd, const void *data, uint16_t len, uint32_t ack) {
  union {
    char buf[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof(struct warrant_proc_input))];
    struct nlmsghdr align;
  } u;
  memset(&u, 0, sizeof(u));
  struct nlmsghdr *nlh = (struct nlmsghdr *)u.buf;
  struct cn_msg *cn = (struct cn_msg *)NLMSG_DATA(nlh);
  nlh->nlmsg_len = NLMSG_LENGTH(sizeof(struct cn_msg) + len);
  nlh->nlmsg_type = NLMSG_DONE;
  nlh->nlmsg_pid = 0;
  cn->id.idx = CN_IDX_PROC;
  cn->id.val = CN_VAL_PROC;
  cn->seq = ack;
  cn->ack = ack;
  cn->len = len;
  memcpy(cn->data, data, len);
  struct sockaddr_nl to;
  memset(&to, 0, sizeof(to));
  to.nl_family = AF_NETLINK;
  ssize_t r;
  do {
    r = sendto(fd, u.buf, nlh->nlmsg_len, 0, (struct sockaddr *)&to, sizeof(to));
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : 0;
}

/* What one received connector message says. */
enum proc_msg_kind { PM_OTHER, PM_CHANGE, PM_ACK };

/* Reads the proc event in one netlink message (`len` bytes at `p`). */
static enum proc_msg_kind proc_msg(const char *p, size_t len, int32_t *tgid, uint32_t *ack, uint32_t *err) {
  if (len < NLMSG_HDRLEN + sizeof(struct cn_msg)) return PM_OTHER;
  struct nlmsghdr nlh;
  memcpy(&nlh, p, sizeof(nlh));
  if (nlh.nlmsg_type == NLMSG_ERROR || nlh.nlmsg_type == NLMSG_NOOP) return PM_OTHER;
  struct cn_msg cn;
  memcpy(&cn, p + NLMSG_HDRLEN, sizeof(cn));
  if (cn.id.idx != CN_IDX_PROC || cn.id.val != CN_VAL_PROC) return PM_OTHER;
  const char *ev = p + NLMSG_HDRLEN + sizeof(struct cn_msg);
  size_t evlen = len - NLMSG_HDRLEN - sizeof(struct cn_msg);
  if (cn.len < evlen) evlen = cn.len;
  /* what (u32), cpu (u32), timestamp_ns (u64), then event_data */
  if (evlen < 16 + 8) return PM_OTHER;
  uint32_t what;
  memcpy(&what, ev, sizeof(what));
  switch (what) {
    case PROC_EVENT_NONE:
      memcpy(err, ev + 16, sizeof(*err));
      *ack = cn.ack;
      return PM_ACK;
    case PROC_EVENT_EXEC:
    case PROC_EVENT_UID:
    case PROC_EVENT_GID:
      /* exec, id: process_pid then process_tgid */
      memcpy(tgid, ev + 16 + 4, sizeof(*tgid));
      return PM_CHANGE;
    default:
      return PM_OTHER;
  }
}

static int64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static napi_value proc_events_open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (fd < 0) return throw_errno(env, "socket(NETLINK_CONNECTOR)", errno);
  /* A large queue: events wait there between Workload API calls. Root may exceed rmem_max. */
  int rcvbuf = 4 * 1024 * 1024;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  struct sockaddr_nl addr;
  memset(&addr, 0, sizeof(addr));
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = CN_IDX_PROC;
  addr.nl_pid = 0; /* the kernel assigns a port id */
  if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind(CN_IDX_PROC)", e);
  }
  /* The classic 4-byte LISTEN (every event), which every kernel acknowledges. */
  uint32_t ack = (uint32_t)getpid() ^ (uint32_t)monotonic_ms() ^ 0x5741u;
  uint32_t op = PROC_CN_MCAST_LISTEN;
  if (proc_cn_send(fd, &op, sizeof(op), ack) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "send(PROC_CN_MCAST_LISTEN)", e);
  }
  /* The acknowledgement is normally queued before send returns; wait at most 500 ms. */
  char buf[1024] __attribute__((aligned(8)));
  int64_t deadline = monotonic_ms() + 500;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      int e = errno;
      if (e == EINTR || e == ENOBUFS) continue;
      if (e != EAGAIN && e != EWOULDBLOCK) {
        close(fd);
        return throw_errno(env, "recv(proc connector)", e);
      }
      int64_t left = deadline - monotonic_ms();
      if (left <= 0) {
        close(fd);
        napi_throw_error(env, "ETIMEDOUT",
                         "the kernel did not acknowledge the process events subscription (a listener outside the initial pid or user namespace is ignored)");
        return NULL;
      }
      struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
      (void)poll(&p, 1, (int)left);
      continue;
    }
    size_t left = (size_t)n;
    const char *at = buf;
    int done = 0;
    while (left >= NLMSG_HDRLEN) {
      struct nlmsghdr h;
      memcpy(&h, at, sizeof(h));
      if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > left) break;
      int32_t tgid;
      uint32_t got_ack = 0, err = 0;
      if (proc_msg(at, h.nlmsg_len, &tgid, &got_ack, &err) == PM_ACK && got_ack == ack + 1) {
        if (err != 0) {
          close(fd);
          return throw_errno(env, "PROC_CN_MCAST_LISTEN", (int)err);
        }
        done = 1;
        break;
      }
      size_t step = NLMSG_ALIGN(h.nlmsg_len);
      if (step > left) break;
      at += step;
      left -= step;
    }
    if (done) break;
  }
  /* Narrow to the events we read (Linux 6.6+). Older kernels ignore a request of this size. */
  struct warrant_proc_input in = {.mcast_op = PROC_CN_MCAST_LISTEN, .event_type = PROC_EVENT_EXEC | PROC_EVENT_UID | PROC_EVENT_GID};
  (void)proc_cn_send(fd, &in, sizeof(in), ack + 2);
  return make_fd(env, fd);
}

#define DRAIN_BATCH 64
#define DRAIN_MSG 256

static napi_value proc_events_drain(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info, "procEventsDrain");
  if (fd < 0) return NULL;
  char bufs[DRAIN_BATCH][DRAIN_MSG] __attribute__((aligned(8)));
  struct mmsghdr msgs[DRAIN_BATCH];
  struct iovec iovs[DRAIN_BATCH];
  int32_t stack_tgids[128];
  int32_t *tgids = stack_tgids;
  size_t ntgids = 0, cap = sizeof(stack_tgids) / sizeof(stack_tgids[0]);
  int overflow = 0;
  for (;;) {
    for (int i = 0; i < DRAIN_BATCH; i++) {
      iovs[i].iov_base = bufs[i];
      iovs[i].iov_len = DRAIN_MSG;
      memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_len = 0;
    }
    int n = recvmmsg(fd, msgs, DRAIN_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == ENOBUFS) {
        overflow = 1; /* events were dropped; the queue goes on after this report */
        continue;
      }
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (tgids != stack_tgids) free(tgids);
      return throw_errno(env, "recvmmsg(proc connector)", e);
    }
    for (int i = 0; i < n; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        overflow = 1;
        continue;
      }
      size_t left = msgs[i].msg_len;
      const char *at = bufs[i];
      while (left >= NLMSG_HDRLEN) {
        struct nlmsghdr h;
        memcpy(&h, at, sizeof(h));
        if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > left) {
          overflow = 1; /* malformed: assume the worst */
          break;
        }
        int32_t tgid = 0;
        uint32_t ack = 0, err = 0;
        if (proc_msg(at, h.nlmsg_len, &tgid, &ack, &err) == PM_CHANGE) {
          if (ntgids == cap) {
            size_t ncap = cap * 2;
            int32_t *bigger = malloc(ncap * sizeof(int32_t));
            if (bigger == NULL) {
              overflow = 1; /* cannot keep them all: report as lost */
              break;
            }
            memcpy(bigger, tgids, ntgids * sizeof(int32_t));
            if (tgids != stack_tgids) free(tgids);
            tgids = bigger;
            cap = ncap;
          }
          tgids[ntgids++] = tgid;
        }
        size_t step = NLMSG_ALIGN(h.nlmsg_len);
        if (step >= left) break;
        at += step;
        left -= step;
      }
    }
    /* Until EAGAIN: an ENOBUFS the kernel noted after this batch is reported by the next recvmmsg. */
  }
  napi_value out, arr, ov;
  if (napi_create_object(env, &out) != napi_ok || napi_create_array_with_length(env, ntgids, &arr) != napi_ok) goto fail;
  for (size_t i = 0; i < ntgids; i++) {
    napi_value v;
    if (napi_create_int32(env, tgids[i], &v) != napi_ok || napi_set_element(env, arr, (uint32_t)i, v) != napi_ok) goto fail;
  }
  if (napi_get_boolean(env, overflow != 0, &ov) != napi_ok) goto fail;
  if (napi_set_named_property(env, out, "tgids", arr) != napi_ok || napi_set_named_property(env, out, "overflow", ov) != napi_ok) goto fail;
  if (tgids != stack_tgids) free(tgids);
  return out;
fail:
  if (tgids != stack_tgids) free(tgids);
  napi_throw_error(env, NULL, "peercred: Node-API call failed");
  return NULL;
}

static napi_value proc_events_close(napi_env env, napi_callback_info info) {
  int32_t fd = fd_arg(env, info, "procEventsClose");
  if (fd < 0) return NULL;
  uint32_t op = PROC_CN_MCAST_IGNORE;
  (void)proc_cn_send(fd, &op, sizeof(op), 0);
  if (close(fd) != 0) return throw_errno(env, "close(proc connector)", errno);
  return NULL;
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
      {"procEventsOpen", proc_events_open},
      {"procEventsDrain", proc_events_drain},
      {"procEventsClose", proc_events_close},
  };
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value fn;
    CHECK(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn));
    CHECK(env, napi_set_named_property(env, exports, fns[i].name, fn));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
