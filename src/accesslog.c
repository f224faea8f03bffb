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
#include "accesslog.h"
#include "mirror.h"
#include "split.h"
#include "targets.h"
#include "cache.h"
#include "errlog.h"

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
 * client, or a hook that rewrote the path or set a header). A value whose
 * escaped form is longer than FIELD_MAX is cut and ends with "...". */

#define FIELD_MAX 4096
#define LINE_FIXED 640 /* keys, numbers, ids and punctuation of one line */

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

static void putf(line_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(line_t *b, const char *fmt, ...)
{
    size_t room = (size_t)(b->end - b->o);
    va_list ap;
    va_start(ap, fmt);
    int n = room ? vsnprintf(b->o, room, fmt, ap) : 0;
    va_end(ap);
    if (n > 0)
        b->o += (size_t)n < room ? (size_t)n : room - 1;
}

/* The most bytes json_value writes for n input bytes. */
static size_t json_bound(size_t n)
{
    return (n > FIELD_MAX / 6 + 1 ? FIELD_MAX : n * 6) + 8;
}

/* Writes s as a JSON string, quotes included, cut at FIELD_MAX bytes. */
static void json_value(line_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *o = b->o, *stop = b->o + FIELD_MAX;
    if (stop > b->end - 8)
        stop = b->end - 8;
    if (o >= stop)
        return;
    *o++ = '"';
    size_t i = 0;
    for (; i < n && o + 6 <= stop; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[ch >> 4];
            o[5] = hex[ch & 15];
            o += 6;
        } else {
            *o++ = (char)ch;
        }
    }
    if (i < n) {
        memcpy(o, "...", 3);
        o += 3;
    }
    *o++ = '"';
    b->o = o;
}

/* ,"key":"value" (or null when s is NULL). */
static void field_str(line_t *b, const char *key, const char *s, size_t n)
{
    putf(b, ",\"%s\":", key);
    if (s)
        json_value(b, s, n);
    else
        PUT_LIT(b, "null");
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

/* The values of one line's text fields, so that its size is known before
 * it is written. */
typedef struct line_fields_s {
    const char *method, *path, *query, *route, *upstream, *target;
    size_t method_len, path_len, query_len, route_len, upstream_len, target_len;
} line_fields_t;

static void collect(const mg_request_t *r, line_fields_t *f)
{
    memset(f, 0, sizeof(*f));
    if (*r->data) {
        f->method = mg_request_data(r, r->method);
        f->method_len = r->method.len;
    } else {
        f->method = "";
    }
    if (r->path) {
        f->path = r->path;
        f->path_len = r->path_len;
    } else if (*r->data) {
        f->path = mg_request_data(r, r->url);
        f->path_len = r->url.len;
    } else {
        f->path = "";
    }
    /* path and query as sent upstream (after hooks), like nginx's $uri */
    if (r->new_query) {
        f->query = r->new_query;
        f->query_len = r->new_query_len;
    } else {
        f->query = r->query_len ? r->query + 1 : "";
        f->query_len = r->query_len ? r->query_len - 1 : 0;
    }
    if (r->route) {
        f->route = r->route->name;
        f->route_len = strlen(f->route);
    }
    /* upstream: its name (also for an answer from the cache); target: the
     * instance contacted, NULL when none was */
    int ui = r->g ? mg_request_upstream(r) : -1;
    if (ui >= 0) {
        const mg_upstream_t *up = &r->g->cfg->upstreams[ui];
        f->upstream = up->name;
        f->upstream_len = strlen(up->name);
        if (r->target >= 0) {
            f->target = mg_request_target_name(r);
            f->target_len = strlen(f->target);
        }
    }
}

static size_t line_bound(const mg_request_t *r, const line_fields_t *f)
{
    return LINE_FIXED + json_bound(r->request_id_len) + json_bound(f->method_len) +
           json_bound(f->path_len) + json_bound(f->query_len) + json_bound(f->route_len) +
           json_bound(f->upstream_len) + json_bound(f->target_len) +
           json_bound(sizeof("revalidated")) + /* the longest cache state */
           2 * json_bound(sizeof("body_too_large")) + /* split, mirror */
           json_bound(sizeof(r->peer->socket_ip)); /* the peer, with trusted_proxies */
}

static void write_line(mg_accesslog_t *l, const mg_request_t *r, const line_fields_t *f,
                       line_t *b)
{
    int ms;
    const char *t = now_text(l, &ms);
    putf(b, "{\"time\":\"%s.%03dZ\"", t, ms);
    field_str(b, "request_id", r->request_id, r->request_id_len);
    if (r->traced)
        putf(b, ",\"trace_id\":\"%.32s\",\"span_id\":\"%.16s\"", r->trace_id, r->span_id);
    const char *client = mg_request_client(r);
    field_str(b, "client", client, strlen(client));
    if (r->g->cfg->trusted_proxies) {
        /* it can differ from the client only then */
        const char *peer = mg_request_peer(r);
        field_str(b, "peer", peer, strlen(peer));
    }
    field_str(b, "method", f->method, f->method_len);
    field_str(b, "path", f->path, f->path_len);
    field_str(b, "query", f->query, f->query_len);
    /* the client's protocol: "HTTP/2" for a stream of an HTTP/2 connection */
    if (r->http_major == 2)
        PUT_LIT(b, ",\"proto\":\"HTTP/2\"");
    else if (r->http_minor == 0)
        PUT_LIT(b, ",\"proto\":\"HTTP/1.0\"");
    else
        PUT_LIT(b, ",\"proto\":\"HTTP/1.1\"");
    putf(b, ",\"status\":%d,\"bytes\":%llu", r->status, (unsigned long long)r->bytes_sent);
    field_str(b, "route", f->route, f->route_len);
    field_str(b, "upstream", f->upstream, f->upstream_len);
    field_str(b, "target", f->target, f->target_len);
    if (f->target)
        putf(b, ",\"upstream_time\":%.6f", (double)r->upstream_ns / 1e9);
    else
        PUT_LIT(b, ",\"upstream_time\":null");
    /* how a route's canary or split chose the upstream, what became of
     * its mirror copy: only on routes that have them */
    const char *split = mg_split_how_name(r->split_how);
    if (split)
        field_str(b, "split", split, strlen(split));
    const char *mirror = mg_mirror_result_name(r->mirror);
    if (mirror)
        field_str(b, "mirror", mirror, strlen(mirror));
    /* what the route's cache did; null on a route without one */
    const char *cache = mg_cache_state_name(mg_cache_state(r));
    field_str(b, "cache", cache, cache ? strlen(cache) : 0);
    putf(b, ",\"total_time\":%.6f}\n", (double)r->total_ns / 1e9);
}

void mg_accesslog_request(mg_worker_t *w, const mg_request_t *r)
{
    mg_accesslog_t *l = w->log;
    if (!l || !r)
        return;
    line_fields_t f;
    collect(r, &f);
    size_t need = line_bound(r, &f);
    if (l->len[l->active] + need > LOG_BUF) {
        start_write(w);
        if (l->len[l->active] + need > LOG_BUF) {
            drop_line(w);
            return;
        }
    }
    char *base = l->buf[l->active] + l->len[l->active];
    line_t b = { base, base + need };
    write_line(l, r, &f, &b);
    if (b.o == b.end || b.o[-1] != '\n') {
        drop_line(w); /* cut short: never write half a JSON object */
        return;
    }
    l->len[l->active] += (size_t)(b.o - base);
    if (l->len[l->active] >= LOG_FLUSH_AT)
        start_write(w);
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
