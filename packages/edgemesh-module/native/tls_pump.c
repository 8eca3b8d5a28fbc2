/*
 * The TLS pump: TLS over a connected TCP socket ("raw") whose plaintext comes from and goes to a
 * second socket ("plain"), on one engine thread with its own epoll, off the JavaScript thread —
 * what stunnel does for a connection, with OpenSSL (the one Node links: its symbols and headers).
 * EdgeTunnel runs a spliced stream's end-to-end TLS here: the relay joins the two nodes' raw
 * connections, and each node's pump encrypts what its plain side sends.
 *
 * JavaScript connects both sockets (or asks for a socket pair as the plain side and keeps the
 * other end), stops Node reading them, and hands their descriptors over; the engine dups them, so
 * Node's sockets stay the owners. The handshake runs here, with the certificate chain verified
 * against the context's CA; then the engine reports the peer's certificate (DER) and waits for
 * JavaScript's verdict (its name, role and revocation are JavaScript's rules) before a byte of
 * plaintext moves. OpenSSL does its I/O through a BIO of the engine's own (`io_method`): its reads
 * are served from a buffer (`in`) that one read of raw fills with up to CAP bytes, and its records
 * are gathered into a buffer (`out`) that one write to raw takes up to CAP bytes of. So a system
 * call moves many records, and a byte of ciphertext is copied once in user space each way (memory
 * BIOs copied each byte twice or more and zeroed their buffers as they grew; OpenSSL's own
 * read-ahead moves what it holds to the front of its buffer on every record). A connection that
 * has not moved a byte for a second gives its buffers back.
 *
 * Half-close: EOF of plain → close_notify and shutdown(SHUT_WR) of raw once everything before it
 * is written; close_notify (or EOF) on raw → shutdown(SHUT_WR) of plain after the plaintext before
 * it. Done when both directions are closed (reason "eof"), on an error ("error", with OpenSSL's or
 * the system's words), the idle timeout ("idle"), abort or a refused verdict ("aborted"). The
 * engine closes its dups and reports on the event loop (uv_async); JavaScript then destroys the
 * sockets (with a reset after an error or abort).
 *
 * JavaScript API (see src/proxy/l4/tls-pump.ts):
 *   context(certPem, keyPem, caPem, alpn, ciphersuites) -> handle   (throws on bad PEM)
 *   start(ctx, rawFd, plainFd, server, servername, idleMs, first, session) -> [id, pairFd]
 *        plainFd -1: a socket pair is made, pairFd is JavaScript's end (else -1); first: a Buffer
 *        of plaintext to send before what plain sends (bytes Node had read from it), or null;
 *        session: a client's TLS session to resume (DER, what onSession gave or Node's TLS
 *        'session' event), or null
 *   verdict(id, ok)
 *   abort(id)
 *   setOnPeer((id, der, resumed) => void)
 *   setOnSession((id, der) => void)   a client's new session ticket (DER of the SSL_SESSION)
 *   setOnDone((id, reason, bytesUp, bytesDown, error) => void)   up: plain → raw (plaintext bytes)
 *   active() -> number
 *
 * Session resumption (TLS 1.3 tickets): a context's server side issues one ticket per handshake
 * (stateless, sealed with the context's own key, good for 300 s as Node's TLS server's are); its
 * client side reports each ticket it gets, and resumes the session `start` is given — no
 * certificates are exchanged then, an ECDHE is still made. The peer's certificate of a resumed
 * session is the one verified when the session began: it goes to JavaScript's verdict all the
 * same (`resumed` true), so a peer revoked since is refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include "common.h"
#include "engine_thread.h"
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define CAP (256 * 1024)      /* ciphertext read from raw at most per read; gathered before reading more plain */
#define UP_CHUNK (128 * 1024) /* plaintext read from plain per SSL_write */
#define DOWN_CAP (256 * 1024) /* plaintext decrypted before it is written to plain */
/* The first size of `in`, `out` and `down` (a handshake's flight): `in` and `down` grow to CAP
 * and DOWN_CAP once a stream fills them, `out` doubles as records come — a thousand streams that
 * carry little hold little (a pump connection costs 60-65 KiB of RSS in all, as with memory BIOs:
 * OpenSSL's state of the connection, its sockets, these buffers). */
#define FIRST_CAP (4 * 1024)
#define ROUNDS 64 /* steps of one connection per wake-up before the others get a turn */

enum { R_EOF = 0, R_ERROR, R_IDLE, R_ABORTED };
static const char *REASONS[] = {"eof", "error", "idle", "aborted"};
enum { S_HANDSHAKE = 0, S_VERDICT, S_PUMP };
enum { EV_PEER = 0, EV_DONE, EV_SESSION };
enum { RAW = 0, PLAIN = 1 };

struct tconn;
/* One socket of a connection in the epoll set: which one, and its connection. */
typedef struct {
  struct tconn *c;
  int which;
} side_t;

