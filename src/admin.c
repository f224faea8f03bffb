/* admin.c: the admin API's HTTP/1.1 server (see admin.h).
 *
 * Small on purpose: it runs on the control thread, sees a few requests a
 * minute, and its answers come from synchronous handlers. So, unlike
 * http_conn.c, it copies what it needs out of the read buffer (the URL, the
 * few header values it judges, the body) and keeps no per-request pools.
 *
 * Who may ask (admin.h): decided once the head is complete, before the
 * body is kept and before any handler runs. A browser can be made to send
 * requests here by any page (a form or fetch() with Content-Type:
 * text/plain needs no preflight; DNS rebinding makes our answers readable
 * too), so the Host must name us, a browser's Origin and Sec-Fetch-Site
 * must say the request comes from our own origin, and without a token a
 * state-changing request must carry a Content-Type that a page cannot send
 * without a preflight.
 *
 * One admin_conn_t per accepted connection. llhttp (strict) pauses at the
 * end of each message; the request is answered right there, and parsing of
 * pipelined requests goes on only once that answer is fully written, so
 * answers go out in order and a client that does not read stops our
 * reading too. Errors found while parsing (400, 413, 414, 431) are answered
 * with "Connection: close"; the connection then half-closes and discards
 * what the client still sends for up to LINGER_MS, so that the client reads
 * the answer instead of a reset.
 *
 * Ownership: the admin owns its listener and connections; each connection
 * owns its read buffer, URL, Authorization and body copies. The admin
 * struct is freed when its listener and last connection have closed, which
 * is after mg_admin_stop and some loop iterations.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <llhttp.h>
#include "admin.h"
#include "mg_ffi.h"
#include "wq.h"

#define READ_BUF (16 * 1024)
#define MAX_URL (8 * 1024)          /* 414 beyond */
#define MAX_HEAD (64 * 1024)        /* 431 beyond: URL + header names and values */
#define MAX_BODY (1024 * 1024)      /* 413 beyond */
#define MAX_KEPT 1024               /* a longer judged header value is simply wrong */
#define IDLE_MS 60000               /* no bytes either way this long: close */
#define LINGER_MS 2000              /* discard input this long after an error */

typedef struct admin_conn_s admin_conn_t;

struct mg_admin_s {
    uv_loop_t *loop;
    uv_tcp_t listener;
    mg_admin_handlers_t h;
    char *token;                /* NULL: no authentication */
    size_t token_len;
    int port;                   /* bound port (useful with port 0) */
    char where[80];             /* "host:port" as bound, for messages */
    char **hosts;               /* Host values accepted as they are (lower case) */
    size_t nhosts;
    int any_ip;                 /* wildcard address: any IP literal with our port */
    uint64_t idle_ms;
    int stopping;
    unsigned refs;              /* listener + connections not yet closed */
    admin_conn_t *conns;        /* doubly linked */
};

typedef enum { CS_OPEN, CS_LINGER, CS_CLOSING } conn_state_t;

/* The request headers we judge, kept whole (a longer value is wrong). */
enum { H_AUTH, H_HOST, H_ORIGIN, H_FETCH_SITE, H_CTYPE, H_ACCEPT, NKEPT };
static const char *const kept_names[NKEPT] = { "authorization", "host", "origin",
                                               "sec-fetch-site", "content-type", "accept" };
typedef struct {
    char v[MAX_KEPT];
    size_t len;
    int n;                      /* how many times the header came */
    int too_long;
} kept_t;

struct admin_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shut;
    mg_admin_t *a;
    admin_conn_t *prev, *next;
    llhttp_t parser;
    mg_wq_t wq;
    conn_state_t state;
    unsigned handles;           /* tcp + timer not yet closed */
    int reading;
    char *buf;                  /* unparsed input: [parsed, len) */
    size_t len, parsed;

    /* the request being parsed; reset at message begin */
    size_t head_bytes;
    char *url;
    size_t url_len;
    char field[16];             /* header name, only as long as we care */
    size_t field_len;
    int field_kept;             /* the current header's kept_names index, or -1 */
    kept_t kept[NKEPT];
    int refuse;                 /* status refusing this request (decided at the
                                   end of the head; 0: may be served) */
    char refuse_why[400];
    char *body;
    size_t body_len, body_cap;
    int keep_alive;
    int fail_status;            /* status of an error a callback found, or 0 */
    const char *fail_reason;
    const char *exec_start;     /* where the running llhttp_execute began */
    const char *value_end;      /* just past the last header value piece */
    int in_value;               /* a header value has begun, not completed */
};

