/* The state machine entry points: wake-ups, events, timers. */

static void respond_step(client_t *c) {
  uint32_t x;
  if (client_write(c, NULL, 0, &x) < 0) return client_close(c);
  if (ob_pending(&c->out)) return;
  if (c->close_after) return client_linger(c);
  start_next(c);
}

static int linger_step(client_t *c) {
  char sink[4096];
  for (int i = 0; i < 16; i++) {
    ssize_t n = read(c->ev.fd, sink, sizeof sink);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    client_close(c);
    return 0;
  }
  return 1;
}

/* Edge-triggered: a connection that stops with work left gets no new event, so it is queued and
 * the engine wakes itself (an eventfd in its own epoll set) on the next turn of the loop. */
static void defer(client_t *c) {
  engine_t *e = c->ev.e;
  if (c->deferred == 1) return;
  deferred_unlink(e, c);
  c->deferred = 1;
  c->dprev = NULL;
  c->dnext = e->deferred;
  if (e->deferred) e->deferred->dprev = c;
  e->deferred = c;
  uint64_t one = 1;
  if (write(e->kickfd, &one, sizeof one) < 0) { /* already signalled */
  }
}

static void client_run(client_t *c) {
  int busy = 1;
  for (int i = 0; i < 64 && !c->ev.dead; i++) {
    int s = c->state;
    busy = 0;
    switch (s) {
    case C_HEAD: head_step(c); break;
    case C_FWD: busy = fwd_step(c); break;
    case C_RESPOND: respond_step(c); break;
    case C_LINGER: busy = linger_step(c); break;
    default: return;
    }
    if (c->ev.dead) return;
    if (busy || c->state == s) break;
    busy = 1;
  }
  if (busy) defer(c);
}

static void run_deferred(engine_t *e) {
  uint64_t v;
  if (read(e->kickfd, &v, sizeof v) < 0) { /* nothing pending */
  }
  e->running = e->deferred;
  e->deferred = NULL;
  for (client_t *c = e->running; c; c = c->dnext) c->deferred = 2;
  while (e->running) {
    client_t *c = e->running;
    deferred_unlink(e, c);
    if (!c->ev.dead && c->state != C_CONNECT) client_run(c);
  }
}

static void up_connected(up_t *u) {
  engine_t *e = u->ev.e;
  client_t *c = u->c;
  int err = 0;
  socklen_t l = sizeof err;
  if (getsockopt(u->ev.fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
  if (err == 0) {
    u->connecting = 0;
    u->wr_ready = 1;
    exchange_begin(c);
    return client_run(c);
  }
  int b = u->backend;
  up_close(e, u);
  c->up = NULL;
  decide(c, D_CONNECT_FAILED, b, errname(err), 0, NULL, 0);
  if (!c->ev.dead) client_run(c);
}

static void handle_event(engine_t *e, struct epoll_event *ev) {
  ev_t *x = ev->data.ptr;
  if (x->dead) return;
  if (x->type == EV_KICK) return run_deferred(e);
  uint32_t m = ev->events;
  if (x->type == EV_CLIENT) {
    client_t *c = (client_t *)x;
    /* reset, or both directions shut: nothing more can reach this client */
    if (m & (EPOLLERR | EPOLLHUP)) return client_close(c);
    if (m & EPOLLRDHUP) c->hup = 1;
    if (m & (EPOLLIN | EPOLLRDHUP)) c->rd_ready = 1;
    if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->wr_ready = 1;
    if (c->state == C_CONNECT) return;
    client_run(c);
    return;
  }
  up_t *u = (up_t *)x;
  if (u->pooled || !u->c) {
    if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) up_close(e, u); /* bytes or EOF while idle */
    return;
  }
  if (m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) u->hup = 1;
  if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) u->rd_ready = 1;
  if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR)) u->wr_ready = 1;
  if (u->connecting) {
    if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR)) up_connected(u);
    return;
  }
  client_run(u->c);
}

static void free_zombies(engine_t *e) {
  while (e->zombies) {
    ev_t *z = e->zombies;
    e->zombies = z->zombie_next;
    if (z->type == EV_CLIENT) {
      client_t *c = (client_t *)z;
      buf_free(&c->in);
      ob_free(&c->out);
      ob_free(&c->uout);
      ob_free(&c->ubody);
    } else
      buf_free(&((up_t *)z)->in);
    free(z);
  }
}

/* After a wake-up: freed connections, and microtasks queued by callbacks run (as after any of
 * Node's own callbacks). */
