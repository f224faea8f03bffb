/* ffi_request.c: the request and response API that Lua hooks reach through
 * the FFI (declared in mg_ffi.h, wrapped by lua/moongate/runtime.lua).
 *
 * Reads hand back (pointer, length) into the connection's buffers: Lua makes
 * a string only when a script reads a value. Writes copy into the request's
 * arena, so Lua strings need not outlive the call. Every function returns
 * an error (-1) instead of touching a request that is not in a phase where
 * the data exists.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cache.h"
#include "http.h"
#include "request.h"
#include "upstream.h"
#include "tls.h"
#include "header_names.h"
#include "maglev.h"
#include "mg_ffi.h"
#include "targets.h"


static const char *arena_copy(mg_request_t *r, const char *p, size_t len)
{
    char *d = mg_request_alloc(r, len + 1);
    if (!d)
        return NULL;
    memcpy(d, p, len);
    d[len] = 0;
    return d;
}

/* ---- reading the request ------------------------------------------------ */

static int give(const char *s, size_t n, const char **p, size_t *len)
{
    *p = s;
    *len = n;
    return 0;
}

static int tls_str(const mg_request_t *r, int what, const char **p, size_t *len)
{
    mg_tls_conn_t *t = r->proto->tls(r);
    const char *s = NULL;
    size_t n = 0;
    if (!t || !mg_tls_handshake_done(t))
        return -1;
    if (what == MG_FFI_TLS_VERSION)
        s = mg_tls_version(t);
    else if (what == MG_FFI_TLS_CIPHER)
        s = mg_tls_cipher(t);
    else if (what == MG_FFI_TLS_SNI)
        s = mg_tls_sni(t);
    else if ((s = mg_tls_alpn(t, &n)) != NULL)
        return give(s, n, p, len);
    return s ? give(s, strlen(s), p, len) : -1;
}

int mg_ffi_req_str(mg_request_t *r, int what, const char **p, size_t *len)
{
    const mg_config_t *cfg = r->g->cfg;
    switch (what) {
    case MG_FFI_METHOD:
        if (r->new_method)
            return give(r->new_method, r->new_method_len, p, len);
        return give(mg_request_data(r, r->method), r->method.len, p, len);
    case MG_FFI_PATH:
        return r->path ? give(r->path, r->path_len, p, len) : -1;
    case MG_FFI_RAW_PATH: {
        const char *u = mg_request_data(r, r->url);
        const char *q = memchr(u, '?', r->url.len);
        return give(u, q ? (size_t)(q - u) : r->url.len, p, len);
    }
    case MG_FFI_QUERY:
        if (r->new_query)
            return give(r->new_query, r->new_query_len, p, len);
        return r->query_len ? give(r->query + 1, r->query_len - 1, p, len) : give("", 0, p, len);
    case MG_FFI_ID:
        return give(r->request_id, r->request_id_len, p, len);
    case MG_FFI_CLIENT: {
        const char *c = mg_request_client(r);
        return give(c, strlen(c), p, len);
    }
    case MG_FFI_PEER: {
        const char *c = mg_request_peer(r);
        return give(c, strlen(c), p, len);
    }
    case MG_FFI_ROUTE:
        return r->route ? give(r->route->name, strlen(r->route->name), p, len) : -1;
    case MG_FFI_UPSTREAM: {
        int ui = mg_request_upstream(r);
        if (ui < 0)
            return -1;
        return give(cfg->upstreams[ui].name, strlen(cfg->upstreams[ui].name), p, len);
    }
    case MG_FFI_TARGET: {
        if (mg_request_upstream(r) < 0 || r->target < 0)
            return -1;
        const char *n = mg_request_target_name(r);
        return give(n, strlen(n), p, len);
    }
    case MG_FFI_TRACE_ID:
        return r->traced ? give(r->trace_id, sizeof(r->trace_id), p, len) : -1;
    case MG_FFI_SPAN_ID:
        return r->traced ? give(r->span_id, sizeof(r->span_id), p, len) : -1;
    case MG_FFI_SCHEME:
        return r->proto->tls(r) ? give("https", 5, p, len) : give("http", 4, p, len);
    case MG_FFI_TLS_VERSION:
    case MG_FFI_TLS_CIPHER:
    case MG_FFI_TLS_SNI:
    case MG_FFI_TLS_ALPN:
        return tls_str(r, what, p, len);
    default:
        return -1;
    }
}

int mg_ffi_req_tls_resumed(mg_request_t *r)
{
    mg_tls_conn_t *t = r->proto->tls(r);
    return t ? mg_tls_resumed(t) : -1;
}

