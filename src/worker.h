/* worker.h: worker threads. Each owns a libuv loop, a LuaJIT state, its
 * own SO_REUSEPORT listening sockets and its upstream pools; they share
 * only the immutable config and router. */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include "gateway.h"

typedef struct mg_workers_s {
    mg_worker_t *w;
    int n;
    mg_router_t *router;
} mg_workers_t;

/* Starts n workers on cfg (borrowed: must outlive them). Returns 0 once all
 * listen, or -1 with *err (malloc'd) naming what failed; then nothing runs. */
int mg_workers_start(mg_workers_t *ws, const mg_config_t *cfg, int n, char **err);
/* Asks every worker to stop: stop accepting, finish in-flight requests up
 * to the shutdown deadline, exit. Thread-safe. */
void mg_workers_stop(mg_workers_t *ws);
/* Waits for all workers, frees them. */
void mg_workers_join(mg_workers_t *ws);
/* The same, giving up after ms (-1: some worker is still running, e.g.
 * stuck in a hook; nothing is freed then). */
int mg_workers_join_within(mg_workers_t *ws, uint64_t ms);
/* Takes a stuck worker out of rotation (from the control thread). */
void mg_worker_quarantine(mg_worker_t *w);

#endif
