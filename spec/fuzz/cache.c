/* cache.c: fuzz target for the response cache's parsing (src/cache.c,
 * included here to reach its static functions; the Makefile links this
 * target without cache.o): Cache-Control, Expires/Date/Age, Vary and ETag
 * lists as judge() reads an upstream answer, and the kept-answer blobs
 * that entry_from_blob() reads back (from the dictionary, or from a Redis
 * that other gateways write to).
 *
 * Input: "Name: value" lines (an upstream response head), an empty line,
 * then bytes taken as the fields and body of a kept answer (its first byte
 * says how many of them are fields). Checks: judge's lengths are those of
 * the fields it keeps; an answer it keeps, written as capture writes it,
 * reads back with the same headers; every header span of any blob lies
 * inside the blob.
 */
#include "../../src/cache.c"

#include <stdint.h>

#define MAX_HDRS 64

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "cache: %s\n", what);
        abort();
    }
}

static int token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* The spans of e inside its blob of len bytes. */
static void check_spans(const struct mg_cache_entry_s *e, size_t len)
{
    check(e->nheaders <= e->h.nheaders, "more header spans than headers");
    for (uint32_t i = 0; i < e->nheaders; i++) {
        const mg_header_t *h = &e->headers[i];
        check((size_t)h->name.off + h->name.len <= len, "a name outside the blob");
        check((size_t)h->value.off + h->value.len <= len, "a value outside the blob");
    }
}

static void kept_blob(const char *p, size_t n)
{
    blob_head_t h = { 0 };
    if (n < 1)
        return;
    size_t lines = (size_t)(unsigned char)p[0] * (n - 1) / 255;
    h.magic = BLOB_MAGIC;
    h.nheaders = (uint16_t)(p[0] & 0x3f);
    h.lines_len = (uint32_t)lines;
    h.body_len = (uint32_t)(n - 1 - lines);
    char *blob = malloc(sizeof(h) + n - 1);
    check(blob != NULL, "out of memory");
    memcpy(blob, &h, sizeof(h));
    memcpy(blob + sizeof(h), p + 1, n - 1);
    struct mg_cache_entry_s *e = entry_from_blob(blob, sizeof(h) + n - 1); /* takes blob */
    if (e) {
        check_spans(e, sizeof(h) + n - 1);
        size_t l;
        entry_header(e, "etag", 4, &l);
        free_entry(e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *vary[] = { "accept-encoding", "accept-language" };
    mg_route_cache_t rc = { .ttl = 5000, .stale = 1000, .max_body = 1 << 20,
                            .statuses = { 200, 301, 404 }, .nstatuses = 3,
                            .vary = { vary[0], vary[1] }, .nvary = 2 };
    hdr_t hs[MAX_HDRS];
    size_t n = 0, at = 0;
    const char *text = (const char *)data, *inm = NULL, *etag = NULL;
    size_t inml = 0, etagl = 0;

    /* the head: lines up to an empty one */
    while (at < size && n < MAX_HDRS) {
        const char *eol = memchr(text + at, '\n', size - at);
        size_t ll = eol ? (size_t)(eol - text - at) : size - at;
        const char *line = text + at;
        at += ll + (eol ? 1 : 0);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break;
        const char *colon = memchr(line, ':', ll);
        if (!colon || colon == line)
            continue;
        size_t nl = (size_t)(colon - line), vs = nl + 1;
        int ok = 1;
        for (size_t i = 0; i < nl; i++)
            ok &= token_char((unsigned char)line[i]);
        for (size_t i = vs; i < ll; i++)
            ok &= line[i] != '\r' && line[i] != '\0';
        if (!ok)
            continue; /* llhttp would not let it through */
        while (vs < ll && (line[vs] == ' ' || line[vs] == '\t'))
            vs++;
        hs[n] = (hdr_t){ line, line + vs, nl, ll - vs, 1 };
        if (ieq(line, nl, "content-length", 14) || ieq(line, nl, "age", 3))
            hs[n].kept = 0; /* as kept_header() */
        if (ieq(line, nl, "if-none-match", 13))
            inm = line + vs, inml = ll - vs;
        if (ieq(line, nl, "etag", 4))
            etag = line + vs, etagl = ll - vs;
        n++;
    }

    blob_head_t h = { 0 };
    if (judge(&rc, hs, n, &h) == 0) {
        size_t lines = 0, kept = 0;
        for (size_t i = 0; i < n; i++)
            if (hs[i].kept)
                lines += FIELD_PREFIX + hs[i].nl + hs[i].vl, kept++;
        check(h.lines_len == lines && h.nheaders == kept, "judge's field bytes");
        check(lines <= MAX_HEAD_FIELDS, "kept fields over the limit");
        check(h.fresh_ms > h.stored_ms && h.stale_ms >= h.fresh_ms, "times out of order");
        /* written as capture_start() writes it, read back as a hit would */
        h.status = 200;
        h.body_len = 3;
        size_t len = sizeof(h) + h.lines_len + h.body_len;
        char *blob = malloc(len);
        check(blob != NULL, "out of memory");
        memcpy(blob, &h, sizeof(h));
        char *o = put_fields(blob + sizeof(h), hs, n);
        check((size_t)(o - blob) == sizeof(h) + h.lines_len, "fields longer than counted");
        memcpy(o, "abc", 3);
        struct mg_cache_entry_s *e = entry_from_blob(blob, len);
        check(e != NULL, "a kept answer does not read back");
        check(e->nheaders == kept, "a kept answer reads back with other headers");
        check_spans(e, len);
        for (size_t i = 0, j = 0; i < n; i++) {
            if (!hs[i].kept)
                continue;
            const mg_header_t *sp = &e->headers[j++];
            check(sp->name.len == hs[i].nl && memcmp(blob + sp->name.off, hs[i].n, hs[i].nl) == 0,
                  "a kept name reads back changed");
            check(sp->value.len == hs[i].vl &&
                      memcmp(blob + sp->value.off, hs[i].v, hs[i].vl) == 0,
                  "a kept value reads back changed");
        }
        check(e->h.body_len == 3 && memcmp(e->body, "abc", 3) == 0, "the body reads back changed");
        free_entry(e);
    }
    if (inm && etag)
        (void)etag_listed(inm, inml, etag, etagl);
    kept_blob(text + at, size - at);
    return 0;
}
