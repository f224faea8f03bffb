/* retry.c: whether a failed try is tried again, the backoff before it, the
 * retry budget and the whole-request deadline (see retry.h).
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "outlier.h"
#include "retry.h"
#include "worker.h"

struct mg_retry_wait_s {
    uv_timer_t timer;
    mg_request_t *r;               /* NULL once cancelled */
    void (*go)(mg_request_t *r);
};

/* Is r's method one a retry may send again? A method a hook set is taken
 * as not idempotent (the client's is what the protocol classified). */
static int idempotent(const mg_request_t *r)
{
    return r->idempotent && !r->new_method;
}

mg_retry_t *mg_retry_begin(mg_request_t *r, const mg_retry_policy_t *pol,
                           struct mg_outlier_s *shared, uint64_t total_ms)
{
    mg_retry_t *rt = mg_request_alloc(r, sizeof(*rt));
    if (!rt)
        return NULL;
    memset(rt, 0, sizeof(*rt));
    rt->pol = pol;
    rt->shared = shared;
    uint64_t now = uv_now(&r->w->loop);
    rt->deadline = total_ms ? now + total_ms : 0;
    if (pol && shared) {
        atomic_fetch_add_explicit(&shared->active, 1, memory_order_relaxed);
        rt->counted = 1;
    }
    r->retry = rt;
    return rt;
}

int mg_retry_buffer_body(const mg_request_t *r)
{
    const mg_retry_t *rt = r->retry;
    const mg_retry_policy_t *pol = rt ? rt->pol : NULL;
    return pol && pol->attempts > 1 && r->has_body && !r->chunked && !r->body_buffered &&
           r->content_length <= pol->body && (idempotent(r) || pol->non_idempotent);
}

uint64_t mg_retry_left(const mg_request_t *r, uint64_t now)
{
    const mg_retry_t *rt = r->retry;
    if (!rt || !rt->deadline)
        return UINT64_MAX;
    return rt->deadline > now ? rt->deadline - now : 0;
}

/* The budget: may one more request be retrying on this upstream? */
static int budget_allows(mg_retry_t *rt)
{
    mg_outlier_t *o = rt->shared;
    if (rt->retrying || !o)
        return 1; /* already counted as retrying */
    int64_t active = atomic_load_explicit(&o->active, memory_order_relaxed);
    int64_t allowed = (int64_t)(rt->pol->budget * (double)active);
    if (allowed < rt->pol->min_retries)
        allowed = rt->pol->min_retries;
    /* claim a place, give it back when the budget is full (no lock) */
    if (atomic_fetch_add(&o->retrying, 1) >= allowed) {
        atomic_fetch_sub(&o->retrying, 1);
        return 0;
    }
    rt->retrying = 1;
    return 1;
}

/* The wait before the next retry (k = retries so far, from 1). */
static uint64_t backoff_ms(const mg_retry_policy_t *pol, unsigned k)
{
    static _Thread_local uint64_t seed;
    uint64_t ms = pol->backoff_base;
    for (unsigned i = 1; i < k && ms < pol->backoff_max; i++)
        ms *= 2;
    if (ms > pol->backoff_max)
        ms = pol->backoff_max;
    if (!pol->backoff_jitter || ms == 0)
        return ms;
    if (!seed)
        seed = uv_hrtime() | 1;
    seed ^= seed << 13; /* xorshift64: spreads retries, no secret here */
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed % (ms + 1);
}

int mg_retry_allowed(mg_request_t *r, unsigned on, int sent)
{
    mg_retry_t *rt = r->retry;
    const mg_retry_policy_t *pol = rt ? rt->pol : NULL;
    if (!pol || rt->tries >= pol->attempts || !(pol->on & on) || r->response_started ||
        r->target_override >= 0)
        return 0;
    if (sent && !idempotent(r) && !pol->non_idempotent)
        return 0; /* the upstream may have acted on it */
    if (r->body_started && !r->body_buffered)
        return 0; /* streamed: what went out cannot be sent again */
    uint64_t now = uv_now(&r->w->loop);
    if (rt->deadline && now >= rt->deadline)
        return 0;
    if (!budget_allows(rt)) {
        if (rt->shared)
            atomic_fetch_add_explicit(&rt->shared->budget_refused, 1, memory_order_relaxed);
        return 0;
    }
    if (rt->shared)
        atomic_fetch_add_explicit(&rt->shared->retries, 1, memory_order_relaxed);
    return 1;
}

uint64_t mg_retry_backoff(mg_request_t *r)
{
    mg_retry_t *rt = r->retry;
    uint64_t ms = backoff_ms(rt->pol, rt->tries);
    uint64_t left = mg_retry_left(r, uv_now(&r->w->loop));
    return ms < left ? ms : left;
}

static void on_wait_closed(uv_handle_t *h) { free(h->data); }

static void on_wait(uv_timer_t *t)
{
    mg_retry_wait_t *wt = t->data;
    mg_request_t *r = wt->r;
    uv_close((uv_handle_t *)&wt->timer, on_wait_closed);
    if (!r)
        return;
    r->retry->wait = NULL;
    wt->go(r);
}

int mg_retry_wait(mg_request_t *r, uint64_t ms, void (*go)(mg_request_t *r))
{
    mg_retry_wait_t *wt = malloc(sizeof(*wt));
    if (!wt)
        return -1;
    wt->r = r;
    wt->go = go;
    uv_timer_init(&r->w->loop, &wt->timer);
    wt->timer.data = wt;
    uv_timer_start(&wt->timer, on_wait, ms, 0);
    r->retry->wait = wt;
    return 0;
}

void mg_retry_end(mg_request_t *r)
{
    mg_retry_t *rt = r->retry;
    if (rt->wait) {
        rt->wait->r = NULL;
        uv_timer_stop(&rt->wait->timer);
        uv_close((uv_handle_t *)&rt->wait->timer, on_wait_closed);
        rt->wait = NULL;
    }
    if (rt->retrying)
        atomic_fetch_sub_explicit(&rt->shared->retrying, 1, memory_order_relaxed);
    if (rt->counted)
        atomic_fetch_sub_explicit(&rt->shared->active, 1, memory_order_relaxed);
    r->retry = NULL;
}
