/* Exchanges: a request from its head to the end of its answer, bytes moved both ways. */

/* An answer of ours (its bytes made by JavaScript's rulebook) goes out; then the connection
 * closes unless `keep`. */
static void respond(client_t *c, const char *bytes, size_t n, int keep) {
  ob_put(&c->out, bytes, n);
  c->close_after = !keep;
  c->state = C_RESPOND;
  timer_unlink(&c->ev.t);
}

/* upstream connections */

static up_t *up_connect(engine_t *e, int backend, int *err) {
  backend_t *b = &e->backends[backend];
  int fd = socket(b->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return NULL;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int r = connect(fd, (struct sockaddr *)&b->addr.sa, b->addr.salen);
  if (r < 0 && errno != EINPROGRESS) {
    *err = errno;
    close(fd);
    return NULL;
  }
  up_t *u = calloc(1, sizeof(up_t));
  if (!u) {
    *err = ENOMEM;
    close(fd);
    return NULL;
  }
  u->ev.type = EV_UP;
  u->ev.fd = fd;
  u->ev.e = e;
  u->ev.t.kind = -1;
  u->backend = backend;
  u->connecting = r < 0;
  u->wr_ready = r == 0;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = u};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    *err = errno;
    close(fd);
    free(u);
    return NULL;
  }
  u->next = e->ups;
  if (e->ups) e->ups->prev = u;
  e->ups = u;
  e->nups++;
  if (u->connecting) timer_set(e, &u->ev.t, T_CONNECT);
  return u;
}

/* The upstream is attached and connected: start the exchange. */
static void exchange_begin(client_t *c) {
  engine_t *e = c->ev.e;
  if (!c->head_consumed) {
    c->in.start += c->head_len;
    c->head_consumed = 1;
  }
  c->state = C_FWD;
  c->rstate = R_HEAD;
  c->sent_any = 0;
  c->uout.off = 0;
  timer_set(e, &c->up->ev.t, T_RESPONSE);
}

/* The request goes to `backend`: a pooled connection of it, or (`fresh`, or none idle) a new one. */
static void attach(client_t *c, int backend, int fresh) {
  engine_t *e = c->ev.e;
  backend_t *b = &e->backends[backend];
  c->backend = backend;
  up_t *u = fresh ? NULL : b->idle;
  if (u) {
    pool_unlink(e, u);
    u->reused = 1;
    u->c = c;
    c->up = u;
    exchange_begin(c);
    return;
  }
  int err = 0;
  u = up_connect(e, backend, &err);
  if (!u) return decide(c, D_CONNECT_FAILED, backend, errname(err), 0, NULL, 0);
  u->c = c;
  c->up = u;
  if (u->connecting) {
    c->state = C_CONNECT;
    timer_unlink(&c->ev.t);
  } else
    exchange_begin(c);
}

/*
 * An event of the current request, decided by JavaScript's rulebook (src/proxy/http/policy.ts,
 * through native-engine.ts): `backend` failed (connect, or closed before its answer) or timed out,
 * or none yet (a pick). The answer: a backend, the same backend on a fresh connection, the
 * connection handed back (a first pick only), or the bytes of our answer and whether the
 * connection goes on after it.
 */