static void end_of_wake(engine_t *e) {
  if (!e->closed) flush_done(e);
  free_zombies(e);
  if (e->need_drain && !e->closed) {
    e->need_drain = 0;
    napi_value cb, recv;
    napi_get_reference_value(e->env, e->cb_noop, &cb);
    napi_get_global(e->env, &recv);
    napi_status st = napi_make_callback(e->env, e->async, recv, cb, 0, NULL, NULL);
    js_failed(e, st);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  engine_t *e = p->data;
  if (e->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(e->env, &scope);
  e->depth++;
  /* Event coalescing (coalesceUs): under load — COALESCE_INFLIGHT or more exchanges in flight and
   * the previous wake-up had more than one event — wait coalesce_us (plus the kernel's timer
   * slack, 50 µs by default) before taking the events, so that one wake-up serves a batch. While
   * we wait, the processes writing to our sockets find no one to wake: no inter-processor
   * interrupt for them to send (in a VM, no exit to the hypervisor on either side), and here one
   * epoll round, one JavaScript turn, one flush of ended requests serve many requests instead of
   * two or three. With few exchanges in flight the wait would only add latency (throughput is
   * in-flight / latency there), so it never happens then, nor for a lone event — nor after a
   * quiet spell: a burst that ended a while ago (20 connections adopted at once, then nothing for
   * a millisecond) says nothing of the load now. */
  if (e->coalesce_us && e->nups - e->npooled >= COALESCE_INFLIGHT && e->last_wake_events > 1 &&
      uv_hrtime() - e->last_wake_end < COALESCE_RECENT_NS) {
    struct timespec d = {0, (long)e->coalesce_us * 1000};
    nanosleep(&d, NULL);
    e->coalesced++;
  }
  uint32_t got = 0;
  for (int round = 0; round < 8 && !e->closed; round++) {
    int n = epoll_wait(e->epfd, e->evs, EVENTS, 0);
    if (n > 0) got += (uint32_t)n;
    for (int i = 0; i < n && !e->closed; i++) handle_event(e, &e->evs[i]);
    if (n < EVENTS) break;
  }
  e->last_wake_events = got;
  e->last_wake_end = uv_hrtime();
  e->depth--;
  end_of_wake(e);
  napi_close_handle_scope(e->env, scope);
}

static void expire(engine_t *e, ev_t *x, int kind) {
  if (x->type == EV_CLIENT) {
    client_t *c = (client_t *)x;
    if (kind == T_HEAD) {
      decide(c, D_HEAD_TIMEOUT, -1, NULL, 0, NULL, 0);
      if (!c->ev.dead) client_run(c);
    } else
      client_close(c); /* idle keep-alive, linger */
    return;
  }
  up_t *u = (up_t *)x;
  client_t *c = u->c;
  if (kind == T_POOL || !c) return up_close(e, u);
  if (kind == T_CONNECT) {
    int b = u->backend;
    up_close(e, u);
    c->up = NULL;
    decide(c, D_CONNECT_FAILED, b, "timeout", 0, NULL, 0);
    if (!c->ev.dead) client_run(c);
    return;
  }
  if (c->rstate == R_BODY) { /* the response body stalled: both connections close */
    exchange_abort(c, 0);
    return;
  }
  /* T_RESPONSE: no response head in time */
  c->rstate = R_HEAD;
  exchange_fail(c, D_TIMEOUT);
  if (!c->ev.dead) client_run(c);
}

static void on_timer(uv_timer_t *h) {
  engine_t *e = h->data;
  e->timer_armed = 0;
  if (e->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(e->env, &scope);
  e->depth++;
  uint64_t now = uv_now(e->loop);
  for (int k = 0; k < T_COUNT; k++) {
    tnode_t *head = &e->lists[k];
    while (head->next != head && head->next->due <= now) {
      tnode_t *t = head->next;
      timer_unlink(t);
      expire(e, (ev_t *)((char *)t - offsetof(ev_t, t)), k);
    }
  }
  uint64_t min = UINT64_MAX;
  for (int k = 0; k < T_COUNT; k++)
    if (e->lists[k].next != &e->lists[k] && e->lists[k].next->due < min) min = e->lists[k].next->due;
  if (min != UINT64_MAX && (!e->timer_armed || min < e->timer_due)) timer_arm(e, min);
  e->depth--;
  end_of_wake(e);
  napi_close_handle_scope(e->env, scope);
}