typedef struct tconn {
  uint32_t id;
  void *pump; /* its pump_t: a ticket's callback reports through it */
  int raw, plain; /* dups (plain: the engine's end of a pair) */
  SSL *ssl;
  int state;
  char *in; /* ciphertext read from raw: in_off..in_len not yet taken by OpenSSL */
  size_t in_off, in_len, in_cap;
  int in_full; /* the last read filled `in`: it grows to CAP before the next */
  char *out; /* records gathered for raw: out_off..out_len not yet written */
  size_t out_off, out_len, out_cap;
  const char *io_what; /* the engine's BIO failed (a read from raw, or memory): what, and errno */
  int io_errno;
  char *first; /* plaintext JavaScript had read from plain already: sent before the rest */
  size_t first_len;
  char *down; /* decrypted, not yet written to plain */
  size_t down_len, down_off, down_cap;
  int down_full; /* a pass of SSL_read filled `down`: it grows to DOWN_CAP before the next */
  int raw_eof, plain_eof, tls_eof;
  int sent_close, up_shut, down_shut;
  uint64_t bytes[2];
  int64_t idle_ms, last_ms;
  int aborted, verdict; /* verdict: 0 none yet, 1 go, -1 refused (set by the JS thread) */
  int again;            /* more to do after its rounds: stepped again before the next wait */
  /*
   * What each socket may do without blocking, as far as the engine knows: set by epoll
   * (edge-triggered), cleared by EAGAIN or a short read or write — a system call is made only on
   * a socket that may move bytes (each one costs; an EAGAIN costs as much as a read).
   */
  int rd[2], wr[2];
  /* The peer shut down its side (EPOLLRDHUP): a short read may have taken the last data and left
   * the EOF for the next one, with no event to come for it — read until EOF or EAGAIN. */
  int hup[2];
  side_t side[2];
  char error[200];
  struct tconn *prev, *next, *next_add;
} tconn_t;

typedef struct event {
  int kind;
  uint32_t id;
  int reason; /* EV_DONE: why; EV_PEER: the session was resumed */
  uint64_t bytes[2];
  unsigned char *der;
  int der_len;
  char error[200];
  struct event *next;
} event_t;

typedef struct {
  engine_thread_t t; /* the thread, its epoll set, the async to the JS thread */
  napi_env env;
  pthread_mutex_t mu;
  tconn_t *conns, *adds;
  uint32_t active, next_id;
  int commands; /* verdicts or aborts to look at */
  event_t *ev_head, *ev_tail;
  napi_ref on_peer, on_done, on_session;
  char *scratch; /* engine thread only: plaintext read from plain (UP_CHUNK) */
} pump_t;

static void push_event(pump_t *e, event_t *v) {
  pthread_mutex_lock(&e->mu);
  if (e->ev_tail) e->ev_tail->next = v;
  else e->ev_head = v;
  e->ev_tail = v;
  pthread_mutex_unlock(&e->mu);
  uv_async_send(&e->t.async);
}

static void free_conn(tconn_t *c) {
  if (c->raw >= 0) close(c->raw);
  if (c->plain >= 0) close(c->plain);
  if (c->ssl) SSL_free(c->ssl); /* frees its BIO */
  free(c->in);
  free(c->out);
  free(c->down);
  free(c->first);
  free(c);
}

/* Engine thread: unlink, close, report. */
static void finish(pump_t *e, tconn_t *c, int reason) {
  epoll_ctl(e->t.epfd, EPOLL_CTL_DEL, c->raw, NULL);
  epoll_ctl(e->t.epfd, EPOLL_CTL_DEL, c->plain, NULL);
  event_t *v = calloc(1, sizeof(event_t));
  pthread_mutex_lock(&e->mu);
  if (c->prev) c->prev->next = c->next;
  else e->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  e->active--;
  pthread_mutex_unlock(&e->mu);
  if (v) {
    v->kind = EV_DONE;
    v->id = c->id;
    v->reason = reason;
    v->bytes[0] = c->bytes[0];
    v->bytes[1] = c->bytes[1];
    memcpy(v->error, c->error, sizeof v->error);
  }
  free_conn(c);
  if (v) push_event(e, v);
}

