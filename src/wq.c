/* wq.c: try-then-queue writes (see wq.h). */
#include <stdlib.h>
#include <string.h>
#include "wq.h"

typedef struct {
    uv_write_t req;
    mg_wq_t *q;
    size_t len;
    char data[];
} queued_t;

void mg_wq_init(mg_wq_t *q, uv_stream_t *s, mg_wq_drain_cb on_drain, mg_wq_error_cb on_error)
{
    q->stream = s;
    q->pending = 0;
    q->inflight = 0;
    q->on_drain = on_drain;
    q->on_error = on_error;
    q->sink = NULL;
    q->closed = 0;
}

static void on_written(uv_write_t *req, int status)
{
    queued_t *w = (queued_t *)req;
    mg_wq_t *q = w->q;
    q->pending -= w->len;
    q->inflight--;
    free(w);
    /* After the stream's close began, callbacks only release memory. */
    if (q->closed)
        return;
    if (status < 0) {
        if (q->on_error)
            q->on_error(q, status);
        return;
    }
    if (q->pending == 0 && q->on_drain)
        q->on_drain(q);
}

int mg_wq_write(mg_wq_t *q, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    if (q->sink)
        return q->sink(q, bufs, n);
    if (q->pending == 0) {
        int r = uv_try_write(q->stream, bufs, n);
        if (r >= 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN)
            return r;
        if (done == total)
            return 0;
    }
    /* Copy what is left, skipping the bytes the kernel already took. */
    queued_t *w = malloc(sizeof(*w) + total - done);
    if (!w)
        return UV_ENOMEM;
    w->q = q;
    w->len = total - done;
    size_t skip = done, at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(w->data + at, bufs[i].base + skip, len - skip);
        at += len - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int r = uv_write(&w->req, q->stream, &b, 1, on_written);
    if (r < 0) {
        free(w);
        return r;
    }
    q->pending += w->len;
    q->inflight++;
    return 0;
}
