/* http_client.c: gw.http.request, a non-blocking HTTP/1.1 client for hooks
 * and timers (forward auth, JWKS fetches, webhooks), and the gateway's own
 * detached requests (mg_http_send_detached: route mirrors, mirror.c),
 * which nobody waits for and whose answers are read and dropped.
 *
 * It borrows the core's keep-alive pools: a URL whose host is the name of
 * a configured upstream is balanced over that upstream's targets; a
 * "host:port" that is one of the config's targets uses that target's pool;
 * any other address gets a small pool of its own (per worker, kept until
 * the worker stops). The response body is read whole, up to max_body.
 *
 * Ownership: an mg_http_op_t belongs to the waiting coroutine's operation
 * (a detached one: to this file, in its worker's list until it ends); it
 * is freed when its timer handle is closed, after the result was handed
 * to Lua (or to the detached one's callback) or the wait was cancelled. The connection goes back to its pool
 * only after a complete response that allows keep-alive.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include "upstream.h"
#include "targets.h"
#include "h1_response.h"
#include "hooks.h"
#include "mg_ffi.h"
#include "tls_client.h"
#include "uri.h"

typedef struct mg_http_op_s mg_http_op_t;

/* A host:port that is no configured target: its own pool, its name
 * resolved on first use with uv_getaddrinfo (libuv's thread pool), the
 * operations that need it waiting meanwhile; a name that did not resolve
 * is tried again by the next operation. */
typedef struct adhoc_pool_s {
    struct adhoc_pool_s *next;
    mg_pool_t pool;
    mg_upstream_t up;
    mg_target_t target;
    uv_getaddrinfo_t gai;
    int resolving;
    mg_http_op_t *waiting; /* operations waiting for gai (op->next_waiting) */
    char name[280];
} adhoc_pool_t;

/* The TLS configurations https URLs with options used on this worker, one
 * per (ca, verify): built on first use (that reads the CA file, once), kept
 * until the worker stops. Without options: mg_tls_client_default(). */
typedef struct http_tls_s {
    struct http_tls_s *next;
    mg_tls_client_t *c;
    int verify;
    char ca[];             /* "": none given */
} http_tls_t;

struct mg_http_op_s {
    mg_worker_t *w;
    mg_http_op_t *next_waiting; /* in its ad-hoc pool's waiting list */
    uint8_t waiting_dns;
    mg_hook_co_t *hc;
    mg_pool_t *pool;
    mg_upconn_t *u;
    uv_timer_t timer;
    mg_h1r_t h1;            /* the response (h1_response.h) */
    char *req;              /* the whole request, written once connected */
    size_t req_len;
    char *hdrs;             /* "name\0value\0" pairs of the response */
    size_t hdrs_len, hdrs_cap;
    char *body;
    size_t body_len, body_cap, max_body;
    uint8_t head_method;    /* HEAD: no body follows whatever the head says */
    uint8_t complete;
    uint8_t extra;          /* bytes followed the response: no reuse */
    uint8_t finished;       /* result delivered or cancelled */
    uint8_t reused;
    uint8_t retried;
    uint8_t starting;       /* inside mg_ffi_http_request: never finish here */
    uint8_t deferred;       /* a failure waits for the next loop turn */
    int status;
    const char *err;
    const char *deferred_err;
    char tls_err[320];      /* why the TLS handshake failed */
    /* detached (mg_http_send_detached): nothing is kept of the answer,
     * done is told how it ended, and the op is in the worker's list */
    uint8_t discard;
    void (*done)(void *arg, int status, const char *err);
    void *done_arg;
    mg_link_t link;
};

static _Thread_local adhoc_pool_t *adhoc_pools;
static _Thread_local http_tls_t *http_tls;
static _Thread_local mg_link_t detached_ops; /* zeroed: not yet initialised */

static void op_start(mg_http_op_t *op);
static void dns_forget(mg_http_op_t *op);

/* ---- results -------------------------------------------------------------- */