void *mg_ffi_req_client_cert(mg_request_t *r, int *verified)
{
    mg_tls_conn_t *t = r->proto->tls(r);
    *verified = 0;
    return t && mg_tls_handshake_done(t) ? mg_tls_peer_cert(t, verified) : NULL;
}

int mg_ffi_req_client_port(mg_request_t *r) { return r->peer->client_port; }

int mg_ffi_req_client_in(mg_request_t *r, const mg_cidr_set_t *s)
{
    if (r->client_ip) /* from a trusted proxy's header: kept as text */
        return mg_cidr_set_contains_text(s, r->client_ip, strlen(r->client_ip));
    if (r->peer->client_ip[0] == '\0')
        return -1; /* the socket had no IP address: peer->addr holds none */
    return mg_cidr_set_contains(s, &r->peer->addr, NULL) ? 1 : 0;
}

int mg_ffi_req_http_version(mg_request_t *r) { return 10 * r->http_major + r->http_minor; }


/* A request header's value by name (case-insensitive), as changed so far
 * by hooks; nth counts repeats from 0. Returns 1 and fills p/len, or 0. */
int mg_ffi_req_header(mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len)
{
    return mg_request_header(r, name, nlen, nth, p, len);
}

int mg_ffi_req_header_count(mg_request_t *r) { return (int)r->nheaders; }

/* The i-th header as received (edits are not applied here). */
int mg_ffi_req_header_at(mg_request_t *r, int i, const char **name, size_t *nlen,
                         const char **value, size_t *vlen)
{
    if (i < 0 || (uint32_t)i >= r->nheaders)
        return -1;
    *name = mg_request_data(r, r->headers[i].name);
    *nlen = r->headers[i].name.len;
    *value = mg_request_data(r, r->headers[i].value);
    *vlen = r->headers[i].value.len;
    return 0;
}

int mg_ffi_req_param(mg_request_t *r, int i, const char **name, size_t *nlen,
                     const char **value, size_t *vlen)
{
    if (!r->route || i < 0 || (size_t)i >= r->match.nparams)
        return -1;
    *name = r->match.params[i].name;
    *nlen = r->match.params[i].name_len;
    *value = r->match.params[i].value;
    *vlen = r->match.params[i].value_len;
    return 0;
}

/* ---- changing the request ----------------------------------------------- */

static int valid_token(const char *s, size_t n)
{
    if (n == 0 || n > 256)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!mg_hname_tchar[(unsigned char)s[i]])
            return 0;
    return 1;
}

static int valid_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 32 && ch != '\t') || ch == 127)
            return 0;
    }
    return 1;
}

/* The token of a header name a hook may change (header_names.h, 0 for
 * another name), or -1: not a name, or one that belongs to the core
 * (framing and hop-by-hop headers: a hook that could set them could
 * desynchronise the connections, request smuggling), or a bad value. */
static int edit_token(int op, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (!valid_token(name, nlen) || (op != MG_EDIT_REMOVE && !valid_value(value, vlen)))
        return -1;
    int tok = mg_hname_lookup(name, nlen);
    return mg_hname_flags(tok) & (MG_HNF_HOP | MG_HNF_FRAMING) ? -1 : tok;
}

int mg_ffi_header_edit_check(int op, const char *name, size_t nlen, const char *value,
                             size_t vlen)
{
    return edit_token(op, name, nlen, value, vlen) < 0 ? MG_FFI_EINVAL : 0;
}

/* Appends an edit that edit_token accepted (tok: what it gave). */
static int add_edit(mg_request_t *r, mg_edit_t *edits, uint8_t *n, int op, int tok,
                    const char *name, size_t nlen, const char *value, size_t vlen)
{
    /* a SET or REMOVE replaces every earlier edit of the same name */
    if (op != MG_EDIT_ADD) {
        uint8_t k = 0;
        for (uint8_t i = 0; i < *n; i++) {
            if (tok || edits[i].tok ? edits[i].tok == tok
                                    : edits[i].name_len == nlen &&
                                          strncasecmp(edits[i].name, name, nlen) == 0)
                continue;
            edits[k++] = edits[i];
        }
        *n = k;
    }
    if (*n >= MG_MAX_EDITS)
        return MG_FFI_ELIMIT;
    mg_edit_t *e = &edits[(*n)];
    e->name = arena_copy(r, name, nlen);
    e->value = op == MG_EDIT_REMOVE ? "" : arena_copy(r, value, vlen);
    if (!e->name || !e->value)
        return MG_FFI_ENOMEM;
    e->op = (uint8_t)op;
    e->tok = (uint8_t)tok;
    e->name_len = (uint16_t)nlen;
    e->value_len = op == MG_EDIT_REMOVE ? 0 : (uint32_t)vlen;
    (*n)++;
    return 0;
}

