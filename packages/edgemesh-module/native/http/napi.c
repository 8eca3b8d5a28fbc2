/* The JavaScript API. */

#define THROW(env, msg)                                                                            \
  do {                                                                                             \
    napi_throw_error(env, "EDGEMESH_HTTP_ENGINE", "http_engine: " msg);                           \
    return NULL;                                                                                   \
  } while (0)

/* The arguments of a call whose first argument is an engine: the engine, or NULL (thrown). */
#define engine_args(env, info, want, argv)                                                         \
  ((engine_t *)handle_args(env, info, want, argv, "EDGEMESH_HTTP_ENGINE", "http_engine"))

static void close_everything(engine_t *e) {
  e->depth++;
  while (e->clients) client_close(e->clients);
  while (e->ups) up_close(e, e->ups);
  if (!e->silent) flush_done(e);
  e->depth--;
  if (e->depth == 0) free_zombies(e);
}

static void on_handle_closed(uv_handle_t *h) {
  engine_t *e = h->data;
  if (--e->uv_open == 0 && e->finalized) free(e);
}

static void release(engine_t *e) {
  if (e->closed) return;
  close_everything(e);
  e->closed = 1;
  if (e->depth == 0) free_zombies(e); /* inside a wake-up: after it (the stack may hold them) */
  uv_poll_stop(&e->poll);
  uv_timer_stop(&e->timer);
  close(e->epfd);
  close(e->kickfd);
  napi_delete_reference(e->env, e->cb_decide);
  napi_delete_reference(e->env, e->cb_done);
  napi_delete_reference(e->env, e->done_ref);
  napi_delete_reference(e->env, e->cb_handback);
  napi_delete_reference(e->env, e->cb_closed);
  napi_delete_reference(e->env, e->cb_noop);
  napi_async_destroy(e->env, e->async);
  free(e->backends);
  e->backends = NULL;
  uv_close((uv_handle_t *)&e->poll, on_handle_closed);
  uv_close((uv_handle_t *)&e->timer, on_handle_closed);
}

static void finalize(napi_env env, void *data, void *hint) {
  engine_t *e = data;
  (void)env;
  (void)hint;
  e->finalized = 1;
  e->silent = 1;
  if (!e->closed) release(e); /* on_handle_closed frees */
  else if (e->uv_open == 0) free(e);
}

static napi_value noop(napi_env env, napi_callback_info info) { return NULL; }

/* A table of names (an array of strings) from JavaScript; -1: not one, or too large. */
static int names_from(napi_env env, napi_value arr, names_t *t, int lower) {
  uint32_t n = 0;
  bool is = false;
  if (napi_is_array(env, arr, &is) != napi_ok || !is || napi_get_array_length(env, arr, &n) != napi_ok ||
      n > MAX_TABLE)
    return -1;
  t->n = (uint8_t)n;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    size_t l = 0;
    if (napi_get_element(env, arr, i, &v) != napi_ok ||
        napi_get_value_string_latin1(env, v, t->name[i], sizeof t->name[i], &l) != napi_ok || l == 0 ||
        l > MAX_TABLE_NAME)
      return -1;
    for (size_t k = 0; k < l && lower; k++) t->name[i][k] = (char)lc((unsigned char)t->name[i][k]);
    t->len[i] = (uint8_t)l;
  }
  return 0;
}

#define OPTS 14

