/* Buffers (and the one read of a socket into one), byte helpers and the name tables. */

static int buf_ensure(buf_t *b, uint32_t cap) {
  if (b->p) return 0;
  b->p = malloc(cap);
  if (!b->p) return -1;
  b->cap = cap;
  b->start = b->end = 0;
  return 0;
}
static void buf_free(buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->cap = b->start = b->end = 0;
}
static inline uint32_t buf_len(const buf_t *b) { return b->end - b->start; }
/* Room at the tail, moving the unread bytes to the front when that gains room. */
static uint32_t buf_room(buf_t *b) {
  if (b->start == b->end) b->start = b->end = 0;
  else if (b->start > 0 && b->end == b->cap) {
    memmove(b->p, b->p + b->start, b->end - b->start);
    b->end -= b->start;
    b->start = 0;
  }
  return b->cap - b->end;
}

static int ob_put(obuf_t *o, const char *s, size_t n) {
  if (o->len + n > o->cap) {
    uint32_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + n) cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) return -1;
    o->p = p;
    o->cap = cap;
  }
  memcpy(o->p + o->len, s, n);
  o->len += (uint32_t)n;
  return 0;
}
#define OB_LIT(o, s) ob_put(o, s, sizeof(s) - 1)
static inline uint32_t ob_pending(const obuf_t *o) { return o->len - o->off; }
static void ob_reset(obuf_t *o) { o->len = o->off = 0; }
static void ob_free(obuf_t *o) {
  free(o->p);
  o->p = NULL;
  o->len = o->cap = o->off = 0;
}

static inline int lc(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }
static int ieq(const char *a, size_t al, const char *lower, size_t bl) {
  if (al != bl) return 0;
  for (size_t i = 0; i < al; i++)
    if (lc((unsigned char)a[i]) != lower[i]) return 0;
  return 1;
}
static int ieq2(const char *a, size_t al, const char *b, size_t bl) {
  if (al != bl) return 0;
  for (size_t i = 0; i < al; i++)
    if (lc((unsigned char)a[i]) != lc((unsigned char)b[i])) return 0;
  return 1;
}
static const unsigned char TOKEN_CHARS[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};
/* A control byte other than HTAB (RFC 9110 §5.5). */
static inline int is_ctl(unsigned char b) { return (b < 32 && b != '\t') || b == 127; }

static int is_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!TOKEN_CHARS[(unsigned char)s[i]]) return 0;
  return 1;
}

/* Is s[0..l) in the table? Case-insensitive (field names) or exact (methods). */
static int names_has(const names_t *t, const char *s, uint32_t l, int fold) {
  for (int k = 0; k < t->n; k++) {
    if (t->len[k] != l) continue;
    if (fold ? ieq(s, l, t->name[k], l) : !memcmp(s, t->name[k], l)) return 1;
  }
  return 0;
}

static const char *errname(int err) {
  switch (err) {
  case ECONNREFUSED: return "ECONNREFUSED";
  case ECONNRESET: return "ECONNRESET";
  case ETIMEDOUT: return "ETIMEDOUT";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case ENETUNREACH: return "ENETUNREACH";
  case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
  case ECONNABORTED: return "ECONNABORTED";
  case EPIPE: return "EPIPE";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case ENOBUFS: return "ENOBUFS";
  default: return "EIO";
  }
}

/* One read of an edge-triggered socket into `b`, for client and upstream connections alike.
 * 1: got bytes; 0: nothing (EAGAIN / full); -1: EOF; -2 error. A short read means drained (the
 * next edge says when more comes) unless EPOLLRDHUP was seen: then the EOF is still to read. */
static int sock_read(int fd, buf_t *b, int hup, int *rd_ready, int *eof) {
  if (!*rd_ready || *eof) return *eof ? -1 : 0;
  uint32_t room = buf_room(b);
  if (room == 0) return 0;
  ssize_t n = read(fd, b->p + b->end, room);
  if (n > 0) {
    b->end += (uint32_t)n;
    if ((uint32_t)n < room && !hup) *rd_ready = 0;
    return 1;
  }
  if (n == 0) {
    *eof = 1;
    *rd_ready = 0;
    return -1;
  }
  if (errno == EAGAIN || errno == EINTR) {
    *rd_ready = 0;
    return 0;
  }
  return -2;
}
