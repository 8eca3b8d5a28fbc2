/*
 * udp_batch: a UDP socket for EdgeMesh's DNS server that receives with recvmmsg(2) and replies
 * with sendmmsg(2), a batch of datagrams per system call and per call into JavaScript.
 *
 * Node's dgram delivers one datagram per event and sends one per call through a request object;
 * that path costs ~13 µs per query on the reference machine (a bare dgram echo tops out near 75k
 * queries/s on one core). Here a readable socket wakes a uv_poll handle on Node's own event loop,
 * up to SLOTS datagrams land in a receive slab that JavaScript owns, JavaScript is called once per
 * batch, writes the replies into a send slab and flushes them with one sendmmsg. No threads: all
 * of it runs on the event loop thread, like dgram.
 *
 * JavaScript API (see src/dns/udp-batch.ts):
 *   open(host, port, inBuf, inMeta, outBuf, outMeta, slotSize, onBatch) -> handle
 *       inMeta/outMeta: Uint32Array, 3 words per slot: length, IPv4 address (host order), port.
 *       onBatch(n) is called with the number of datagrams in the receive slab.
 *   localPort(handle) -> number
 *   flush(handle, n) -> number sent (the first n slots of the send slab)
 *   sendOne(handle, buffer, address, port) -> boolean
 *   close(handle)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include "common.h"
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define MAX_SLOTS 256
/* Batches handled per wake-up before yielding to the rest of the event loop (timers, TCP). */
#define ROUNDS_PER_WAKE 8

typedef struct {
  napi_env env;
  int fd;
  int closed;    /* close() called: fd closed, poll stopping */
  int uv_done;   /* the poll handle's close callback ran */
  int finalized; /* the JavaScript handle was collected */
  uv_poll_t poll;
  napi_ref on_batch;
  napi_ref refs[4]; /* the four slabs, kept alive while the socket is open */
  napi_async_context async;
  uint8_t *in_buf;
  uint32_t *in_meta;
  uint8_t *out_buf;
  uint32_t *out_meta;
  size_t slot_size;
  size_t slots;
  struct mmsghdr rmsgs[MAX_SLOTS];
  struct iovec riov[MAX_SLOTS];
  struct sockaddr_in raddr[MAX_SLOTS];
  struct mmsghdr smsgs[MAX_SLOTS];
  struct iovec siov[MAX_SLOTS];
  struct sockaddr_in saddr[MAX_SLOTS];
} sock_t;

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, "EDGEMESH_UDP_BATCH", "udp_batch: " #call " failed");                  \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

/* The arguments of a call whose first argument is a socket handle: the socket, or NULL (thrown). */
#define sock_args(env, info, want, argv)                                                           \
  ((sock_t *)handle_args(env, info, want, argv, "EDGEMESH_UDP_BATCH", "udp_batch"))

/* Freed once both the poll handle is closed and the JavaScript handle is gone (a late call on a
 * closed handle finds `closed` set instead of freed memory). */
static void on_closed(uv_handle_t *h) {
  sock_t *s = (sock_t *)h->data;
  s->uv_done = 1;
  if (s->finalized) free(s);
}

static void release(sock_t *s) {
  if (s->closed) return;
  s->closed = 1;
  uv_poll_stop(&s->poll);
  close(s->fd);
  for (int i = 0; i < 4; i++) napi_delete_reference(s->env, s->refs[i]);
  napi_delete_reference(s->env, s->on_batch);
  napi_async_destroy(s->env, s->async);
  uv_close((uv_handle_t *)&s->poll, on_closed);
}

static void finalize(napi_env env, void *data, void *hint) {
  sock_t *s = (sock_t *)data;
  (void)env;
  (void)hint;
  s->finalized = 1;
  if (!s->closed) release(s); /* collected while open: close it; on_closed frees */
  else if (s->uv_done) free(s);
}

