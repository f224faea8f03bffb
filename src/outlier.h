/* outlier.h: the runtime state of each upstream that all workers share
 * (outlier.c): outlier detection's per-target counts and ejections, and
 * the counts the retry budget needs (retry.c).
 *
 * Outlier detection (upstream option `outlier`): a target that gives
 * consecutive_5xx answers of 500-599 in a row, consecutive_gateway_failures
 * failures in a row with no answer at all (connect refused, failed or timed
 * out, reset or closed before answering, no first byte in time), or whose
 * answer latency (an EWMA) is latency_factor times the mean of the other
 * targets' is ejected: the balancer skips it for base_ejection_time times
 * the number of its ejections so far (capped at max_ejection_time). The
 * count goes back to zero once the target has answered well for a whole
 * base_ejection_time after it came back. At most max_ejection_percent of an
 * upstream's targets are ejected at once (a failure that would eject one
 * more does not). With active health checks (health.h) a target is in
 * balancing when it is neither down by its checks nor ejected: the checks
 * never end an ejection early, and the end of an ejection never brings back
 * a target its checks took out.
 *
 * Threading: the state lives in the generation (mg_gen_t.outlier), is
 * written by every worker with atomics (no lock; one worker decides an
 * ejection at a time through a try-flag, the others skip it) and read by
 * the control thread for /upstreams and /metrics. Times are libuv loop
 * milliseconds (uv_now), the same monotonic clock in every worker. A reload
 * carries each kept target's state over (mg_outlier_carry).
 */
#ifndef MG_OUTLIER_H
#define MG_OUTLIER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"

typedef struct mg_gen_s mg_gen_t;
struct mg_tset_s;
struct mg_tview_s;

typedef struct mg_outlier_target_s {
    _Atomic uint32_t fails_5xx;      /* 5xx answers in a row */
    _Atomic uint32_t fails_gateway;  /* failures without an answer in a row */
    _Atomic uint32_t ejections;      /* the ejection time's multiplier */
    _Atomic uint64_t ejected_until;  /* loop ms; 0 or past: in balancing */
    _Atomic uint64_t ewma_us;        /* answer head latency, EWMA (1/8) */
    _Atomic uint64_t answers;        /* ... over this many answers */
    /* counts for /upstreams and /metrics */
    _Atomic uint64_t attempts;       /* tries sent to it */
    _Atomic uint64_t attempts_ejected; /* ... while it was ejected */
    _Atomic uint64_t failures;       /* tries without an answer */
    _Atomic uint64_t ejected_total;
    char reason[48];                 /* why the last ejection (racy text) */
} mg_outlier_target_t;

typedef struct mg_outlier_s {
    const mg_upstream_t *u;
    _Atomic int deciding;            /* a worker is deciding an ejection */
    /* the retry budget (retry.c), over requests with a retry policy */
    _Atomic int64_t active;          /* requests in flight */
    _Atomic int64_t retrying;        /* ... of them retried at least once */
    _Atomic uint64_t retries;        /* retries sent */
    _Atomic uint64_t budget_refused; /* retries the budget refused */
    mg_outlier_target_t *targets;    /* one per slot (targets.h) */
    const struct mg_tset_s *ts;      /* the slots, for their names */
} mg_outlier_t;

/* One mg_outlier_t per upstream of gen (gen->outlier); 0 or -1. */
int mg_outlier_alloc(mg_gen_t *gen);
void mg_outlier_free(mg_gen_t *gen);
/* A reload: `to` takes over `from`'s state of the targets it keeps (same
 * upstream and target names, in the published views). Control thread,
 * before the workers switch. */
void mg_outlier_carry(const mg_gen_t *from, mg_gen_t *to);
/* Slot s takes a new target: its state starts again (control thread,
 * while no worker uses the slot: targets.h). */
void mg_outlier_reset(mg_outlier_t *o, size_t s);

/* Is target ti ejected at loop time now? */
static inline int mg_outlier_ejected(const mg_outlier_t *o, size_t ti, uint64_t now)
{
    return atomic_load_explicit(&o->targets[ti].ejected_until, memory_order_relaxed) > now;
}

/* A try goes to target ti (counted; also whether it was ejected). */
void mg_outlier_attempt(mg_outlier_t *o, size_t ti, uint64_t now);
/* Target ti answered `status` after latency_us (request sent to head).
 * Runs the detection when the upstream has an outlier policy; v is the
 * caller's view of the targets (the others it is compared with, the share
 * ejected). */
void mg_outlier_answer(mg_outlier_t *o, const struct mg_tview_s *v, size_t ti, int status,
                       uint64_t latency_us, uint64_t now);
/* A try on target ti got no answer (connect, reset, timeout). */
void mg_outlier_gateway_failure(mg_outlier_t *o, const struct mg_tview_s *v, size_t ti,
                                uint64_t now);

#endif