static int push_result(lua_State *co, void *arg)
{
    mg_http_op_t *op = arg;
    if (op->err) {
        lua_pushnil(co);
        lua_pushstring(co, op->err);
        return 2;
    }
    lua_pushinteger(co, op->status);
    lua_createtable(co, 0, 8);
    size_t at = 0;
    while (at < op->hdrs_len) {
        const char *n = op->hdrs + at;
        size_t nl = strlen(n);
        const char *v = n + nl + 1;
        size_t vl = strlen(v);
        at += nl + vl + 2;
        lua_pushlstring(co, n, nl);
        lua_rawget(co, -2);
        if (lua_isstring(co, -1)) { /* repeated: join with ", " */
            lua_pushliteral(co, ", ");
            lua_pushlstring(co, v, vl);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushlstring(co, v, vl);
        }
        lua_pushlstring(co, n, nl);
        lua_insert(co, -2);
        lua_rawset(co, -3);
    }
    lua_pushlstring(co, op->body ? op->body : "", op->body_len);
    return 3;
}

static void op_free_cb(uv_handle_t *h)
{
    mg_http_op_t *op = h->data;
    free(op->req);
    free(op->hdrs);
    free(op->body);
    free(op);
}

/* Ends the operation: hands the result to the coroutine (unless it was
 * cancelled), returns or closes the connection, frees op. */
static void on_deferred(uv_timer_t *t);

static void op_finish(mg_http_op_t *op, const char *err)
{
    if (op->finished)
        return;
    if (op->starting) {
        /* the hook has not yielded yet: report on the next loop turn */
        op->deferred_err = err;
        op->deferred = 1;
        uv_timer_start(&op->timer, on_deferred, 0, 0);
        return;
    }
    op->finished = 1;
    op->err = err;
    dns_forget(op);
    uv_timer_stop(&op->timer);
    mg_upconn_t *u = op->u;
    op->u = NULL;
    if (u) {
        u->client = NULL;
        if (!err && op->complete && mg_h1_response_reusable(&op->h1, op->extra, 1)) {
            mg_proxy_detach(u, 1); /* still read by the proxy's reader: idle */
        } else {
            mg_upconn_close(u);
        }
    }
    mg_hook_co_t *hc = op->hc;
    op->hc = NULL;
    if (hc)
        mg_hook_wait_end(hc, push_result, op);
    if (op->done) {
        mg_list_remove(&op->link);
        op->done(op->done_arg, op->status, err);
        op->done = NULL;
    }
    uv_close((uv_handle_t *)&op->timer, op_free_cb);
}

/* The request that waited died: drop the operation quietly. */
static void op_cancel(void *arg)
{
    mg_http_op_t *op = arg;
    op->hc = NULL;
    op_finish(op, "cancelled");
}

static void on_timeout(uv_timer_t *t)
{
    op_finish(t->data, "timeout");
}

static void on_deferred(uv_timer_t *t)
{
    mg_http_op_t *op = t->data;
    op->starting = 0;
    op_finish(op, op->deferred_err);
}

/* proxy.c closed a connection an operation was using. */
static void conn_lost(void *client)
{
    mg_http_op_t *op = client;
    op->u = NULL;
    op_finish(op, "connection lost");
}

/* ---- response parsing ------------------------------------------------- */

