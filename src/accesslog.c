/* accesslog.c: JSON access log lines (see accesslog.h). */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <lua.h>
#include <math.h>
#include <strings.h>
#include "accesslog.h"
#include "mirror.h"
#include "split.h"
#include "targets.h"
#include "cache.h"
#include "errlog.h"
#include "hooks.h"
#include "utf8.h"

/* Writes start at LOG_FLUSH_AT (or every LOG_FLUSH_MS); the rest of a
 * buffer absorbs a disk that stalls (256 KiB: ~250 ms at 1 MB/s of lines)
 * before lines are dropped. */
#define LOG_BUF (256 * 1024)
#define LOG_FLUSH_AT (32 * 1024)
#define LOG_FLUSH_MS 200
#define DROP_WARN_S 10 /* at most one error-log line per worker this often */

/* Bumped by mg_accesslog_reopen; each worker compares it with the value it
 * last opened its file at. */
static atomic_uint reopen_epoch;
static atomic_ullong dropped_total; /* all workers: /metrics */

struct mg_accesslog_s {
    int fd;
    int own_fd;         /* a file of ours (not stdout/stderr): reopened */
    char *path;
    unsigned epoch;
    char *buf[2];
    size_t len[2];
    int active;          /* buffer being filled */
    int writing;         /* the other buffer is being written */
    uv_fs_t req;
    uv_timer_t timer;
    uint64_t dropped;    /* not yet reported in the error log */
    time_t dropped_warned;
    time_t cached_sec;
    char cached_time[32];
};

static void start_write(mg_worker_t *w);

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/* After a rotation: the next buffer goes to a new file at the same path.
 * Called only while no write is in flight, so the old file gets whole
 * buffers (whole lines) up to here and the new one everything after. */
static void reopen_if_asked(mg_worker_t *w)
{
    mg_accesslog_t *l = w->log;
    unsigned epoch = atomic_load(&reopen_epoch);
    if (l->epoch == epoch || l->writing)
        return;
    l->epoch = epoch;
    if (!l->own_fd)
        return;
    int fd = open_file(l->path);
    if (fd < 0) {
        mg_log(MG_LOG_ERROR, "worker %d: cannot reopen the access log %s: %s "
               "(still writing to the old file)", w->id, l->path, strerror(errno));
        return;
    }
    close(l->fd);
    l->fd = fd;
}

static void on_written(uv_fs_t *req)
{
    mg_worker_t *w = req->data;
    mg_accesslog_t *l = w->log;
    uv_fs_req_cleanup(req);
    l->writing = 0;
    l->len[!l->active] = 0;
    reopen_if_asked(w);
    if (l->len[l->active] >= LOG_FLUSH_AT)
        start_write(w);
}

unsigned long long mg_accesslog_dropped_total(void)
{
    return atomic_load(&dropped_total);
}

/* Both buffers are full: the line is lost, but never silently. */
static void drop_line(mg_worker_t *w)
{
    mg_accesslog_t *l = w->log;
    l->dropped++;
    atomic_fetch_add(&dropped_total, 1);
    time_t now = time(NULL);
    if (now - l->dropped_warned >= DROP_WARN_S) {
        mg_log(MG_LOG_WARN, "worker %d: access log: %llu lines dropped (the log is written "
               "slower than requests come)", w->id, (unsigned long long)l->dropped);
        l->dropped = 0;
        l->dropped_warned = now;
    }
}

void mg_accesslog_reopen(void)
{
    atomic_fetch_add(&reopen_epoch, 1);
}

static void start_write(mg_worker_t *w)
{
    mg_accesslog_t *l = w->log;
    if (l->writing || l->len[l->active] == 0)
        return;
    int b = l->active;
    l->active = !b;
    l->writing = 1;
    l->req.data = w;
    uv_buf_t buf = uv_buf_init(l->buf[b], (unsigned)l->len[b]);
    if (uv_fs_write(&w->loop, &l->req, l->fd, &buf, 1, -1, on_written) < 0) {
        l->writing = 0;
        l->len[b] = 0;
    }
}

static void on_tick(uv_timer_t *t)
{
    reopen_if_asked(t->data);
    start_write(t->data);
}