/* Beyond admin.h (not declared there, which others own): */
void mg_admin_set_idle_timeout(mg_admin_t *a, uint64_t ms);
int mg_admin_port(const mg_admin_t *a);

static void conn_close(admin_conn_t *c);
static void conn_parse(admin_conn_t *c);
static void start_reading(admin_conn_t *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static char *errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* ---- responses ------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void on_timer(uv_timer_t *t);

/* Ends the connection after what is queued: half-close (libuv runs it once
 * the queued writes are done; a client that stops reading meets the idle
 * timeout meanwhile), then read and drop the rest until EOF or LINGER_MS. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    admin_conn_t *c = req->data;
    if (status < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static void on_timer(uv_timer_t *t)
{
    conn_close(t->data); /* idle, or done lingering */
}

static void linger(admin_conn_t *c)
{
    if (c->state != CS_OPEN)
        return;
    c->state = CS_LINGER;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, c->a->idle_ms, 0);
    c->len = c->parsed = 0;
    start_reading(c);
}

/* Writes one answer. The body is copied if the socket does not take it at
 * once (wq.c), so the caller frees it as soon as this returns. */
static void respond(admin_conn_t *c, int status, const char *ctype, const char *body,
                    size_t len, const char *extra)
{
    if (c->state != CS_OPEN)
        return;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "%s%s"
                     "\r\n",
                     status, reason(status), ctype, len, extra ? extra : "",
                     !c->keep_alive ? "Connection: close\r\n"
                     : c->parser.http_minor == 0 ? "Connection: keep-alive\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2] = { uv_buf_init(head, (unsigned)n), uv_buf_init((char *)body, (unsigned)len) };
    int with_body = len > 0 && c->parser.method != HTTP_HEAD;
    if (mg_wq_write(&c->wq, bufs, with_body ? 2 : 1) < 0) {
        conn_close(c);
        return;
    }
    if (!c->keep_alive)
        linger(c);
}

static void respond_error(admin_conn_t *c, int status, const char *message, const char *extra)
{
    /* messages are ours, llhttp's, or quote a header value the parser
     * accepted (no control characters): keep them valid JSON */
    char msg[448], body[512];
    size_t m = 0;
    for (const char *q = message; *q && m < sizeof(msg) - 1; q++)
        msg[m++] = (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20) ? '\'' : *q;
    msg[m] = '\0';
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":%d}\n", msg, status);
    respond(c, status, "application/json", body, (size_t)n, extra);
}

/* ---- dispatch ------------------------------------------------------------- */

/* The endpoints: a const table, looked up by path, then by method. Each
 * `call` runs its handler and returns its status, or 0 when the process
 * gave no handler for it. */
typedef int (*endpoint_fn)(const mg_admin_handlers_t *h, admin_conn_t *c, char **body,
                           size_t *len, const char **ctype);

#define PLAIN(name)                                                                   \
    static int call_##name(const mg_admin_handlers_t *h, admin_conn_t *c, char **body, \
                           size_t *len, const char **ctype)                           \
    {                                                                                 \
        return h->name ? h->name(body, len, ctype) : 0;                               \
    }
PLAIN(status)
PLAIN(routes)
PLAIN(upstreams)
PLAIN(logs_reopen)
#undef PLAIN

/* The q-value of media type `type` in an Accept value (a list of
 * "type/sub;params" with an optional q=), -1 when it is not listed. */
static double accept_q(const char *v, const char *type)
{
    double best = -1;
    size_t tl = strlen(type);
    while (*v) {
        size_t n = strcspn(v, ",");
        const char *e = v, *end = v + n;
        while (e < end && (*e == ' ' || *e == '\t'))
            e++;
        size_t ml = strcspn(e, ";,");
        while (ml > 0 && (e[ml - 1] == ' ' || e[ml - 1] == '\t'))
            ml--;
        if (ml == tl && strncasecmp(e, type, tl) == 0) {
            double q = 1;
            for (const char *p = e + ml; p < end; p++) {
                if (*p != ';')
                    continue;
                p++;
                while (p < end && (*p == ' ' || *p == '\t'))
                    p++;
                if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
                    q = strtod(p + 2, NULL);
            }
            best = q > best ? q : best;
        }
        v = *end ? end + 1 : end;
    }
    return best;
}

