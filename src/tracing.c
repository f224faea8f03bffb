/* tracing.c: the request path's side of tracing (see tracing.h).
 *
 * Queues. One ring per worker of `cap` records (settings.tracing.queue,
 * fixed once the first config with tracing is prepared). `head` counts the
 * records the worker wrote, `tail` those the exporter gave back; both only
 * grow (64 bits never wrap), the slot of record k is k % cap. The worker
 * writes a slot only while head - tail < cap, and publishes it with a
 * release store of head; the exporter reads head with acquire, reads the
 * slots, then gives them back with a release store of tail, which the
 * worker reads with acquire before reusing one. Each counter lives on its
 * own cache line.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"
#include "mg_ffi.h"
#include "request.h"
#include "trace.h"
#include "tracing.h"
#include "worker.h"

#define CACHE_LINE 64

typedef struct ring_s {
    _Alignas(CACHE_LINE) _Atomic uint64_t head; /* written by the worker */
    _Atomic uint64_t dropped;                     /* likewise */
    _Alignas(CACHE_LINE) _Atomic uint64_t tail; /* written by the exporter */
    mg_span_rec_t *recs;                          /* cap of them, set by prepare */
} ring_t;

/* Set up by mg_tracing_init and mg_tracing_prepare (control thread); a
 * worker sees `recs` and `cap` only after the config it needs them for was
 * published to it, which happens after prepare. */
static ring_t *rings;
static int nrings;
static uint32_t cap;

int mg_tracing_init(int nworkers)
{
    if (rings || nworkers < 1)
        return -1;
    rings = aligned_alloc(CACHE_LINE, sizeof(ring_t) * (size_t)nworkers);
    if (!rings)
        return -1;
    memset(rings, 0, sizeof(ring_t) * (size_t)nworkers);
    nrings = nworkers;
    return 0;
}

void mg_tracing_free(void)
{
    for (int i = 0; i < nrings; i++)
        free(rings[i].recs);
    free(rings);
    rings = NULL;
    nrings = 0;
    cap = 0;
}

int mg_tracing_prepare(const mg_config_t *cfg, const char **err)
{
    if (!cfg->tracing || !rings)
        return 0;
    uint32_t want = (uint32_t)cfg->tracing->queue;
    if (cap) {
        if (want == cap)
            return 0;
        *err = "settings.tracing.queue changed: the queues keep the size the first config "
               "with tracing gave them until a restart";
        return -1;
    }
    for (int i = 0; i < nrings; i++) {
        /* calloc: pages the queue never reaches are never touched */
        rings[i].recs = calloc(want, sizeof(mg_span_rec_t));
        if (!rings[i].recs) {
            for (int k = 0; k < i; k++) {
                free(rings[k].recs);
                rings[k].recs = NULL;
            }
            *err = "out of memory for the span queues (settings.tracing.queue)";
            return -1;
        }
    }
    cap = want;
    return 0;
}

/* ---- the request path --------------------------------------------------- */

/* The next free record of worker w's ring, or NULL (the span is dropped
 * and counted). commit() publishes it. */
static mg_span_rec_t *reserve(int w)
{
    if (w < 0 || w >= nrings || !rings[w].recs)
        return NULL;
    ring_t *q = &rings[w];
    uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    if (h - atomic_load_explicit(&q->tail, memory_order_acquire) >= cap) {
        atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
        return NULL;
    }
    mg_span_rec_t *s = &q->recs[h % cap];
    memset(s, 0, sizeof(*s));
    return s;
}

