/* otlp.c: the span exporter thread (see otlp.h).
 *
 * Encoding: the OTLP/HTTP JSON mapping of ExportTraceServiceRequest
 * (opentelemetry-proto, docs/specification.md "JSON Protobuf Encoding"):
 * ids as lower-case hex (not base64), 64-bit integers (times, intValue)
 * as decimal strings, enums (kind, status.code) as numbers, field names
 * in lowerCamelCase. One resourceSpans with one scopeSpans per batch.
 *
 * Threading: the control thread hands over generations (apply) and the
 * stop under `lock`, then wakes the loop with `wake`; everything else is
 * the exporter thread's own. Counters are atomics (read by /metrics).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "errlog.h"
#include "generation.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "oneshot.h"
#include "otlp.h"
#include "trace.h"
#include "tracing.h"
#include "uri.h"
#include "version.h"

#define TICK_MAX_MS 100      /* the queues are looked at at least this often */
#define STOP_FLUSH_MS 1000   /* what is queued at shutdown gets this long */
#define FAIL_LOG_MS 60000    /* a failing collector is logged once a minute */

typedef struct jbuf_s {
    char *p;
    size_t len, cap;
    int failed;
} jbuf_t;

static struct {
    uv_mutex_t lock;           /* pending, turned_off, stop */
    mg_gen_t *pending;         /* the latest generation with tracing, one reference */
    int turned_off;            /* the latest generation has no tracing */
    int stop;
    int started;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick, stop_timer;
    /* the thread's own */
    mg_gen_t *gen;             /* settings in use (one reference) */
    int stopping;              /* 1: flushing what is queued; 2: time is up */
    int off;                   /* tracing is off: what is still queued goes at once */
    int busy;                  /* a POST in flight (o's handles open) */
    size_t in_flight;          /* its spans */
    int ok;                    /* its result */
    mg_oneshot_t o;
    jbuf_t body;
    char head[4096];
    uint64_t last_export_ms;
    uint64_t last_fail_log_ms;
    int64_t unix_offset;       /* Unix ns - uv_hrtime ns, for this batch */
    char host_name[256];
    char instance_id[37];
    /* /metrics */
    _Atomic uint64_t spans_exported, spans_failed, exports_ok, exports_failed;
} X;

static uv_once_t lock_once = UV_ONCE_INIT;
static void make_lock(void) { uv_mutex_init(&X.lock); }

/* ---- JSON ------------------------------------------------------------------
 * The exporter's own cost is most of what tracing costs (every thread is
 * counted: scripts/bench/counts.sh), so the writer avoids printf: keys
 * are literals written whole, numbers are converted by hand, strings are
 * copied in runs between the bytes that need escaping. */

static __attribute__((noinline)) int jgrow(jbuf_t *b, size_t n)
{
    size_t c = b->cap ? b->cap : 64 * 1024;
    while (c < b->len + n + 1)
        c *= 2;
    char *p = realloc(b->p, c);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->p = p;
    b->cap = c;
    return 0;
}

static inline void jput(jbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap && (b->failed || jgrow(b, n) < 0))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define JLIT(b, lit) jput((b), (lit), sizeof(lit) - 1)

/* v in decimal (a uint64's 20 digits at most). */
static void jnum(jbuf_t *b, uint64_t v)
{
    char d[20], *o = d + sizeof(d);
    do
        *--o = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    jput(b, o, (size_t)(d + sizeof(d) - o));
}

/* Bytes a JSON string holds as they are: printable ASCII but '"' and '\'. */
static const uint8_t plain[256] = {
    [' '] = 1, ['!'] = 1, ['#' ... '['] = 1, [']' ... '~'] = 1,
};

/* s escaped for the inside of a JSON string: '"', '\' and control bytes
 * escaped, bytes outside ASCII as \u00XX (each byte a character: valid
 * JSON whatever the request held). */
static void jesc(jbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (plain[ch])
            continue;
        jput(b, s + run, i - run);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            char e[2] = { '\\', (char)ch };
            jput(b, e, 2);
        } else {
            char e[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };
            jput(b, e, 6);
        }
    }
    jput(b, s + run, n - run);
}

static void jstrz(jbuf_t *b, const char *s)
{
    JLIT(b, "\"");
    jesc(b, s, strlen(s));
    JLIT(b, "\"");
}

/* Attribute list members, the key a literal (KEY) or any string (attr_kv);
 * `*first` says whether a comma goes before. */
