/* accesslog.h: one JSON line per request, written without blocking the
 * worker: lines are appended to a per-worker buffer that a libuv fs request
 * writes out in the thread pool while the next buffer fills. When both
 * buffers are busy, lines are dropped and counted rather than waited for. */
#ifndef MG_ACCESSLOG_H
#define MG_ACCESSLOG_H

#include "logfields.h"
#include "request.h"
#include "worker.h"

/* A response header value kept for the line (res.header.NAME fields):
 * its bytes in the request's arena, at most the line's cap for one value;
 * cut when the header had more. */
typedef struct mg_logcap_s {
    const char *p;
    uint32_t len;
    uint8_t cut;
} mg_logcap_t;

/* Opens the log of `cfg->access_log` for worker w. Returns 0 or -errno. */
int mg_accesslog_open(mg_worker_t *w);
void mg__accesslog_capture(mg_request_t *r, const mg_resp_t *res);
/* The response head res is about to go to r's client: keeps the values of
 * the res.header fields the line has (none: nothing to do). Called by
 * everything that hands a protocol a response head (proxy.c, request.c). */
static inline void mg_accesslog_capture(mg_request_t *r, const mg_resp_t *res)
{
    const mg_logformat_t *f = r->g->cfg->log_format;
    if (f && f->nres)
        mg__accesslog_capture(r, res);
}
/* Logs the current request of c (c->r must be set). */
void mg_accesslog_request(mg_worker_t *w, const mg_request_t *r);
/* Has every worker reopen its access log file at its next flush (any
 * thread; after logrotate moved the file). stdout and stderr stay. */
void mg_accesslog_reopen(void);
/* Lines dropped since start because both buffers were full (any thread). */
unsigned long long mg_accesslog_dropped_total(void);
/* Starts writing what is buffered and stops the flush timer; call when
 * the worker begins to stop. */
void mg_accesslog_close(mg_worker_t *w);
/* After the loop ended: writes any rest synchronously, frees everything. */
void mg_accesslog_free(mg_worker_t *w);

#endif