/* The words of the last OpenSSL error (the verify result's, when the peer's chain failed). */
static void ssl_error(tconn_t *c, const char *what) {
  long vr = SSL_get_verify_result(c->ssl);
  unsigned long err = ERR_peek_last_error();
  char buf[160] = "";
  if (vr != X509_V_OK) snprintf(buf, sizeof buf, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
  else if (err) ERR_error_string_n(err, buf, sizeof buf);
  else snprintf(buf, sizeof buf, "%s", c->raw_eof ? "connection closed" : "protocol error");
  snprintf(c->error, sizeof c->error, "%s: %s", what, buf);
  ERR_clear_error();
}

static void sys_error(tconn_t *c, const char *what, int err) {
  snprintf(c->error, sizeof c->error, "%s: %s", what, strerror(err));
}

static void post_peer(pump_t *e, tconn_t *c) {
  event_t *v = calloc(1, sizeof(event_t));
  if (!v) return;
  v->kind = EV_PEER;
  v->id = c->id;
  v->reason = SSL_session_reused(c->ssl);
  X509 *peer = SSL_get1_peer_certificate(c->ssl);
  if (peer) {
    v->der_len = i2d_X509(peer, &v->der); /* allocates */
    if (v->der_len < 0) v->der_len = 0, v->der = NULL;
    X509_free(peer);
  }
  push_event(e, v);
}

/* Engine thread (inside SSL_read): a client's new session ticket, reported as the session's DER.
 * Returns 0: OpenSSL keeps no reference (JavaScript keeps the bytes). */
static int new_session(SSL *ssl, SSL_SESSION *sess) {
  tconn_t *c = SSL_get_app_data(ssl);
  if (!c || SSL_is_server(ssl) || !SSL_SESSION_is_resumable(sess)) return 0;
  event_t *v = calloc(1, sizeof(event_t));
  if (!v) return 0;
  v->kind = EV_SESSION;
  v->id = c->id;
  v->der_len = i2d_SSL_SESSION(sess, &v->der); /* allocates */
  if (v->der_len <= 0) {
    OPENSSL_free(v->der);
    free(v);
    return 0;
  }
  push_event(c->pump, v);
  return 0;
}

/*
 * The engine's BIO: OpenSSL's reads are served from `in`, refilled by one read of raw when empty
 * (only while epoll has not said raw is drained; its EOF and errors noted in the connection); its
 * writes are gathered into `out`.
 */
static BIO_METHOD *io_method;

/* The engine's BIO failed (`what`, errno `err`): said by tls_error. -1. */
static int io_fail(tconn_t *c, const char *what, int err) {
  c->io_what = what;
  c->io_errno = err;
  return -1;
}

/* `*buf` to `size` bytes, what it holds kept (realloc): 0, or -1 out of memory. */
static int resize(char **buf, size_t *cap, size_t size) {
  char *p = realloc(*buf, size);
  if (!p) return -1;
  *buf = p;
  *cap = size;
  return 0;
}

static int io_read(BIO *b, char *buf, int len) {
  tconn_t *c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  while (c->in_off == c->in_len) {
    if (c->raw_eof) return 0;
    if (!c->rd[RAW]) {
      BIO_set_retry_read(b);
      return -1;
    }
    if ((!c->in || (c->in_full && c->in_cap < CAP)) && resize(&c->in, &c->in_cap, c->in ? CAP : FIRST_CAP))
      return io_fail(c, "alloc", ENOMEM);
    ssize_t n = read(c->raw, c->in, c->in_cap);
    if (n > 0) {
      c->in_off = 0;
      c->in_len = (size_t)n;
      c->in_full = (size_t)n == c->in_cap;
      if (!c->in_full && !c->hup[RAW]) c->rd[RAW] = 0; /* drained: epoll says when more comes */
    } else if (n == 0) {
      c->raw_eof = 1;
    } else if (errno == EAGAIN) {
      c->rd[RAW] = 0;
    } else if (errno != EINTR) {
      return io_fail(c, "read from the tunnel", errno);
    }
  }
  size_t k = c->in_len - c->in_off;
  if (k > (size_t)len) k = (size_t)len;
  memcpy(buf, c->in + c->in_off, k);
  c->in_off += k;
  return (int)k;
}

static int io_write(BIO *b, const char *data, int len) {
  tconn_t *c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  if (c->out_len + (size_t)len > c->out_cap) {
    if (c->out_off > 0) { /* what was written makes room first */
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    size_t cap = c->out_cap ? c->out_cap : FIRST_CAP; /* doubled up to what a stream in bulk holds */
    while (cap < c->out_len + (size_t)len) cap *= 2;
    if (cap != c->out_cap && resize(&c->out, &c->out_cap, cap)) return io_fail(c, "alloc", ENOMEM);
  }
  memcpy(c->out + c->out_len, data, (size_t)len);
  c->out_len += (size_t)len;
  return len;
}

static long io_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  tconn_t *c = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1; /* written by the engine's step */
  case BIO_CTRL_PENDING:
    return c ? (long)(c->in_len - c->in_off) : 0;
  case BIO_CTRL_WPENDING:
    return c ? (long)(c->out_len - c->out_off) : 0;
  case BIO_CTRL_EOF:
    return c ? c->raw_eof : 0;
  default:
    return 0;
  }
}

static int io_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static size_t out_pending(const tconn_t *c) { return c->out_len - c->out_off; }

/* Write the gathered records to raw, up to CAP bytes a call. -1 on error. */
static int flush_wire(tconn_t *c, int *progress) {
  while (c->wr[RAW] && out_pending(c) > 0) {
    size_t avail = out_pending(c);
    if (avail > CAP) avail = CAP;
    ssize_t n = write(c->raw, c->out + c->out_off, avail);
    if (n > 0) {
      c->out_off += (size_t)n;
      if ((size_t)n < avail) c->wr[RAW] = 0;
      *progress = 1;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      c->wr[RAW] = 0;
      break;
    }
    sys_error(c, "write to the tunnel", n < 0 ? errno : EIO);
    return -1;
  }
  if (out_pending(c) == 0) c->out_off = c->out_len = 0;
  return 0;
}

