/* h1_response.c: fuzz target for the upstream response parser
 * (src/h1_response.c), checked against llhttp in strict mode, which it
 * replaced: it may refuse what llhttp takes (it is stricter by design: no
 * folded framing header, no Content-Length beside Transfer-Encoding, ...),
 * but whatever it accepts llhttp must accept the same way: the same
 * status, the same body bytes, the message ending at the same byte, and no
 * reuse of a connection llhttp would close. A parser laxer than llhttp is how responses get
 * smuggled.
 *
 * Input: one byte of flags (bit 0: the request was HEAD; bit 1: the
 * upstream closes after the bytes; bits 2-7: the size of the pieces the
 * body arrives in, 0 at once), then what the upstream sends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <llhttp.h>
#include "http.h"
#include "upstream.h"
#include "h1_response.h"

#define CAP 16384

typedef struct {
    char body[CAP];
    size_t body_len, end; /* end: where the message ended (+1), 0 if not */
    int status, keep_alive, head;
    const char *base;
} ll_t;

static int ll_headers_done(llhttp_t *p)
{
    ll_t *l = p->data;
    l->status = p->status_code;
    /* what the proxy told llhttp: no body for HEAD, 1xx, 204, 304 */
    return l->head || !mg_status_has_body(p->status_code) ? 1 : 0;
}

static int ll_body(llhttp_t *p, const char *at, size_t n)
{
    ll_t *l = p->data;
    if (n)
        memcpy(l->body + l->body_len, at, n);
    l->body_len += n;
    return 0;
}

static int ll_done(llhttp_t *p)
{
    ll_t *l = p->data;
    l->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "h1_response: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size - 1 > CAP)
        return 0;
    int head = data[0] & 1, closes = data[0] & 2;
    size_t step = data[0] >> 2, n = size - 1;
    const char *in = (const char *)data + 1;

    /* ours: the head once all of it is there, then the body in pieces */
    static char buf[CAP], body[CAP];
    static mg_header_t hs[MG_UP_MAX_HEADERS];
    static uint8_t tok[MG_UP_MAX_HEADERS];
    memcpy(buf, in, n);
    mg_h1r_t p;
    long hl = mg_h1r_head(&p, buf, 0, n, hs, tok, MG_UP_MAX_HEADERS, head);
    if (hl < 0)
        return 0; /* refused or incomplete: nothing to compare */
    check(hl <= (long)n && p.status >= 100, "a head beyond its input");
    if (p.status < 200)
        return 0; /* an interim answer: llhttp goes on to the next message */
    size_t at = (size_t)hl, have = at, blen = 0;
    int done = p.state == MG_H1_DONE;
    while (!done) {
        size_t before = at, used, dlen;
        const char *d;
        if (have < n) /* the next piece arrives, after what is still unused */
            have = step && n - have > step ? have + step : n;
        int rc = mg_h1r_body(&p, buf + at, have - at, &used, &d, &dlen);
        if (rc < 0)
            return 0;
        check(used <= have - at && dlen <= used, "consumed more than it was given");
        if (dlen)
            memcpy(body + blen, d, dlen);
        blen += dlen;
        at += used;
        done = rc == 1;
        if (!done && at == before && have == n)
            break; /* it needs bytes that never come */
    }
    if (!done && closes && mg_h1r_eof(&p) == 0) {
        done = 1;
        at = n;
    }
    if (!done)
        return 0;

    /* llhttp, strict, on the same bytes */
    static ll_t l;
    static llhttp_settings_t s;
    static int ready;
    if (!ready) {
        llhttp_settings_init(&s);
        s.on_headers_complete = ll_headers_done;
        s.on_body = ll_body;
        s.on_message_complete = ll_done;
        ready = 1;
    }
    memset(&l, 0, sizeof(l));
    l.head = head;
    llhttp_t lp;
    llhttp_init(&lp, HTTP_RESPONSE, &s);
    lp.data = &l;
    llhttp_errno_t e = llhttp_execute(&lp, in, n);
    if (e == HPE_PAUSED) {
        l.end = (size_t)(llhttp_get_error_pos(&lp) - in);
    } else {
        check(e == HPE_OK, "accepted what llhttp refuses");
        e = llhttp_finish(&lp);
        check((e == HPE_OK || e == HPE_PAUSED) && closes, "complete where llhttp is not");
        l.keep_alive = 0;
        l.end = n;
    }
    check(l.status == p.status, "another status than llhttp's");
    check(l.end == at, "the message ends elsewhere than llhttp's");
    check(l.body_len == blen && memcmp(l.body, body, blen) == 0, "another body than llhttp's");
    /* closing where llhttp would not is only cautious ("Connection:
     * a b, close": it reads one token "a b") */
    check(!mg_h1_response_reusable(&p, 0, 1) || l.keep_alive, "reused where llhttp closes");
    return 0;
}
