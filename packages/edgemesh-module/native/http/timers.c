/* timers: one FIFO list per kind (a kind has one duration, so the head is always the earliest) */

static void timer_unlink(tnode_t *t) {
  if (t->kind < 0) return;
  t->prev->next = t->next;
  t->next->prev = t->prev;
  t->kind = -1;
}
static void on_timer(uv_timer_t *h);
static void timer_arm(engine_t *e, uint64_t due) {
  uint64_t now = uv_now(e->loop);
  uv_timer_start(&e->timer, on_timer, due > now ? due - now : 0, 0);
  e->timer_armed = 1;
  e->timer_due = due;
}
static void timer_set(engine_t *e, tnode_t *t, int kind) {
  timer_unlink(t);
  if (e->dur[kind] == 0) return;
  t->due = uv_now(e->loop) + e->dur[kind];
  t->kind = kind;
  tnode_t *h = &e->lists[kind];
  t->prev = h->prev;
  t->next = h;
  h->prev->next = t;
  h->prev = t;
  if (!e->timer_armed || t->due < e->timer_due) timer_arm(e, t->due);
}