/* A connection quiet for a second: its empty buffers back to the allocator. */
static void release_buffers(tconn_t *c) {
  if (c->in && c->in_off == c->in_len) {
    free(c->in);
    c->in = NULL;
    c->in_off = c->in_len = c->in_cap = 0;
    c->in_full = 0;
  }
  if (c->out && out_pending(c) == 0) {
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = c->out_cap = 0;
  }
  if (c->down && c->down_len == 0) {
    free(c->down);
    c->down = NULL;
    c->down_cap = 0;
    c->down_full = 0;
  }
}

/* A failed TLS call: the system's words when the engine's BIO failed, else OpenSSL's. */
static void tls_error(tconn_t *c, const char *what) {
  if (c->io_errno) sys_error(c, c->io_what, c->io_errno);
  else ssl_error(c, what);
}

/* Move what can move without blocking. -1: error, 1: done, 0: waits for the sockets (or a verdict). */
static int step(pump_t *e, tconn_t *c) {
  for (int round = 0; round < ROUNDS; round++) {
    int progress = 0;
    if (c->state == S_HANDSHAKE) {
      ERR_clear_error();
      int r = SSL_do_handshake(c->ssl);
      if (r == 1) {
        c->state = S_VERDICT;
        post_peer(e, c);
        progress = 1;
      } else {
        int err = SSL_get_error(c->ssl, r);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
          tls_error(c, "TLS handshake"); /* an EOF: "connection closed" */
          int ignored = 0;
          flush_wire(c, &ignored); /* the alert, if any */
          return -1;
        }
      }
    } else if (c->state == S_PUMP) {
      /* down: records → plaintext → plain */
      if ((!c->down || (c->down_full && c->down_cap < DOWN_CAP)) &&
          resize(&c->down, &c->down_cap, c->down ? DOWN_CAP : FIRST_CAP)) {
        sys_error(c, "alloc", ENOMEM);
        return -1;
      }
      while (!c->tls_eof && c->down_len < c->down_cap) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->down + c->down_len, (int)(c->down_cap - c->down_len));
        if (r > 0) {
          c->down_len += (size_t)r;
          progress = 1;
          continue;
        }
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_ZERO_RETURN) {
          c->tls_eof = 1; /* close_notify; or a FIN without one (ignored unexpected EOF), as Node's TLS takes it */
          progress = 1;
        } else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
          tls_error(c, "TLS read");
          return -1;
        }
        break;
      }
      if (c->down_len == c->down_cap) c->down_full = 1;
      while (c->down_off < c->down_len && c->wr[PLAIN]) {
        size_t want = c->down_len - c->down_off;
        ssize_t n = write(c->plain, c->down + c->down_off, want);
        if (n > 0) {
          c->down_off += (size_t)n;
          c->bytes[1] += (uint64_t)n;
          if ((size_t)n < want) c->wr[PLAIN] = 0; /* full: epoll says when it drains */
          progress = 1;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
          c->wr[PLAIN] = 0;
          break;
        }
        sys_error(c, "write to the plain side", n < 0 ? errno : EIO);
        return -1;
      }
      if (c->down_off == c->down_len) c->down_off = c->down_len = 0;
      if (c->tls_eof && c->down_len == 0 && !c->down_shut) {
        shutdown(c->plain, SHUT_WR);
        c->down_shut = 1;
        progress = 1;
      }
      /* up: plain → records (what JavaScript held of it first) */
      if (c->first) {
        ERR_clear_error();
        if (SSL_write(c->ssl, c->first, (int)c->first_len) != (int)c->first_len) {
          tls_error(c, "TLS write");
          return -1;
        }
        c->bytes[0] += c->first_len;
        free(c->first);
        c->first = NULL;
        progress = 1;
      }
      while (!c->plain_eof && c->rd[PLAIN] && out_pending(c) < CAP) {
        ssize_t n = read(c->plain, e->scratch, UP_CHUNK);
        if (n > 0) {
          ERR_clear_error();
          if (SSL_write(c->ssl, e->scratch, (int)n) != (int)n) { /* gathered in memory: all or an error */
            tls_error(c, "TLS write");
            return -1;
          }
          c->bytes[0] += (uint64_t)n;
          if (n < UP_CHUNK && !c->hup[PLAIN]) c->rd[PLAIN] = 0;
          progress = 1;
          continue;
        }
        if (n == 0) {
          c->plain_eof = 1;
          progress = 1;
          break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          c->rd[PLAIN] = 0;
          break;
        }
        sys_error(c, "read from the plain side", errno);
        return -1;
      }
      if (c->plain_eof && !c->sent_close) {
        SSL_shutdown(c->ssl); /* close_notify; reading goes on (a half-close) */
        c->sent_close = 1;
        progress = 1;
      }
    }
    if (flush_wire(c, &progress) < 0) return -1;
    if (c->sent_close && !c->up_shut && out_pending(c) == 0) {
      shutdown(c->raw, SHUT_WR);
      c->up_shut = 1;
    }
    if (c->up_shut && c->down_shut) return 1;
    if (!progress) return 0;
  }
  c->again = 1;
  return 0;
}

/* Step a connection; 1 when it is still there with work left (`again`). */
static int run(pump_t *e, tconn_t *c, int64_t now) {
  c->again = 0;
  c->last_ms = now;
  int r = step(e, c);
  if (r != 0) {
    finish(e, c, r < 0 ? R_ERROR : R_EOF);
    return 0;
  }
  return c->again;
}

