/* metrics.h: counters for GET /metrics (Prometheus text format).
 *
 * Each worker writes only its own shard (relaxed atomics, no locks on the
 * request path); the control thread sums the shards when /metrics is
 * asked for. Route names are interned once, when a config loads, into
 * small ids that survive reloads (the same name keeps its id).
 */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Sets up one shard per worker; call once before workers start. */
int mg_metrics_init(int nworkers);
void mg_metrics_free(void);

/* Id of a route name (thread-safe, takes a lock: config load only).
 * 0 is "no route". */
uint32_t mg_metrics_route_id(const char *name);

/* Id of an (upstream name, target "host:port") pair, like a route id
 * (takes the lock: config load only). 0 is the shared "(other)" pair. */
uint32_t mg_metrics_target_id(const char *upstream, const char *target);

/* Id of a (phase, policy) pair of hooks, likewise (0: "(other)"). */
uint32_t mg_metrics_hook_id(const char *phase, const char *policy);

/* From worker `w` (0-based): one finished request. */
void mg_metrics_request(int w, uint32_t route_id, int status, uint64_t total_us,
                        uint64_t upstream_us);
/* From worker `w`: an attempt on target `target_id` ended, with a whole
 * answer of `status` after `us` microseconds from sending its head, or
 * with none (status 0: connect, TLS, timeout, reset, malformed answer).
 * A negative status counts an answer of -status by class only, untimed
 * (the gateway dropped it: an on_response hook failed). */
void mg_metrics_upstream(int w, uint32_t target_id, int status, uint64_t us);
/* From worker `w`: what became of a copy of a request on route `route_id`
 * for the route's mirror (mirror.h: 1 sent, 2 dropped at the concurrency
 * bound, 3 left out for its body, 4 the shadow down), and a sent copy's
 * end: an answer of
 * `status`, or none (0: connect, timeout, reset, ...). */
void mg_metrics_mirror(int w, uint32_t route_id, int result);
void mg_metrics_mirror_answer(int w, uint32_t route_id, int status);
/* From worker `w`: a sampled request (tracing.h) of trace `trace_id` (32
 * hex digits) ended at uv_hrtime() `at_ns`: it becomes the exemplar of its
 * buckets of the request and upstream duration histograms (OpenMetrics). */
void mg_metrics_exemplar(int w, uint64_t total_us, uint64_t upstream_us, const char *trace_id,
                         uint64_t at_ns);
/* The phase and policy names of a hook id (static or kept until
 * mg_metrics_free; an unknown id gives "(other)"). Takes the lock. */
void mg_metrics_hook_names(uint32_t id, const char **phase, const char **policy);
/* From worker `w`: a hook of hook id `hook_id` returned after running
 * `ns` nanoseconds. */
void mg_metrics_hook(int w, uint32_t hook_id, uint64_t ns);
/* From worker `w`: client connections opened (+1) / closed (-1). */
void mg_metrics_connections(int w, int delta);
/* From the control thread: a reload ended. */
void mg_metrics_reload(int ok);
/* Escapes a Prometheus label value into out (cap bytes, NUL-terminated);
 * returns the escaped length, like snprintf. */
size_t mg_metrics_escape_label(char *out, size_t cap, const char *s);
/* From worker `w`: a request on a cached route, by cache result
 * (cache.h's MG_CACHE_HIT..MG_CACHE_REVALIDATED); an answer kept. */
void mg_metrics_cache(int w, int result);
void mg_metrics_cache_stored(int w);
/* A TLS handshake with a client finished (ok) or failed. */
void mg_metrics_tls_handshake(int ok);
/* A TLS handshake with an upstream (any thread; takes a lock, once per new
 * connection): done, with `what` "full" or "resumed", or failed, with
 * `what` the reason ("unknown_ca", "expired", "hostname", ...). */
void mg_metrics_upstream_tls(const char *upstream, int failed, const char *what);

/* Renders every metric as Prometheus text. `extra` is appended as is (the
 * caller's own gauges), may be NULL. Returns a malloc'd string (caller
 * frees), its length in *len. */
char *mg_metrics_render(const char *extra, size_t *len);
/* The same in the OpenMetrics text format (application/openmetrics-text
 * 1.0.0): counter families named without `_total`, exemplars with trace
 * ids on the duration histograms' buckets, `# EOF` at the end. */
char *mg_metrics_render_openmetrics(const char *extra, size_t *len);

#endif