static void decide(client_t *c, int event, int backend, const char *reason, int flags, const char *hash,
                   uint32_t hash_len) {
  engine_t *e = c->ev.e;
  napi_env env = e->env;
  napi_value argv[8], res;
  /* after our answer a request whose body is still (partly) unread cannot keep its connection;
   * nor can a client that asked for close, nor one whose exchange failed midway */
  int can_keep = event <= D_STALE && (!c->has_body || c->req_done) && c->keep;
  flags |= (c->idempotent ? F_IDEMPOTENT : 0) | (can_keep ? F_CAN_KEEP : 0);
  napi_create_uint32(env, c->id, &argv[0]);
  napi_create_int32(env, event, &argv[1]);
  napi_create_int32(env, backend, &argv[2]);
  if (reason) napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &argv[3]);
  else napi_get_undefined(env, &argv[3]);
  napi_create_int32(env, flags, &argv[4]);
  if (hash) napi_create_string_latin1(env, hash, hash_len, &argv[5]);
  else napi_get_undefined(env, &argv[5]);
  napi_create_uint32(env, e->done_n, &argv[6]); /* ended requests JavaScript takes first */
  e->done_n = 0;
  if (event == D_PICK && c->auth_len && !c->head_consumed) /* forward proxy: the request's authority */
    napi_create_string_latin1(env, c->in.p + c->in.start + c->auth_off, c->auth_len, &argv[7]);
  else
    napi_get_undefined(env, &argv[7]);
  c->backend = -1;
  if (js_failed(e, js_call(e, e->cb_decide, 8, argv, &res)) || c->ev.dead) {
    if (!c->ev.dead) client_close(c);
    return;
  }
  napi_valuetype t;
  napi_typeof(env, res, &t);
  if (t == napi_number) {
    int32_t id = PICK_HANDBACK;
    napi_get_value_int32(env, res, &id);
    int fresh = id == PICK_FRESH && backend >= 0;
    if (fresh) id = backend;
    if (id >= 0 && (uint32_t)id < e->nbackends && e->backends[id].addr.set) return attach(c, id, fresh);
    if (event == D_PICK && id == PICK_HANDBACK && !c->body_sent) return handback(c);
    return client_close(c);
  }
  /* [bytes, keep] */
  napi_value v;
  void *bytes = NULL;
  size_t n = 0;
  bool keep = false;
  if (napi_get_element(env, res, 0, &v) != napi_ok || napi_get_buffer_info(env, v, &bytes, &n) != napi_ok)
    return client_close(c);
  if (napi_get_element(env, res, 1, &v) == napi_ok) napi_get_value_bool(env, v, &keep);
  if (event != D_HEAD_TIMEOUT && !c->head_consumed) { /* the head is answered */
    c->in.start += c->head_len;
    c->head_consumed = 1;
  }
  respond(c, bytes, n, keep && can_keep);
}

/* ------------------------------------------------------------------------------------------ */
/* the request path */

/* Read from the client into c->in (allocated on first use). */
static int client_read(client_t *c) {
  engine_t *e = c->ev.e;
  if (!c->rd_ready || c->eof) return c->eof ? -1 : 0;
  uint32_t cap = e->max_head + 4096 > MIN_CLIENT_BUF ? e->max_head + 4096 : MIN_CLIENT_BUF;
  if (buf_ensure(&c->in, cap) < 0) return -2;
  return sock_read(c->ev.fd, &c->in, c->hup, &c->rd_ready, &c->eof);
}

static void head_step(client_t *c) {
  engine_t *e = c->ev.e;
  for (;;) {
    uint32_t avail = c->in.p ? buf_len(&c->in) : 0;
    if (avail) {
      if (c->ev.t.kind != T_HEAD) timer_set(e, &c->ev.t, T_HEAD); /* a head has started */
      uint32_t end = find_head_end(c);
      if (end) {
        c->scan = 0;
        if (end > e->max_head) return handback(c); /* 431 from JavaScript; bare LFs: normalized there */
        c->head_len = end;
        hinfo_t hi;
        const char *hv = NULL;
        uint32_t hvl = 0;
        int r = parse_request(c, &hi, &hv, &hvl);
        if (r != 0) return r > 0 ? handback(c) : client_close(c);
        c->body_sent = 0;
        c->head_consumed = 0;
        c->req_done = !c->has_body;
        timer_unlink(&c->ev.t);
        decide(c, D_PICK, -1, NULL, 0, hv, hvl);
        return;
      }
      if (avail > e->max_head) return handback(c);
    }
    if (c->eof) {
      if (avail == 0) {
        if (c->in.p) buf_free(&c->in);
        return client_linger(c); /* the client is done: our FIN, then close */
      }
      return handback(c); /* "closed inside the request head" → 400 from JavaScript */
    }
    int r = client_read(c);
    if (r == -2) return client_close(c);
    if (r == 0) {
      if (avail == 0 && c->in.p && !c->rd_ready && e->nclients > KEEP_BUFFERS) {
        buf_free(&c->in); /* idle keep-alive connections hold no buffer */
        c->scan = 0;
      }
      return;
    }
  }
}