static int grow(char **buf, size_t *cap, size_t need, size_t max)
{
    if (need <= *cap)
        return 0;
    if (need > max)
        return -1;
    size_t n = *cap ? *cap : 1024;
    while (n < need)
        n *= 2;
    if (n > max)
        n = max;
    char *p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

/* The head's fields as "name\0value\0" pairs, names in lower case, for
 * push_result (they must outlive the read buffer). */
static int keep_headers(mg_http_op_t *op, mg_upconn_t *u)
{
    op->hdrs_len = 0;
    if (op->discard)
        return 0;
    for (uint32_t i = 0; i < op->h1.nheaders; i++) {
        mg_span_t n = u->headers[i].name, v = u->headers[i].value;
        if (grow(&op->hdrs, &op->hdrs_cap, op->hdrs_len + n.len + v.len + 2, 65536) < 0)
            return -1;
        char *o = op->hdrs + op->hdrs_len;
        for (uint32_t k = 0; k < n.len; k++) {
            char ch = u->buf.data[n.off + k];
            *o++ = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        *o++ = 0;
        memcpy(o, u->buf.data + v.off, v.len);
        o[v.len] = 0;
        op->hdrs_len += n.len + v.len + 2;
    }
    return 0;
}

/* Parses what u->buf holds from u->buf.parsed: heads (interim ones
 * skipped), then the body into op->body. Returns 1 once the response is
 * complete, 0 for more to come, -1 (op->err, or the parser's reason). */
static int parse_response(mg_http_op_t *op, mg_upconn_t *u)
{
    mg_buf_t *b = &u->buf;
    for (;;) {
        if (op->h1.state == MG_H1_HEAD) {
            long n = mg_h1r_head(&op->h1, b->data, b->parsed, b->len, u->headers, u->htok,
                                 MG_UP_MAX_HEADERS, op->head_method);
            if (n == MG_H1_AGAIN)
                return b->len == b->cap ? -1 : 0;
            if (n < 0 || op->h1.status == 101)
                return -1;
            b->parsed += (uint32_t)n;
            op->status = op->h1.status;
            if (op->status < 200) {
                op->h1.state = MG_H1_HEAD; /* interim answer: wait for the real one */
                continue;
            }
            if (keep_headers(op, u) < 0)
                return -1;
        }
        const char *data;
        size_t used, dlen;
        int rc = mg_h1r_body(&op->h1, b->data + b->parsed, b->len - b->parsed, &used, &data, &dlen);
        if (rc < 0)
            return -1;
        if (dlen && !op->discard) {
            if (grow(&op->body, &op->body_cap, op->body_len + dlen, op->max_body) < 0) {
                op->err = "response body too large";
                return -1;
            }
            memcpy(op->body + op->body_len, data, dlen);
            op->body_len += dlen;
        }
        b->parsed += (uint32_t)used;
        if (rc == 1) {
            op->complete = 1;
            op->extra = b->parsed < b->len;
            return 1;
        }
        if (used == 0 || b->parsed == b->len)
            break;
    }
    if (op->h1.state != MG_H1_HEAD && b->parsed > 0) {
        /* the head is kept (headers) and the body copied: reuse the space */
        b->len -= b->parsed;
        memmove(b->data, b->data + b->parsed, b->len);
        b->parsed = 0;
    }
    return 0;
}

/* ---- the connection ------------------------------------------------------ */

static void op_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mg_upconn_t *u = s->data;
    mg_http_op_t *op = u->client;
    if (!op || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && op->h1.state != MG_H1_HEAD && mg_h1r_eof(&op->h1) == 0) {
            op->complete = 1; /* a close-delimited body ends here */
            op_finish(op, NULL);
            return;
        }
        if (op->reused && !op->retried && op->status == 0) {
            /* a pooled connection the server had closed: try a fresh one */
            op->retried = 1;
            op->u = NULL;
            u->client = NULL;
            mg_upconn_close(u);
            op_start(op);
            return;
        }
        op_finish(op, nread == UV_EOF     ? "connection closed early"
                      : nread == UV_EPROTO ? mg_upconn_tls_error(u)
                                           : uv_strerror((int)nread));
        return;
    }
    u->buf.len += (uint32_t)nread;
    int rc = parse_response(op, u);
    if (rc > 0)
        op_finish(op, NULL);
    else if (rc < 0)
        op_finish(op, op->err ? op->err : "invalid response");
}

/* Writes op's request on u (connected or pooled); what u reads goes to
 * op_read through the proxy's reader, which a pooled connection keeps on
 * (no read stop and start, so no epoll change, per request). */
static void send_request(mg_http_op_t *op)
{
    mg_upconn_t *u = op->u;
    u->client = op;
    u->client_lost = conn_lost;
    u->client_read = op_read;
    mg_h1r_init(&op->h1);
    u->buf.len = u->buf.parsed = 0;
    uv_buf_t b = uv_buf_init(op->req, (unsigned)op->req_len);
    if (mg_upconn_write(u, &b, 1) < 0) {
        op_finish(op, "write failed");
        return;
    }
    mg_proxy_read_for_client(u);
}

static void on_tls_ready(mg_upconn_t *u, const char *err)
{
    mg_http_op_t *op = u->client;
    if (!op || u->closing)
        return;
    if (err) {
        mg_pool_failed(op->pool);
        snprintf(op->tls_err, sizeof(op->tls_err), "%s", err); /* the link goes with u */
        op_finish(op, op->tls_err);
        return;
    }
    u->connected = 1;
    send_request(op);
}

