/* Connection lifetimes. */

static void zombie(engine_t *e, ev_t *ev) {
  ev->dead = 1;
  timer_unlink(&ev->t);
  if (ev->fd >= 0) {
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, ev->fd, NULL);
    close(ev->fd);
    ev->fd = -1;
  }
  ev->zombie_next = e->zombies;
  e->zombies = ev;
}

static void pool_unlink(engine_t *e, up_t *u) {
  if (!u->pooled) return;
  backend_t *b = &e->backends[u->backend];
  if (u->pprev) u->pprev->pnext = u->pnext;
  else b->idle = u->pnext;
  if (u->pnext) u->pnext->pprev = u->pprev;
  u->pprev = u->pnext = NULL;
  u->pooled = 0;
  b->nidle--;
  e->npooled--;
}

static void up_close(engine_t *e, up_t *u) {
  if (u->ev.dead) return;
  pool_unlink(e, u);
  if (u->prev) u->prev->next = u->next;
  else e->ups = u->next;
  if (u->next) u->next->prev = u->prev;
  e->nups--;
  if (u->c && u->c->up == u) u->c->up = NULL;
  u->c = NULL;
  zombie(e, &u->ev);
}

static void update_ref(engine_t *e) {
  int want = e->nclients > 0;
  if (want == e->polling_ref || e->closed) return;
  if (want) uv_ref((uv_handle_t *)&e->poll);
  else uv_unref((uv_handle_t *)&e->poll);
  e->polling_ref = want;
}

static void deferred_unlink(engine_t *e, client_t *c) {
  if (!c->deferred) return;
  client_t **head = c->deferred == 1 ? &e->deferred : &e->running;
  if (c->dprev) c->dprev->dnext = c->dnext;
  else *head = c->dnext;
  if (c->dnext) c->dnext->dprev = c->dprev;
  c->dprev = c->dnext = NULL;
  c->deferred = 0;
}

static void client_unlink(engine_t *e, client_t *c) {
  deferred_unlink(e, c);
  if (c->prev) c->prev->next = c->next;
  else e->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  e->nclients--;
  update_ref(e);
}

/* Close a client connection (and an upstream mid-request: its state is unknown). */
static void client_close(client_t *c) {
  engine_t *e = c->ev.e;
  if (c->ev.dead) return;
  if (c->up) {
    up_close(e, c->up);
    if (c->backend >= 0) js_done(e, c, c->backend, 0);
  }
  c->backend = -1;
  c->state = C_DEAD;
  client_unlink(e, c);
  zombie(e, &c->ev);
  if (e->silent) return;
  napi_value argv[1];
  napi_create_uint32(e->env, c->id, &argv[0]);
  e->need_drain = 1;
  js_failed(e, js_call(e, e->cb_closed, 1, argv, NULL));
}

static void client_linger(client_t *c) {
  engine_t *e = c->ev.e;
  shutdown(c->ev.fd, SHUT_WR);
  c->state = C_LINGER;
  buf_free(&c->in);
  timer_set(e, &c->ev.t, T_LINGER);
}

static void handback(client_t *c) {
  engine_t *e = c->ev.e;
  napi_value argv[3];
  int fd = c->ev.fd;
  epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
  c->ev.fd = -1; /* JavaScript owns it now */
  napi_create_uint32(e->env, c->id, &argv[0]);
  napi_create_int32(e->env, fd, &argv[1]);
  napi_create_buffer_copy(e->env, buf_len(&c->in), c->in.p ? c->in.p + c->in.start : "", NULL, &argv[2]);
  c->state = C_DEAD;
  client_unlink(e, c);
  zombie(e, &c->ev);
  e->need_drain = 1;
  js_failed(e, js_call(e, e->cb_handback, 3, argv, NULL));
}
