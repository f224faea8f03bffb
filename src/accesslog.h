/* accesslog.h: one JSON line per request, written without blocking the
 * worker: lines are appended to a per-worker buffer that a libuv fs request
 * writes out in the thread pool while the next buffer fills. When both
 * buffers are busy, lines are dropped and counted rather than waited for. */
#ifndef MG_ACCESSLOG_H
#define MG_ACCESSLOG_H

#include "logfields.h"
#include "request.h"
#include "worker.h"

/* Opens the log of `cfg->access_log` for worker w. Returns 0 or -errno. */
int mg_accesslog_open(mg_worker_t *w);
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