static void commit(int w)
{
    ring_t *q = &rings[w];
    atomic_store_explicit(&q->head, atomic_load_explicit(&q->head, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* Copies n bytes of s into the field out (size outsz), cut, NUL-terminated. */
static void put_str(char *out, size_t outsz, const char *s, size_t n)
{
    if (!s)
        return;
    if (n >= outsz)
        n = outsz - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}
#define PUT(field, s, n) put_str((field), sizeof(field), (s), (n))
#define PUTZ(field, s) ((s) ? PUT(field, (s), strlen(s)) : (void)0)

void mg_tracing_sample(mg_request_t *r)
{
    const mg_tracing_cfg_t *tc = r->g->cfg->tracing;
    int sampled = mg_trace_decide(r->trace_id, r->trace_continued, r->trace_flags, tc->sample,
                                  tc->parent_based);
    r->trace_flags[0] = '0';
    r->trace_flags[1] = sampled ? '1' : '0';
    r->trace_sampled = (uint8_t)sampled;
    if (!sampled)
        return;
    mg_trace_req_t *ts = &r->tspan;
    ts->attempt_open = 0;
    ts->has_event = 0;
    ts->attempts = 0;
}

/* A span of r's trace with id `id`: the ids and times. */
static void span_ids(mg_span_rec_t *s, const mg_request_t *r, const char *id, const char *parent)
{
    memcpy(s->trace_id, r->trace_id, sizeof(s->trace_id));
    memcpy(s->span_id, id, sizeof(s->span_id));
    if (parent) {
        memcpy(s->parent_id, parent, sizeof(s->parent_id));
        s->has_parent = 1;
    }
}

static void put_method(mg_span_rec_t *s, const mg_request_t *r)
{
    if (r->new_method)
        PUT(s->method, r->new_method, r->new_method_len);
    else
        PUT(s->method, mg_request_data(r, r->method), r->method.len);
}

void mg_tracing_attempt_start(mg_request_t *r, int ui, int ti)
{
    mg_trace_req_t *ts = &r->tspan;
    if (ts->attempt_open)
        mg_tracing_attempt_end(r, 0, "attempt abandoned");
    ts->attempts++;
    ts->attempt_open = 1;
    ts->attempt_ui = ui;
    ts->attempt_ti = ti;
    ts->attempt_start_ns = uv_hrtime();
    mg_trace_random_hex(&r->w->trace_rng, ts->client_id, sizeof(ts->client_id));
}

void mg_tracing_attempt_end(mg_request_t *r, int status, const char *why)
{
    mg_trace_req_t *ts = &r->tspan;
    if (!ts->attempt_open)
        return;
    ts->attempt_open = 0;
    mg_span_rec_t *s = reserve(r->w->id);
    if (!s)
        return;
    span_ids(s, r, ts->client_id, r->span_id);
    s->kind = MG_SPAN_CLIENT;
    s->start_ns = ts->attempt_start_ns;
    s->end_ns = uv_hrtime();
    put_method(s, r);
    const mg_upstream_t *up = &r->g->cfg->upstreams[ts->attempt_ui];
    const mg_target_t *t = mg_request_target_of(r, ts->attempt_ui, ts->attempt_ti);
    PUTZ(s->host, t->host);
    s->port = t->port;
    s->https = up->tls != NULL;
    if (mg_request_upstream_path(r, s->path, sizeof(s->path)) < 0) /* longer: cut */
        PUT(s->path, r->path, r->path_len);
    PUTZ(s->upstream, up->name);
    s->resend = (uint16_t)(ts->attempts - 1);
    s->status = (uint16_t)(status > 0 && status < 1000 ? status : 0);
    if (status <= 0) {
        s->error = 1;
        PUTZ(s->error_type, why ? why : "no answer");
    } else if (status >= 400) { /* a client span's error: 4xx and 5xx */
        s->error = 1;
        snprintf(s->error_type, sizeof(s->error_type), "%d", status);
    }
    commit(r->w->id);
}

/* The answer's reason: its "error" (or else "message") string member,
 * when the body is a small flat JSON object (the bundled policies' form:
 * { "error": "invalid_token" }). Read with the JWT claims' own parser. */
static void answer_reason(char *out, size_t outsz, const char *body, size_t blen)
{
    mg_json_tok_t toks[16];
    char sbuf[512];
    if (!body || blen == 0 || blen > sizeof(sbuf) || body[0] != '{')
        return;
    int n = mg_ffi_json_flat_object(body, blen, toks, 16, sbuf, sizeof(sbuf));
    const char *found = NULL;
    size_t flen = 0;
    for (int i = 0; i < n; i++) {
        const mg_json_tok_t *t = &toks[i];
        const char *k = t->key_esc ? sbuf + t->key_off : body + t->key_off;
        int is_error = t->key_len == 5 && memcmp(k, "error", 5) == 0;
        int is_message = t->key_len == 7 && memcmp(k, "message", 7) == 0;
        if (t->type != MG_JSON_STRING || !(is_error || (is_message && !found)))
            continue;
        found = t->val_esc ? sbuf + t->val_off : body + t->val_off;
        flen = t->val_len;
        if (is_error)
            break;
    }
    put_str(out, outsz, found, flen);
}

void mg_tracing_answered(mg_request_t *r, uint32_t hook_id, int status, const char *body,
                         size_t blen)
{
    mg_trace_req_t *ts = &r->tspan;
    if (ts->has_event)
        return; /* the first answer decided; a later one is the gateway's own */
    ts->has_event = 1;
    ts->event_ns = uv_hrtime();
    ts->event_hook = hook_id;
    ts->event_status = (uint16_t)status;
    ts->event_reason[0] = '\0';
    answer_reason(ts->event_reason, sizeof(ts->event_reason), body, blen);
}

void mg_tracing_policy(mg_request_t *r, uint32_t hook_id, uint64_t start_ns, uint64_t end_ns)
{
    mg_span_rec_t *s = reserve(r->w->id);
    if (!s)
        return;
    char id[16];
    mg_trace_random_hex(&r->w->trace_rng, id, sizeof(id));
    span_ids(s, r, id, r->span_id);
    s->kind = MG_SPAN_INTERNAL;
    s->start_ns = start_ns;
    s->end_ns = end_ns;
    s->hook_id = hook_id;
    commit(r->w->id);
}

/* server.address and server.port from the Host header ("name:port",
 * "[v6]:port"); the listener's port when it names none. */
static void put_host(mg_span_rec_t *s, const mg_request_t *r)
{
    s->port = r->peer->local_port;
    if (!r->known[MG_H_HOST])
        return;
    mg_span_t v = r->headers[r->known[MG_H_HOST] - 1].value;
    const char *h = mg_request_data(r, v), *end = h + v.len;
    const char *colon = NULL;
    if (v.len && h[0] == '[') {
        const char *close = memchr(h, ']', v.len);
        if (!close)
            return;
        colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
        PUT(s->host, h + 1, (size_t)(close - h - 1));
    } else {
        colon = memchr(h, ':', v.len);
        PUT(s->host, h, (size_t)((colon ? colon : end) - h));
    }
    if (colon) {
        unsigned port = 0;
        for (const char *q = colon + 1; q < end && *q >= '0' && *q <= '9' && port < 65536; q++)
            port = port * 10 + (unsigned)(*q - '0');
        if (port > 0 && port < 65536)
            s->port = (uint16_t)port;
    }
}

void mg_tracing_request_end(mg_request_t *r)
{
    mg_trace_req_t *ts = &r->tspan;
    if (ts->attempt_open) /* the request ended in the middle of one */
        mg_tracing_attempt_end(r, 0, r->status == 499 ? "client closed" : "request ended");
    uint64_t end = r->start_ns + r->total_ns;
    mg_metrics_exemplar(r->w->id, r->total_ns / 1000, r->upstream_ns / 1000, r->trace_id, end);
    mg_span_rec_t *s = reserve(r->w->id);
    if (!s)
        return;
    span_ids(s, r, r->span_id, r->trace_continued ? ts->parent_id : NULL);
    s->kind = MG_SPAN_SERVER;
    s->start_ns = r->start_ns;
    s->end_ns = end;
    put_method(s, r);
    const char *url = mg_request_data(r, r->url);
    const char *q = memchr(url, '?', r->url.len);
    PUT(s->path, url, q ? (size_t)(q - url) : r->url.len);
    if (r->route) {
        PUTZ(s->route, r->route->path);
        PUTZ(s->route_name, r->route->name);
    }
    put_host(s, r);
    PUTZ(s->client, mg_request_client(r));
    for (uint32_t i = 0; i < r->nheaders; i++) { /* not a known header: looked for here */
        const mg_header_t *hd = &r->headers[i];
        if (hd->name.len == 10 &&
            strncasecmp(mg_request_data(r, hd->name), "user-agent", 10) == 0) {
            PUT(s->user_agent, mg_request_data(r, hd->value), hd->value.len);
            break;
        }
    }
    PUT(s->request_id, r->request_id, r->request_id_len);
    s->http_minor = r->http_minor;
    s->https = r->proto->tls && r->proto->tls(r) != NULL;
    s->status = (uint16_t)(r->status > 0 && r->status < 1000 ? r->status : 0);
    if (r->status >= 500) { /* a server span's error: 5xx only */
        s->error = 1;
        snprintf(s->error_type, sizeof(s->error_type), "%d", r->status);
    }
    if (ts->has_event) {
        s->has_event = 1;
        s->event_ns = ts->event_ns;
        s->hook_id = ts->event_hook;
        s->event_status = ts->event_status;
        memcpy(s->event_reason, ts->event_reason, sizeof(s->event_reason));
    }
    commit(r->w->id);
}

/* ---- the exporter's side ------------------------------------------------- */

size_t mg_tracing_drain(void (*each)(const mg_span_rec_t *rec, void *arg), void *arg, size_t max)
{
    size_t done = 0;
    /* the workers in turn, a share each, so that a busy one does not
     * starve the others' spans out of a batch */
    for (int pass = 0; pass < 2 && done < max; pass++) {
        for (int w = 0; w < nrings && done < max; w++) {
            ring_t *q = &rings[w];
            if (!q->recs)
                continue;
            uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
            uint64_t h = atomic_load_explicit(&q->head, memory_order_acquire);
            uint64_t n = h - t, share = pass == 0 ? (max + (size_t)nrings - 1) / (size_t)nrings
                                                  : max - done;
            if (n > share)
                n = share;
            if (n > max - done)
                n = max - done;
            for (uint64_t k = 0; k < n; k++)
                each(&q->recs[(t + k) % cap], arg);
            atomic_store_explicit(&q->tail, t + n, memory_order_release);
            done += (size_t)n;
        }
    }
    return done;
}

uint64_t mg_tracing_queued(void)
{
    uint64_t n = 0;
    for (int w = 0; w < nrings; w++) {
        /* tail first: read from /metrics, head read before it could be
         * behind a tail the exporter moved since (and the difference wrap) */
        uint64_t t = atomic_load_explicit(&rings[w].tail, memory_order_acquire);
        uint64_t h = atomic_load_explicit(&rings[w].head, memory_order_acquire);
        n += h - t;
    }
    return n;
}

uint64_t mg_tracing_dropped(void)
{
    uint64_t n = 0;
    for (int w = 0; w < nrings; w++)
        n += atomic_load_explicit(&rings[w].dropped, memory_order_relaxed);
    return n;
}