static void on_connected(uv_connect_t *req, int status)
{
    mg_upconn_t *u = req->data;
    mg_http_op_t *op = u->client;
    if (!op || u->closing)
        return;
    if (status < 0) {
        mg_pool_failed(op->pool);
        op_finish(op, "connection refused");
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    int tls = mg_upconn_tls_start(u, on_tls_ready);
    if (tls != 0) {
        if (tls < 0)
            op_finish(op, "TLS setup failed");
        return;
    }
    u->connected = 1;
    send_request(op);
}

/* ---- names ---------------------------------------------------------------- */

static adhoc_pool_t *adhoc_of(const mg_pool_t *p)
{
    for (adhoc_pool_t *a = adhoc_pools; a; a = a->next)
        if (&a->pool == p)
            return a;
    return NULL;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    adhoc_pool_t *a = req->data;
    a->resolving = 0;
    if (status == 0 && res) {
        memcpy(&a->pool.addr, res->ai_addr, res->ai_addrlen);
        if (a->pool.addr.ss_family == AF_INET)
            ((struct sockaddr_in *)&a->pool.addr)->sin_port = htons(a->target.port);
        else
            ((struct sockaddr_in6 *)&a->pool.addr)->sin6_port = htons(a->target.port);
        a->pool.addr_ok = 1;
    }
    uv_freeaddrinfo(res);
    mg_http_op_t *op = a->waiting;
    a->waiting = NULL;
    while (op) {
        mg_http_op_t *next = op->next_waiting;
        op->waiting_dns = 0;
        op->next_waiting = NULL;
        if (a->pool.addr_ok)
            op_start(op);
        else
            op_finish(op, status == UV_EAI_CANCELED ? "shutting down" : "host does not resolve");
        op = next;
    }
}

/* op's pool has no address yet: waits for its name (1), or cannot (0). */
static int dns_wait(mg_http_op_t *op)
{
    adhoc_pool_t *a = adhoc_of(op->pool);
    if (!a)
        return 0; /* a configured target that did not resolve at load */
    if (!a->resolving) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        a->gai.data = a;
        if (uv_getaddrinfo(&op->w->loop, &a->gai, on_resolved, a->name, NULL, &hints) < 0)
            return 0;
        a->resolving = 1;
    }
    op->waiting_dns = 1;
    op->next_waiting = a->waiting;
    a->waiting = op;
    return 1;
}

/* op ends while it waits for a name: out of the waiting list. */
static void dns_forget(mg_http_op_t *op)
{
    if (!op->waiting_dns)
        return;
    adhoc_pool_t *a = adhoc_of(op->pool);
    for (mg_http_op_t **p = a ? &a->waiting : NULL; p && *p; p = &(*p)->next_waiting)
        if (*p == op) {
            *p = op->next_waiting;
            break;
        }
    op->waiting_dns = 0;
}

static void op_start(mg_http_op_t *op)
{
    mg_upconn_t *u = mg_pool_take_idle(op->pool);
    if (u) {
        op->reused = 1;
        op->u = u;
        send_request(op);
        return;
    }
    op->reused = 0;
    if (!op->pool->addr_ok) {
        if (!dns_wait(op))
            op_finish(op, "host does not resolve");
        return;
    }
    u = mg_upconn_new(op->pool);
    if (!u) {
        op_finish(op, "out of memory");
        return;
    }
    op->u = u;
    u->client = op;
    u->client_lost = conn_lost;
    u->connect_req.data = u;
    if (uv_tcp_connect(&u->connect_req, &u->tcp, (struct sockaddr *)&op->pool->addr,
                       on_connected) < 0)
        op_finish(op, "connect failed");
}

/* ---- pools --------------------------------------------------------------- */

/* The TLS configuration for https URLs with these options (see
 * http_tls_t); NULL with *err when it cannot be built. */
static mg_tls_client_t *tls_for(const char *ca, int verify, const char **err)
{
    static _Thread_local char why[512];
    if (!ca && verify)
        return mg_tls_client_default(err);
    const char *key = ca ? ca : "";
    for (http_tls_t *t = http_tls; t; t = t->next)
        if (t->verify == verify && strcmp(t->ca, key) == 0)
            return t->c;
    http_tls_t *t = calloc(1, sizeof(*t) + strlen(key) + 1);
    if (!t) {
        *err = "out of memory";
        return NULL;
    }
    strcpy(t->ca, key);
    t->verify = verify;
    mg_tls_client_opts_t o = { .verify = verify, .ca = ca, .label = "gw.http" };
    if (mg_tls_client_new(&o, &t->c, why, sizeof(why)) != 0) {
        free(t);
        *err = why;
        return NULL;
    }
    t->next = http_tls;
    http_tls = t;
    return t->c;
}

