/* accesslog.c: JSON access log lines (see accesslog.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "accesslog.h"

#define LOG_BUF 65536
#define LOG_FLUSH_AT 49152
#define LOG_FLUSH_MS 200

struct mg_accesslog_s {
    int fd;
    int own_fd;
    char *buf[2];
    size_t len[2];
    int active;          /* buffer being filled */
    int writing;         /* the other buffer is being written */
    uv_fs_t req;
    uv_timer_t timer;
    uint64_t dropped;
    time_t cached_sec;
    char cached_time[32];
};

static void start_write(mg_worker_t *w);

static void on_written(uv_fs_t *req)
{
    mg_worker_t *w = req->data;
    mg_accesslog_t *l = w->log;
    uv_fs_req_cleanup(req);
    l->writing = 0;
    l->len[!l->active] = 0;
    if (l->len[l->active] >= LOG_FLUSH_AT)
        start_write(w);
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
        l->fd = open(where, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (l->fd < 0) {
            int e = errno;
            free(l);
            return -e;
        }
        l->own_fd = 1;
    }
    l->buf[0] = malloc(LOG_BUF);
    l->buf[1] = malloc(LOG_BUF);
    if (!l->buf[0] || !l->buf[1]) {
        free(l->buf[0]);
        free(l->buf[1]);
        if (l->own_fd)
            close(l->fd);
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

/* Appends s as JSON string content (quotes not included). */
static char *json_str(char *o, char *end, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && o + 6 < end; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        } else {
            *o++ = (char)ch;
        }
    }
    return o;
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

void mg_accesslog_request(mg_worker_t *w, mg_conn_t *c)
{
    mg_accesslog_t *l = w->log;
    mg_request_t *r = c->r;
    if (!l || !r)
        return;
    /* a line is at most ~2.3x the request line (escaping) plus fixed fields */
    size_t need = 512 + (size_t)r->url.len * 6 + r->method.len * 6;
    if (l->len[l->active] + need > LOG_BUF) {
        start_write(w);
        if (l->len[l->active] + need > LOG_BUF) {
            l->dropped++;
            return;
        }
    }
    char *o = l->buf[l->active] + l->len[l->active];
    char *end = l->buf[l->active] + LOG_BUF;
    int ms;
    const char *t = now_text(l, &ms);
    o += snprintf(o, 128, "{\"time\":\"%s.%03dZ\",\"request_id\":\"%s\",", t, ms, r->request_id);
    if (r->traced)
        o += snprintf(o, 80, "\"trace_id\":\"%.32s\",\"span_id\":\"%.16s\",", r->trace_id,
                      r->span_id);
    o += snprintf(o, 80, "\"client\":\"%s\",\"method\":\"", c->client_ip);
    o = json_str(o, end, c->buf.data ? mg_conn_data(c, r->method) : "",
                 c->buf.data ? r->method.len : 0);
    o += snprintf(o, 16, "\",\"path\":\"");
    if (r->path)
        o = json_str(o, end, r->path, r->path_len);
    else if (c->buf.data)
        o = json_str(o, end, mg_conn_data(c, r->url), r->url.len);
    o += snprintf(o, 16, "\",\"query\":\"");
    if (r->query_len)
        o = json_str(o, end, r->query + 1, r->query_len - 1);
    o += snprintf(o, 64, "\",\"status\":%d,\"bytes\":%llu,\"route\":", r->status,
                  (unsigned long long)r->bytes_sent);
    if (r->route) {
        *o++ = '"';
        o = json_str(o, end, r->route->name, strlen(r->route->name));
        *o++ = '"';
    } else {
        o += snprintf(o, 8, "null");
    }
    o += snprintf(o, 16, ",\"upstream\":");
    if (r->g && r->target >= 0 && mg_request_upstream(r) >= 0) {
        int ui = mg_request_upstream(r);
        const mg_target_t *tg = &r->g->cfg->upstreams[ui].targets[r->target];
        *o++ = '"';
        o = json_str(o, end, tg->name, strlen(tg->name));
        *o++ = '"';
        o += snprintf(o, 48, ",\"upstream_time\":%.6f", (double)r->upstream_ns / 1e9);
    } else {
        o += snprintf(o, 32, "null,\"upstream_time\":null");
    }
    o += snprintf(o, 48, ",\"total_time\":%.6f}\n", (double)r->total_ns / 1e9);
    l->len[l->active] = (size_t)(o - l->buf[l->active]);
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
    free(l);
    w->log = NULL;
}