int mg_ffi_req_edit_header(mg_request_t *r, int op, const char *name, size_t nlen,
                           const char *value, size_t vlen)
{
    if (r->response_started || r->hook_phase >= MG_PHASE_RESPONSE)
        return MG_FFI_EPHASE;
    int tok = edit_token(op, name, nlen, value, vlen);
    if (tok < 0)
        return MG_FFI_EINVAL;
    return add_edit(r, r->req_edits, &r->nreq_edits, op, tok, name, nlen, value, vlen);
}

int mg_ffi_req_str_check(int what, const char *s, size_t len)
{
    switch (what) {
    case MG_FFI_METHOD:
        return valid_token(s, len) ? 0 : MG_FFI_EINVAL;
    case MG_FFI_PATH:
    case MG_FFI_QUERY:
        if (what == MG_FFI_PATH && (len == 0 || s[0] != '/'))
            return MG_FFI_EINVAL;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] <= 32 || s[i] == '#' || (unsigned char)s[i] >= 127 ||
                (what == MG_FFI_PATH && s[i] == '?'))
                return MG_FFI_EINVAL;
        return 0;
    default:
        return MG_FFI_EINVAL;
    }
}

int mg_ffi_req_set_str(mg_request_t *r, int what, const char *s, size_t len)
{
    if (r->response_started || r->hook_phase >= MG_PHASE_RESPONSE)
        return MG_FFI_EPHASE;
    if (mg_ffi_req_str_check(what, s, len) != 0)
        return MG_FFI_EINVAL;
    const char *copy;
    switch (what) {
    case MG_FFI_METHOD:
        if (!(copy = arena_copy(r, s, len)))
            return MG_FFI_ENOMEM;
        r->new_method = copy;
        r->new_method_len = len;
        return 0;
    case MG_FFI_QUERY:
        if (!(copy = arena_copy(r, s, len)))
            return MG_FFI_ENOMEM;
        r->new_query = copy;
        r->new_query_len = len;
        return 0;
    case MG_FFI_PATH:
        if (!(copy = arena_copy(r, s, len)))
            return MG_FFI_ENOMEM;
        r->path = (char *)copy;
        r->path_len = len;
        /* before routing the new path is routed; after, it is sent as is */
        r->path_rewritten = r->route != NULL;
        return 0;
    default:
        return MG_FFI_EINVAL;
    }
}

int mg_ffi_req_set_upstream(mg_request_t *r, const char *name, size_t len)
{
    if (r->response_started || r->hook_phase >= MG_PHASE_RESPONSE || r->up)
        return MG_FFI_EPHASE;
    const mg_config_t *cfg = r->g->cfg;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        if (strlen(cfg->upstreams[i].name) == len &&
            memcmp(cfg->upstreams[i].name, name, len) == 0) {
            r->upstream_override = (int)i;
            r->target_override = -1;
            r->split_how = 0; /* not the route's split's choice any more */
            return 0;
        }
    }
    return MG_FFI_ENOTFOUND;
}

/* The hash balancer's key for this request (an upstream whose `hash` is a
 * Lua function; balancer_key.c). Kept as its hash: nothing to copy. */
int mg_ffi_req_set_hash_key(mg_request_t *r, const char *key, size_t len)
{
    if (r->response_started || r->hook_phase >= MG_PHASE_RESPONSE || r->up)
        return MG_FFI_EPHASE;
    r->hash_key = mg_maglev_hash(key, len, 0);
    r->hash_key_set = 1;
    return 0;
}

/* Pins the target ("host:port", one of the chosen upstream's targets). */
int mg_ffi_req_set_target(mg_request_t *r, const char *name, size_t len)
{
    if (r->response_started || r->hook_phase >= MG_PHASE_RESPONSE || r->up)
        return MG_FFI_EPHASE;
    const mg_config_t *cfg = r->g->cfg;
    int ui = mg_request_upstream(r);
    if (ui < 0)
        return MG_FFI_ENOTFOUND;
    if (r->g->gen) {
        /* a target of the worker's view, by the name /upstreams shows */
        const mg_tview_t *v = r->g->ups[ui].view;
        int s = mg_tview_find(r->g->gen, (size_t)ui, v, name, len);
        if (s < 0)
            return MG_FFI_ENOTFOUND;
        r->target_override = s;
        r->target_serial = v->e[s].serial;
        return 0;
    }
    const mg_upstream_t *u = &cfg->upstreams[ui]; /* the testing kit's */
    for (size_t i = 0; i < u->ntargets; i++) {
        if (strlen(u->targets[i].name) == len && memcmp(u->targets[i].name, name, len) == 0) {
            r->target_override = (int)i;
            return 0;
        }
    }
    return MG_FFI_ENOTFOUND;
}

