/*
 * The simplest zero-copy TCP relay, for bench/proxy.sh: a reference for what any splice(2)-based
 * L4 proxy can reach on this machine — two blocking threads per connection, each moving one
 * direction socket → pipe → socket, no event loop, no load balancing, no timeouts. The L4 row of
 * EdgeMesh is compared with it in the same run.
 * Usage: splice-relay LISTEN_PORT BACKEND_PORT   (127.0.0.1 on both sides)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  int fd[2];
  int refs;
} conn_t;
typedef struct {
  conn_t *c;
  int d; /* moves fd[d] → fd[1 - d] */
} dir_t;

static void *pump(void *arg) {
  dir_t *x = arg;
  conn_t *c = x->c;
  int src = c->fd[x->d], dst = c->fd[1 - x->d], p[2];
  if (pipe(p) == 0) {
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    for (;;) {
      ssize_t n = splice(src, NULL, p[1], NULL, 1 << 20, SPLICE_F_MOVE);
      if (n <= 0) break;
      while (n > 0) {
        ssize_t m = splice(p[0], NULL, dst, NULL, (size_t)n, SPLICE_F_MOVE);
        if (m <= 0) goto out;
        n -= m;
      }
    }
  out:
    close(p[0]);
    close(p[1]);
  }
  shutdown(dst, SHUT_WR);
  if (__sync_sub_and_fetch(&c->refs, 1) == 0) {
    close(c->fd[0]);
    close(c->fd[1]);
    free(c);
  }
  free(x);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: splice-relay LISTEN_PORT BACKEND_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct sockaddr_in ba = la;
  ba.sin_port = htons(atoi(argv[2]));
  if (bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 128)) {
    perror("splice-relay: listen");
    return 1;
  }
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    int u = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(u, (struct sockaddr *)&ba, sizeof ba)) {
      close(c);
      close(u);
      continue;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *k = malloc(sizeof *k);
    k->fd[0] = c;
    k->fd[1] = u;
    k->refs = 2;
    for (int d = 0; d < 2; d++) {
      dir_t *x = malloc(sizeof *x);
      x->c = k;
      x->d = d;
      pthread_t t;
      pthread_create(&t, NULL, pump, x);
      pthread_detach(t);
    }
  }
}