/* GET /metrics: OpenMetrics when the scraper prefers it (Prometheus asks
 * for it first), else the Prometheus text format. */
static int call_metrics(const mg_admin_handlers_t *h, admin_conn_t *c, char **body, size_t *len,
                        const char **ctype)
{
    const kept_t *k = &c->kept[H_ACCEPT];
    int om = 0;
    if (k->n >= 1 && !k->too_long) {
        double omq = accept_q(k->v, "application/openmetrics-text");
        double text = accept_q(k->v, "text/plain");
        om = omq > 0 && omq >= text;
    }
    return h->metrics ? h->metrics(om, body, len, ctype) : 0;
}

/* The query string of the request's URL, without '?' ("" when none). */
static const char *url_query(const admin_conn_t *c, size_t *len)
{
    const char *q = memchr(c->url, '?', c->url_len);
    *len = q ? c->url_len - (size_t)(q - c->url) - 1 : 0;
    return q ? q + 1 : "";
}

static int call_reload(const mg_admin_handlers_t *h, admin_conn_t *c, char **body, size_t *len,
                       const char **ctype)
{
    size_t ql;
    const char *q = url_query(c, &ql);
    return h->reload ? h->reload(q, ql, body, len, ctype) : 0;
}

static int call_repl(const mg_admin_handlers_t *h, admin_conn_t *c, char **body, size_t *len,
                     const char **ctype)
{
    return h->repl ? h->repl(c->body ? c->body : "", c->body_len, body, len, ctype) : 0;
}

static int call_cache_purge(const mg_admin_handlers_t *h, admin_conn_t *c, char **body,
                            size_t *len, const char **ctype)
{
    size_t ql;
    const char *q = url_query(c, &ql);
    return h->cache_purge ? h->cache_purge(q, ql, body, len, ctype) : 0;
}

static int call_targets(const mg_admin_handlers_t *h, admin_conn_t *c, char **body, size_t *len,
                        const char **ctype)
{
    const char *q = memchr(c->url, '?', c->url_len);
    size_t plen = q ? (size_t)(q - c->url) : c->url_len;
    const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
    return h->targets ? h->targets(method, c->url, plen, c->body ? c->body : "", c->body_len,
                                   body, len, ctype)
                      : 0;
}

/* `ctype`: what a state-changing endpoint's request must say it carries
 * when no token is configured. None of them is CORS-safelisted (text/plain,
 * multipart/form-data, application/x-www-form-urlencoded), so a page can
 * send it only after a preflight, which fails here (no OPTIONS, no CORS
 * headers). The body of /repl is Lua, hence its own type. */
static const struct endpoint {
    const char *path;
    const char *method;
    endpoint_fn call;
    const char *ctype;
    int prefix;           /* path is a prefix: the handler reads the rest */
} endpoints[] = {
    { "/status", "GET", call_status, NULL, 0 },
    { "/routes", "GET", call_routes, NULL, 0 },
    { "/upstreams", "GET", call_upstreams, NULL, 0 },
    { "/metrics", "GET", call_metrics, NULL, 0 },
    { "/reload", "POST", call_reload, "application/json", 0 },
    { "/repl", "POST", call_repl, "text/x-lua", 0 },
    { "/cache", "DELETE", call_cache_purge, "application/json", 0 },
    { "/logs/reopen", "POST", call_logs_reopen, "application/json", 0 },
    { "/upstreams/", "POST", call_targets, "application/json", 1 },
    { "/upstreams/", "PUT", call_targets, "application/json", 1 },
    { "/upstreams/", "DELETE", call_targets, "application/json", 1 },
};
#define NENDPOINTS (sizeof(endpoints) / sizeof(endpoints[0]))

static const struct endpoint *find_endpoint(const char *method, const char *path, size_t plen,
                                            int *path_known)
{
    const struct endpoint *e = NULL;
    *path_known = 0;
    for (size_t i = 0; i < NENDPOINTS; i++) {
        size_t el = strlen(endpoints[i].path);
        if (endpoints[i].prefix ? plen <= el || memcmp(endpoints[i].path, path, el)
                                : el != plen || memcmp(endpoints[i].path, path, plen))
            continue;
        *path_known = 1;
        if (!strcmp(endpoints[i].method, method))
            e = &endpoints[i];
    }
    return e;
}

const char *mg_admin_content_type(const char *method, const char *path)
{
    int known;
    const struct endpoint *e = find_endpoint(method, path, strcspn(path, "?"), &known);
    return e ? e->ctype : NULL;
}