static void on_readable(uv_poll_t *p, int status, int events) {
  sock_t *s = (sock_t *)p->data;
  (void)events;
  if (s->closed || status < 0) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  for (int round = 0; round < ROUNDS_PER_WAKE && !s->closed; round++) {
    for (size_t i = 0; i < s->slots; i++) {
      s->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
      s->rmsgs[i].msg_hdr.msg_flags = 0;
    }
    int n = recvmmsg(s->fd, s->rmsgs, (unsigned)s->slots, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EINTR || errno == ECONNREFUSED) continue; /* ICMP of an earlier reply */
      break;                                                 /* EAGAIN: drained */
    }
    if (n == 0) break;
    for (int i = 0; i < n; i++) {
      uint32_t len = s->rmsgs[i].msg_len;
      /* larger than a slot (a > slot-size UDP query): length 0, JavaScript drops it */
      if (s->rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) len = 0;
      s->in_meta[i * 3] = len;
      s->in_meta[i * 3 + 1] = ntohl(s->raddr[i].sin_addr.s_addr);
      s->in_meta[i * 3 + 2] = ntohs(s->raddr[i].sin_port);
    }
    napi_value cb, recv, argv[1], result;
    napi_get_reference_value(env, s->on_batch, &cb);
    napi_get_global(env, &recv); /* napi_make_callback wants an object as `this` */
    napi_create_uint32(env, (uint32_t)n, &argv[0]);
    napi_status st = napi_make_callback(env, s->async, recv, cb, 1, argv, &result);
    if (st == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);
      break;
    }
    if ((size_t)n < s->slots) break;
  }
  napi_close_handle_scope(env, scope);
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) {
    napi_throw_type_error(env, "EDGEMESH_UDP_BATCH", "udp_batch.open: 8 arguments expected");
    return NULL;
  }
  char host[64];
  size_t hl;
  uint32_t port, slot_size;
  CHECK(napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hl));
  CHECK(napi_get_value_uint32(env, argv[1], &port));
  CHECK(napi_get_value_uint32(env, argv[6], &slot_size));
  void *bufs[4];
  size_t lens[4];
  for (int i = 0; i < 4; i++) {
    bool is_buf = false;
    napi_is_buffer(env, argv[2 + i], &is_buf);
    if (is_buf) {
      CHECK(napi_get_buffer_info(env, argv[2 + i], &bufs[i], &lens[i]));
    } else {
      napi_typedarray_type t;
      size_t count, off;
      napi_value ab;
      CHECK(napi_get_typedarray_info(env, argv[2 + i], &t, &count, &bufs[i], &ab, &off));
      if (t != napi_uint32_array) {
        napi_throw_type_error(env, "EDGEMESH_UDP_BATCH", "udp_batch.open: meta must be a Uint32Array");
        return NULL;
      }
      lens[i] = count * 4;
    }
  }
  if (slot_size == 0 || port > 65535) {
    napi_throw_range_error(env, "EDGEMESH_UDP_BATCH", "udp_batch.open: bad port or slot size");
    return NULL;
  }
  size_t slots = lens[0] / slot_size;
  if (slots > MAX_SLOTS) slots = MAX_SLOTS;
  if (slots == 0 || lens[2] / slot_size < slots || lens[1] < slots * 12 || lens[3] < slots * 12) {
    napi_throw_range_error(env, "EDGEMESH_UDP_BATCH", "udp_batch.open: slabs smaller than one slot");
    return NULL;
  }
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return throw_errno(env, "udp_batch.open: address", EINVAL);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "udp_batch.open: socket", errno);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "udp_batch.open: bind", e);
  }
  sock_t *s = calloc(1, sizeof(sock_t));
  if (!s) {
    close(fd);
    return throw_errno(env, "udp_batch.open", ENOMEM);
  }
  s->env = env;
  s->fd = fd;
  s->slot_size = slot_size;
  s->slots = slots;
  s->in_buf = bufs[0];
  s->in_meta = bufs[1];
  s->out_buf = bufs[2];
  s->out_meta = bufs[3];
  for (size_t i = 0; i < slots; i++) {
    s->riov[i].iov_base = s->in_buf + i * slot_size;
    s->riov[i].iov_len = slot_size;
    s->rmsgs[i].msg_hdr.msg_iov = &s->riov[i];
    s->rmsgs[i].msg_hdr.msg_iovlen = 1;
    s->rmsgs[i].msg_hdr.msg_name = &s->raddr[i];
    s->siov[i].iov_base = s->out_buf + i * slot_size;
    s->smsgs[i].msg_hdr.msg_iov = &s->siov[i];
    s->smsgs[i].msg_hdr.msg_iovlen = 1;
    s->smsgs[i].msg_hdr.msg_name = &s->saddr[i];
    s->smsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
  }
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  if (uv_poll_init(loop, &s->poll, fd) != 0) {
    close(fd);
    free(s);
    return throw_errno(env, "udp_batch.open: uv_poll_init", EIO);
  }
  s->poll.data = s;
  if (uv_poll_start(&s->poll, UV_READABLE, on_readable) != 0) {
    close(fd);
    s->closed = s->finalized = 1;
    uv_close((uv_handle_t *)&s->poll, on_closed);
    return throw_errno(env, "udp_batch.open: uv_poll_start", EIO);
  }
  for (int i = 0; i < 4; i++) napi_create_reference(env, argv[2 + i], 1, &s->refs[i]);
  napi_create_reference(env, argv[7], 1, &s->on_batch);
  napi_value res_name;
  napi_create_string_utf8(env, "EdgeMeshUdpBatch", NAPI_AUTO_LENGTH, &res_name);
  napi_async_init(env, NULL, res_name, &s->async);
  napi_value handle;
  CHECK(napi_create_external(env, s, finalize, NULL, &handle));
  return handle;
}

