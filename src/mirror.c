/* mirror.c: copies of a route's requests to its shadow upstream (see
 * mirror.h).
 *
 * A copy is one malloc'd block, the head the proxy would send a target of
 * the shadow (mg_proxy_request_head, built in the worker's scratch) and
 * the buffered body, handed to http_client.c's detached requests, which
 * reuse the shadow's keep-alive pools and read the answer to its end
 * without keeping it. The copy holds its generation (the pool is the
 * generation's) until its callback, which counts the answer and frees the
 * slot it took of the route's bound: the worker's per-route count of
 * copies in flight (mg_wgen_t.mirror_inflight, this worker only, no
 * atomics). The copy does not hold the client's request: that one may
 * long be over when the shadow answers.
 */
#include <stdlib.h>
#include <string.h>
#include "metrics.h"
#include "mirror.h"
#include "upstream.h"
#include "worker.h"

typedef struct copy_s {
    mg_wgen_t *g;          /* held while the copy is in flight */
    mg_pool_t *pool;       /* the shadow target's, in g */
    uint64_t start_ns;
    uint32_t route_metric; /* the route's metric id */
    uint32_t route_index;  /* ... and its slot in g->mirror_inflight */
} copy_t;

/* Is this request in the sampled share (mirror.percent)? A worker's own
 * xorshift: nothing secret depends on it. */
static int sampled(const mg_mirror_t *m)
{
    static _Thread_local uint64_t x;
    if (m->percent >= 100)
        return 1;
    if (!x)
        x = uv_hrtime() | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (double)(x >> 11) * 0x1.0p-53 * 100.0 < m->percent;
}

static void copy_done(void *arg, int status, const char *err)
{
    copy_t *c = arg;
    mg_worker_t *w = c->g->w;
    int answered = err ? 0 : status;
    uint64_t us = (uv_hrtime() - c->start_ns) / 1000;
    mg_metrics_upstream(w->id, c->pool->t->metric_id, answered, us);
    mg_metrics_mirror_answer(w->id, c->route_metric, answered);
    mg_pool_release(c->pool);
    mg_pool_users_add(c->pool, -1);
    c->g->mirror_inflight[c->route_index]--;
    mg_wgen_release(c->g);
    free(c);
}

/* The copy's result for r (and its count). */
static void result(mg_request_t *r, int what)
{
    r->mirror = (uint8_t)what;
    mg_metrics_mirror(r->w->id, r->route->metric_id, what);
}

static void send_copy(mg_request_t *r, const mg_mirror_t *m)
{
    mg_wgen_t *g = r->g;
    const mg_route_t *rt = r->route;
    if (r->has_body && (!r->body_buffered || r->body_len > m->body)) {
        result(r, MG_MIRROR_BODY);
        return;
    }
    if (g->mirror_inflight[rt->index] >= (uint32_t)m->concurrency) {
        result(r, MG_MIRROR_DROPPED); /* never queued: the bound is the point */
        return;
    }
    int ti = mg_balancer_pick_live(g, m->upstream, r);
    if (ti < 0) {
        result(r, MG_MIRROR_DOWN); /* tried again once it is back */
        return;
    }
    mg_pool_t *p = g->ups[m->upstream].pools[ti];
    const char *why;
    long hl = mg_proxy_request_head(r, p, &why);
    size_t bl = r->has_body ? r->body_len : 0;
    char *req = hl >= 0 ? malloc((size_t)hl + bl + 1) : NULL;
    copy_t *c = req ? malloc(sizeof(*c)) : NULL;
    if (!c) { /* a head too large to send, or out of memory: as dropped */
        free(req);
        result(r, MG_MIRROR_DROPPED);
        return;
    }
    memcpy(req, r->w->scratch, (size_t)hl);
    if (bl)
        memcpy(req + hl, r->body_buf, bl);
    *c = (copy_t){ .g = mg_wgen_hold(g), .pool = p, .start_ns = uv_hrtime(),
                   .route_metric = rt->metric_id, .route_index = (uint32_t)rt->index };
    if (mg_http_send_detached(r->w, p, req, (size_t)hl + bl, r->head_method, m->timeout,
                              copy_done, c) < 0) {
        mg_wgen_release(g);
        free(c);
        result(r, MG_MIRROR_DROPPED);
        return;
    }
    g->mirror_inflight[rt->index]++;
    mg_pool_acquire(p);
    mg_pool_users_add(p, 1); /* its slot keeps the target until copy_done */
    result(r, MG_MIRROR_SENT);
}

int mg_mirror_request(mg_request_t *r)
{
    const mg_mirror_t *m = r->route->mirror;
    if (r->mirror == MG_MIRROR_NONE) {
        if (r->is_upgrade || !sampled(m)) {
            r->mirror = MG_MIRROR_SKIPPED; /* not counted */
            return 0;
        }
        if (r->has_body && !r->body_buffered && !r->chunked && r->content_length <= m->body) {
            r->mirror = MG_MIRROR_WAITING;
            return 1;
        }
    } else if (r->mirror != MG_MIRROR_WAITING) {
        return 0; /* decided at the first try */
    }
    send_copy(r, m);
    return 0;
}