/* Write c->out then `extra`; returns 0, or -1 when the client is gone. */
static int client_write(client_t *c, const char *extra, uint32_t n, uint32_t *wrote_extra) {
  *wrote_extra = 0;
  if (!c->wr_ready) return 0;
  struct iovec iov[2];
  int cnt = 0;
  uint32_t pend = ob_pending(&c->out);
  if (pend) iov[cnt++] = (struct iovec){c->out.p + c->out.off, pend};
  if (n) iov[cnt++] = (struct iovec){(void *)extra, n};
  if (!cnt) return 0;
  ssize_t w = writev(c->ev.fd, iov, cnt);
  if (w < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      c->wr_ready = 0;
      return 0;
    }
    return -1;
  }
  uint32_t total = pend + n;
  if ((uint32_t)w < total) c->wr_ready = 0;
  if ((uint32_t)w >= pend) {
    ob_reset(&c->out);
    *wrote_extra = (uint32_t)w - pend;
  } else
    c->out.off += (uint32_t)w;
  if ((uint32_t)w > 0) c->sent_any = 1;
  return 0;
}

/* The exchange ends without an answer of ours (half a response was sent, or a side is gone): both
 * connections close; `status` is what the request counts as (0: aborted). */
static void exchange_abort(client_t *c, int status) {
  engine_t *e = c->ev.e;
  int b = c->backend;
  if (c->up) up_close(e, c->up);
  c->up = NULL;
  c->backend = -1;
  if (b >= 0) js_done(e, c, b, c->rstate == R_BODY ? 0 : status);
  if (!c->ev.dead) client_close(c);
}

/* The exchange ends in an answer of ours (`event`: D_TIMEOUT, D_MALFORMED, D_BAD_BODY), unless a
 * response is half sent already. */
static void exchange_fail(client_t *c, int event) {
  engine_t *e = c->ev.e;
  if (c->rstate == R_BODY) return exchange_abort(c, 0);
  int b = c->backend;
  if (c->up) up_close(e, c->up);
  c->up = NULL;
  decide(c, event, b, NULL, 0, NULL, 0);
}

/* The upstream closed (or failed) before its response head; `why`: closed, reset. */
static void upstream_stale(client_t *c, const char *why) {
  engine_t *e = c->ev.e;
  up_t *u = c->up;
  if (c->rstate == R_BODY) return exchange_abort(c, 0);
  int flags = u->reused ? F_REUSED : 0;
  if (!c->body_sent && !c->sent_any && !ob_pending(&c->out)) flags |= F_REPLAYABLE;
  int b = c->backend;
  up_close(e, u);
  c->up = NULL;
  decide(c, D_STALE, b, why, flags, NULL, 0);
}


static void finish_exchange(client_t *c) {
  engine_t *e = c->ev.e;
  up_t *u = c->up;
  int b = c->backend;
  int reusable = c->resp_reusable && c->req_done && !u->eof && buf_len(&u->in) == 0;
  c->up = NULL;
  c->backend = -1;
  u->c = NULL;
  if (reusable && e->backends[b].nidle < e->max_idle) {
    backend_t *be = &e->backends[b];
    u->pooled = 1;
    u->pprev = NULL;
    u->pnext = be->idle;
    if (be->idle) be->idle->pprev = u;
    be->idle = u;
    be->nidle++;
    e->npooled++;
    u->in.start = u->in.end = 0;
    timer_set(e, &u->ev.t, T_POOL);
  } else
    up_close(e, u);
  js_done(e, c, b, c->status);
  if (c->ev.dead) return;
  if (c->client_keep && c->req_done) start_next(c);
  else client_linger(c);
}

