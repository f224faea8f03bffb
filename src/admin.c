/* admin.c: the admin API's HTTP/1.1 server (see admin.h).
 *
 * Small on purpose: it runs on the control thread, sees a few requests a
 * minute, and its answers come from synchronous handlers. So, unlike
 * http_conn.c, it copies what it needs out of the read buffer (the URL, the
 * Authorization value, the body) and keeps no per-request pools.
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
#include "wq.h"

#define READ_BUF (16 * 1024)
#define MAX_URL (8 * 1024)          /* 414 beyond */
#define MAX_HEAD (64 * 1024)        /* 431 beyond: URL + header names and values */
#define MAX_BODY (1024 * 1024)      /* 413 beyond */
#define MAX_AUTH 1024               /* a longer Authorization is simply wrong */
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
    uint64_t idle_ms;
    int stopping;
    unsigned refs;              /* listener + connections not yet closed */
    admin_conn_t *conns;        /* doubly linked */
};

typedef enum { CS_OPEN, CS_LINGER, CS_CLOSING } conn_state_t;

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
    int field_auth;             /* the current header is Authorization */
    int nauth;                  /* Authorization headers seen */
    char auth[MAX_AUTH];
    size_t auth_len;
    int auth_ok;                /* decided at the end of the head */
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
    /* messages are static strings (ours or llhttp's): keep them valid JSON */
    char msg[128], body[256];
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
PLAIN(metrics)
PLAIN(reload)
PLAIN(logs_reopen)
#undef PLAIN

static int call_repl(const mg_admin_handlers_t *h, admin_conn_t *c, char **body, size_t *len,
                     const char **ctype)
{
    return h->repl ? h->repl(c->body ? c->body : "", c->body_len, body, len, ctype) : 0;
}

static int call_cache_purge(const mg_admin_handlers_t *h, admin_conn_t *c, char **body,
                            size_t *len, const char **ctype)
{
    const char *q = memchr(c->url, '?', c->url_len);
    size_t ql = q ? c->url_len - (size_t)(q - c->url) - 1 : 0;
    return h->cache_purge ? h->cache_purge(q ? q + 1 : "", ql, body, len, ctype) : 0;
}

static const struct endpoint {
    const char *path;
    const char *method;
    endpoint_fn call;
} endpoints[] = {
    { "/status", "GET", call_status },
    { "/routes", "GET", call_routes },
    { "/upstreams", "GET", call_upstreams },
    { "/metrics", "GET", call_metrics },
    { "/reload", "POST", call_reload },
    { "/repl", "POST", call_repl },
    { "/cache", "DELETE", call_cache_purge },
    { "/logs/reopen", "POST", call_logs_reopen },
};

static void dispatch(admin_conn_t *c)
{
    mg_admin_t *a = c->a;
    if (a->token && !c->auth_ok) {
        respond_error(c, 401, "unauthorized: send Authorization: Bearer <token>",
                      "WWW-Authenticate: Bearer\r\n");
        return;
    }
    size_t plen = c->url_len;
    const char *q = memchr(c->url, '?', c->url_len);
    if (q)
        plen = (size_t)(q - c->url);
    const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
    const struct endpoint *e = NULL;
    int path_known = 0;
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        if (strlen(endpoints[i].path) != plen || memcmp(endpoints[i].path, c->url, plen))
            continue;
        path_known = 1;
        if (!strcmp(endpoints[i].method, method))
            e = &endpoints[i];
    }
    if (!path_known) {
        respond_error(c, 404, "not found", NULL);
        return;
    }
    if (!e) {
        char allow[64];
        for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
            if (strlen(endpoints[i].path) == plen && !memcmp(endpoints[i].path, c->url, plen))
                snprintf(allow, sizeof(allow), "Allow: %s\r\n", endpoints[i].method);
        respond_error(c, 405, "method not allowed", allow);
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
    c->field_auth = 0;
    c->nauth = 0;
    c->auth_len = 0;
    c->auth_ok = 0;
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
    c->field_auth = c->field_len == 13 && !strncasecmp(c->field, "authorization", 13);
    c->field_len = 0;
    if (c->field_auth)
        c->nauth++;
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
    if (!c->field_auth)
        return 0;
    if (c->auth_len + len > MAX_AUTH) {
        c->nauth = 2; /* too long to be right: same as a wrong one */
        return 0;
    }
    memcpy(c->auth + c->auth_len, at, len);
    c->auth_len += len;
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
    if (c->nauth != 1 || c->auth_len < 7 || strncasecmp(c->auth, "Bearer ", 7) != 0)
        return 0;
    size_t i = 7;
    while (i < c->auth_len && c->auth[i] == ' ')
        i++;
    size_t end = c->auth_len;
    while (end > i && (c->auth[end - 1] == ' ' || c->auth[end - 1] == '\t'))
        end--;
    return secret_eq(c->auth + i, end - i, a->token, a->token_len);
}

static int on_headers_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    c->auth_ok = c->a->token ? check_auth(c) : 1;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > MAX_BODY)
        return fail(p, 413, "request body larger than 1 MiB");
    /* a body we keep is allocated once when its length is known */
    if (c->auth_ok && (p->flags & F_CONTENT_LENGTH) && p->content_length > c->body_cap) {
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
    if (!c->auth_ok) {
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
 * Returns 0 or -1. */
static int parse_addr(const char *host, int port, struct sockaddr_storage *sa, int *loopback)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    memset(sa, 0, sizeof(*sa));
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (uv_ip4_addr(host, port, in) == 0) {
        *loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        return 0;
    }
    if (uv_ip6_addr(host, port, in6) == 0) {
        const uint8_t *b = in6->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        *loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                    (!memcmp(b, mapped, 12) && b[12] == 127);
        return 0;
    }
    return -1;
}

int mg_admin_start(mg_admin_t **out, uv_loop_t *loop, const char *host, int port,
                   const char *token, const mg_admin_handlers_t *h, char **err)
{
    *out = NULL;
    *err = NULL;
    struct sockaddr_storage sa;
    int loopback = 0;
    const char *fmt = host && strchr(host, ':') ? "[%s]:%d" : "%s:%d";
    char where[128];
    snprintf(where, sizeof(where), fmt, host ? host : "", port);
    if (!host || port < 0 || port > 65535 || parse_addr(host, port, &sa, &loopback) < 0) {
        *err = errorf("admin API address %s: not a numeric IPv4 or IPv6 address and port", where);
        return -1;
    }
    if (token && !*token)
        token = NULL;
    if (!loopback && !token) {
        *err = errorf("admin API on %s needs a token (admin = { token = ... }) because it is "
                      "not a loopback address",
                      where);
        return -1;
    }

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
    int bport = port;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        bport = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);

    mg_admin_t *a = calloc(1, sizeof(*a));
    if (!a || (token && !(a->token = strdup(token)))) {
        free(a);
        close(fd);
        *err = errorf("admin API on %s: out of memory", where);
        return -1;
    }
    a->loop = loop;
    a->h = *h;
    a->token_len = token ? strlen(token) : 0;
    a->port = bport;
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
