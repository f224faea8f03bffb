/* worker.h: worker threads. Each owns a libuv loop, a LuaJIT state, its
 * own SO_REUSEPORT listening sockets (shared with no other process) and its
 * upstream pools; they share only the immutable config and router. */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include "gateway.h"

typedef struct mg_workers_s {
    mg_worker_t *w;
    int n;
    int *claims;    /* one lock per listener address (worker.c, claim_addr) */
    size_t nclaims;
} mg_workers_t;

/* Starts n workers on generation gen (each takes its own hold). Every
 * listener address is first claimed for this process: one that another
 * process (another moongate too) listens on fails with "Address already in
 * use", so SO_REUSEPORT is only ever shared by this process's workers.
 * Returns 0 once all listen, or -1 with *err (malloc'd) naming what failed;
 * then nothing runs. The claims last until mg_workers_join*. */
int mg_workers_start(mg_workers_t *ws, mg_gen_t *gen, int n, char **err);
/* Switches every worker to gen, all or none: each builds its side first
 * (Lua state, hooks, pools); if one fails, none switches and *err
 * (malloc'd) says why. In-flight requests finish on their generation. */
int mg_workers_reload(mg_workers_t *ws, mg_gen_t *gen, char **err);

/* A worker's state on generation gen without its listeners (Lua state,
 * hooks, pools, cache, access log) on w->loop, which the caller has made
 * (uv_loop_init) with w->id set; the thread's own start uses it, and so do
 * the fuzz targets (spec/fuzz), which run a worker without sockets.
 * Returns NULL, or why it failed (malloc'd). */
char *mg_worker_setup(mg_worker_t *w, mg_gen_t *gen);
/* After the loop ended: closes what is left, frees the worker's state and
 * closes the loop. */
void mg_worker_teardown(mg_worker_t *w);

/* generation.c */
/* Builds a generation from a loaded config (takes ownership of cfg, also
 * on failure). Returns NULL with *err (static) when the router cannot be
 * built. The caller holds one reference. */
mg_gen_t *mg_gen_new(mg_config_t *cfg, uint64_t number, const char **err);
void mg_gen_release(mg_gen_t *g);
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
