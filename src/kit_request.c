/* kit_request.c: a request built in memory for the testing kit
 * (lua/moongate/testing/fake.lua), so that the kit's request object runs
 * the gateway's own header reads, edit lists and phase checks
 * (ffi_request.c, request.c) instead of a Lua copy of them.
 *
 * The kit keeps its model of the request (routing, the upstream's answer,
 * the clock, ids) in Lua and hands this request what those functions read:
 * the received headers, the hook phase, whether the response started and
 * the upstream's answer head. Nothing here parses: the headers come as
 * (offset, length) spans into bytes the kit passes, as the protocol's
 * parser would leave them.
 *
 * Ownership: mg_ffi_kit_request_new returns a request that owns copies of
 * everything passed in (its buffer, header array, arena chunks and
 * upstream answer); mg_ffi_kit_request_free frees it all. Not used by the
 * gateway itself.
 */
#include <stdlib.h>
#include <string.h>
#include "request.h"
#include "upstream.h"
#include "mg_ffi.h"

typedef struct kit_req_s {
    mg_request_t r;  /* first: the request pointer is the kit_req_t one */
    char *buf;       /* the received head's bytes (r.data points here) */
    mg_upconn_t *up; /* the upstream's answer, once the kit has one */
} kit_req_t;

/* Copies len bytes and n headers (spans: name off, name len, value off,
 * value len, each into buf) into a new buffer and header array. */
static int copy_head(const char *buf, size_t len, const uint32_t *spans, size_t n, char **out,
                     mg_header_t **headers)
{
    *out = malloc(len ? len : 1);
    *headers = calloc(n ? n : 1, sizeof(**headers));
    if (!*out || !*headers) {
        free(*out);
        free(*headers);
        return -1;
    }
    memcpy(*out, buf, len);
    for (size_t i = 0; i < n; i++) {
        const uint32_t *s = spans + 4 * i;
        if ((size_t)s[0] + s[1] > len || (size_t)s[2] + s[3] > len) {
            free(*out);
            free(*headers);
            return -1;
        }
        (*headers)[i].name = (mg_span_t){ .off = s[0], .len = s[1] };
        (*headers)[i].value = (mg_span_t){ .off = s[2], .len = s[3] };
    }
    return 0;
}

mg_request_t *mg_ffi_kit_request_new(const char *buf, size_t len, const uint32_t *spans, size_t n)
{
    kit_req_t *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    if (copy_head(buf, len, spans, n, &k->buf, &k->r.headers) != 0) {
        free(k);
        return NULL;
    }
    k->r.nheaders = k->r.headers_cap = (uint32_t)n;
    k->r.data = &k->buf;
    k->r.target = -1;
    k->r.upstream_override = -1;
    k->r.target_override = -1;
    return &k->r;
}

static void drop_upstream(kit_req_t *k)
{
    if (!k->up)
        return;
    free(k->up->buf.data);
    free(k->up->headers);
    free(k->up);
    k->up = NULL;
    k->r.up = NULL;
}

void mg_ffi_kit_request_free(mg_request_t *r)
{
    kit_req_t *k = (kit_req_t *)r;
    if (!k)
        return;
    drop_upstream(k);
    mg_request_arena_reset(r);
    free(r->headers);
    free(k->buf);
    free(k);
}

void mg_ffi_kit_request_state(mg_request_t *r, int phase, int response_started)
{
    r->hook_phase = (uint8_t)phase;
    r->response_started = response_started ? 1 : 0;
}

int mg_ffi_kit_request_upstream(mg_request_t *r, int status, const char *buf, size_t len,
                                const uint32_t *spans, size_t n)
{
    kit_req_t *k = (kit_req_t *)r;
    drop_upstream(k);
    if (status <= 0)
        return 0;
    mg_upconn_t *u = calloc(1, sizeof(*u));
    if (!u || copy_head(buf, len, spans, n, &u->buf.data, &u->headers) != 0) {
        free(u);
        return MG_FFI_ENOMEM;
    }
    u->nheaders = (uint32_t)n;
    u->buf.len = u->buf.cap = (uint32_t)len;
    u->h1.status = status;
    k->up = r->up = u;
    return 0;
}

int mg_ffi_kit_request_edit_at(mg_request_t *r, int res, int i, int *op, const char **name,
                               size_t *nlen, const char **value, size_t *vlen)
{
    const mg_edit_t *e = res ? r->res_edits : r->req_edits;
    int n = res ? r->nres_edits : r->nreq_edits;
    if (i < 0 || i >= n)
        return -1;
    *op = e[i].op;
    *name = e[i].name;
    *nlen = e[i].name_len;
    *value = e[i].value;
    *vlen = e[i].value_len;
    return 0;
}