/* ---- the response (on_response, on_log) --------------------------------- */

int mg_ffi_res_status(mg_request_t *r)
{
    if (r->res_status)
        return r->res_status;
    if (r->status)
        return r->status;
    if (r->up && r->hook_phase == MG_PHASE_RESPONSE)
        return r->up->h1.status;
    if (mg_cache_holds(r) && r->hook_phase == MG_PHASE_RESPONSE)
        return mg_cache_entry_status(r);
    return 0;
}

/* The response head hooks see: the upstream's, or the one the cache kept. */
static const mg_header_t *res_headers(mg_request_t *r, uint32_t *n, const char **data)
{
    if (r->hook_phase == MG_PHASE_RESPONSE && r->up) {
        *n = r->up->nheaders;
        *data = r->up->buf.data;
        return r->up->headers;
    }
    if (r->hook_phase == MG_PHASE_RESPONSE && mg_cache_holds(r))
        return mg_cache_entry_headers(r, n, data);
    *n = 0;
    *data = NULL;
    return NULL;
}

int mg_ffi_res_set_status(mg_request_t *r, int status)
{
    if (r->response_started)
        return MG_FFI_EPHASE;
    /* a final answer only: the 1xx a client may get are the core's */
    if (status < 200 || status > 599)
        return MG_FFI_EINVAL;
    r->res_status = status;
    return 0;
}

int mg_ffi_res_header(mg_request_t *r, const char *name, size_t nlen, int nth, const char **p,
                      size_t *len)
{
    uint32_t n;
    const char *data;
    const mg_header_t *h = res_headers(r, &n, &data);
    return mg_edits_header(r->res_edits, r->nres_edits, h, n, data, name, nlen, nth, p, len);
}

int mg_ffi_res_header_count(mg_request_t *r)
{
    uint32_t n;
    const char *data;
    res_headers(r, &n, &data);
    return (int)n;
}

int mg_ffi_res_header_at(mg_request_t *r, int i, const char **name, size_t *nlen,
                         const char **value, size_t *vlen)
{
    uint32_t n;
    const char *data;
    const mg_header_t *h = res_headers(r, &n, &data);
    if (i < 0 || (uint32_t)i >= n)
        return -1;
    *name = data + h[i].name.off;
    *nlen = h[i].name.len;
    *value = data + h[i].value.off;
    *vlen = h[i].value.len;
    return 0;
}

int mg_ffi_res_edit_header(mg_request_t *r, int op, const char *name, size_t nlen,
                           const char *value, size_t vlen)
{
    if (r->response_started)
        return MG_FFI_EPHASE;
    int tok = edit_token(op, name, nlen, value, vlen);
    if (tok < 0)
        return MG_FFI_EINVAL;
    return add_edit(r, r->res_edits, &r->nres_edits, op, tok, name, nlen, value, vlen);
}

int mg_ffi_res_set_body(mg_request_t *r, const char *body, size_t len)
{
    if (r->response_started)
        return MG_FFI_EPHASE;
    const char *copy = arena_copy(r, body, len);
    if (!copy)
        return MG_FFI_ENOMEM;
    r->res_body = copy;
    r->res_body_len = len;
    r->res_body_set = 1;
    return 0;
}

/* ---- the response cache ------------------------------------------------- */

int mg_ffi_req_skip_cache(mg_request_t *r)
{
    int rc = mg_cache_skip(r);
    return rc == -1 ? MG_FFI_EPHASE : rc < 0 ? MG_FFI_ENOMEM : 0;
}

int mg_ffi_req_cache_key(mg_request_t *r, const char *part, size_t len)
{
    if (mg_cache_looked(r))
        return MG_FFI_EPHASE;
    if (memchr(part, '\n', len))
        return MG_FFI_EINVAL;
    return mg_cache_key_add(r, part, len) < 0 ? MG_FFI_ENOMEM : 0;
}

int mg_ffi_req_cache_state(mg_request_t *r) { return mg_cache_state(r); }

/* ---- misc --------------------------------------------------------------- */

double mg_ffi_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0;
}

double mg_ffi_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
