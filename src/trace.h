/* trace.h: W3C Trace Context (https://www.w3.org/TR/trace-context/).
 *
 * The gateway is one hop of a trace: it continues the trace of a request
 * that carries a valid `traceparent` (or starts one), gives itself a new
 * span id, and sends `traceparent: 00-<trace id>-<its span id>-<flags>`
 * upstream, so that the upstream's span is a child of the gateway's.
 */
#ifndef MG_TRACE_H
#define MG_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define MG_TRACE_ID_HEX 32 /* 16 bytes as lower-case hex */
#define MG_SPAN_ID_HEX 16  /* 8 bytes */

/* Reads a traceparent value. On success returns 0 with the trace id (32
 * hex digits), the parent's span id (16, when parent_id is not NULL) and
 * the flags to send on ("01" sampled, else "00"); returns -1 when the
 * value is not one a receiver may continue. */
int mg_trace_parse(const char *v, size_t n, char trace_id[MG_TRACE_ID_HEX],
                   char parent_id[MG_SPAN_ID_HEX], char flags[2]);

/* The ratio sampler's threshold for ratio p (0..1): a trace is sampled
 * when mg_trace_ratio_sampled says so, by its id alone, so that every
 * gateway (and every OpenTelemetry SDK using the same rule: the 56 low
 * bits of the id against (1 - p) * 2^56, W3C Trace Context level 2's
 * random part) takes the same decision for the same trace. */
uint64_t mg_trace_ratio_threshold(double p);
int mg_trace_ratio_sampled(const char trace_id[MG_TRACE_ID_HEX], uint64_t threshold);
/* The sampler: a request continuing a client's trace (`continued`, its
 * traceparent's flags) follows the sampled flag when parent_based; any
 * other is sampled by ratio `sample`. 1 or 0. */
int mg_trace_decide(const char trace_id[MG_TRACE_ID_HEX], int continued, const char flags[2],
                    double sample, int parent_based);

/* x as 16 lower-case hex digits, most significant first ("%016llx"), no NUL. */
void mg_hex16(uint64_t x, char out[16]);
/* Fills out with n random lower-case hex digits, not all zero, from the
 * generator state *rng (one per worker; seed it with mg_trace_seed). */
void mg_trace_random_hex(uint64_t *rng, char *out, size_t n);
uint64_t mg_trace_seed(void);

#endif
