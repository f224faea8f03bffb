/* metrics_user.h: the metrics a config declares with gw.metrics.counter,
 * gauge and histogram (lua/moongate/metrics.lua, docs/metrics.md), counted
 * from hooks through the FFI (mg_ffi.h, "user metrics") and shown in
 * GET /metrics after the gateway's own.
 *
 * A declaration (mg_umetric_decl_t, config.h) is checked by the rules here
 * (mg_ffi_umetric_check: Prometheus names, the label names, the buckets)
 * when the config loads. Each generation acquires one metric per
 * declaration from a process-wide registry (mg_umetric_acquire, when it is
 * made): a declaration like one a live generation has (same name, type,
 * labels, buckets and max_series) gets that metric and its values, so that
 * a reload keeps them; another one gets a new metric. A metric is freed
 * when the last generation holding it is.
 *
 * Values. Counters and histograms count into one shard per worker (plain
 * relaxed stores: one writer each) plus one shared shard for any other
 * thread (the testing kit, the REPL; atomic read-modify-writes); a scrape
 * sums them. A gauge has one cell per series that every thread sets
 * (atomic). Series: each distinct list of label values (each cut to
 * MG_UMETRIC_VALUE_MAX bytes of UTF-8) gets one, up to the metric's
 * max_series; further ones count into one overflow series whose labels are
 * all "(other)", and each such update is counted in
 * moongate_user_metric_overflow_total{metric}. Looking a series up takes no
 * lock; adding one takes the registry's mutex, once per series.
 */
#ifndef MG_METRICS_USER_H
#define MG_METRICS_USER_H

#include <stddef.h>
#include <stdint.h>

enum { MG_UMETRIC_COUNTER, MG_UMETRIC_GAUGE, MG_UMETRIC_HISTOGRAM };

#define MG_UMETRIC_MAX_LABELS 16
#define MG_UMETRIC_MAX_BUCKETS 64
#define MG_UMETRIC_VALUE_MAX 128    /* bytes of one label value */
#define MG_UMETRIC_SERIES_MAX 100000 /* the most max_series may be */
#define MG_UMETRIC_OTHER "(other)"  /* every label of the overflow series */

typedef struct mg_umetric_s mg_umetric_t;
typedef struct mg_umetric_decl_s mg_umetric_decl_t;

/* Shards for `nworkers` worker threads; before the first generation is
 * made (without it, every thread counts into the shared shard). */
void mg_umetrics_init(int nworkers);

/* The kind's number for its name ("counter", "gauge", "histogram"), or -1;
 * and the name of a kind. */
int mg_umetric_kind_parse(const char *name);
const char *mg_umetric_kind_name(int kind);

/* The metric of declaration d: a live one declared the same, else a new
 * one (refs counted; release each). NULL when out of memory. Any thread
 * (takes the registry's mutex). */
mg_umetric_t *mg_umetric_acquire(const mg_umetric_decl_t *d);
void mg_umetric_release(mg_umetric_t *m);
/* What a worker's Lua state counts through (mg_ffi.h): worker `w`'s shard,
 * or the shared one for w < 0 or past the workers. Lives as long as m. */
struct mg_umetric_handle_s *mg_umetric_handle(mg_umetric_t *m, int w);

/* The Prometheus text of metrics ms[0..n) (the live generation's, which
 * holds them), then the overflow counts of those with labels: a malloc'd
 * string (caller frees), its length in *len; NULL when out of memory.
 * Control thread. */
char *mg_umetrics_render(mg_umetric_t *const *ms, size_t n, size_t *len);

#endif