#define ATTR_HEAD(b, first, key)                                                    \
    do {                                                                            \
        if (*(first))                                                               \
            JLIT(b, "{\"key\":\"" key "\",\"value\":{");                            \
        else                                                                        \
            JLIT(b, ",{\"key\":\"" key "\",\"value\":{");                           \
        *(first) = 0;                                                               \
    } while (0)

static void str_value(jbuf_t *b, const char *v)
{
    JLIT(b, "\"stringValue\":\"");
    jesc(b, v, strlen(v));
    JLIT(b, "\"}}");
}

#define ATTR_STR(b, first, key, v)                                                  \
    do {                                                                            \
        const char *v_ = (v);                                                       \
        if (v_ && *v_) {                                                            \
            ATTR_HEAD(b, first, key);                                               \
            str_value(b, v_);                                                       \
        }                                                                           \
    } while (0)

#define ATTR_INT(b, first, key, n)                                                  \
    do {                                                                            \
        ATTR_HEAD(b, first, key);                                                   \
        JLIT(b, "\"intValue\":\"");                                                 \
        jnum(b, (n));                                                               \
        JLIT(b, "\"}}");                                                            \
    } while (0)

static void attr_kv(jbuf_t *b, int *first, const char *key, const char *v)
{
    if (!*first)
        JLIT(b, ",");
    *first = 0;
    JLIT(b, "{\"key\":");
    jstrz(b, key);
    JLIT(b, ",\"value\":{");
    str_value(b, v);
}

/* ,"KEY":"<Unix ns>" */
#define TIME(b, key, mono_ns)                                                       \
    do {                                                                            \
        JLIT(b, ",\"" key "\":\"");                                                 \
        jnum(b, (uint64_t)((int64_t)(mono_ns) + X.unix_offset));                    \
        JLIT(b, "\"");                                                              \
    } while (0)

/* The user's resource attributes, then the built-in ones the user did
 * not give. */
static int has_resource(const mg_tracing_cfg_t *tc, const char *key)
{
    for (size_t i = 0; i < tc->nresource; i++)
        if (strcmp(tc->resource[i].name, key) == 0)
            return 1;
    return 0;
}

static void put_resource(jbuf_t *b, const mg_tracing_cfg_t *tc)
{
    int first = 1;
    JLIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    for (size_t i = 0; i < tc->nresource; i++)
        attr_kv(b, &first, tc->resource[i].name, tc->resource[i].value);
    const char *builtin[][2] = {
        { "service.name", tc->service_name },   { "service.instance.id", X.instance_id },
        { "host.name", X.host_name },           { "telemetry.sdk.name", "moongate" },
        { "telemetry.sdk.version", MG_VERSION },
    };
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        if (!has_resource(tc, builtin[i][0]))
            attr_kv(b, &first, builtin[i][0], builtin[i][1]);
    JLIT(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"moongate\",\"version\":\"" MG_VERSION
            "\"},\"spans\":[");
}

typedef struct batch_s {
    jbuf_t *b;
    size_t n;
} batch_t;

