/* Chunked bodies (RFC 9112 §7.1), read byte by byte, never ambiguously — the grammar of
 * src/proxy/http/chunked.ts (ChunkedParser), which says why each rule is what it is: a size of hex
 * digits (leading zeros allowed, lim->chunk_digits significant ones), optional whitespace,
 * extensions of any byte but a control one; lines end with CRLF or a bare LF; a bare CR, a
 * control byte, data not followed by a line end, a trailer line that is no field, or obs-fold is
 * malformed. With `out` the body is re-framed on the way: our own size lines, CRLFs, and the
 * trailer fields that may be trailers (e->forbidden_trailers dropped). Without `out` it only finds
 * where the body ends (a response relayed as it came).
 * Returns the number of bytes of p[0..n) read (all of them unless the body ended: ch->st ==
 * CH_DONE then), or -1 on a malformed body. */

static int hexval(unsigned char b) {
  return b >= '0' && b <= '9' ? b - '0' : b >= 'a' && b <= 'f' ? b - 'a' + 10 : b >= 'A' && b <= 'F' ? b - 'A' + 10 : -1;
}

static int chunk_size_done(chunk_t *ch, obuf_t *out) {
  if (out) {
    char hx[24];
    int l = snprintf(hx, sizeof hx, "%llx\r\n", (unsigned long long)ch->left);
    if (ob_put(out, hx, (size_t)l) < 0) return -1;
  }
  ch->line = 0;
  ch->st = ch->left == 0 ? CH_TRAILER : CH_DATA;
  return 0;
}

/* A trailer line is complete (its bytes from out[ch->tstart]): kept with a CRLF, or dropped. */
static int chunk_trailer_line(chunk_t *ch, const engine_t *e, obuf_t *out) {
  if (!ch->colon) return -1;
  if (out) {
    const char *name = out->p + ch->tstart;
    if (names_has(&e->forbidden_trailers, name, ch->name_len, 1)) out->len = ch->tstart;
    else if (OB_LIT(out, "\r\n") < 0) return -1;
  }
  ch->line = 0;
  ch->colon = 0;
  ch->st = CH_TRAILER;
  return 0;
}

static long chunk_feed(chunk_t *ch, const engine_t *e, const char *p, size_t n, obuf_t *out) {
  const limits_t *lim = &e->lim;
  size_t i = 0;
  while (i < n && ch->st != CH_DONE) {
    unsigned char b = (unsigned char)p[i];
    switch (ch->st) {
    case CH_SIZE: {
      int v = hexval(b);
      if (v >= 0) {
        if (ch->ws) return -1;
        if (ch->sig || v) ch->sig++;
        if ((uint32_t)ch->sig > lim->chunk_digits) return -1;
        ch->digits++;
        ch->left = ch->left * 16 + (uint64_t)v;
      } else if (ch->digits == 0) return -1;
      else if (b == ' ' || b == '\t') ch->ws = 1;
      else if (b == ';') ch->st = CH_EXT;
      else if (b == '\r') ch->st = CH_SIZE_LF;
      else if (b == '\n') {
        if (chunk_size_done(ch, out) < 0) return -1;
      } else return -1;
      if (ch->st != CH_DATA && ch->st != CH_TRAILER && ++ch->line > lim->chunk_line) return -1;
      i++;
      break;
    }
    case CH_EXT:
      if (b == '\r') ch->st = CH_SIZE_LF;
      else if (b == '\n') {
        if (chunk_size_done(ch, out) < 0) return -1;
      } else if (is_ctl(b)) return -1;
      if (ch->st == CH_EXT && ++ch->line > lim->chunk_line) return -1;
      i++;
      break;
    case CH_SIZE_LF:
      if (b != '\n' || chunk_size_done(ch, out) < 0) return -1;
      i++;
      break;
    case CH_DATA: {
      size_t k = n - i < ch->left ? n - i : (size_t)ch->left;
      if (out && ob_put(out, p + i, k) < 0) return -1;
      i += k;
      ch->left -= k;
      if (ch->left == 0) ch->st = CH_DATA_END;
      break;
    }
    case CH_DATA_END:
    case CH_DATA_LF:
      if (b == '\r' && ch->st == CH_DATA_END) ch->st = CH_DATA_LF;
      else if (b == '\n') {
        if (out && OB_LIT(out, "\r\n") < 0) return -1;
        ch->st = CH_SIZE;
        ch->digits = ch->sig = ch->ws = 0;
        ch->line = 0;
      } else return -1;
      i++;
      break;
    case CH_TRAILER:
      if (ch->line == 0 && (b == '\r' || b == '\n')) {
        if (b == '\r') ch->st = CH_END_LF;
        else {
          if (out && OB_LIT(out, "\r\n") < 0) return -1;
          ch->st = CH_DONE;
        }
      } else if (b == '\r') ch->st = CH_TRAILER_LF;
      else if (b == '\n') {
        if (chunk_trailer_line(ch, e, out) < 0) return -1;
      } else {
        if (ch->line == 0) {
          if (b == ' ' || b == '\t') return -1; /* obs-fold */
          ch->tstart = out ? out->len : 0;
        }
        if (is_ctl(b)) return -1;
        if (!ch->colon) {
          if (b == ':') {
            if (ch->line == 0) return -1;
            ch->colon = 1;
            ch->name_len = ch->line;
          } else if (!TOKEN_CHARS[b]) return -1;
        }
        if (out && ob_put(out, (const char *)&p[i], 1) < 0) return -1;
        ch->line++;
      }
      if (++ch->trailer > lim->trailer) return -1;
      i++;
      break;
    case CH_TRAILER_LF:
      if (b != '\n' || chunk_trailer_line(ch, e, out) < 0) return -1;
      i++;
      break;
    case CH_END_LF:
      if (b != '\n') return -1;
      if (out && OB_LIT(out, "\r\n") < 0) return -1;
      ch->st = CH_DONE;
      i++;
      break;
    }
  }
  return (long)i;
}
