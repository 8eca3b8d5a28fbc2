/* Calls into JavaScript. */

static int js_failed(engine_t *e, napi_status st) { return js_call_failed(e->env, st); }

static napi_status js_call(engine_t *e, napi_ref fn, size_t argc, napi_value *argv, napi_value *res) {
  return js_call_ref(e->env, e->silent, fn, argc, argv, res);
}

/* Ended requests are recorded in a buffer JavaScript shares (id, backend, status per record) and
 * handed over in one call: before the next pick (so connection counts are exact when a strategy
 * looks at them), or at the end of the wake-up. One call into JavaScript per request, not two. */
static void flush_done(engine_t *e) { js_flush_done(e->env, e->silent, e->cb_done, &e->done_n); }

static void js_done(engine_t *e, client_t *c, int backend, int status) {
  if (e->done_n == e->done_cap) flush_done(e);
  int32_t *r = e->done_buf + 3 * e->done_n++;
  r[0] = (int32_t)c->id;
  r[1] = backend;
  r[2] = status;
}
