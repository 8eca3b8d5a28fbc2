/* Request and response heads: parsed in place, rewritten for the other side. */

/*
 * Header lines of h[from..to) (to excludes the final CRLFCRLF's last CRLF), conservatively: any
 * line the JavaScript parser might judge differently makes this return -1 (hand back / malformed).
 */
static int parse_fields(const engine_t *eng, const char *h, uint32_t from, uint32_t to, hinfo_t *hi, const char *hash,
                        uint32_t hash_len) {
  hi->n = hi->ntok = 0;
  hi->conn_close = hi->conn_keep = hi->conn_upgrade = 0;
  hi->content_length = -1;
  hi->te_count = hi->te_chunked = hi->hosts = hi->upgrade = hi->xff = 0;
  hi->hash_idx = -1;
  uint32_t i = from;
  while (i < to) {
    const char *nl = memchr(h + i, '\r', to - i);
    uint32_t e = nl ? (uint32_t)(nl - h) : to;
    if (e < to && h[e + 1] != '\n') return -1;
    if (e == i) { /* empty line inside the head cannot happen before the end */
      i = e + 2;
      continue;
    }
    if (h[i] == ' ' || h[i] == '\t') return -1; /* obs-fold */
    const char *colon = memchr(h + i, ':', e - i);
    if (!colon) return -1;
    uint32_t nlen = (uint32_t)(colon - (h + i));
    if (!is_token(h + i, nlen)) return -1;
    uint32_t v = nlen + i + 1, ve = e;
    for (uint32_t k = v; k < ve; k++) /* RFC 9110 §5.5: no control byte but HTAB in a value */
      if (is_ctl((unsigned char)h[k])) return -1;
    while (v < ve && (h[v] == ' ' || h[v] == '\t')) v++; /* OWS, and nothing else */
    while (ve > v && (h[ve - 1] == ' ' || h[ve - 1] == '\t')) ve--;
    if (hi->n == MAX_HEADERS) return -1;
    hline_t *L = &hi->h[hi->n];
    L->name = i;
    L->nlen = nlen;
    L->val = v;
    L->vlen = ve - v;
    const char *nm = h + i, *val = h + v;
    uint32_t vl = ve - v;
    if (hash_len && hi->hash_idx < 0 && ieq(nm, nlen, hash, hash_len)) hi->hash_idx = hi->n;
    switch (nlen) {
    case 4:
      if (ieq(nm, nlen, "host", 4)) hi->hosts++;
      break;
    case 7:
      if (ieq(nm, nlen, "upgrade", 7)) hi->upgrade = 1;
      break;
    case 10:
      if (ieq(nm, nlen, "connection", 10)) {
        uint32_t a = 0;
        while (a <= vl) {
          uint32_t b = a;
          while (b < vl && val[b] != ',') b++;
          uint32_t s = a, t = b;
          while (s < t && (val[s] == ' ' || val[s] == '\t')) s++;
          while (t > s && (val[t - 1] == ' ' || val[t - 1] == '\t')) t--;
          if (t > s) {
            if (ieq(val + s, t - s, "close", 5)) hi->conn_close = 1;
            else if (ieq(val + s, t - s, "keep-alive", 10)) hi->conn_keep = 1;
            else if (ieq(val + s, t - s, "upgrade", 7)) hi->conn_upgrade = 1;
            if (hi->ntok == MAX_CONN_TOKENS) return -1;
            hi->tok[hi->ntok][0] = v + s;
            hi->tok[hi->ntok][1] = t - s;
            hi->ntok++;
          }
          a = b + 1;
        }
      }
      break;
    case 14:
      if (ieq(nm, nlen, "content-length", 14)) {
        if (vl == 0 || vl > eng->lim.length_digits) return -1;
        int64_t n = 0;
        for (uint32_t k = 0; k < vl; k++) {
          if (val[k] < '0' || val[k] > '9') return -1;
          n = n * 10 + (val[k] - '0');
        }
        if (hi->content_length >= 0 && hi->content_length != n) return -1;
        hi->content_length = n;
      }
      break;
    case 15:
      if (ieq(nm, nlen, "x-forwarded-for", 15)) hi->xff++;
      break;
    case 17:
      if (ieq(nm, nlen, "transfer-encoding", 17)) {
        hi->te_count++;
        hi->te_chunked = ieq(val, vl, "chunked", 7);
      }
      break;
    }
    hi->n++;
    i = e + 2;
  }
  return 0;
}