static napi_value js_local_port(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  sock_t *s = sock_args(env, info, 1, argv);
  if (!s) return NULL;
  struct sockaddr_in a;
  socklen_t l = sizeof a;
  if (s->closed || getsockname(s->fd, (struct sockaddr *)&a, &l) < 0) return throw_errno(env, "udp_batch.localPort", EBADF);
  CHECK(napi_create_uint32(env, ntohs(a.sin_port), &out));
  return out;
}

static napi_value js_flush(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  uint32_t n;
  sock_t *s = sock_args(env, info, 2, argv);
  if (!s) return NULL;
  CHECK(napi_get_value_uint32(env, argv[1], &n));
  if (n > s->slots) n = (uint32_t)s->slots;
  uint32_t sent = 0;
  if (!s->closed) {
    for (uint32_t i = 0; i < n; i++) {
      uint32_t len = s->out_meta[i * 3];
      s->siov[i].iov_len = len > s->slot_size ? s->slot_size : len;
      s->saddr[i].sin_family = AF_INET;
      s->saddr[i].sin_addr.s_addr = htonl(s->out_meta[i * 3 + 1]);
      s->saddr[i].sin_port = htons((uint16_t)s->out_meta[i * 3 + 2]);
    }
    while (sent < n) {
      int r = sendmmsg(s->fd, s->smsgs + sent, n - sent, MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == ECONNREFUSED || errno == EPERM || errno == ENETUNREACH || errno == EHOSTUNREACH) {
          sent++; /* this destination failed; skip it, send the rest */
          continue;
        }
        break; /* EAGAIN (send buffer full): the rest is dropped, as a full UDP queue would */
      }
      sent += (uint32_t)r;
    }
  }
  CHECK(napi_create_uint32(env, sent, &out));
  return out;
}

static napi_value js_send_one(napi_env env, napi_callback_info info) {
  napi_value argv[4], out;
  sock_t *s = sock_args(env, info, 4, argv);
  if (!s) return NULL;
  void *data;
  size_t len;
  uint32_t ip, port;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  CHECK(napi_get_value_uint32(env, argv[2], &ip));
  CHECK(napi_get_value_uint32(env, argv[3], &port));
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons((uint16_t)port);
  ssize_t r = -1;
  if (!s->closed) {
    do r = sendto(s->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof a);
    while (r < 0 && errno == EINTR);
  }
  CHECK(napi_get_boolean(env, r == (ssize_t)len, &out));
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  sock_t *s = sock_args(env, info, 1, argv);
  if (!s) return NULL;
  release(s);
  return NULL;
}

napi_value udp_batch_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      METHOD("open", js_open),
      METHOD("localPort", js_local_port),
      METHOD("flush", js_flush),
      METHOD("sendOne", js_send_one),
      METHOD("close", js_close),
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}