/* Whether the Content-Type value names `want` (parameters such as
 * "; charset=utf-8" allowed; case-insensitive, as media types are). */
static int ctype_is(const kept_t *k, const char *want)
{
    if (k->n != 1 || k->too_long)
        return 0;
    size_t i = 0, end = strcspn(k->v, ";");
    while (i < end && (k->v[i] == ' ' || k->v[i] == '\t'))
        i++;
    while (end > i && (k->v[end - 1] == ' ' || k->v[end - 1] == '\t'))
        end--;
    return end - i == strlen(want) && !strncasecmp(k->v + i, want, end - i);
}

static void dispatch(admin_conn_t *c)
{
    mg_admin_t *a = c->a;
    if (c->refuse) {
        respond_error(c, c->refuse, c->refuse_why,
                      c->refuse == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
        return;
    }
    const char *q = memchr(c->url, '?', c->url_len);
    size_t plen = q ? (size_t)(q - c->url) : c->url_len;
    const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
    int path_known;
    const struct endpoint *e = find_endpoint(method, c->url, plen, &path_known);
    if (!path_known) {
        respond_error(c, 404, "not found", NULL);
        return;
    }
    if (!e) {
        char allow[64] = "Allow: ";
        int known;
        for (size_t i = 0; i < NENDPOINTS; i++)
            if (find_endpoint(endpoints[i].method, c->url, plen, &known) == &endpoints[i])
                snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                         allow[7] ? ", " : "", endpoints[i].method);
        snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "\r\n");
        respond_error(c, 405, "method not allowed", allow);
        return;
    }
    if (e->ctype && !a->token && !ctype_is(&c->kept[H_CTYPE], e->ctype)) {
        char why[200];
        snprintf(why, sizeof(why),
                 "%s %s needs Content-Type: %s (or the admin token), which no web page "
                 "can send here",
                 e->method, e->path, e->ctype);
        respond_error(c, 415, why, NULL);
        return;
    }
    char *body = NULL;
    size_t len = 0;
    const char *ctype = NULL;
    int status = e->call(&a->h, c, &body, &len, &ctype);
    if (status == 0) {
        free(body);
        respond_error(c, 501, "not available in this process", NULL);
        return;
    }
    if (status < 100 || status > 599) {
        free(body);
        respond_error(c, 500, "admin handler failed", NULL);
        return;
    }
    respond(c, status, ctype ? ctype : "application/json", body ? body : "", body ? len : 0,
            NULL);
    free(body);
}

/* ---- llhttp callbacks ------------------------------------------------------- */

static int fail(llhttp_t *p, int status, const char *why)
{
    admin_conn_t *c = p->data;
    c->fail_status = status;
    c->fail_reason = why;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    c->head_bytes = 0;
    c->url_len = 0;
    c->field_len = 0;
    c->field_kept = -1;
    for (int i = 0; i < NKEPT; i++) {
        c->kept[i].len = 0;
        c->kept[i].n = 0;
        c->kept[i].too_long = 0;
    }
    c->refuse = 0;
    c->body_len = 0;
    c->fail_status = 0;
    c->in_value = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = p->data;
    if (c->url_len + len > MAX_URL)
        return fail(p, 414, "URI too long");
    if (!c->url) {
        c->url = malloc(MAX_URL);
        if (!c->url)
            return fail(p, 503, "out of memory");
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->head_bytes += len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = p->data;
    c->head_bytes += len + 4;
    if (c->head_bytes > MAX_HEAD)
        return fail(p, 431, "request header fields too large");
    /* names longer than the buffer are none we care about */
    size_t take = len < sizeof(c->field) - c->field_len ? len : sizeof(c->field) - c->field_len;
    memcpy(c->field + c->field_len, at, take);
    c->field_len += take;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    c->in_value = 0;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    c->field_kept = -1;
    for (int i = 0; i < NKEPT; i++)
        if (c->field_len == strlen(kept_names[i]) &&
            !strncasecmp(c->field, kept_names[i], c->field_len)) {
            c->field_kept = i;
            c->kept[i].n++;
        }
    c->field_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = p->data;
    c->head_bytes += len;
    if (c->head_bytes > MAX_HEAD)
        return fail(p, 431, "request header fields too large");
    /* llhttp folds obs-fold lines into the value and lets a lone CR through */
    if (memchr(at, '\n', len) || memchr(at, '\r', len))
        return fail(p, 400, "obs-fold or bare CR in a header value");
    /* a second piece of one value that does not follow the first is an
     * obs-fold continuation line joined by llhttp (a piece may also start
     * a new read: the buffer began anew there) */
    if (c->in_value && at != c->value_end && at != c->exec_start)
        return fail(p, 400, "obs-fold header continuation");
    c->in_value = 1;
    c->value_end = at + len;
    if (c->field_kept < 0)
        return 0;
    kept_t *k = &c->kept[c->field_kept];
    if (k->n > 1) /* a second one is refused anyway */
        return 0;
    if (k->len + len >= MAX_KEPT) {
        k->too_long = 1; /* too long to be right */
        return 0;
    }
    memcpy(k->v + k->len, at, len);
    k->len += len;
    k->v[k->len] = '\0';
    return 0;
}

/* Compares in time that depends only on the lengths, never on where the
 * first difference is. */
static int secret_eq(const char *given, size_t glen, const char *want, size_t wlen)
{
    volatile unsigned char diff = glen != wlen;
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < glen ? given[i] : 0);
    return diff == 0;
}

