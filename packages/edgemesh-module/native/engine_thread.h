/*
 * The scaffold of an engine that moves connections' bytes on a thread of its own (the splice
 * engine, the TLS pump): its epoll set with a wake-up eventfd, the thread, and the uv_async that
 * brings its reports to the JavaScript thread — holding the event loop open only while
 * connections are in the engine.
 */
#ifndef EDGEMESH_NATIVE_ENGINE_THREAD_H
#define EDGEMESH_NATIVE_ENGINE_THREAD_H
#include <errno.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
  pthread_t thread;
  int started;
  volatile int stopping;
  int epfd;
  int wakefd; /* in epfd with data.ptr NULL */
  uv_async_t async;
  int async_refd;
} engine_thread_t;

static inline int64_t engine_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wake the engine thread (its epoll_wait returns with the eventfd's event). */
static inline void engine_wake(engine_thread_t *t) {
  uint64_t one = 1;
  if (write(t->wakefd, &one, sizeof one) < 0) { /* counter full: the engine is awake anyway */
  }
}

/* Engine thread: consume the wake-ups. */
static inline void engine_woken(engine_thread_t *t) {
  uint64_t v;
  if (read(t->wakefd, &v, sizeof v) < 0) { /* drained already */
  }
}

/* Start the thread on first use (`owner` is `async.data`). 0, or the errno. */
static inline int engine_start(napi_env env, engine_thread_t *t, void *(*main)(void *), uv_async_cb on_async,
                               void *owner) {
  if (t->started) return 0;
  t->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (t->epfd < 0) return errno;
  t->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (t->wakefd < 0) return errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wakefd, &ev);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_async_init(loop, &t->async, on_async);
  t->async.data = owner;
  uv_unref((uv_handle_t *)&t->async);
  int r = pthread_create(&t->thread, NULL, main, owner);
  if (r != 0) return r;
  t->started = 1;
  return 0;
}

/* JS thread: a connection was handed over — the event loop stays alive for its report. */
static inline void engine_hold_loop(engine_thread_t *t) {
  if (!t->async_refd) {
    uv_ref((uv_handle_t *)&t->async);
    t->async_refd = 1;
  }
}

/* JS thread, in the async callback: no connection left — the loop may end. */
static inline void engine_release_loop(engine_thread_t *t, uint32_t active) {
  if (active == 0 && t->async_refd) {
    uv_unref((uv_handle_t *)&t->async);
    t->async_refd = 0;
  }
}

/* Environment teardown: stop and join the thread, close its descriptors (the caller then frees
 * its connections and closes the async handle, freeing the owner in its close callback). */
static inline void engine_stop(engine_thread_t *t) {
  t->stopping = 1;
  engine_wake(t);
  pthread_join(t->thread, NULL);
  close(t->epfd);
  close(t->wakefd);
}

/* JS thread: call `cb` with `argv`; an exception it throws is the process's, as from any callback. */
static inline void engine_call_js(napi_env env, napi_value cb, size_t argc, napi_value *argv) {
  napi_value global, result;
  napi_get_global(env, &global);
  if (napi_make_callback(env, NULL, global, cb, argc, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

#endif
