/* retry.h: a request's retries and its whole-request deadline (retry.c).
 *
 * The proxy asks here whether a failed try may be tried again (on another
 * target: the proxy's balancer never picks the same one twice in a row
 * while another is up) and how long to wait first; the rules are those of
 * the route's `retries` (else the upstream's):
 *   - at most `attempts` tries in all, and only for what `on` names;
 *   - nothing of the answer has gone to the client;
 *   - a try whose request may have reached the upstream (the connection
 *     was up) is retried only for idempotent methods (GET HEAD OPTIONS PUT
 *     DELETE TRACE) unless `non_idempotent = true`; a connect failure is
 *     retried for any method, nothing having been sent;
 *   - a request body goes again only when it was buffered whole (bodies
 *     with a Content-Length up to `body` are, before the first try); a
 *     streamed one is retried only while none of it has gone out;
 *   - the budget: retries in flight stay under `budget` times the requests
 *     in flight on that upstream (with a retry policy), or `min_retries`,
 *     whichever is larger (shared by all workers, outlier.h);
 *   - not past the route's timeouts.total.
 * The wait before retry k is backoff.base * 2^(k-1), at most backoff.max,
 * a uniformly random share of it with jitter; a libuv timer, never a
 * blocking sleep.
 *
 * Ownership: the state is in the request's arena (r->retry, NULL on
 * routes without retries or a deadline); a waiting timer is malloc'd and
 * freed in its close callback. mg_retry_end (pipeline.c, when the request
 * ends) gives back the budget's counts and cancels a wait.
 */
#ifndef MG_RETRY_H
#define MG_RETRY_H

#include <stdint.h>
#include "config.h"
#include "request.h"

struct mg_outlier_s;
typedef struct mg_retry_wait_s mg_retry_wait_t;

typedef struct mg_retry_s {
    const mg_retry_policy_t *pol; /* NULL: only a deadline */
    struct mg_outlier_s *shared;  /* the upstream's shared counts */
    uint64_t deadline;            /* loop ms; 0: none (route timeouts.total) */
    uint64_t try_start;           /* loop ms the current try began */
    uint16_t tries;               /* tries begun */
    uint8_t counted;              /* in shared->active */
    uint8_t retrying;             /* in shared->retrying */
    mg_retry_wait_t *wait;        /* the backoff timer, while waiting */
} mg_retry_t;

/* Gives r its retry state for policy pol (may be NULL) with a deadline
 * total_ms from now (0: none). Returns it, or NULL when out of memory. */
mg_retry_t *mg_retry_begin(mg_request_t *r, const mg_retry_policy_t *pol,
                           struct mg_outlier_s *shared, uint64_t total_ms);
/* Should r's body be read whole before the first try, so that a retry
 * can send it again? */
int mg_retry_buffer_body(const mg_request_t *r);
/* May r be tried again after a failed try of class `on` (MG_RETRY_ON_*)
 * whose request may have reached the upstream (`sent`)? Counts the retry
 * (or the budget's refusal) when it says yes (1) or no for the budget. */
int mg_retry_allowed(mg_request_t *r, unsigned on, int sent);
/* The wait before the retry just allowed, in ms (0: at once); never past
 * the deadline (then mg_retry_allowed has said no). */
uint64_t mg_retry_backoff(mg_request_t *r);
/* Calls go(r) after ms on r's worker loop. Returns 0, or -1 (no memory:
 * the caller goes on at once). */
int mg_retry_wait(mg_request_t *r, uint64_t ms, void (*go)(mg_request_t *r));
/* r ends: the budget's counts go back, a wait is cancelled. */
void mg_retry_end(mg_request_t *r);

/* Loop ms left before r's deadline (UINT64_MAX: none; 0: passed). */
uint64_t mg_retry_left(const mg_request_t *r, uint64_t now);

#endif
