/* outlier.c: outlier detection and the upstream state all workers share
 * (see outlier.h for the rules and the threading).
 *
 * Ownership: the generation owns its mg_outlier_t array and each one's
 * targets (mg_outlier_alloc/free); nothing here holds a pointer beyond a
 * call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlog.h"
#include "generation.h"
#include "outlier.h"
#include "targets.h"

/* the latency rule needs this many answers of a target, and of each of
 * the others it is compared with */
#define LATENCY_MIN_ANSWERS 20

int mg_outlier_alloc(mg_gen_t *gen)
{
    const mg_config_t *cfg = gen->cfg;
    gen->outlier = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*gen->outlier));
    if (!gen->outlier)
        return -1;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        mg_outlier_t *o = &gen->outlier[i];
        o->u = &cfg->upstreams[i];
        o->targets = calloc(mg_upstream_cap(o->u), sizeof(*o->targets));
        if (!o->targets)
            return -1;
    }
    return 0;
}

void mg_outlier_free(mg_gen_t *gen)
{
    for (size_t i = 0; gen->outlier && i < gen->cfg->nupstreams; i++)
        free(gen->outlier[i].targets);
    free(gen->outlier);
    gen->outlier = NULL;
}

#define COPY(f) atomic_store(&to->f, atomic_load(&from->f))

static void carry_target(const mg_outlier_target_t *from, mg_outlier_target_t *to)
{
    COPY(fails_5xx);
    COPY(fails_gateway);
    COPY(ejections);
    COPY(ejected_until);
    COPY(ewma_us);
    COPY(answers);
    COPY(attempts);
    COPY(attempts_ejected);
    COPY(failures);
    COPY(ejected_total);
    memcpy(to->reason, from->reason, sizeof(to->reason));
}

void mg_outlier_carry(const mg_gen_t *from, mg_gen_t *to)
{
    if (!from || !from->outlier || !to->outlier)
        return;
    for (size_t i = 0; i < to->cfg->nupstreams; i++) {
        mg_outlier_t *o = &to->outlier[i];
        for (size_t j = 0; j < from->cfg->nupstreams; j++) {
            const mg_outlier_t *fo = &from->outlier[j];
            if (strcmp(fo->u->name, o->u->name) != 0)
                continue;
            atomic_store(&o->retries, atomic_load(&fo->retries));
            atomic_store(&o->budget_refused, atomic_load(&fo->budget_refused));
            const mg_tview_t *v = to->tsets[i].view, *fv = from->tsets[j].view;
            for (size_t t = 0; t < v->n; t++)
                for (size_t ft = 0; v->e[t].serial && ft < fv->n; ft++)
                    if (fv->e[ft].serial && strcmp(from->tsets[j].slot[ft].t.name,
                                                   to->tsets[i].slot[t].t.name) == 0)
                        carry_target(&fo->targets[ft], &o->targets[t]);
        }
    }
}

void mg_outlier_reset(mg_outlier_t *o, size_t s)
{
    static const mg_outlier_target_t zero;
    carry_target(&zero, &o->targets[s]);
    o->targets[s].reason[0] = '\0';
}

void mg_outlier_attempt(mg_outlier_t *o, size_t ti, uint64_t now)
{
    mg_outlier_target_t *t = &o->targets[ti];
    atomic_fetch_add_explicit(&t->attempts, 1, memory_order_relaxed);
    if (mg_outlier_ejected(o, ti, now))
        atomic_fetch_add_explicit(&t->attempts_ejected, 1, memory_order_relaxed);
}

/* Ejects target ti (why: for the log) unless it is already out or the
 * upstream has max_ejection_percent of its targets out; then `streak`, the
 * count that reached its threshold (NULL: none), starts again. One worker at a time:
 * another that is deciding makes this one give up, its streak kept (the
 * next failure tries again). */
static void eject(mg_outlier_t *o, const mg_tview_t *v, size_t ti, uint64_t now,
                  const char *why, _Atomic uint32_t *streak)
{
    const mg_outlier_policy_t *pol = o->u->outlier;
    if (atomic_exchange(&o->deciding, 1))
        return;
    if (streak)
        atomic_store(streak, 0);
    mg_outlier_target_t *t = &o->targets[ti];
    size_t out = 0, n = 0;
    for (size_t i = 0; i < v->n; i++)
        if (v->e[i].serial) {
            n++;
            out += mg_outlier_ejected(o, i, now);
        }
    if (!mg_outlier_ejected(o, ti, now) && (out + 1) * 100 <= (size_t)pol->max_ejection_percent * n) {
        uint32_t k = atomic_load(&t->ejections) + 1;
        uint64_t ms = pol->base_ejection * k;
        if (ms > pol->max_ejection || ms / k != pol->base_ejection)
            ms = pol->max_ejection;
        atomic_store(&t->ejections, k);
        atomic_store(&t->ejected_until, now + ms);
        atomic_fetch_add(&t->ejected_total, 1);
        /* a latency outlier learns its latency again once back */
        atomic_store(&t->answers, 0);
        atomic_store(&t->ewma_us, 0);
        snprintf(t->reason, sizeof(t->reason), "%s", why);
        mg_log(MG_LOG_WARN, "upstream %s: target %s ejected for %.1f s: %s (ejection %u)\n",
               o->u->name, o->ts->slot[ti].t.name, (double)ms / 1000, why, k);
    }
    atomic_store(&o->deciding, 0);
}