/* One span (tracing.h's record) as a Span object. */
static void put_span(const mg_span_rec_t *s, void *arg)
{
    batch_t *bt = arg;
    jbuf_t *b = bt->b;
    if (bt->n++)
        JLIT(b, ",");
    JLIT(b, "{\"traceId\":\"");
    jput(b, s->trace_id, sizeof(s->trace_id));
    JLIT(b, "\",\"spanId\":\"");
    jput(b, s->span_id, sizeof(s->span_id));
    if (s->has_parent) {
        JLIT(b, "\",\"parentSpanId\":\"");
        jput(b, s->parent_id, sizeof(s->parent_id));
    }
    const char *phase = NULL, *policy = NULL;
    if (s->kind == MG_SPAN_INTERNAL || s->has_event)
        mg_metrics_hook_names(s->hook_id, &phase, &policy);
    /* the name: "GET <route pattern>", "jwt on_request" or "GET" */
    JLIT(b, "\",\"name\":\"");
    if (s->kind == MG_SPAN_INTERNAL) {
        jesc(b, policy, strlen(policy));
        JLIT(b, " ");
        jesc(b, phase, strlen(phase));
    } else {
        jesc(b, s->method, strlen(s->method));
        if (s->kind == MG_SPAN_SERVER && s->route[0]) {
            JLIT(b, " ");
            jesc(b, s->route, strlen(s->route));
        }
    }
    JLIT(b, "\",\"kind\":");
    jnum(b, s->kind);
    TIME(b, "startTimeUnixNano", s->start_ns);
    TIME(b, "endTimeUnixNano", s->end_ns);
    JLIT(b, ",\"attributes\":[");
    int first = 1;
    if (s->kind == MG_SPAN_INTERNAL) {
        ATTR_STR(b, &first, "moongate.policy", policy);
        ATTR_STR(b, &first, "moongate.phase", phase);
    } else {
        ATTR_STR(b, &first, "http.request.method", s->method);
        ATTR_STR(b, &first, "server.address", s->host);
        if (s->port)
            ATTR_INT(b, &first, "server.port", s->port);
        if (s->status)
            ATTR_INT(b, &first, "http.response.status_code", s->status);
        ATTR_STR(b, &first, "error.type", s->error_type);
    }
    if (s->kind == MG_SPAN_SERVER) {
        ATTR_STR(b, &first, "url.path", s->path);
        ATTR_STR(b, &first, "url.scheme", s->https ? "https" : "http");
        ATTR_STR(b, &first, "http.route", s->route);
        ATTR_STR(b, &first, "client.address", s->client);
        ATTR_STR(b, &first, "network.protocol.version", s->http_minor ? "1.1" : "1.0");
        ATTR_STR(b, &first, "moongate.route", s->route_name);
        ATTR_STR(b, &first, "moongate.request_id", s->request_id);
        ATTR_STR(b, &first, "user_agent.original", s->user_agent);
    } else if (s->kind == MG_SPAN_CLIENT) {
        /* url.full: the target and the path it was sent (no query: it may
         * hold an API key, key_auth's `query`) */
        ATTR_HEAD(b, &first, "url.full");
        JLIT(b, "\"stringValue\":\"");
        if (s->https)
            JLIT(b, "https://");
        else
            JLIT(b, "http://");
        int v6 = strchr(s->host, ':') != NULL;
        if (v6)
            JLIT(b, "[");
        jesc(b, s->host, strlen(s->host));
        if (v6)
            JLIT(b, "]");
        JLIT(b, ":");
        jnum(b, s->port);
        jesc(b, s->path, strlen(s->path));
        JLIT(b, "\"}}");
        if (s->resend)
            ATTR_INT(b, &first, "http.resend_count", s->resend);
        ATTR_STR(b, &first, "moongate.upstream", s->upstream);
    }
    JLIT(b, "]");
    if (s->has_event) {
        JLIT(b, ",\"events\":[{\"name\":\"moongate.policy.answered\"");
        TIME(b, "timeUnixNano", s->event_ns);
        JLIT(b, ",\"attributes\":[");
        first = 1;
        ATTR_STR(b, &first, "moongate.policy", policy);
        ATTR_STR(b, &first, "moongate.phase", phase);
        ATTR_INT(b, &first, "http.response.status_code", s->event_status);
        ATTR_STR(b, &first, "moongate.reason", s->event_reason);
        JLIT(b, "]}]");
    }
    if (s->error)
        JLIT(b, ",\"status\":{\"code\":2}"); /* STATUS_CODE_ERROR */
    JLIT(b, "}");
}

/* ---- exporting ------------------------------------------------------------ */

static void export_batch(void);

static void on_export_closed(mg_oneshot_t *o)
{
    (void)o;
    X.busy = 0;
    X.last_export_ms = uv_now(&X.loop);
    /* more than a batch waiting (or shutting down): the next goes at once */
    const mg_tracing_cfg_t *tc = X.gen->cfg->tracing;
    uint64_t q = mg_tracing_queued();
    if (q && X.stopping != 2 && (X.stopping || X.off || q >= (uint64_t)tc->batch_size))
        export_batch();
    if (X.stopping && !X.busy)
        uv_stop(&X.loop);
}