static int register_conn(pump_t *e, tconn_t *c, int64_t now) {
  pthread_mutex_lock(&e->mu);
  c->next = e->conns;
  c->prev = NULL;
  if (e->conns) e->conns->prev = c;
  e->conns = c;
  pthread_mutex_unlock(&e->mu);
  c->last_ms = now;
  for (int i = 0; i < 2; i++) {
    c->side[i].c = c;
    c->side[i].which = i;
    c->rd[i] = c->wr[i] = 1; /* until a call says otherwise */
  }
  struct epoll_event ev_raw = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &c->side[RAW]};
  struct epoll_event ev_plain = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &c->side[PLAIN]};
  if (epoll_ctl(e->t.epfd, EPOLL_CTL_ADD, c->raw, &ev_raw) < 0 ||
      epoll_ctl(e->t.epfd, EPOLL_CTL_ADD, c->plain, &ev_plain) < 0) {
    sys_error(c, "epoll", errno);
    finish(e, c, R_ERROR);
    return 0;
  }
  return run(e, c, now); /* a client's ClientHello */
}

static side_t skip; /* an event of a connection already stepped in this batch */

static void *engine_main(void *arg) {
  pump_t *e = arg;
  struct epoll_event evs[256];
  int64_t last_scan = engine_now_ms();
  int again = 0;
  while (!e->t.stopping) {
    int n = epoll_wait(e->t.epfd, evs, 256, again ? 0 : 1000);
    int64_t now = engine_now_ms();
    int woken = 0;
    again = 0;
    /* first what each socket may do, then each connection stepped once */
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        woken = 1;
        continue;
      }
      side_t *sd = evs[i].data.ptr;
      uint32_t ev = evs[i].events;
      if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) sd->c->rd[sd->which] = 1;
      if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) sd->c->hup[sd->which] = 1;
      if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) sd->c->wr[sd->which] = 1;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL || evs[i].data.ptr == &skip) continue;
      tconn_t *c = ((side_t *)evs[i].data.ptr)->c;
      /* a connection can be in a batch twice (raw and plain): one step does the work */
      for (int j = i + 1; j < n; j++)
        if (evs[j].data.ptr != NULL && evs[j].data.ptr != &skip && ((side_t *)evs[j].data.ptr)->c == c)
          evs[j].data.ptr = &skip;
      if (!c->aborted && run(e, c, now)) again = 1;
    }
    if (woken) {
      engine_woken(&e->t);
      pthread_mutex_lock(&e->mu);
      tconn_t *a = e->adds;
      e->adds = NULL;
      pthread_mutex_unlock(&e->mu);
      tconn_t *oldest = NULL; /* the list is newest first */
      while (a) {
        tconn_t *next = a->next_add;
        a->next_add = oldest;
        oldest = a;
        a = next;
      }
      while (oldest) {
        tconn_t *next = oldest->next_add;
        if (register_conn(e, oldest, now)) again = 1;
        oldest = next;
      }
    }
    /* verdicts and aborts when asked, idle connections once a second, the unfinished at once */
    int scan = now - last_scan >= 1000;
    if (scan) last_scan = now;
    pthread_mutex_lock(&e->mu);
    int commands = e->commands;
    e->commands = 0;
    tconn_t *c = e->conns;
    pthread_mutex_unlock(&e->mu);
    if (!commands && !scan && !again) continue;
    again = 0;
    while (c) {
      pthread_mutex_lock(&e->mu);
      tconn_t *next = c->next;
      int aborted = c->aborted, verdict = c->verdict;
      pthread_mutex_unlock(&e->mu);
      if (aborted || verdict < 0) {
        if (!aborted && !c->error[0]) snprintf(c->error, sizeof c->error, "refused");
        finish(e, c, R_ABORTED);
      } else if (c->state == S_VERDICT && verdict > 0) {
        c->state = S_PUMP;
        if (run(e, c, now)) again = 1;
      } else if (c->again) {
        if (run(e, c, now)) again = 1;
      } else if (scan && c->idle_ms > 0 && now - c->last_ms >= c->idle_ms) {
        finish(e, c, R_IDLE);
      } else if (scan && now - c->last_ms >= 1000) {
        release_buffers(c);
      }
      c = next;
    }
  }
  return NULL;
}