/* The pool for host:port: a configured upstream by name (balanced), a
 * configured target, or an ad-hoc pool of this worker. Configured ones
 * only when they speak the URL's scheme (an https URL to a TLS upstream
 * uses that upstream's TLS settings); ad-hoc ones per scheme and TLS
 * options (tls NULL: http). */
static mg_pool_t *pool_for(mg_worker_t *w, const char *host, size_t hlen, uint16_t port,
                           int port_given, mg_tls_client_t *tls)
{
    mg_wgen_t *g = w->g;
    const mg_config_t *cfg = g->cfg;
    if (!port_given) {
        for (size_t i = 0; i < cfg->nupstreams; i++) {
            if (!cfg->upstreams[i].tls == !tls && strlen(cfg->upstreams[i].name) == hlen &&
                memcmp(cfg->upstreams[i].name, host, hlen) == 0) {
                int t = mg_balancer_pick(g, (int)i, NULL, -1);
                if (t >= 0)
                    return g->ups[i].pools[t];
            }
        }
    }
    /* a target of an upstream's view (targets.h) by its host and port */
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *up = &cfg->upstreams[i];
        const mg_tview_t *v = g->ups[i].view;
        for (size_t t = 0; t < v->n && !up->tls == !tls; t++) {
            const mg_pool_t *p = g->ups[i].pools[t];
            if (v->e[t].serial && !v->e[t].draining && p->t->port == port &&
                strlen(p->t->host) == hlen && memcmp(p->t->host, host, hlen) == 0)
                return g->ups[i].pools[t];
        }
    }
    for (adhoc_pool_t *a = adhoc_pools; a; a = a->next)
        if (a->up.tls == tls && a->target.port == port && strlen(a->target.host) == hlen &&
            memcmp(a->target.host, host, hlen) == 0)
            return &a->pool;
    adhoc_pool_t *a = calloc(1, sizeof(*a));
    if (!a || hlen > 255) {
        free(a);
        return NULL;
    }
    memcpy(a->name, host, hlen);
    a->name[hlen] = 0;
    a->target.host = a->name;
    a->target.port = port;
    a->target.weight = 1;
    a->target.name = a->name;
    a->up.name = a->name;
    a->up.targets = &a->target;
    a->up.ntargets = 1;
    a->up.keepalive = 16;
    a->up.keepalive_timeout = 60000;
    a->up.connect_timeout = 5000;
    a->up.send_timeout = 60000;
    a->up.read_timeout = 60000;
    a->up.fail_timeout = 1000;
    a->up.tls = tls; /* http_tls holds it */
    a->pool.w = w;
    a->pool.u = &a->up;
    a->pool.t = &a->target;
    mg_list_init(&a->pool.idle);
    /* a numeric address now; a name on first use (dns_wait) */
    a->pool.addr_ok = uv_ip4_addr(a->name, port, (struct sockaddr_in *)&a->pool.addr) == 0 ||
                      uv_ip6_addr(a->name, port, (struct sockaddr_in6 *)&a->pool.addr) == 0;
    a->next = adhoc_pools;
    adhoc_pools = a;
    return &a->pool;
}

void mg_http_client_close(mg_worker_t *w)
{
    /* detached requests end now: their connections close (one that
     * failed as it started ends on the next loop turn, as it would) */
    for (mg_link_t *l = detached_ops.next; l && l != &detached_ops;) {
        mg_link_t *next = l->next;
        op_finish(mg_container_of(l, mg_http_op_t, link), "shutting down");
        l = next;
    }
    for (adhoc_pool_t *a = adhoc_pools; a; a = a->next) {
        if (a->resolving)
            uv_cancel((uv_req_t *)&a->gai); /* its waiters end "shutting down" */
        while (!mg_list_empty(&a->pool.idle)) {
            mg_upconn_t *u = mg_container_of(a->pool.idle.next, mg_upconn_t, link);
            mg_proxy_detach(u, 0);
        }
    }
}