static void on_export_done(mg_oneshot_t *o, int status, const char *why)
{
    (void)o;
    int ok = status >= 200 && status < 300;
    atomic_fetch_add_explicit(ok ? &X.exports_ok : &X.exports_failed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(ok ? &X.spans_exported : &X.spans_failed, X.in_flight,
                              memory_order_relaxed);
    uint64_t now = uv_now(&X.loop);
    if (!ok && (X.last_fail_log_ms == 0 || now - X.last_fail_log_ms >= FAIL_LOG_MS)) {
        X.last_fail_log_ms = now;
        char st[32];
        snprintf(st, sizeof(st), "status %d", status);
        mg_log(MG_LOG_WARN, "tracing: export of %zu spans to %s/v1/traces failed: %s (spans "
                            "are dropped and counted in moongate_trace_spans_dropped_total; "
                            "logged once a minute)\n",
               X.in_flight, X.gen->cfg->tracing->endpoint, status ? st : why);
    }
}

/* The POST's head for a body of len bytes. */
static size_t put_head(const mg_tracing_cfg_t *tc, const mg_url_t *u, size_t len)
{
    size_t n = 0, cap = sizeof(X.head);
    int k = snprintf(X.head, cap,
                     "POST %.*s/v1/traces HTTP/1.1\r\nHost: %.*s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "User-Agent: moongate/" MG_VERSION "\r\nConnection: close\r\n",
                     u->path_len == 1 ? 0 : (int)u->path_len, u->path, (int)u->authority_len,
                     u->authority, len);
    if (k < 0 || (size_t)k >= cap)
        return 0;
    n = (size_t)k;
    for (size_t i = 0; i < tc->nheaders; i++) {
        k = snprintf(X.head + n, cap - n, "%s: %s\r\n", tc->headers[i].name,
                     tc->headers[i].value);
        if (k < 0 || (size_t)k >= cap - n)
            return 0;
        n += (size_t)k;
    }
    if (n + 3 > cap)
        return 0;
    memcpy(X.head + n, "\r\n", 3);
    return n + 2;
}

static void export_batch(void)
{
    const mg_tracing_cfg_t *tc = X.gen->cfg->tracing;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    X.unix_offset = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - (int64_t)uv_hrtime();
    X.body.len = 0;
    X.body.failed = 0;
    put_resource(&X.body, tc);
    batch_t bt = { &X.body, 0 };
    mg_tracing_drain(put_span, &bt, (size_t)tc->batch_size);
    JLIT(&X.body, "]}]}]}");
    X.in_flight = bt.n;
    mg_url_t u;
    const char *why = NULL;
    char host[256];
    struct sockaddr_storage sa;
    size_t hlen = 0;
    if (bt.n == 0)
        return;
    if (mg_uri_url_parse(tc->endpoint, strlen(tc->endpoint), &u, &why) == 0 &&
        u.host_len < sizeof(host)) {
        memcpy(host, u.host, u.host_len);
        host[u.host_len] = '\0';
        /* a name is looked up on this thread, each time (it may move) */
        if (mg_oneshot_resolve(host, u.port, &sa) < 0)
            why = "the collector's host does not resolve";
        else if (X.body.failed || !(hlen = put_head(tc, &u, X.body.len)))
            why = "out of memory, or headers too long";
    }
    if (!hlen) {
        on_export_done(&X.o, 0, why ? why : "bad endpoint");
        X.last_export_ms = uv_now(&X.loop);
        return;
    }
    uv_buf_t bufs[2] = { uv_buf_init(X.head, (unsigned)hlen),
                         uv_buf_init(X.body.p, (unsigned)X.body.len) };
    X.busy = 1;
    X.o.done = on_export_done;
    X.o.closed = on_export_closed;
    X.o.timeout_why = "no answer within settings.tracing.timeout";
    mg_oneshot_start(&X.o, &X.loop, (struct sockaddr *)&sa, tc->tls, host, u.port, bufs, 2,
                     tc->timeout);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (!X.gen || X.busy || X.stopping == 2)
        return;
    const mg_tracing_cfg_t *tc = X.gen->cfg->tracing;
    uint64_t q = mg_tracing_queued();
    if (q == 0)
        return;
    if (q >= (uint64_t)tc->batch_size || uv_now(&X.loop) - X.last_export_ms >= tc->batch_interval ||
        X.stopping || X.off)
        export_batch();
}

static void on_stop_deadline(uv_timer_t *t)
{
    (void)t;
    X.stopping = 2;
    if (X.busy)
        mg_oneshot_cancel(&X.o, "shutting down"); /* its close stops the loop */
    else
        uv_stop(&X.loop);
}

static void on_wake(uv_async_t *a)
{
    (void)a;
    uv_mutex_lock(&X.lock);
    mg_gen_t *g = X.pending;
    X.pending = NULL;
    int off = X.turned_off, stop = X.stop;
    uv_mutex_unlock(&X.lock);
    if (g) {
        if (!X.gen) /* the first batch waits its interval too */
            X.last_export_ms = uv_now(&X.loop);
        mg_gen_release(X.gen);
        X.gen = g;
        uint64_t ms = g->cfg->tracing->batch_interval;
        ms = ms < TICK_MAX_MS ? ms : TICK_MAX_MS;
        uv_timer_start(&X.tick, on_tick, ms, ms);
    }
    /* turned off: the spans of requests that ran with tracing leave now,
     * and those still running go at the next tick, with the last settings */
    X.off = off;
    if (off && !X.busy && X.gen && mg_tracing_queued())
        export_batch();
    if (stop && !X.stopping) {
        X.stopping = 1;
        uv_timer_start(&X.stop_timer, on_stop_deadline, STOP_FLUSH_MS, 0);
        if (!X.busy && X.gen && mg_tracing_queued())
            export_batch();
        if (!X.busy)
            uv_stop(&X.loop);
    }
}

static void close_cb(uv_handle_t *h) { (void)h; }

static void exporter_main(void *arg)
{
    (void)arg;
    uv_run(&X.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&X.wake, close_cb);
    uv_close((uv_handle_t *)&X.tick, close_cb);
    uv_close((uv_handle_t *)&X.stop_timer, close_cb);
    uv_run(&X.loop, UV_RUN_DEFAULT); /* the closes (and a cancelled POST's) */
    uv_loop_close(&X.loop);
    mg_gen_release(X.gen);
    X.gen = NULL;
    free(X.body.p);
    X.body = (jbuf_t){ 0 };
}

/* A random version-4 UUID: this process's service.instance.id. */
static void make_instance_id(void)
{
    char hex[32];
    uint64_t rng = mg_trace_seed();
    mg_trace_random_hex(&rng, hex, sizeof(hex));
    hex[12] = '4';
    hex[16] = "89ab"[hex[16] % 4];
    snprintf(X.instance_id, sizeof(X.instance_id), "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8,
             hex + 12, hex + 16, hex + 20);
}

static int start_thread(void)
{
    if (gethostname(X.host_name, sizeof(X.host_name) - 1) != 0)
        snprintf(X.host_name, sizeof(X.host_name), "unknown");
    make_instance_id();
    if (uv_loop_init(&X.loop) != 0)
        return -1;
    uv_async_init(&X.loop, &X.wake, on_wake);
    uv_timer_init(&X.loop, &X.tick);
    uv_timer_init(&X.loop, &X.stop_timer);
    if (uv_thread_create(&X.thread, exporter_main, NULL) != 0) {
        uv_close((uv_handle_t *)&X.wake, close_cb);
        uv_close((uv_handle_t *)&X.tick, close_cb);
        uv_close((uv_handle_t *)&X.stop_timer, close_cb);
        uv_run(&X.loop, UV_RUN_DEFAULT);
        uv_loop_close(&X.loop);
        return -1;
    }
    X.started = 1;
    return 0;
}

void mg_otlp_apply(mg_gen_t *gen)
{
    uv_once(&lock_once, make_lock);
    if (!gen->cfg->tracing) {
        if (!X.started)
            return;
        /* the last settings stay, for what is still queued */
        uv_mutex_lock(&X.lock);
        X.turned_off = 1;
        uv_mutex_unlock(&X.lock);
        uv_async_send(&X.wake);
        return;
    }
    if (!X.started && start_thread() != 0) {
        mg_log(MG_LOG_ERROR, "tracing: cannot start the exporter thread; no span is sent\n");
        return;
    }
    atomic_fetch_add(&gen->refs, 1);
    uv_mutex_lock(&X.lock);
    mg_gen_t *old = X.pending;
    X.pending = gen;
    X.turned_off = 0;
    uv_mutex_unlock(&X.lock);
    mg_gen_release(old);
    uv_async_send(&X.wake);
}

void mg_otlp_stop(void)
{
    uv_once(&lock_once, make_lock);
    if (!X.started)
        return;
    uv_mutex_lock(&X.lock);
    X.stop = 1;
    uv_mutex_unlock(&X.lock);
    uv_async_send(&X.wake);
    uv_thread_join(&X.thread);
    X.started = 0;
    uv_mutex_lock(&X.lock);
    mg_gen_release(X.pending);
    X.pending = NULL;
    X.stop = 0;
    X.stopping = 0;
    X.turned_off = 0;
    X.off = 0;
    uv_mutex_unlock(&X.lock);
}

void mg_otlp_counts(mg_otlp_counts_t *c)
{
    c->spans_exported = atomic_load_explicit(&X.spans_exported, memory_order_relaxed);
    c->spans_failed = atomic_load_explicit(&X.spans_failed, memory_order_relaxed);
    c->exports_ok = atomic_load_explicit(&X.exports_ok, memory_order_relaxed);
    c->exports_failed = atomic_load_explicit(&X.exports_failed, memory_order_relaxed);
}