/* A field not forwarded: hop-by-hop, or named by Connection. */
static int dropped(const engine_t *e, const char *h, const hinfo_t *hi, const hline_t *L) {
  if (names_has(&e->hop, h + L->name, L->nlen, 1)) return 1;
  for (int t = 0; t < hi->ntok; t++)
    if (ieq2(h + L->name, L->nlen, h + hi->tok[t][0], hi->tok[t][1])) return 1;
  return 0;
}

/*
 * Parse the request head at the front of c->in and build the upstream head in c->uout.
 * 0: ready to forward; 1: hand back to JavaScript; -1: out of memory.
 */
static int parse_request(client_t *c, hinfo_t *hi, const char **hash_val, uint32_t *hash_vlen) {
  const char *h = c->in.p + c->in.start;
  uint32_t len = c->head_len - 2; /* up to the CRLF that ends the last line */
  const char *le = memchr(h, '\r', len);
  if (!le || le[1] != '\n') return 1;
  uint32_t rl = (uint32_t)(le - h);
  const char *sp1 = memchr(h, ' ', rl);
  if (!sp1) return 1;
  uint32_t ml = (uint32_t)(sp1 - h);
  if (!is_token(h, ml)) return 1;
  const char *tgt = sp1 + 1;
  const char *sp2 = memchr(tgt, ' ', rl - ml - 1);
  if (!sp2 || sp2 == tgt) return 1;
  uint32_t tl = (uint32_t)(sp2 - tgt);
  for (uint32_t k = 0; k < tl; k++)
    if ((unsigned char)tgt[k] <= 0x20 || tgt[k] == 0x7f) return 1;
  /* forward proxy: `http://authority[/path]` is routed by its authority and sent upstream in
   * origin-form; anything else (origin-form, CONNECT, another scheme) is JavaScript's */
  const char *path = tgt;
  uint32_t pl = tl;
  c->auth_len = 0;
  if (c->forward) {
    if (tl < 8 || !ieq(tgt, 7, "http://", 7)) return 1;
    uint32_t al = 0;
    while (7 + al < tl && tgt[7 + al] != '/' && tgt[7 + al] != '?' && tgt[7 + al] != '#') al++;
    if (al == 0) return 1;
    c->auth_off = (uint32_t)(tgt + 7 - h);
    c->auth_len = al;
    path = tgt + 7 + al;
    pl = tl - 7 - al;
  } else if (tgt[0] != '/')
    return 1; /* absolute-form or asterisk-form on a portal: JavaScript's (rewritten or kept) */
  uint32_t vl = rl - ml - 1 - tl - 1;
  const char *ver = sp2 + 1;
  if (vl != 8 || memcmp(ver, "HTTP/1.", 7) || (ver[7] != '0' && ver[7] != '1')) return 1;
  c->v10 = ver[7] == '0';
  if (parse_fields(c->ev.e, h, rl + 2, len, hi, c->hash_hdr, c->hash_len) < 0) return 1;
  if (hi->hosts > 1 || (hi->hosts == 0 && !c->v10)) return 1;
  if (hi->te_count > 1 || (hi->te_count == 1 && (!hi->te_chunked || hi->content_length >= 0))) return 1;
  if (hi->te_count && c->v10) return 1; /* Transfer-Encoding in HTTP/1.0: JavaScript's 400 */
  if (hi->upgrade && hi->conn_upgrade) return 1; /* Upgrade: JavaScript (and the splice engine) */
  c->keep = c->v10 ? hi->conn_keep : !hi->conn_close;
  c->head_method = ml == 4 && !memcmp(h, "HEAD", 4);
  c->idempotent = names_has(&c->ev.e->idempotent, h, ml, 0);
  c->req_mode = hi->te_chunked ? B_CHUNKED : hi->content_length > 0 ? B_LENGTH : B_NONE;
  c->req_left = hi->content_length > 0 ? (uint64_t)hi->content_length : 0;
  c->has_body = c->req_mode != B_NONE;
  memset(&c->req_ch, 0, sizeof c->req_ch);
  ob_reset(&c->ubody);
  if (hi->hash_idx >= 0) {
    *hash_val = h + hi->h[hi->hash_idx].val;
    *hash_vlen = hi->h[hi->hash_idx].vlen;
  }
  /* the upstream head */
  obuf_t *o = &c->uout;
  ob_reset(o);
  /* the client's version: an HTTP/1.0 client must never get a chunked answer (RFC 9112 §7.1),
   * and an upstream asked in HTTP/1.0 does not send one */
  int bad = ob_put(o, h, ml + 1);
  if (pl == 0 || path[0] != '/') bad |= OB_LIT(o, "/"); /* http://host?q → /?q */
  bad |= ob_put(o, path, pl) | (c->v10 ? OB_LIT(o, " HTTP/1.0\r\n") : OB_LIT(o, " HTTP/1.1\r\n"));
  if (c->auth_len) { /* forward: Host is the target's authority, userinfo dropped (RFC 9112 §3.2.2) */
    const char *a = h + c->auth_off;
    uint32_t al = c->auth_len;
    for (uint32_t k = al; k > 0; k--)
      if (a[k - 1] == '@') {
        a += k;
        al -= k;
        break;
      }
    bad |= OB_LIT(o, "Host: ") | ob_put(o, a, al) | OB_LIT(o, "\r\n");
  }
  int first_xff = 1, lengths = 0;
  for (int k = 0; k < hi->n; k++) {
    const hline_t *L = &hi->h[k];
    if (L->nlen == 15 && ieq(h + L->name, 15, "x-forwarded-for", 15)) continue;
    if (c->auth_len && L->nlen == 4 && ieq(h + L->name, 4, "host", 4)) continue;
    if (dropped(c->ev.e, h, hi, L)) continue;
    /* one of equal Content-Lengths (unequal ones were refused); no underscore names unless asked
     * (nginx's underscores_in_headers: a backend may read `Content_Length` as `Content-Length`) */
    if (L->nlen == 14 && ieq(h + L->name, 14, "content-length", 14) && lengths++) continue;
    if (!c->ev.e->underscores && memchr(h + L->name, '_', L->nlen)) continue;
    bad |= ob_put(o, h + L->name, L->nlen) | OB_LIT(o, ": ") | ob_put(o, h + L->val, L->vlen) | OB_LIT(o, "\r\n");
  }
  bad |= OB_LIT(o, "X-Forwarded-For: ");
  uint32_t xff_start = o->len;
  for (int k = 0; k < hi->n && hi->xff; k++) {
    const hline_t *L = &hi->h[k];
    if (!(L->nlen == 15 && ieq(h + L->name, 15, "x-forwarded-for", 15))) continue;
    if (!first_xff && o->len > xff_start) bad |= OB_LIT(o, ", ");
    bad |= ob_put(o, h + L->val, L->vlen);
    first_xff = 0;
  }
  if (o->len > xff_start) bad |= OB_LIT(o, ", ");
  bad |= ob_put(o, c->ip, strlen(c->ip)) | OB_LIT(o, "\r\n");
  if (c->req_mode == B_CHUNKED) bad |= OB_LIT(o, "Transfer-Encoding: chunked\r\n");
  bad |= OB_LIT(o, "Connection: keep-alive\r\n\r\n");
  return bad ? -1 : 0;
}