static int check_auth(admin_conn_t *c)
{
    mg_admin_t *a = c->a;
    const kept_t *k = &c->kept[H_AUTH];
    if (k->n != 1 || k->too_long || k->len < 7 || strncasecmp(k->v, "Bearer ", 7) != 0)
        return 0;
    size_t i = 7;
    while (i < k->len && k->v[i] == ' ')
        i++;
    size_t end = k->len;
    while (end > i && (k->v[end - 1] == ' ' || k->v[end - 1] == '\t'))
        end--;
    return secret_eq(k->v + i, end - i, a->token, a->token_len);
}

/* Whether `h` ("host:port", "[v6]:port") is an IP literal with our port:
 * no DNS name, so no DNS rebinding. */
static int ip_host(const mg_admin_t *a, const char *h)
{
    char ip[64];
    const char *colon;
    if (h[0] == '[') {
        const char *end = strchr(h, ']');
        if (!end || end[1] != ':' || (size_t)(end - h - 1) >= sizeof(ip))
            return 0;
        memcpy(ip, h + 1, (size_t)(end - h - 1));
        ip[end - h - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strchr(h, ':');
        if (!colon || (size_t)(colon - h) >= sizeof(ip))
            return 0;
        memcpy(ip, h, (size_t)(colon - h));
        ip[colon - h] = '\0';
    }
    char port[8];
    snprintf(port, sizeof(port), "%d", a->port);
    unsigned char bin[16];
    return !strcmp(colon + 1, port) && (inet_pton(AF_INET, ip, bin) == 1 ||
                                        inet_pton(AF_INET6, ip, bin) == 1);
}

static int host_ok(const mg_admin_t *a, const char *h, size_t len)
{
    for (size_t i = 0; i < a->nhosts; i++)
        if (strlen(a->hosts[i]) == len && !strncasecmp(a->hosts[i], h, len))
            return 1;
    return a->any_ip && strlen(h) == len && ip_host(a, h);
}

/* Decides whether the request may be served at all (admin.h): sets
 * c->refuse and c->refuse_why, or leaves refuse 0. */
static void judge(admin_conn_t *c)
{
    mg_admin_t *a = c->a;
    const kept_t *host = &c->kept[H_HOST], *origin = &c->kept[H_ORIGIN];
    const kept_t *site = &c->kept[H_FETCH_SITE];
    if (host->n != 1) {
        c->refuse = 400;
        snprintf(c->refuse_why, sizeof(c->refuse_why),
                 "a request needs exactly one Host header (%s)", a->where);
        return;
    }
    if (host->too_long || !host_ok(a, host->v, host->len)) {
        c->refuse = 403;
        snprintf(c->refuse_why, sizeof(c->refuse_why),
                 "Host %.120s%s is not this admin API (%s); ask it by its address, or list "
                 "the name in settings.admin.names",
                 host->v, host->too_long ? "..." : "", a->where);
        return;
    }
    /* a browser's own origin: the scheme and exactly the Host it asks */
    if (origin->n > 0) {
        const char *o = origin->v;
        size_t skip = !strncasecmp(o, "http://", 7) ? 7 : !strncasecmp(o, "https://", 8) ? 8 : 0;
        if (origin->n > 1 || origin->too_long || !skip || origin->len - skip != host->len ||
            strncasecmp(o + skip, host->v, host->len) != 0) {
            c->refuse = 403;
            snprintf(c->refuse_why, sizeof(c->refuse_why),
                     "cross-origin request refused (Origin: %.120s): the admin API answers "
                     "only its own pages and clients that are not browsers",
                     origin->too_long ? "(too long)" : o);
            return;
        }
    }
    if (site->n > 0 && (site->n > 1 || site->too_long ||
                        (strcasecmp(site->v, "same-origin") && strcasecmp(site->v, "none")))) {
        c->refuse = 403;
        snprintf(c->refuse_why, sizeof(c->refuse_why),
                 "cross-site request refused (Sec-Fetch-Site: %.40s): the admin API answers "
                 "only its own pages and clients that are not browsers",
                 site->too_long ? "(too long)" : site->v);
        return;
    }
    if (a->token && !check_auth(c)) {
        c->refuse = 401;
        snprintf(c->refuse_why, sizeof(c->refuse_why),
                 "unauthorized: send Authorization: Bearer <token>");
    }
}

static int on_headers_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    judge(c);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > MAX_BODY)
        return fail(p, 413, "request body larger than 1 MiB");
    /* a body we keep is allocated once when its length is known */
    if (!c->refuse && (p->flags & F_CONTENT_LENGTH) && p->content_length > c->body_cap) {
        char *b = realloc(c->body, p->content_length);
        if (!b)
            return fail(p, 503, "out of memory");
        c->body = b;
        c->body_cap = p->content_length;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = p->data;
    if (c->body_len + len > MAX_BODY)
        return fail(p, 413, "request body larger than 1 MiB");
    if (c->refuse) {
        c->body_len += len; /* counted for the cap, never stored */
        return 0;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        if (cap > MAX_BODY)
            cap = MAX_BODY;
        char *b = realloc(c->body, cap);
        if (!b)
            return fail(p, 503, "out of memory");
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    return HPE_PAUSED; /* answered in conn_parse, where pausing is safe */
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the connection ------------------------------------------------------------ */

/* Parses what is buffered; answers each complete request before the next. */
static void conn_parse(admin_conn_t *c)
{
    while (c->state == CS_OPEN && c->wq.pending == 0 && c->parsed < c->len) {
        const char *start = c->buf + c->parsed;
        c->exec_start = start;
        llhttp_errno_t e = llhttp_execute(&c->parser, start, c->len - c->parsed);
        if (e == HPE_OK) {
            c->parsed = c->len;
            break;
        }
        if (e == HPE_PAUSED) {
            c->parsed = (size_t)(llhttp_get_error_pos(&c->parser) - c->buf);
            llhttp_resume(&c->parser);
            dispatch(c);
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) /* answered already, with Connection: close */
            break;
        /* a callback's own error (llhttp reports one from
         * on_headers_complete as HPE_CB_HEADERS_COMPLETE), else bad syntax */
        int status = c->fail_status ? c->fail_status : 400;
        const char *why = c->fail_status ? c->fail_reason : llhttp_get_error_reason(&c->parser);
        c->keep_alive = 0;
        respond_error(c, status, why ? why : "bad request", NULL);
        break;
    }
    if (c->state != CS_OPEN)
        return;
    if (c->parsed == c->len) {
        c->len = c->parsed = 0;
    } else if (c->parsed > 0) {
        memmove(c->buf, c->buf + c->parsed, c->len - c->parsed);
        c->len -= c->parsed;
        c->parsed = 0;
    }
    /* waiting for our answer to drain: stop reading until it does */
    if (c->wq.pending > 0 && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    admin_conn_t *c = h->data;
    if (c->state == CS_LINGER) {
        c->len = c->parsed = 0; /* discarding */
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(READ_BUF - c->len));
}

static void start_reading(admin_conn_t *c)
{
    if (c->reading || c->state == CS_CLOSING)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    admin_conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        conn_close(c); /* EOF, reset, or a full buffer (cannot happen) */
        return;
    }
    if (c->state == CS_LINGER)
        return;
    c->len += (size_t)nread;
    uv_timer_start(&c->timer, on_timer, c->a->idle_ms, 0);
    conn_parse(c);
}

static void on_drain(mg_wq_t *q)
{
    admin_conn_t *c = (admin_conn_t *)((char *)q - offsetof(admin_conn_t, wq));
    if (c->state != CS_OPEN)
        return;
    uv_timer_start(&c->timer, on_timer, c->a->idle_ms, 0);
    start_reading(c);
    conn_parse(c);
}

static void on_write_error(mg_wq_t *q, int status)
{
    conn_close((admin_conn_t *)((char *)q - offsetof(admin_conn_t, wq)));
}

static void admin_unref(mg_admin_t *a)
{
    if (--a->refs > 0)
        return;
    for (size_t i = 0; i < a->nhosts; i++)
        free(a->hosts[i]);
    free(a->hosts);
    free(a->token);
    free(a);
}

static void on_conn_closed(uv_handle_t *h)
{
    admin_conn_t *c = h->data;
    if (--c->handles > 0)
        return;
    mg_admin_t *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->buf);
    free(c->url);
    free(c->body);
    free(c);
    admin_unref(a);
}

static void conn_close(admin_conn_t *c)
{
    if (c->state == CS_CLOSING)
        return;
    c->state = CS_CLOSING;
    c->wq.closed = 1;
    c->reading = 0;
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    mg_admin_t *a = server->data;
    if (status < 0 || a->stopping)
        return;
    admin_conn_t *c = calloc(1, sizeof(*c));
    char *buf = malloc(READ_BUF);
    if (!c || !buf) {
        /* take the connection off the backlog and drop it */
        uv_tcp_t *t = malloc(sizeof(*t));
        if (t && uv_tcp_init(a->loop, t) == 0) {
            uv_accept(server, (uv_stream_t *)t);
            uv_close((uv_handle_t *)t, (uv_close_cb)free);
        } else {
            free(t);
        }
        free(c);
        free(buf);
        return;
    }
    c->a = a;
    c->buf = buf;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    a->refs++;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    mg_wq_init(&c->wq, (uv_stream_t *)&c->tcp, on_drain, on_write_error);
    uv_timer_start(&c->timer, on_timer, a->idle_ms, 0);
    start_reading(c);
}

/* ---- start and stop ----------------------------------------------------------- */

/* Parses host (a numeric IPv4 or IPv6 address, or "localhost") into sa.
 * Returns 0 or -1. *wildcard: 0.0.0.0 or ::. */
static int parse_addr(const char *host, int port, struct sockaddr_storage *sa, int *loopback,
                      int *wildcard)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    memset(sa, 0, sizeof(*sa));
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (uv_ip4_addr(host, port, in) == 0) {
        *loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        *wildcard = in->sin_addr.s_addr == htonl(INADDR_ANY);
        return 0;
    }
    if (uv_ip6_addr(host, port, in6) == 0) {
        const uint8_t *b = in6->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        *loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                    (!memcmp(b, mapped, 12) && b[12] == 127);
        *wildcard = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
        return 0;
    }
    return -1;
}

