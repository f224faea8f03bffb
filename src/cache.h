/* cache.h: the response cache of routes with a `cache` option.
 *
 * An answer is kept in a shared dictionary (shdict.h) or in Redis as one
 * string in no wire format's form: a fixed header with the upstream's
 * status, its end-to-end header fields (names and values as they arrived),
 * then the body (de-chunked); any protocol serves it. Workers share it and it outlives
 * reloads. What is kept is the upstream's answer, before on_response hooks:
 * those run again on every answer served from the cache, like on a fetched
 * one.
 *
 * The key is the route's name, the upstream's name, the Host, the path and
 * query (after hooks changed them), the route's `vary` request headers
 * (each the combined value of all its field lines; absent and empty
 * differ), the URL/method override headers when the upstream gets them
 * (proxy.c) and what hooks added with req:cache_key(). Whether a request
 * carries credentials (Authorization, Cookie) is judged on what the client
 * sent, before hooks changed it.
 *
 * Life of a request on such a route (worker thread only):
 *   mg_cache_lookup()       before the upstream: a fresh answer is a hit,
 *                           served with mg_cache_serve();
 *                           an expired one is held for stale-if-error
 *   mg_cache_capture_*()    on a miss, while the upstream answers: keeps a
 *                           copy of what may be stored, stores it at the end
 *   mg_cache_release()      when the request ends
 */
#ifndef MG_CACHE_H
#define MG_CACHE_H

#include <stddef.h>
#include "request.h"
#include "span.h"

typedef struct mg_cache_req_s mg_cache_req_t;
struct mg_shdict_s;

/* What the cache did for a request (mg_cache_state); also the order of the
 * metric's labels. */
enum {
    MG_CACHE_NONE = 0, /* route without a cache */
    MG_CACHE_HIT,      /* served a fresh answer */
    MG_CACHE_MISS,     /* nothing kept: fetched */
    MG_CACHE_EXPIRED,  /* only an expired answer: fetched */
    MG_CACHE_STALE,    /* the upstream failed: served an expired answer */
    MG_CACHE_BYPASS,   /* not for the cache (Authorization, Cookie, Range,
                          a body, a hook's req:skip_cache()) */
    MG_CACHE_REVALIDATED, /* expired, the upstream said 304: served again */
    MG_CACHE__COUNT
};

/* The name of a cache state: "hit", "miss", "expired", "stale", "bypass",
 * "revalidated" (the metric's labels, the access log's "cache"); NULL for
 * MG_CACHE_NONE and anything out of range. (Inline: the metrics, below the
 * cache, print them too.) */
static inline const char *mg_cache_state_name(int state)
{
    static const char *const names[MG_CACHE__COUNT] = {
        [MG_CACHE_HIT] = "hit",       [MG_CACHE_MISS] = "miss",
        [MG_CACHE_EXPIRED] = "expired", [MG_CACHE_STALE] = "stale",
        [MG_CACHE_BYPASS] = "bypass", [MG_CACHE_REVALIDATED] = "revalidated",
    };
    return state > 0 && state < MG_CACHE__COUNT ? names[state] : NULL;
}

/* What other files may know of a request's cache state (r->cache is the
 * cache's own): its MG_CACHE_* state, whether mg_cache_lookup ran, whether
 * it holds a kept answer, whether it is an unsafe method that invalidates,
 * a revalidation, and whether a fetched answer is being kept. */
int mg_cache_state(const mg_request_t *r);
int mg_cache_looked(const mg_request_t *r);
int mg_cache_holds(const mg_request_t *r);
int mg_cache_unsafe(const mg_request_t *r);
int mg_cache_revalidating(const mg_request_t *r);
int mg_cache_capturing(const mg_request_t *r);
/* The upstream failed: serve the expired answer r holds when it may
 * (stale-if-error; returns 1, the state is then "stale"), else 0. */
int mg_cache_use_stale(mg_request_t *r);
/* req:skip_cache() and req:cache_key(part) (before the lookup): 0, -1 when
 * the lookup already ran, -2 when out of memory. */
int mg_cache_skip(mg_request_t *r);
int mg_cache_key_add(mg_request_t *r, const char *p, size_t len);

/* What mg_cache_lookup says to do. */
enum {
    MG_CACHE_GO = 0,    /* fetch it from the upstream (mg_cache_state: why) */
    MG_CACHE_SERVE = 1, /* r holds an answer to serve (fresh, or stale while
                           another request fetches it) */
    MG_CACHE_WAIT = 2,  /* another request fetches it: r->pipe->cache_ready()
                           is called when it is there or the wait is over */
};

/* Looks the request up in its route's cache (r->route->cache set). */
int mg_cache_lookup(mg_request_t *r);

/* The worker's waiting requests and the timer that polls for them. */
void mg_cache_worker_init(mg_worker_t *w);
void mg_cache_worker_close(mg_worker_t *w);

/* Sends the answer r holds (hit or stale) through r's protocol, with the
 * on_response hooks' changes (status, fields, body), Age, Cache-Status and
 * X-Request-Id; a 304 when the client's conditional headers match it.
 * May end r. */
void mg_cache_serve(mg_request_t *r);

/* Can an upstream failure be answered with the expired answer r holds? */
int mg_cache_can_serve_stale(const mg_request_t *r);

/* The upstream response head of u arrived (before on_response hooks):
 * starts keeping a copy when it may be stored. */
typedef int (*mg_cache_forwarded_fn)(mg_upconn_t *u, uint32_t i);
void mg_cache_capture_head(mg_upconn_t *u, mg_cache_forwarded_fn forwarded);
/* A piece of its (de-chunked) body. */
void mg_cache_capture_body(mg_request_t *r, const char *p, size_t n);
/* The whole response arrived: stores it. */
void mg_cache_capture_end(mg_request_t *r);

/* Revalidation of an expired answer that has a validator (ETag,
 * Last-Modified; mg_cache_revalidating): the conditional header lines the
 * upstream request carries instead of the client's (at most
 * mg_cache_validators_len bytes), and, when the upstream answers 304,
 * mg_cache_revalidated: the kept answer is updated, kept again and r holds
 * it to serve (returns 1; 0: serve the 304 as it is). */
size_t mg_cache_validators(const mg_request_t *r, char *out);
size_t mg_cache_validators_len(const mg_request_t *r);
int mg_cache_revalidated(mg_upconn_t *u, mg_cache_forwarded_fn forwarded);

/* An unsafe method (POST, PUT, PATCH, DELETE) got a non-error answer: the
 * answer kept for the same key (GET) is removed (RFC 9111 4.4). */
void mg_cache_invalidate(mg_request_t *r);

/* The Cache-Status value for a fetched answer into out; its length (0:
 * none). */
size_t mg_cache_status_value(const mg_request_t *r, char *out, size_t cap);

/* For on_response hooks on an answer served from the cache: its status
 * and header spans (offsets into *data). */
int mg_cache_entry_status(const mg_request_t *r);
const mg_header_t *mg_cache_entry_headers(const mg_request_t *r, uint32_t *n, const char **data);

/* Removes the answers kept in d for the route called `route` (every one
 * when route is NULL). Any thread. Returns how many were removed, or -1
 * when out of memory. */
long mg_cache_purge(struct mg_shdict_s *d, const char *route, size_t route_len);

/* The request ends: frees the answer and the copy it held. */
void mg_cache_release(mg_request_t *r);

#endif
