/* wq.h: writes that try the socket first and copy only what it refused.
 *
 * The common case (the kernel takes everything) is one writev with no
 * allocation and no callback. What the kernel does not take right away is
 * copied into one malloc'd block and queued with uv_write; `pending` counts
 * those bytes so the caller can stop reading the other side (back-pressure)
 * until `on_drain` fires.
 */
#ifndef MG_WQ_H
#define MG_WQ_H

#include <stddef.h>
#include <uv.h>

typedef struct mg_wq_s mg_wq_t;
typedef void (*mg_wq_drain_cb)(mg_wq_t *q);
typedef void (*mg_wq_error_cb)(mg_wq_t *q, int status);
/* Takes every byte instead of the stream (a connection without a socket:
 * the fuzz targets in spec/fuzz); returns 0, or a negative libuv error. */
typedef int (*mg_wq_sink_fn)(mg_wq_t *q, const uv_buf_t *bufs, unsigned n);

struct mg_wq_s {
    uv_stream_t *stream;
    size_t pending;           /* bytes queued in uv_write requests */
    unsigned inflight;        /* uv_write requests not yet completed */
    mg_wq_drain_cb on_drain;  /* pending went back to 0 */
    mg_wq_error_cb on_error;  /* a queued write failed (not called after close) */
    mg_wq_sink_fn sink;       /* NULL: the stream (set after mg_wq_init) */
    int closed;
};

void mg_wq_init(mg_wq_t *q, uv_stream_t *s, mg_wq_drain_cb on_drain, mg_wq_error_cb on_error);

/* Writes bufs in order. Returns 0 (written or queued), or a negative libuv
 * error (nothing more will be written; the caller closes the stream). The
 * buffers may be reused as soon as it returns. */
int mg_wq_write(mg_wq_t *q, const uv_buf_t *bufs, unsigned n);

#endif