/* "name" or "name:port": a host name or IPv4 address of the config's host
 * grammar (mg_ffi_host_kind), and a port 1-65535. */
static int valid_name(const char *n)
{
    size_t len = strcspn(n, ":");
    int kind = mg_ffi_host_kind(n, len); /* the config's host grammar (uri.c) */
    if (kind != MG_HOST_NAME && kind != MG_HOST_IPV4)
        return 0;
    if (!n[len])
        return 1;
    const char *p = n + len + 1;
    if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
        return 0;
    int port = atoi(p);
    return port >= 1 && port <= 65535;
}

static void format_where(char *out, size_t cap, const char *host, int port)
{
    snprintf(out, cap, host && strchr(host, ':') ? "[%s]:%d" : "%s:%d", host ? host : "", port);
}

int mg_admin_check(const mg_admin_opts_t *o, char **err)
{
    struct sockaddr_storage sa;
    int loopback = 0, wildcard = 0;
    char where[128];
    *err = NULL;
    format_where(where, sizeof(where), o->host, o->port);
    if (!o->host || o->port < 0 || o->port > 65535 ||
        parse_addr(o->host, o->port, &sa, &loopback, &wildcard) < 0) {
        *err = errorf("admin API address %s: not a numeric IPv4 or IPv6 address and port "
                      "(e.g. host = \"127.0.0.1\")",
                      where);
        return -1;
    }
    if (!loopback && !(o->token && *o->token)) {
        *err = errorf("admin API on %s needs a token (admin = { token = \"...\" }, 16 "
                      "characters or more) because it is not a loopback address; or bind "
                      "127.0.0.1, or set admin = false",
                      where);
        return -1;
    }
    for (size_t i = 0; i < o->nnames; i++)
        if (!o->names[i] || !valid_name(o->names[i])) {
            *err = errorf("admin API name '%s' is not a host name or host:port (e.g. "
                          "\"gw1.internal\" or \"gw1.internal:9901\")",
                          o->names[i] ? o->names[i] : "(null)");
            return -1;
        }
    return 0;
}