static void start_next(client_t *c) {
  engine_t *e = c->ev.e;
  c->state = C_HEAD;
  c->scan = 0;
  timer_set(e, &c->ev.t, buf_len(&c->in) ? T_HEAD : T_IDLE);
}

/* Read from the upstream into u->in. */
static int up_read(up_t *u) { return sock_read(u->ev.fd, &u->in, u->hup, &u->rd_ready, &u->eof); }

/*
 * Move what can move, both directions, until nothing does.
 * The exchange's timer (T_RESPONSE, on the upstream) restarts whenever bytes move to or from the
 * upstream or to the client: before the response head it is the upstream's time to answer,
 * counted from the last request bytes it took (as nginx's proxy_read_timeout starts once the
 * request is sent: a long upload that flows is not cut off); in the body, the time either side may
 * stall (nginx's proxy_read_timeout and send_timeout) before both connections are closed.
 */
static int fwd_step(client_t *c) {
  int moved = 0, progress = 0;
  for (int round = 0; round < 64; round++) {
    if (c->state != C_FWD || c->ev.dead) return 0;
    up_t *u = c->up;
    moved = 0;
    /* client → upstream: the head, then body bytes */
    if (!c->req_done || ob_pending(&c->uout)) {
      /* a chunked body is read (and re-framed into ubody) to its end before its last bytes go */
      int chunked = c->req_mode == B_CHUNKED;
      int reading = !c->req_done && !(chunked && c->req_ch.st == CH_DONE);
      if (reading && c->in.start == c->in.end && c->eof) return (exchange_abort(c, 400), 0); /* the client left inside the body */
      if (reading) {
        int r = client_read(c);
        if (r == -2) return (exchange_abort(c, 0), 0);
        if (r == 1) moved = 1;
      }
      uint32_t avail = c->in.p ? buf_len(&c->in) : 0, body = 0;
      const char *bp = NULL;
      int body_end = 0;
      if (chunked) {
        /* what the parser takes leaves c->in at once; at most REFRAMED_MAX waits in ubody */
        if (reading && avail && ob_pending(&c->ubody) < REFRAMED_MAX) {
          long k = chunk_feed(&c->req_ch, c->ev.e, c->in.p + c->in.start, avail, &c->ubody);
          if (k < 0) return (c->sent_any ? exchange_abort(c, 400) : exchange_fail(c, D_BAD_BODY), 0);
          c->in.start += (uint32_t)k;
        }
        body = ob_pending(&c->ubody);
        bp = c->ubody.p + c->ubody.off;
        body_end = c->req_ch.st == CH_DONE;
      } else if (!c->req_done && avail) {
        body = avail < c->req_left ? avail : (uint32_t)c->req_left;
        bp = c->in.p + c->in.start;
        body_end = body == c->req_left;
      }
      if (u->wr_ready && (ob_pending(&c->uout) || body)) {
        struct iovec iov[2];
        int cnt = 0;
        uint32_t pend = ob_pending(&c->uout);
        if (pend) iov[cnt++] = (struct iovec){c->uout.p + c->uout.off, pend};
        if (body) iov[cnt++] = (struct iovec){(void *)bp, body};
        ssize_t w = writev(u->ev.fd, iov, cnt);
        if (w < 0) {
          if (errno != EAGAIN && errno != EINTR) return (upstream_stale(c, "closed"), 0);
          u->wr_ready = 0;
        } else {
          moved = progress = 1;
          uint32_t wb = 0;
          if ((uint32_t)w >= pend) {
            c->uout.off = c->uout.len;
            wb = (uint32_t)w - pend;
          } else
            c->uout.off += (uint32_t)w;
          if (wb) {
            c->body_sent = 1;
            if (chunked) {
              c->ubody.off += wb;
              if (!ob_pending(&c->ubody)) ob_reset(&c->ubody);
            } else {
              c->in.start += wb;
              c->req_left -= wb;
            }
            if (wb == body && body_end) c->req_done = 1;
          }
          if ((uint32_t)w < pend + body) u->wr_ready = 0;
        }
      }
    }
    /* upstream → client */
    if (c->rstate == R_HEAD) {
      for (;;) {
        uint32_t avail = buf_len(&u->in);
        if (avail >= 2) {
          const char *f = memmem(u->in.p + u->in.start, avail, "\r\n\r\n", 4);
          /* an upstream's head ends with CRLFs: one with bare LFs is malformed (both engines) */
          if (!f && (memmem(u->in.p + u->in.start, avail, "\n\n", 2) ||
                     memmem(u->in.p + u->in.start, avail, "\n\r\n", 3)))
            return (exchange_fail(c, D_MALFORMED), 0);
          if (f) {
            uint32_t end = (uint32_t)(f - (u->in.p + u->in.start)) + 4;
            int r = parse_response(c, end);
            /* 502 at once, as nginx: no retry, no ejection (the connect worked) */
            if (r < 0) return (exchange_fail(c, D_MALFORMED), 0);
            moved = 1;
            if (r == 1) continue; /* an interim response was queued; the next head */
            break;
          }
        }
        if (u->eof) return (upstream_stale(c, "closed"), 0);
        if (!u->rd_ready) break;
        if (buf_ensure(&u->in, c->ev.e->lim.response_head) < 0) return (exchange_abort(c, 0), 0);
        if (buf_room(&u->in) == 0) return (exchange_fail(c, D_MALFORMED), 0); /* a head too large */
        int r = up_read(u);
        if (r == -2) return (upstream_stale(c, "reset"), 0);
        if (r == 1) moved = progress = 1;
      }
      /* interim heads queued in c->out go out now */
      if (c->rstate == R_HEAD && ob_pending(&c->out)) {
        uint32_t x;
        if (client_write(c, NULL, 0, &x) < 0) return (exchange_abort(c, 0), 0);
      }
    }
    if (c->rstate == R_BODY) {
      uint32_t avail = buf_len(&u->in), body = 0;
      int body_end = 0;
      if (c->resp_mode == B_NONE) body_end = 1;
      else if (c->resp_mode == B_LENGTH) {
        body = avail < c->resp_left ? avail : (uint32_t)c->resp_left;
        body_end = body == c->resp_left;
      } else if (c->resp_mode == B_CHUNKED) {
        if (c->resp_scanned < avail) {
          long k = chunk_feed(&c->resp_ch, c->ev.e, u->in.p + u->in.start + c->resp_scanned, avail - c->resp_scanned, NULL);
          if (k < 0) return (exchange_abort(c, 0), 0);
          c->resp_scanned += (uint32_t)k;
        }
        body = c->resp_scanned;
        body_end = c->resp_ch.st == CH_DONE;
      } else {
        body = avail;
        body_end = u->eof;
      }
      uint32_t wb = 0;
      if (ob_pending(&c->out) || body) {
        if (client_write(c, u->in.p + u->in.start, body, &wb) < 0) return (exchange_abort(c, 0), 0);
        if (wb) {
          moved = progress = 1;
          u->in.start += wb;
          if (c->resp_mode == B_LENGTH) c->resp_left -= wb;
          else if (c->resp_mode == B_CHUNKED) c->resp_scanned -= wb;
        }
      }
      if (body_end && wb == body && !ob_pending(&c->out)) {
        if (c->resp_mode == B_EOF) c->resp_reusable = 0;
        return (finish_exchange(c), 0);
      }
      /* more of the body from upstream */
      if (u->rd_ready && !u->eof) {
        int r = up_read(u);
        if (r == -2) return (exchange_abort(c, 0), 0);
        if (r != 0) moved = progress = 1;
      } else if (u->eof && c->resp_mode != B_EOF && !body_end && buf_len(&u->in) == 0)
        return (exchange_abort(c, 0), 0); /* the upstream closed inside the body */
    }
    if (!moved) break;
  }
  if (progress && c->up && !c->ev.dead && c->state == C_FWD) timer_set(c->ev.e, &c->up->ev.t, T_RESPONSE);
  return moved; /* 1: more to move, the rest on a later turn */
}