void mg_http_client_free(mg_worker_t *w)
{
    while (adhoc_pools) {
        adhoc_pool_t *a = adhoc_pools;
        adhoc_pools = a->next;
        free(a);
    }
    while (http_tls) { /* connections still closing hold their own references */
        http_tls_t *t = http_tls;
        http_tls = t->next;
        mg_tls_client_release(t->c);
        free(t);
    }
}

/* ---- FFI ------------------------------------------------------------------ */

/* Starts a request for the running hook; the Lua side yields and gets
 * (status, headers, body) or (nil, reason). `url` is http[s]://host[:port]/...;
 * `headers` is a block of "Name: value\r\n" lines; https: ca (NULL: the
 * system bundle) and verify. */
int mg_ffi_http_request(const char *method, size_t mlen, const char *url, size_t ulen,
                        const char *headers, size_t hlen, const char *body, size_t blen,
                        double timeout, double max_body, const char *ca, int verify,
                        const char **err)
{
    mg_worker_t *w = mg_hook_worker();
    if (!w) {
        *err = "gw.http.request can only be used inside hooks and timers";
        return MG_FFI_EPHASE;
    }
    mg_url_t url_parts;
    if (mg_uri_url_parse(url, ulen, &url_parts, err) < 0)
        return MG_FFI_EINVAL;
    int https = url_parts.https;
    const char *path = url_parts.path;
    size_t path_len = url_parts.path_len, host_len = url_parts.host_len;
    mg_tls_client_t *tls = NULL;
    if (https && !(tls = tls_for(ca, verify, err)))
        return MG_FFI_EINVAL;
    mg_pool_t *pool = pool_for(w, url_parts.host, host_len, url_parts.port, url_parts.port_given,
                               tls);
    if (!pool) {
        *err = "out of memory";
        return MG_FFI_ENOMEM;
    }
    mg_http_op_t *op = calloc(1, sizeof(*op));
    size_t cap = mlen + path_len + url_parts.authority_len + hlen + 128;
    if (op)
        op->req = malloc(cap + blen);
    if (!op || !op->req) {
        if (op)
            free(op);
        *err = "out of memory";
        return MG_FFI_ENOMEM;
    }
    int n = snprintf(op->req, cap, "%.*s %.*s HTTP/1.1\r\nHost: %.*s\r\n%.*s",
                     (int)mlen, method, (int)path_len, path,
                     (int)url_parts.authority_len, url_parts.authority, (int)hlen, headers);
    if (blen > 0 || (mlen == 4 && memcmp(method, "POST", 4) == 0) ||
        (mlen == 3 && memcmp(method, "PUT", 3) == 0))
        n += snprintf(op->req + n, cap - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(op->req + n, cap - (size_t)n, "\r\n");
    memcpy(op->req + n, body, blen);
    op->req_len = (size_t)n + blen;
    op->w = w;
    op->pool = pool;
    op->head_method = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
    op->max_body = max_body > 0 ? (size_t)max_body : 10 * 1024 * 1024;
    op->hc = mg_hook_wait_begin(op_cancel, op);
    uv_timer_init(&w->loop, &op->timer);
    op->timer.data = op;
    op->starting = 1;
    op_start(op);
    if (!op->deferred) {
        op->starting = 0;
        uv_timer_start(&op->timer, on_timeout, (uint64_t)(timeout * 1000.0 + 0.5), 0);
    }
    return 0;
}

/* ---- detached requests ---------------------------------------------------- */

int mg_http_send_detached(mg_worker_t *w, mg_pool_t *pool, char *req, size_t len,
                          int head_method, uint64_t timeout_ms,
                          void (*done)(void *arg, int status, const char *err), void *arg)
{
    mg_http_op_t *op = calloc(1, sizeof(*op));
    if (!op) {
        free(req);
        return MG_FFI_ENOMEM;
    }
    if (!detached_ops.next)
        mg_list_init(&detached_ops);
    op->w = w;
    op->pool = pool;
    op->req = req;
    op->req_len = len;
    op->head_method = head_method ? 1 : 0;
    op->discard = 1;
    op->done = done;
    op->done_arg = arg;
    mg_list_push(&detached_ops, &op->link);
    uv_timer_init(&w->loop, &op->timer);
    op->timer.data = op;
    op->starting = 1; /* a failure now is reported on the next loop turn */
    op_start(op);
    if (!op->deferred) {
        op->starting = 0;
        uv_timer_start(&op->timer, on_timeout, timeout_ms, 0);
    }
    return 0;
}
