/* Chunked bodies (RFC 9112 §7.1): where one ends, the bytes forwarded unchanged.
 * Returns the number of bytes of p[0..n) that belong to the body; sets ch->st = CH_DONE at its
 * end; -1 on a malformed size line. */

static long chunk_feed(chunk_t *ch, const limits_t *lim, const char *p, size_t n) {
  size_t i = 0;
  while (i < n && ch->st != CH_DONE) {
    unsigned char b = (unsigned char)p[i];
    switch (ch->st) {
    case CH_SIZE:
      i++;
      if (++ch->line > lim->chunk_line) return -1;
      if (b == '\n') {
        if (ch->digits == 0) return -1;
        ch->st = ch->left == 0 ? CH_TRAILER : CH_DATA;
        ch->line = 0;
        ch->digits = ch->in_ext = ch->ws_after = ch->cr = 0;
        break;
      }
      if (ch->cr) return -1; /* CR not followed by LF */
      if (ch->in_ext) break;
      if (b == '\r') ch->cr = 1;
      else if (b == ';') ch->in_ext = 1;
      else if (b == ' ' || b == '\t') {
        if (ch->digits) ch->ws_after = 1;
      } else {
        int v = b >= '0' && b <= '9' ? b - '0' : b >= 'a' && b <= 'f' ? b - 'a' + 10 : b >= 'A' && b <= 'F' ? b - 'A' + 10 : -1;
        if (v < 0 || ch->ws_after || (uint32_t)++ch->digits > lim->chunk_digits) return -1;
        ch->left = ch->left * 16 + (uint64_t)v;
      }
      break;
    case CH_DATA: {
      size_t k = n - i < ch->left ? n - i : (size_t)ch->left;
      i += k;
      ch->left -= k;
      if (ch->left == 0) {
        ch->st = CH_DCRLF;
        ch->left = 2;
      }
      break;
    }
    case CH_DCRLF: {
      size_t k = n - i < ch->left ? n - i : (size_t)ch->left;
      i += k;
      ch->left -= k;
      if (ch->left == 0) ch->st = CH_SIZE;
      break;
    }
    case CH_TRAILER:
      i++;
      if (b == '\n') {
        if (ch->line == 0) ch->st = CH_DONE;
        ch->line = 0;
      } else if (b != '\r' || ch->line > 0) {
        if (++ch->line > lim->trailer) return -1;
      }
      break;
    }
  }
  return (long)i;
}