/* JS thread: peer certificates and finished connections. */
static void on_async(uv_async_t *a) {
  pump_t *e = a->data;
  pthread_mutex_lock(&e->mu);
  event_t *v = e->ev_head;
  e->ev_head = e->ev_tail = NULL;
  uint32_t active = e->active;
  pthread_mutex_unlock(&e->mu);
  engine_release_loop(&e->t, active);
  napi_env env = e->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value on_peer = NULL, on_done = NULL, on_session = NULL;
  if (e->on_peer) napi_get_reference_value(env, e->on_peer, &on_peer);
  if (e->on_done) napi_get_reference_value(env, e->on_done, &on_done);
  if (e->on_session) napi_get_reference_value(env, e->on_session, &on_session);
  while (v) {
    event_t *next = v->next;
    napi_value argv[5];
    napi_value cb = v->kind == EV_PEER ? on_peer : v->kind == EV_SESSION ? on_session : on_done;
    size_t argc = 0;
    napi_create_uint32(env, v->id, &argv[0]);
    if (v->kind == EV_PEER || v->kind == EV_SESSION) {
      void *data;
      napi_create_buffer_copy(env, (size_t)v->der_len, v->der ? (void *)v->der : (void *)"", &data, &argv[1]);
      argc = 2;
      if (v->kind == EV_PEER) napi_get_boolean(env, v->reason != 0, &argv[argc++]);
    } else {
      napi_create_string_utf8(env, REASONS[v->reason], NAPI_AUTO_LENGTH, &argv[1]);
      napi_create_double(env, (double)v->bytes[0], &argv[2]);
      napi_create_double(env, (double)v->bytes[1], &argv[3]);
      napi_create_string_utf8(env, v->error, NAPI_AUTO_LENGTH, &argv[4]);
      argc = 5;
    }
    if (cb) engine_call_js(env, cb, argc, argv);
    if (v->der) OPENSSL_free(v->der);
    free(v);
    v = next;
  }
  napi_close_handle_scope(env, scope);
}

static void on_async_closed(uv_handle_t *h) {
  pump_t *e = h->data;
  free(e->scratch);
  free(e);
}

static void pump_cleanup(void *arg) {
  pump_t *e = arg;
  if (!e->t.started) {
    free(e);
    return;
  }
  engine_stop(&e->t);
  for (tconn_t *c = e->conns, *next; c; c = next) {
    next = c->next;
    free_conn(c);
  }
  for (tconn_t *c = e->adds, *next; c; c = next) {
    next = c->next_add;
    free_conn(c);
  }
  for (event_t *v = e->ev_head, *next; v; v = next) {
    next = v->next;
    if (v->der) OPENSSL_free(v->der);
    free(v);
  }
  if (e->on_peer) napi_delete_reference(e->env, e->on_peer);
  if (e->on_done) napi_delete_reference(e->env, e->on_done);
  if (e->on_session) napi_delete_reference(e->env, e->on_session);
  uv_close((uv_handle_t *)&e->t.async, on_async_closed);
}

static pump_t *pump_of(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  void *data = NULL;
  napi_get_cb_info(env, info, argc, argv, NULL, &data);
  return data;
}

static napi_value throw_tls(napi_env env, const char *what, const char *why) {
  char msg[300];
  snprintf(msg, sizeof msg, "TLS pump: %s: %s", what, why);
  napi_throw_error(env, "EDGEMESH_TLS_PUMP", msg);
  return NULL;
}

static void make_io_method(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "edgemesh TLS pump");
  if (m && BIO_meth_set_read(m, io_read) && BIO_meth_set_write(m, io_write) && BIO_meth_set_ctrl(m, io_ctrl) &&
      BIO_meth_set_create(m, io_create))
    io_method = m; /* for the life of the process, shared by every pump (and worker thread) */
  else
    BIO_meth_free(m);
}

/* The engine thread, its scratch buffer and the engine's BIO method, on first use. */
static int ensure_started(napi_env env, pump_t *e) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_io_method);
  if (!io_method) return ENOMEM;
  if (!e->scratch) e->scratch = malloc(UP_CHUNK);
  if (!e->scratch) return ENOMEM;
  return engine_start(env, &e->t, engine_main, on_async, e);
}

/* A string argument into buf (truncated to its size). */
static int string_arg(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  return napi_get_value_string_utf8(env, v, buf, size, &len) == napi_ok ? 0 : -1;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  const unsigned char *want = arg; /* length-prefixed, one protocol */
  if (SSL_select_next_proto((unsigned char **)out, outlen, want, want[0] + 1u, in, inlen) == OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_OK;
  return SSL_TLSEXT_ERR_ALERT_FATAL; /* as Node's server does when no protocol matches */
}

/* The context's ALPN protocol (length-prefixed), freed with the context — which lives on while
 * a connection made with it does (SSL_new takes a reference). */
static int alpn_index = -1;
static void alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
  free(ptr);
}

static void ctx_finalize(napi_env env, void *data, void *hint) {
  SSL_CTX_free(data);
}