/* Adds a copy of Host value `fmt...` (lower case) to a->hosts. */
static int add_host(mg_admin_t *a, const char *fmt, const char *h, int port)
{
    char buf[300];
    int n = port ? snprintf(buf, sizeof(buf), fmt, h, port) : snprintf(buf, sizeof(buf), "%s", h);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    for (char *p = buf; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    char **hs = realloc(a->hosts, (a->nhosts + 1) * sizeof(*hs));
    if (!hs)
        return -1;
    a->hosts = hs;
    if (!(hs[a->nhosts] = strdup(buf)))
        return -1;
    a->nhosts++;
    return 0;
}

/* The Host values this admin answers (admin.h), for the bound port. */
static int build_hosts(mg_admin_t *a, const char *host, int loopback, int wildcard,
                       const mg_admin_opts_t *o)
{
    int rc = 0;
    if (!wildcard)
        rc |= add_host(a, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, a->port);
    if (loopback) {
        rc |= add_host(a, "%s:%d", "localhost", a->port);
        rc |= add_host(a, "%s:%d", "127.0.0.1", a->port);
        rc |= add_host(a, "[%s]:%d", "::1", a->port);
    }
    for (size_t i = 0; i < o->nnames; i++) {
        rc |= add_host(a, "%s", o->names[i], 0);
        if (!strchr(o->names[i], ':'))
            rc |= add_host(a, "%s:%d", o->names[i], a->port);
    }
    a->any_ip = wildcard;
    return rc;
}

int mg_admin_start(mg_admin_t **out, uv_loop_t *loop, const mg_admin_opts_t *o,
                   const mg_admin_handlers_t *h, char **err)
{
    *out = NULL;
    if (mg_admin_check(o, err) != 0)
        return -1;
    struct sockaddr_storage sa;
    int loopback = 0, wildcard = 0;
    const char *token = o->token && *o->token ? o->token : NULL;
    char where[128];
    format_where(where, sizeof(where), o->host, o->port);
    parse_addr(o->host, o->port, &sa, &loopback, &wildcard);

    /* Everything that can fail for a reason worth reporting happens on a
     * plain socket, before a libuv handle exists that would need closing. */
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errorf("admin API on %s: socket: %s", where, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    socklen_t salen = sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, 128) < 0) {
        *err = errorf("admin API cannot listen on %s: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    int bport = o->port;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        bport = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);

    mg_admin_t *a = calloc(1, sizeof(*a));
    const char *bhost = strcmp(o->host, "localhost") ? o->host : "127.0.0.1";
    if (a)
        a->port = bport;
    if (!a || (token && !(a->token = strdup(token))) ||
        build_hosts(a, bhost, loopback, wildcard, o) != 0) {
        if (a) {
            a->refs = 1;
            admin_unref(a);
        }
        close(fd);
        *err = errorf("admin API on %s: out of memory", where);
        return -1;
    }
    a->loop = loop;
    a->h = *h;
    a->token_len = token ? strlen(token) : 0;
    format_where(a->where, sizeof(a->where), bhost, bport);
    a->idle_ms = IDLE_MS;
    a->refs = 1;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    int rc = uv_tcp_open(&a->listener, fd);
    if (rc < 0)
        close(fd); /* not the handle's yet */
    else
        rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    if (rc < 0) {
        /* the handle exists now: freed by its close callback (run the loop) */
        *err = errorf("admin API cannot listen on %s: %s", where, uv_strerror(rc));
        mg_admin_stop(a);
        return -1;
    }
    *out = a;
    return 0;
}

static void on_listener_closed(uv_handle_t *h) { admin_unref(h->data); }

void mg_admin_stop(mg_admin_t *a)
{
    if (!a || a->stopping)
        return;
    a->stopping = 1;
    uv_close((uv_handle_t *)&a->listener, on_listener_closed);
    for (admin_conn_t *c = a->conns; c; c = c->next)
        conn_close(c);
}

/* For tests: connections idle this long are closed (default 60 s). Takes
 * effect at their next activity. */
void mg_admin_set_idle_timeout(mg_admin_t *a, uint64_t ms) { a->idle_ms = ms; }

/* The port the admin listens on (the real one when started with port 0). */
int mg_admin_port(const mg_admin_t *a) { return a->port; }