/*
 * A response head's status line, as ours ("HTTP/1.1 NNN reason"), and its end-to-end fields, into
 * `o` (without the blank line). Nonzero: out of memory.
 */
static int put_head(const engine_t *e, obuf_t *o, const char *h, const hinfo_t *hi, const char *reason, uint32_t reason_len) {
  char sl[13] = "HTTP/1.1 000 ";
  memcpy(sl + 9, h + 9, 3);
  int bad = ob_put(o, sl, sizeof sl) | ob_put(o, reason, reason_len) | OB_LIT(o, "\r\n");
  for (int k = 0; k < hi->n; k++) {
    const hline_t *L = &hi->h[k];
    if (dropped(e, h, hi, L)) continue;
    bad |= ob_put(o, h + L->name, L->nlen) | OB_LIT(o, ": ") | ob_put(o, h + L->val, L->vlen) | OB_LIT(o, "\r\n");
  }
  return bad;
}

/*
 * The response head of length `end` at the front of the upstream buffer. 0: the final head, in
 * c->out; 1: an interim (1xx) head, queued (or dropped for an HTTP/1.0 client); -1: malformed.
 */
static int parse_response(client_t *c, uint32_t end) {
  engine_t *e = c->ev.e;
  up_t *u = c->up;
  const char *h = u->in.p + u->in.start;
  const char *le = memchr(h, '\r', end - 2);
  if (!le || le[1] != '\n') return -1;
  uint32_t rl = (uint32_t)(le - h);
  if (rl < 12 || memcmp(h, "HTTP/1.", 7) || (h[7] != '0' && h[7] != '1') || h[8] != ' ') return -1;
  for (int k = 9; k < 12; k++)
    if (h[k] < '0' || h[k] > '9') return -1;
  if (rl > 12 && h[12] != ' ') return -1;
  int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
  const char *reason = rl > 12 ? h + 13 : h + 12;
  uint32_t reason_len = rl > 12 ? rl - 13 : 0;
  hinfo_t hi;
  if (parse_fields(e, h, rl + 2, end - 2, &hi, NULL, 0) < 0) return -1;
  if (status < 200 && status != 101) {
    /* interim: relayed like a final head (our status line, hop-by-hop fields dropped), but never
     * to an HTTP/1.0 client, which has no 1xx (RFC 9110 §15.2) */
    uint32_t mark = c->out.len;
    if (!c->v10 && (put_head(e, &c->out, h, &hi, reason, reason_len) | OB_LIT(&c->out, "\r\n")))
      return (c->out.len = mark, -1); /* nothing half-written goes before the 502 */
    u->in.start += end;
    timer_set(e, &u->ev.t, T_RESPONSE);
    return 1;
  }
  if (status == 101) return -1; /* not asked for: upgrades go through JavaScript */
  c->status = status;
  int v10 = h[7] == '0';
  int no_body = c->head_method || status == 204 || status == 304;
  int chunked = hi.te_count > 0 && hi.te_chunked && hi.te_count == 1;
  /* as nginx: a transfer coding other than chunked alone (we cannot undo gzip, say, and the field
   * is hop-by-hop), or Transfer-Encoding with Content-Length (RFC 9112 §6.3), is a bad upstream */
  if (hi.te_count > 0 && (!chunked || hi.content_length >= 0)) return -1;
  if (no_body) c->resp_mode = B_NONE;
  else if (chunked) c->resp_mode = B_CHUNKED; /* any other TE was refused above */
  else if (hi.content_length >= 0) c->resp_mode = hi.content_length ? B_LENGTH : B_NONE;
  else c->resp_mode = B_EOF;
  c->resp_left = c->resp_mode == B_LENGTH ? (uint64_t)hi.content_length : 0;
  memset(&c->resp_ch, 0, sizeof c->resp_ch);
  c->resp_scanned = 0;
  /* an upload still running when the answer comes ends with the connection: say so now */
  c->client_keep = c->keep && c->resp_mode != B_EOF && c->req_done;
  c->resp_reusable = !v10 && !hi.conn_close && c->resp_mode != B_EOF;
  obuf_t *o = &c->out;
  uint32_t mark = o->len;
  int bad = put_head(e, o, h, &hi, reason, reason_len);
  if (chunked && !no_body) bad |= OB_LIT(o, "Transfer-Encoding: chunked\r\n");
  if (!c->client_keep) bad |= OB_LIT(o, "Connection: close\r\n\r\n");
  else if (c->v10) bad |= OB_LIT(o, "Connection: keep-alive\r\n\r\n");
  else bad |= OB_LIT(o, "\r\n");
  if (bad) return (o->len = mark, -1); /* nothing half-written goes before the 502 */
  u->in.start += end;
  c->rstate = R_BODY;
  timer_set(e, &u->ev.t, T_RESPONSE); /* from here: the body may not stall longer */
  return 0;
}

/* Where the head in c->in ends (just past its CRLFCRLF); 0: not yet; UINT32_MAX: one JavaScript
 * normalizes (bare LFs). */
static uint32_t find_head_end(client_t *c) {
  const char *p = c->in.p + c->in.start;
  uint32_t n = buf_len(&c->in);
  uint32_t from = c->scan > 3 ? c->scan - 3 : 0;
  if (n < 4 || from >= n) {
    c->scan = n;
    return 0;
  }
  const char *f = memmem(p + from, n - from, "\r\n\r\n", 4);
  if (!f) {
    /* a head that ends with bare LFs (or starts with an empty line) is JavaScript's to normalize */
    if (memmem(p + from, n - from, "\n\n", 2) || memmem(p + from, n - from, "\n\r\n", 3)) return UINT32_MAX;
    c->scan = n;
    return 0;
  }
  return (uint32_t)(f - p) + 4;
}