int mg_accesslog_open(mg_worker_t *w)
{
    const char *where = w->g->cfg->access_log;
    if (!where || strcmp(where, "off") == 0)
        return 0;
    mg_accesslog_t *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    if (strcmp(where, "stdout") == 0) {
        l->fd = 1;
    } else if (strcmp(where, "stderr") == 0) {
        l->fd = 2;
    } else {
        l->fd = open_file(where);
        if (l->fd < 0 || !(l->path = strdup(where))) {
            int e = l->fd < 0 ? errno : ENOMEM;
            if (l->fd >= 0)
                close(l->fd);
            free(l);
            return -e;
        }
        l->own_fd = 1;
    }
    l->epoch = atomic_load(&reopen_epoch);
    l->buf[0] = malloc(LOG_BUF);
    l->buf[1] = malloc(LOG_BUF);
    if (!l->buf[0] || !l->buf[1]) {
        free(l->buf[0]);
        free(l->buf[1]);
        if (l->own_fd)
            close(l->fd);
        free(l->path);
        free(l);
        return -ENOMEM;
    }
    uv_timer_init(&w->loop, &l->timer);
    l->timer.data = w;
    uv_timer_start(&l->timer, on_tick, LOG_FLUSH_MS, LOG_FLUSH_MS);
    uv_unref((uv_handle_t *)&l->timer);
    w->log = l;
    return 0;
}

/* ---- one line ------------------------------------------------------------
 * A line is built by a writer that never passes its end: every field is
 * bounded by what is actually written into it, whoever set the value (the
 * client, a hook that rewrote the path, set a header or a req.ctx value,
 * the upstream's answer). Strings are written as JSON strings of valid
 * UTF-8: control characters, quotes and backslashes escaped, each byte
 * that does not belong to a well-formed UTF-8 sequence as \ufffd. A value
 * whose escaped form is longer than FIELD_MAX is cut and ends with "...";
 * a line whose values would pass LOG_LINE_MAX cuts its later values to fit
 * (every field keeps at least its key and a short value: logfields.c). */

#define FIELD_MAX MG_LOG_VALUE_MAX
#define LOG_LINE_MAX (32 * 1024)
#define VALUE_ROOM 32 /* a number, null, a boolean or the time (logfields.c's VALUE_MIN) */

typedef struct line_s {
    char *o, *end;
} line_t;

