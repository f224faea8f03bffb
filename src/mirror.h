/* mirror.h: a route's shadow traffic (mirror.c; docs/traffic.md,
 * "Mirroring").
 *
 * Every request the route sends upstream (its first try; not upgrades) is
 * copied to the mirror's upstream, fire and forget: the copy has the head
 * the proxy would send a target of that upstream (mg_proxy_request_head:
 * the hooks' changes, the route's rewrite, that upstream's forwarding
 * headers) and the client's body when it is at most mirror.body (read
 * whole before the first try; a larger or chunked body: no copy, counted).
 * The copy's answer is read and dropped (http_client.c's detached
 * requests); nothing of it reaches the client's request, which neither
 * waits for it, nor fails with it, nor spends its retries or retry budget
 * on it. At most mirror.concurrency copies per route are in flight per
 * worker: one more is dropped (counted), never queued.
 *
 * A shadow known to be down (every target refused lately, down by health
 * checks or ejected) gets no copy: nothing is tried until one is back.
 *
 * Counts (metrics.h mg_metrics_mirror): copies sent, dropped, left out for
 * their body or a shadow down; the copies' answers by class (error: none
 * came). The shadow's
 * targets count their attempts as any target's (moongate_upstream_*).
 */
#ifndef MG_MIRROR_H
#define MG_MIRROR_H

/* (no request.h: metrics.c, in the base layer, names the results too) */
typedef struct mg_request_s mg_request_t;

/* What became of a request's copy (r->mirror; the access log's "mirror",
 * metrics.h's results). */
enum {
    MG_MIRROR_NONE = 0,    /* not decided yet */
    MG_MIRROR_SENT = 1,    /* on its way to the shadow */
    MG_MIRROR_DROPPED = 2, /* mirror.concurrency copies were in flight */
    MG_MIRROR_BODY = 3,    /* the body was over mirror.body, or chunked */
    MG_MIRROR_DOWN = 4,    /* no target of the shadow is live: refused lately
                              (max_fails, for fail_timeout), down by its
                              health checks or ejected */
    MG_MIRROR_SKIPPED = 5, /* not in the sampled share, or an upgrade */
    MG_MIRROR_WAITING = 6, /* its body is being read whole */
    MG_MIRROR__RESULTS = 4 /* the results counted: SENT..DOWN */
};

/* r's first try on a route with a mirror (r->route->mirror): decides on the
 * copy and sends it, or asks for r's body first. Returns 1 when the caller
 * is to read r's body whole and call again once it is in (or at once when
 * it cannot be read whole), else 0: r->mirror says what became of the
 * copy. Never fails or answers r. */
int mg_mirror_request(mg_request_t *r);

/* "sent", "dropped", "body_too_large", "shadow_down", "skipped"; NULL for
 * the others. (Inline: the access log and the metrics, layers below, name
 * them too.) */
static inline const char *mg_mirror_result_name(int what)
{
    switch (what) {
    case MG_MIRROR_SENT: return "sent";
    case MG_MIRROR_DROPPED: return "dropped";
    case MG_MIRROR_BODY: return "body_too_large";
    case MG_MIRROR_DOWN: return "shadow_down";
    case MG_MIRROR_SKIPPED: return "skipped";
    default: return NULL;
    }
}

#endif