static napi_value js_context(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], out;
  pump_of(env, info, &argc, argv);
  void *cert, *key, *ca;
  size_t cert_len, key_len, ca_len;
  char alpn[64], suites[256];
  if (argc < 5 || napi_get_buffer_info(env, argv[0], &cert, &cert_len) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &key, &key_len) != napi_ok ||
      napi_get_buffer_info(env, argv[2], &ca, &ca_len) != napi_ok || string_arg(env, argv[3], alpn, sizeof alpn) ||
      string_arg(env, argv[4], suites, sizeof suites) || !alpn[0]) {
    napi_throw_type_error(env, "EDGEMESH_TLS_PUMP", "tls.context(certPem, keyPem, caPem, alpn, ciphersuites)");
    return NULL;
  }
  if (alpn_index < 0) alpn_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_free);
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (!ctx || alpn_index < 0) return throw_tls(env, "context", "SSL_CTX_new failed");
  const char *failed = NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (!SSL_CTX_set_ciphersuites(ctx, suites)) failed = "ciphersuites";
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF); /* a FIN without close_notify: an EOF */
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  /* resumption: one stateless ticket per handshake as a server (a server that verifies its
   * peers resumes only sessions of its own context id), each ticket a client gets reported */
  static const unsigned char SID_CTX[] = "edgetunnel-spliced";
  SSL_CTX_set_session_id_context(ctx, SID_CTX, sizeof SID_CTX - 1);
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_timeout(ctx, 300);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, new_session);
  BIO *b = BIO_new_mem_buf(cert, (int)cert_len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  if (!failed && (!x || SSL_CTX_use_certificate(ctx, x) != 1)) failed = "certificate";
  X509_free(x);
  while (!failed && b && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) /* its chain */
    if (SSL_CTX_add0_chain_cert(ctx, x) != 1) X509_free(x), failed = "certificate chain";
  BIO_free(b);
  b = BIO_new_mem_buf(key, (int)key_len);
  EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  if (!failed && (!k || SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1))
    failed = "private key";
  EVP_PKEY_free(k);
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  b = BIO_new_mem_buf(ca, (int)ca_len);
  int cas = 0;
  while (!failed && b && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, x) == 1) cas++;
    X509_free(x);
  }
  BIO_free(b);
  if (!failed && cas == 0) failed = "CA";
  ERR_clear_error();
  size_t alen = strlen(alpn);
  unsigned char *wire = malloc(alen + 1);
  if (!failed && (!wire || alen > 255)) failed = "ALPN";
  if (failed) {
    free(wire);
    SSL_CTX_free(ctx);
    return throw_tls(env, failed, "not usable");
  }
  wire[0] = (unsigned char)alen;
  memcpy(wire + 1, alpn, alen);
  SSL_CTX_set_ex_data(ctx, alpn_index, wire);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, wire);
  napi_create_external(env, ctx, ctx_finalize, NULL, &out);
  return out;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8], out, v;
  pump_t *e = pump_of(env, info, &argc, argv);
  void *ctxp = NULL;
  int32_t rawfd, plainfd;
  bool server;
  double idle;
  char servername[256] = "";
  if (argc < 6 || napi_get_value_external(env, argv[0], &ctxp) != napi_ok || !ctxp ||
      napi_get_value_int32(env, argv[1], &rawfd) != napi_ok || napi_get_value_int32(env, argv[2], &plainfd) != napi_ok ||
      napi_get_value_bool(env, argv[3], &server) != napi_ok || string_arg(env, argv[4], servername, sizeof servername) ||
      napi_get_value_double(env, argv[5], &idle) != napi_ok || rawfd < 0) {
    napi_throw_type_error(env, "EDGEMESH_TLS_PUMP",
                          "tls.start(ctx, rawFd, plainFd, server, servername, idleMs, first, session)");
    return NULL;
  }
  void *first = NULL;
  size_t first_len = 0;
  bool is_buffer = false;
  if (argc > 6) napi_is_buffer(env, argv[6], &is_buffer);
  if (is_buffer) napi_get_buffer_info(env, argv[6], &first, &first_len);
  void *sess_der = NULL;
  size_t sess_len = 0;
  is_buffer = false;
  if (argc > 7) napi_is_buffer(env, argv[7], &is_buffer);
  if (is_buffer) napi_get_buffer_info(env, argv[7], &sess_der, &sess_len);
  SSL_CTX *ctx = ctxp;
  int err = ensure_started(env, e);
  if (err) return throw_tls(env, "start", strerror(err));
  tconn_t *c = calloc(1, sizeof(tconn_t));
  if (!c) return throw_tls(env, "start", strerror(ENOMEM));
  c->raw = c->plain = -1;
  int js_end = -1;
  c->raw = fcntl(rawfd, F_DUPFD_CLOEXEC, 0);
  if (plainfd >= 0) {
    c->plain = fcntl(plainfd, F_DUPFD_CLOEXEC, 0);
  } else {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0) {
      c->plain = sv[0];
      js_end = sv[1];
    }
  }
  if (c->raw < 0 || c->plain < 0) {
    int en = errno;
    free_conn(c);
    return throw_tls(env, "dup/socketpair", strerror(en));
  }
  fcntl(c->raw, F_SETFL, fcntl(c->raw, F_GETFL) | O_NONBLOCK);
  fcntl(c->plain, F_SETFL, fcntl(c->plain, F_GETFL) | O_NONBLOCK);
  c->ssl = SSL_new(ctx);
  BIO *bio = c->ssl ? BIO_new(io_method) : NULL;
  if (!bio) {
    free_conn(c);
    if (js_end >= 0) close(js_end);
    return throw_tls(env, "start", "SSL_new failed");
  }
  BIO_set_data(bio, c);
  SSL_set_bio(c->ssl, bio, bio); /* one BIO both ways: SSL_free frees it */
  SSL_set_app_data(c->ssl, c);
  c->pump = e;
  if (server) {
    SSL_set_accept_state(c->ssl);
  } else {
    SSL_set_connect_state(c->ssl);
    if (servername[0]) SSL_set_tlsext_host_name(c->ssl, servername);
    const unsigned char *wire = SSL_CTX_get_ex_data(ctx, alpn_index);
    SSL_set_alpn_protos(c->ssl, wire, wire[0] + 1u);
    if (sess_len > 0) {
      /* a session that does not parse or fit is no session: a full handshake */
      const unsigned char *p = sess_der;
      SSL_SESSION *sess = d2i_SSL_SESSION(NULL, &p, (long)sess_len);
      if (sess) {
        SSL_set_session(c->ssl, sess); /* takes its own reference */
        SSL_SESSION_free(sess);
      }
      ERR_clear_error();
    }
  }
  c->idle_ms = (int64_t)idle;
  if (first_len > 0) {
    c->first = malloc(first_len);
    if (!c->first) {
      free_conn(c);
      if (js_end >= 0) close(js_end);
      return throw_tls(env, "start", strerror(ENOMEM));
    }
    memcpy(c->first, first, first_len);
    c->first_len = first_len;
  }
  pthread_mutex_lock(&e->mu);
  c->id = ++e->next_id;
  c->next_add = e->adds;
  e->adds = c;
  e->active++;
  uint32_t id = c->id;
  pthread_mutex_unlock(&e->mu);
  engine_hold_loop(&e->t); /* the loop stays alive while connections are in the engine */
  engine_wake(&e->t);
  napi_create_array_with_length(env, 2, &out);
  napi_create_uint32(env, id, &v);
  napi_set_element(env, out, 0, v);
  napi_create_int32(env, js_end, &v);
  napi_set_element(env, out, 1, v);
  return out;
}

