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

#endif