static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 9) THROW(env, "create: 9 arguments expected");
  napi_typedarray_type dt;
  size_t dcount;
  void *ddata;
  if (napi_get_typedarray_info(env, argv[8], &dt, &dcount, &ddata, NULL, NULL) != napi_ok || dt != napi_int32_array ||
      dcount < 3)
    THROW(env, "create: the done buffer must be an Int32Array of 3 or more");
  napi_typedarray_type t;
  size_t count, off;
  void *data;
  napi_value ab;
  if (napi_get_typedarray_info(env, argv[0], &t, &count, &data, &ab, &off) != napi_ok || t != napi_uint32_array ||
      count < OPTS)
    THROW(env, "create: options must be a Uint32Array of 14");
  uint32_t *o = data;
  engine_t *e = calloc(1, sizeof(engine_t));
  if (!e) THROW(env, "create: out of memory");
  if (names_from(env, argv[1], &e->hop, 1) < 0 || names_from(env, argv[2], &e->idempotent, 0) < 0 ||
      names_from(env, argv[3], &e->forbidden_trailers, 1) < 0) {
    free(e);
    THROW(env, "create: the name tables must be arrays of at most 32 names of 1-31 bytes");
  }
  e->env = env;
  e->done_buf = ddata;
  e->done_cap = (uint32_t)(dcount / 3);
  e->max_head = o[0] ? o[0] : 16384;
  e->dur[T_IDLE] = o[1];
  e->dur[T_HEAD] = o[2];
  e->dur[T_CONNECT] = o[3];
  e->dur[T_RESPONSE] = o[4];
  e->dur[T_POOL] = o[5];
  e->dur[T_LINGER] = LINGER_MS;
  e->max_idle = o[6];
  e->coalesce_us = o[7] > COALESCE_MAX_US ? COALESCE_MAX_US : o[7];
  e->lim = (limits_t){.chunk_line = o[8], .trailer = o[9], .chunk_digits = o[10], .length_digits = o[11],
                      .response_head = o[12]};
  e->underscores = o[13] != 0;
  if (e->lim.chunk_digits > 15) e->lim.chunk_digits = 15; /* a size must fit 64 bits */
  if (e->lim.length_digits > 18) e->lim.length_digits = 18;
  if (e->lim.response_head < 1024) e->lim.response_head = 1024;
  for (int k = 0; k < T_COUNT; k++) e->lists[k].next = e->lists[k].prev = &e->lists[k];
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  e->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  e->kick.type = EV_KICK;
  e->kick.fd = e->kickfd;
  e->kick.t.kind = -1;
  struct epoll_event kev = {.events = EPOLLIN, .data.ptr = &e->kick};
  if (e->epfd < 0 || e->kickfd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->kickfd, &kev) < 0) {
    if (e->epfd >= 0) close(e->epfd);
    if (e->kickfd >= 0) close(e->kickfd);
    free(e);
    THROW(env, "create: epoll or eventfd failed");
  }
  napi_get_uv_event_loop(env, &e->loop);
  uv_poll_init(e->loop, &e->poll, e->epfd);
  uv_timer_init(e->loop, &e->timer);
  e->poll.data = e->timer.data = e;
  e->uv_open = 2;
  uv_poll_start(&e->poll, UV_READABLE, on_poll);
  uv_unref((uv_handle_t *)&e->poll); /* referenced only while it has clients */
  uv_unref((uv_handle_t *)&e->timer);
  napi_create_reference(env, argv[4], 1, &e->cb_decide);
  napi_create_reference(env, argv[5], 1, &e->cb_done);
  napi_create_reference(env, argv[6], 1, &e->cb_handback);
  napi_create_reference(env, argv[7], 1, &e->cb_closed);
  napi_create_reference(env, argv[8], 1, &e->done_ref); /* keeps the shared buffer alive */
  napi_value fn, name;
  napi_create_function(env, "drain", NAPI_AUTO_LENGTH, noop, NULL, &fn);
  napi_create_reference(env, fn, 1, &e->cb_noop);
  napi_create_string_utf8(env, "EdgeMeshHttpEngine", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &e->async);
  napi_value handle;
  napi_create_external(env, e, finalize, NULL, &handle);
  return handle;
}

static napi_value js_backend(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  engine_t *e = engine_args(env, info, 4, argv);
  if (!e) return NULL;
  return js_set_backend(env, argv, e->closed, (void **)&e->backends, &e->nbackends, sizeof(backend_t),
                        "EDGEMESH_HTTP_ENGINE");
}

static napi_value js_adopt(napi_env env, napi_callback_info info) {
  napi_value argv[5], out;
  engine_t *e = engine_args(env, info, 5, argv);
  if (!e) return NULL;
  if (e->closed) THROW(env, "adopt: engine closed");
  int32_t fd;
  napi_get_value_int32(env, argv[1], &fd);
  client_t *c = calloc(1, sizeof(client_t));
  if (!c) THROW(env, "adopt: out of memory");
  size_t l;
  napi_get_value_string_utf8(env, argv[2], c->ip, sizeof c->ip, &l);
  napi_valuetype vt;
  napi_typeof(env, argv[3], &vt);
  if (vt == napi_string) {
    size_t hl;
    napi_get_value_string_utf8(env, argv[3], c->hash_hdr, sizeof c->hash_hdr, &hl);
    for (size_t k = 0; k < hl; k++) c->hash_hdr[k] = (char)lc((unsigned char)c->hash_hdr[k]);
    c->hash_len = (uint32_t)hl;
  }
  bool fwd = false;
  napi_get_value_bool(env, argv[4], &fwd); /* not a boolean: false */
  c->forward = fwd;
  int dfd = adopt_fd(fd);
  if (dfd < 0) {
    free(c);
    THROW(env, "adopt: dup failed");
  }
  c->ev.type = EV_CLIENT;
  c->ev.fd = dfd;
  c->ev.e = e;
  c->ev.t.kind = -1;
  c->backend = -1;
  c->id = ++e->next_id;
  c->state = C_HEAD;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, dfd, &ev) < 0) {
    close(dfd);
    free(c);
    THROW(env, "adopt: epoll_ctl failed");
  }
  c->next = e->clients;
  if (e->clients) e->clients->prev = c;
  e->clients = c;
  e->nclients++;
  update_ref(e);
  timer_set(e, &c->ev.t, T_IDLE);
  napi_create_uint32(env, c->id, &out);
  return out;
}

static napi_value js_close_all(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  if (!e->closed) close_everything(e);
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  release(e);
  return NULL;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  engine_t *e = engine_args(env, info, 1, argv);
  if (!e) return NULL;
  napi_create_array_with_length(env, 4, &out);
  double vals[4] = {e->nclients, e->nups, e->npooled, e->coalesced};
  for (uint32_t i = 0; i < 4; i++) {
    napi_create_double(env, vals[i], &v);
    napi_set_element(env, out, i, v);
  }
  return out;
}

napi_value http_engine_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      METHOD("create", js_create), METHOD("backend", js_backend), METHOD("adopt", js_adopt),
      METHOD("closeAll", js_close_all), METHOD("close", js_close), METHOD("stats", js_stats),
  };
  DEFINE_METHODS(env, exports, props);
  return exports;
}