/* Is ti's latency latency_factor times the mean of the other targets'
 * (those in balancing with enough answers)? */
static int latency_outlier(mg_outlier_t *o, const mg_tview_t *v, size_t ti, uint64_t ewma,
                           uint64_t now)
{
    uint64_t sum = 0, n = 0;
    for (size_t i = 0; i < v->n; i++) {
        const mg_outlier_target_t *t = &o->targets[i];
        if (i == ti || !v->e[i].serial || mg_outlier_ejected(o, i, now) ||
            atomic_load_explicit(&t->answers, memory_order_relaxed) < LATENCY_MIN_ANSWERS)
            continue;
        sum += atomic_load_explicit(&t->ewma_us, memory_order_relaxed);
        n++;
    }
    return n > 0 && (double)ewma > o->u->outlier->latency_factor * ((double)sum / (double)n);
}

void mg_outlier_answer(mg_outlier_t *o, const mg_tview_t *v, size_t ti, int status,
                       uint64_t latency_us, uint64_t now)
{
    const mg_outlier_policy_t *pol = o->u->outlier;
    mg_outlier_target_t *t = &o->targets[ti];
    if (!pol)
        return;
    atomic_store_explicit(&t->fails_gateway, 0, memory_order_relaxed);
    if (status >= 500) {
        uint32_t n = atomic_fetch_add(&t->fails_5xx, 1) + 1;
        if (pol->consecutive_5xx && n >= (uint32_t)pol->consecutive_5xx) {
            char why[48];
            snprintf(why, sizeof(why), "%u 5xx answers in a row", n);
            eject(o, v, ti, now, why, &t->fails_5xx);
        }
    } else if (atomic_load_explicit(&t->fails_5xx, memory_order_relaxed)) {
        atomic_store(&t->fails_5xx, 0);
    }
    /* answering well for a whole base_ejection_time since it came back:
     * its next ejection is a first one again */
    uint64_t until = atomic_load_explicit(&t->ejected_until, memory_order_relaxed);
    if (status < 500 && until && now >= until + pol->base_ejection &&
        atomic_load_explicit(&t->ejections, memory_order_relaxed)) {
        atomic_store(&t->ejections, 0);
        atomic_store(&t->ejected_until, 0);
    }
    if (pol->latency_factor <= 0)
        return;
    /* racy read-modify-write: a lost update only weighs one answer less */
    uint64_t e = atomic_load_explicit(&t->ewma_us, memory_order_relaxed);
    e = e ? e - e / 8 + latency_us / 8 : latency_us;
    atomic_store_explicit(&t->ewma_us, e, memory_order_relaxed);
    uint64_t n = atomic_fetch_add_explicit(&t->answers, 1, memory_order_relaxed) + 1;
    if (n >= LATENCY_MIN_ANSWERS && n % 8 == 0 && latency_outlier(o, v, ti, e, now)) {
        char why[48];
        snprintf(why, sizeof(why), "latency %.1f ms, %gx the others'", (double)e / 1000,
                 pol->latency_factor);
        eject(o, v, ti, now, why, NULL);
    }
}

void mg_outlier_gateway_failure(mg_outlier_t *o, const mg_tview_t *v, size_t ti, uint64_t now)
{
    const mg_outlier_policy_t *pol = o->u->outlier;
    mg_outlier_target_t *t = &o->targets[ti];
    atomic_fetch_add_explicit(&t->failures, 1, memory_order_relaxed);
    if (!pol || !pol->consecutive_gateway)
        return;
    uint32_t n = atomic_fetch_add(&t->fails_gateway, 1) + 1;
    if (n >= (uint32_t)pol->consecutive_gateway) {
        char why[48];
        snprintf(why, sizeof(why), "%u failures in a row without an answer", n);
        eject(o, v, ti, now, why, &t->fails_gateway);
    }
}