static void put(line_t *b, const char *s, size_t n)
{
    if (n > (size_t)(b->end - b->o))
        n = (size_t)(b->end - b->o);
    memcpy(b->o, s, n);
    b->o += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

/* A number or the time: at most VALUE_ROOM bytes. */
static void putf(line_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(line_t *b, const char *fmt, ...)
{
    char tmp[VALUE_ROOM + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* The most bytes a JSON string of n input bytes takes (quotes, "..."). */
static size_t json_bound(size_t n)
{
    return (n > FIELD_MAX / 6 + 1 ? FIELD_MAX : n * 6) + 8;
}

/* A JSON string written in pieces: open, put..., close. It stops at
 * `stop`, which leaves room for "..." and the closing quote. */
typedef struct jstr_s {
    char *o, *stop;
    int cut;
} jstr_t;

static void js_open(line_t *b, size_t tail, jstr_t *j)
{
    char *stop = b->o + 1 + FIELD_MAX;
    char *limit = b->end - tail - 4; /* "...", '"' */
    j->o = b->o;
    j->stop = stop < limit ? stop : limit;
    j->cut = 0;
    *j->o++ = '"';
}

static void js_put(jstr_t *j, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *o = j->o;
    while (!j->cut && p < end) {
        unsigned ch = *p;
        /* a short escape, a \u00XX one, U+FFFD for a byte outside UTF-8,
         * or the bytes as they are */
        char esc = ch == '"' ? '"' : ch == '\\' ? '\\' : ch == '\n' ? 'n' : ch == '\t' ? 't'
                 : ch == '\r' ? 'r' : 0;
        size_t len = ch < 0x80 ? 1 : mg_utf8_seq(p, (size_t)(end - p));
        int uesc = !esc && (ch < 0x20 || ch == 0x7f);
        size_t need = esc ? 2 : uesc || len == 0 ? 6 : len;
        if (o + need > j->stop) {
            j->cut = 1;
            break;
        }
        if (esc) {
            o[0] = '\\';
            o[1] = esc;
        } else if (uesc) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[ch >> 4];
            o[5] = hex[ch & 15];
        } else if (len == 0) {
            memcpy(o, "\\ufffd", 6);
            len = 1;
        } else {
            memcpy(o, p, len);
        }
        o += need;
        p += len;
    }
    j->o = o;
}

static void js_close(line_t *b, jstr_t *j)
{
    if (j->cut) {
        memcpy(j->o, "...", 3);
        j->o += 3;
    }
    *j->o++ = '"';
    b->o = j->o;
}

static const char *now_text(mg_accesslog_t *l, int *ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    *ms = (int)(ts.tv_nsec / 1000000);
    if (ts.tv_sec != l->cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(l->cached_time, sizeof(l->cached_time), "%Y-%m-%dT%H:%M:%S", &tm);
        l->cached_sec = ts.tv_sec;
    }
    return l->cached_time;
}

/* One field's value, found before anything is written so that the line's
 * size is known. */
enum {
    V_OMIT,    /* an optional field without a value: left out */
    V_NULL,
    V_STR,     /* s/n; cut: the source had more than s/n */
    V_HEADERS, /* the request header `arg`: its n values (total bytes u),
                  joined by ", " */
    V_INT,     /* u */
    V_NUM,     /* d, finite */
    V_SECONDS, /* u nanoseconds */
    V_BOOL,    /* u */
    V_TIME,
};

typedef struct value_s {
    uint8_t type, cut;
    const char *s;
    size_t n;
    uint64_t u;
    double d;
} value_t;

#define STR(p, len) ((value_t){ .type = V_STR, .s = (p), .n = (len) })
#define NUL ((value_t){ .type = V_NULL })
#define OMIT ((value_t){ .type = V_OMIT })
#define SECONDS(ns) ((value_t){ .type = V_SECONDS, .u = (ns) })

/* The path as sent upstream (after hooks), like nginx's $uri. */
static value_t path_value(const mg_request_t *r)
{
    if (r->path)
        return STR(r->path, r->path_len);
    if (*r->data)
        return STR(mg_request_data(r, r->url), r->url.len);
    return STR("", 0);
}

static value_t query_value(const mg_request_t *r)
{
    if (r->new_query)
        return STR(r->new_query, r->new_query_len);
    return r->query_len ? STR(r->query + 1, r->query_len - 1) : STR("", 0);
}

/* upstream: its name (also for an answer from the cache); target: the
 * instance contacted, null when none was */
static const mg_upstream_t *upstream_of(const mg_request_t *r)
{
    int ui = r->g ? mg_request_upstream(r) : -1;
    return ui >= 0 ? &r->g->cfg->upstreams[ui] : NULL;
}

static value_t request_headers(const mg_request_t *r, const mg_logfield_t *f)
{
    value_t v = { .type = V_HEADERS };
    const char *p;
    size_t len;
    while (mg_request_header(r, f->arg, f->arg_len, (int)v.n, &p, &len) == 1) {
        v.u += len + (v.n ? 2 : 0);
        v.n++;
    }
    return v.n ? v : NUL;
}

static value_t ctx_value(const mg_ctx_value_t *c)
{
    switch (c->type) {
    case LUA_TNIL: return NUL;
    case LUA_TBOOLEAN: return (value_t){ .type = V_BOOL, .u = c->num != 0 };
    case LUA_TNUMBER:
        /* JSON has no NaN or infinities */
        return isfinite(c->num) ? (value_t){ .type = V_NUM, .d = c->num } : NUL;
    case LUA_TSTRING: return STR(c->s, c->len);
    default: return STR(c->s, c->len); /* the type's name: "table", "function", ... */
    }
}

/* A value that only some requests have (a route's split, its mirror):
 * left out of the default line without one, null when asked for. */
static value_t optional_str(const mg_logfield_t *f, const char *s)
{
    if (s)
        return STR(s, strlen(s));
    return f->optional ? OMIT : NUL;
}

static value_t field_value(const mg_request_t *r, const mg_logfield_t *f,
                           const mg_ctx_value_t *ctx)
{
    const mg_upstream_t *up;
    switch (f->kind) {
    case MG_LF_TIME: return (value_t){ .type = V_TIME };
    case MG_LF_REQUEST_ID: return STR(r->request_id, r->request_id_len);
    case MG_LF_TRACE_ID:
        return r->traced ? STR(r->trace_id, 32) : f->optional ? OMIT : NUL;
    case MG_LF_SPAN_ID:
        return r->traced ? STR(r->span_id, 16) : f->optional ? OMIT : NUL;
    case MG_LF_CLIENT: {
        const char *c = mg_request_client(r);
        return STR(c, strlen(c));
    }
    case MG_LF_PEER: {
        const char *p = mg_request_peer(r);
        return STR(p, strlen(p));
    }
    case MG_LF_METHOD:
        if (r->new_method)
            return STR(r->new_method, r->new_method_len);
        return *r->data ? STR(mg_request_data(r, r->method), r->method.len) : STR("", 0);
    case MG_LF_PATH: return path_value(r);
    case MG_LF_QUERY: return query_value(r);
    case MG_LF_PROTO: /* the client's: "HTTP/2" for a stream of an HTTP/2 connection */
        return r->http_major == 2 ? STR("HTTP/2", 6)
               : r->http_minor == 0 ? STR("HTTP/1.0", 8) : STR("HTTP/1.1", 8);
    case MG_LF_STATUS: return (value_t){ .type = V_INT, .u = (uint64_t)r->status };
    case MG_LF_BYTES: return (value_t){ .type = V_INT, .u = r->bytes_sent };
    case MG_LF_ROUTE: return r->route ? STR(r->route->name, strlen(r->route->name)) : NUL;
    case MG_LF_UPSTREAM:
        up = upstream_of(r);
        return up ? STR(up->name, strlen(up->name)) : NUL;
    case MG_LF_TARGET:
        up = upstream_of(r);
        if (!up || r->target < 0)
            return NUL;
        return STR(mg_request_target_name(r), strlen(mg_request_target_name(r)));
    case MG_LF_UPSTREAM_TIME:
        up = upstream_of(r);
        return up && r->target >= 0 ? SECONDS(r->upstream_ns) : NUL;
    case MG_LF_SPLIT: /* how a route's canary or split chose the upstream */
        return optional_str(f, mg_split_how_name(r->split_how));
    case MG_LF_MIRROR: /* what became of the route's mirror copy */
        return optional_str(f, mg_mirror_result_name(r->mirror));
    case MG_LF_CACHE: {
        const char *c = mg_cache_state_name(mg_cache_state(r));
        return c ? STR(c, strlen(c)) : NUL;
    }
    case MG_LF_TOTAL_TIME: return SECONDS(r->total_ns);
    case MG_LF_UP_ATTEMPTS: return (value_t){ .type = V_INT, .u = r->up_attempts };
    case MG_LF_UP_CONNECT:
        return r->up_phases & MG_UP_CONNECTED ? SECONDS(r->up_connect_ns) : NUL;
    case MG_LF_UP_TLS: return r->up_phases & MG_UP_TLS_DONE ? SECONDS(r->up_tls_ns) : NUL;
    case MG_LF_UP_FIRST_BYTE:
        return r->up_phases & MG_UP_FIRST_BYTE ? SECONDS(r->up_first_byte_ns) : NUL;
    case MG_LF_REQ_HEADER: return request_headers(r, f);
    case MG_LF_RES_HEADER: {
        const mg_logcap_t *c = r->log_res ? &r->log_res[f->slot] : NULL;
        if (!c || !c->p)
            return NUL;
        value_t v = STR(c->p, c->len);
        v.cut = c->cut;
        return v;
    }
    case MG_LF_CTX: return ctx_value(&ctx[f->slot]);
    default: return NUL;
    }
}

/* The room value v takes in the line, key included. */
static size_t value_room(const mg_logfield_t *f, const value_t *v)
{
    size_t n = v->type == V_STR ? json_bound(v->n) : v->type == V_HEADERS ? json_bound(v->u) : 0;
    return v->type == V_OMIT ? 0 : f->key_len + 4 + (n > VALUE_ROOM ? n : VALUE_ROOM);
}

static void write_value(mg_accesslog_t *l, const mg_request_t *r, const mg_logfield_t *f,
                        const value_t *v, line_t *b)
{
    jstr_t j;
    int ms;
    const char *t;
    switch (v->type) {
    case V_NULL: PUT_LIT(b, "null"); break;
    case V_STR:
        js_open(b, f->tail_min, &j);
        js_put(&j, v->s, v->n);
        j.cut |= v->cut;
        js_close(b, &j);
        break;
    case V_HEADERS:
        js_open(b, f->tail_min, &j);
        for (uint64_t i = 0; i < v->n; i++) {
            const char *p;
            size_t len;
            if (mg_request_header(r, f->arg, f->arg_len, (int)i, &p, &len) != 1)
                break;
            if (i)
                js_put(&j, ", ", 2);
            js_put(&j, p, len);
        }
        js_close(b, &j);
        break;
    case V_INT: putf(b, "%llu", (unsigned long long)v->u); break;
    case V_NUM: putf(b, "%.14g", v->d); break; /* as Lua's tostring writes it */
    case V_SECONDS: putf(b, "%.6f", (double)v->u / 1e9); break;
    case V_BOOL: v->u ? PUT_LIT(b, "true") : PUT_LIT(b, "false"); break;
    case V_TIME:
        t = now_text(l, &ms);
        putf(b, "\"%s.%03dZ\"", t, ms);
        break;
    default: break;
    }
}

void mg_accesslog_request(mg_worker_t *w, const mg_request_t *r)
{
    mg_accesslog_t *l = w->log;
    if (!l || !r)
        return;
    const mg_logformat_t *fmt = r->g->cfg->log_format;
    value_t vals[MG_LOG_MAX_FIELDS];
    mg_ctx_value_t ctx[MG_LOG_MAX_FIELDS];
    int mark = fmt->nctx ? mg_hooks_ctx_begin((mg_request_t *)r, fmt, ctx) : -1;
    size_t need = 3; /* "}\n", or "{}\n" */
    for (size_t i = 0; i < fmt->n; i++) {
        vals[i] = field_value(r, &fmt->f[i], ctx);
        need += value_room(&fmt->f[i], &vals[i]);
    }
    if (need > LOG_LINE_MAX)
        need = LOG_LINE_MAX; /* later values are cut to fit */
    if (l->len[l->active] + need > LOG_BUF) {
        start_write(w);
        if (l->len[l->active] + need > LOG_BUF) {
            drop_line(w);
            goto out;
        }
    }
    char *base = l->buf[l->active] + l->len[l->active];
    line_t b = { base, base + need };
    int first = 1;
    for (size_t i = 0; i < fmt->n; i++) {
        const mg_logfield_t *f = &fmt->f[i];
        if (vals[i].type == V_OMIT)
            continue;
        put(&b, first ? "{\"" : ",\"", 2);
        put(&b, f->key, f->key_len);
        PUT_LIT(&b, "\":");
        first = 0;
        write_value(l, r, f, &vals[i], &b);
    }
    if (first)
        PUT_LIT(&b, "{}\n");
    else
        PUT_LIT(&b, "}\n");
    if (b.o[-1] != '\n') {
        drop_line(w); /* cut short: never write half a JSON object */
        goto out;
    }
    l->len[l->active] += (size_t)(b.o - base);
    if (l->len[l->active] >= LOG_FLUSH_AT)
        start_write(w);
out:
    if (mark >= 0)
        mg_hooks_ctx_end((mg_request_t *)r, mark);
}

void mg_accesslog_close(mg_worker_t *w)
{
    mg_accesslog_t *l = w->log;
    if (!l)
        return;
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, NULL);
    start_write(w); /* the loop runs until this write is done */
}

/* After the worker's loop ended: writes what is left and frees the log. */
void mg_accesslog_free(mg_worker_t *w)
{
    mg_accesslog_t *l = w->log;
    if (!l)
        return;
    if (l->len[l->active] > 0) {
        ssize_t rc = write(l->fd, l->buf[l->active], l->len[l->active]);
        (void)rc;
    }
    if (l->own_fd)
        close(l->fd);
    free(l->buf[0]);
    free(l->buf[1]);
    free(l->path);
    free(l);
    w->log = NULL;
}
