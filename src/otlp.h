/* otlp.h: the span exporter (settings.tracing, docs/tracing.md).
 *
 * A thread of its own with its own libuv loop takes the spans the workers
 * queued (tracing.h), encodes them as OTLP/HTTP JSON (resourceSpans /
 * scopeSpans / spans) and POSTs them to <endpoint>/v1/traces, one batch at
 * a time, each on a connection of its own (oneshot.h; https through
 * tls_client.h). Nothing of it runs on a worker: a collector that is slow
 * or down only makes the queues fill, and spans that find a queue full are
 * dropped and counted. A batch leaves when `batch.size` spans are queued
 * or `batch.interval` after the last one; a batch the collector refuses,
 * or that fails, is dropped and counted (no retry: the queues are the
 * only buffer). At shutdown what is queued gets one second to leave.
 */
#ifndef MG_OTLP_H
#define MG_OTLP_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_gen_s mg_gen_t;

/* Control thread: generation gen is live (its workers run it). With
 * tracing, the exporter (started on the first one) exports with its
 * settings from now on; without, it sends what is still queued at once
 * (no batch interval) with the settings it had, keeping them. Holds the
 * generation whose settings it uses. */
void mg_otlp_apply(mg_gen_t *gen);
/* After the workers stopped: sends what is queued (one second at most),
 * stops the thread and lets go of its generation. */
void mg_otlp_stop(void);

typedef struct mg_otlp_counts_s {
    uint64_t spans_exported;      /* in batches the collector took (2xx) */
    uint64_t spans_failed;        /* in batches refused or lost */
    uint64_t exports_ok, exports_failed;
} mg_otlp_counts_t;
void mg_otlp_counts(mg_otlp_counts_t *c);

#endif