/* Mark connection `id` (verdict or abort) and wake the engine. */
static int command(pump_t *e, uint32_t id, int verdict, int abort) {
  int found = 0;
  if (!e->t.started) return 0;
  pthread_mutex_lock(&e->mu);
  for (int list = 0; list < 2 && !found; list++)
    for (tconn_t *c = list ? e->adds : e->conns; c; c = list ? c->next_add : c->next)
      if (c->id == id) {
        if (abort) c->aborted = 1;
        else if (!c->verdict) c->verdict = verdict;
        found = 1;
        break;
      }
  if (found) e->commands++;
  pthread_mutex_unlock(&e->mu);
  if (found) engine_wake(&e->t);
  return found;
}

static napi_value js_verdict(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  pump_t *e = pump_of(env, info, &argc, argv);
  uint32_t id;
  bool ok;
  if (argc < 2 || napi_get_value_uint32(env, argv[0], &id) != napi_ok || napi_get_value_bool(env, argv[1], &ok) != napi_ok) {
    napi_throw_type_error(env, "EDGEMESH_TLS_PUMP", "tls.verdict(id, ok)");
    return NULL;
  }
  napi_get_boolean(env, command(e, id, ok ? 1 : -1, 0), &out);
  return out;
}

static napi_value js_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  pump_t *e = pump_of(env, info, &argc, argv);
  uint32_t id;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) {
    napi_throw_type_error(env, "EDGEMESH_TLS_PUMP", "tls.abort(id)");
    return NULL;
  }
  napi_get_boolean(env, command(e, id, 0, 1), &out);
  return out;
}

static napi_value set_cb(napi_env env, napi_callback_info info, int which) {
  size_t argc = 1;
  napi_value argv[1];
  pump_t *e = pump_of(env, info, &argc, argv);
  napi_ref *r = which == 2 ? &e->on_session : which ? &e->on_done : &e->on_peer;
  if (*r) napi_delete_reference(env, *r);
  napi_create_reference(env, argv[0], 1, r);
  return NULL;
}
static napi_value js_set_on_peer(napi_env env, napi_callback_info info) { return set_cb(env, info, 0); }
static napi_value js_set_on_done(napi_env env, napi_callback_info info) { return set_cb(env, info, 1); }
static napi_value js_set_on_session(napi_env env, napi_callback_info info) { return set_cb(env, info, 2); }

static napi_value js_active(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  pump_t *e = pump_of(env, info, &argc, NULL);
  napi_value out;
  pthread_mutex_lock(&e->mu);
  uint32_t n = e->active;
  pthread_mutex_unlock(&e->mu);
  napi_create_uint32(env, n, &out);
  return out;
}

napi_value tls_pump_init(napi_env env, napi_value exports) {
  pump_t *e = calloc(1, sizeof(pump_t));
  pthread_mutex_init(&e->mu, NULL);
  e->env = env;
  napi_add_env_cleanup_hook(env, pump_cleanup, e);
  napi_property_descriptor props[] = {
      {"context", NULL, js_context, NULL, NULL, NULL, napi_default, e},
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, e},
      {"verdict", NULL, js_verdict, NULL, NULL, NULL, napi_default, e},
      {"abort", NULL, js_abort, NULL, NULL, NULL, napi_default, e},
      {"setOnPeer", NULL, js_set_on_peer, NULL, NULL, NULL, napi_default, e},
      {"setOnDone", NULL, js_set_on_done, NULL, NULL, NULL, napi_default, e},
      {"setOnSession", NULL, js_set_on_session, NULL, NULL, NULL, napi_default, e},
      {"active", NULL, js_active, NULL, NULL, NULL, napi_default, e},
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}
