/* worker.h: worker threads. Each owns a libuv loop, a LuaJIT state, its
 * own SO_REUSEPORT listening sockets (shared with no other process) and its
 * upstream pools; they share only the immutable config and router. */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>
#include "buf.h"
#include "config.h"
#include "generation.h"
#include "list.h"
#include "router.h"

typedef struct mg_worker_s mg_worker_t;
typedef struct mg_wgen_s mg_wgen_t;
typedef struct mg_request_s mg_request_t;
typedef struct mg_accesslog_s mg_accesslog_t;
typedef struct mg_upstream_rt_s mg_upstream_rt_t;
struct mg_upstream_ops_s;


/* A generation as one worker runs it: its Lua state, hooks and pools.
 * Held by the worker while current, by every request that started on it
 * and by every hook coroutine lent out of it; freed (by the worker's
 * reaper, at the end of a loop turn) once retired and unheld. */
struct mg_wgen_s {
    mg_wgen_t *next;            /* in the worker's list of retired ones */
    mg_worker_t *w;
    mg_gen_t *gen;
    const mg_config_t *cfg;
    const mg_router_t *router;
    void *lua;                  /* mg_lua_worker_t */
    mg_upstream_rt_t *ups;      /* cfg->nupstreams of them */
    int *split_cw;              /* cfg->split_weights: the routes' split
                                   rotations' current weights (split.c) */
    uint32_t *mirror_inflight;  /* cfg->nroutes: each route's mirror copies
                                   in flight on this worker (mirror.c) */
    uint32_t refs;
};

/* Control thread -> worker commands (worker.c). */
enum { MG_CTL_NONE = 0, MG_CTL_STOP, MG_CTL_PREPARE, MG_CTL_COMMIT, MG_CTL_ABORT };

struct mg_worker_s {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    mg_wgen_t *g;               /* current generation */
    mg_wgen_t *retired;         /* older ones still held */
    mg_wgen_t *prepared;        /* built by PREPARE, switched to by COMMIT */
    uv_check_t reaper;          /* frees retired generations nobody holds */
    _Atomic int ctl_cmd;
    _Atomic int targets_changed; /* a target set was published (targets.h) */
    mg_gen_t *ctl_gen;          /* PREPARE: the generation to build */
    char *ctl_err;              /* PREPARE: why it failed (malloc'd) */
    uv_sem_t *ctl_done;         /* posted when a command is handled */
    uv_tcp_t *listeners;
    int *listen_fds;            /* their sockets, for mg_worker_quarantine */
    size_t nlisteners;
    size_t listeners_open;
    mg_link_t conns;
    size_t nconns;
    mg_request_t *free_requests;
    uint32_t nrequests;         /* request structs ever made (slots) */
    uint32_t request_serial;    /* requests ever begun (mg_request_t.serial) */
    mg_bufs_t bufs;             /* read buffers to reuse (buf.h) */
    void (*conn_closed)(mg_worker_t *w); /* a client connection closed: set
                                            by worker.c, called by the protocol */
    char *scratch;              /* heads are built here, then written */
    size_t scratch_cap;
    char reqid_prefix[13];
    uint64_t reqid_counter;
    uint64_t trace_rng;          /* trace.h id generator state */
    mg_link_t cache_waiters;     /* requests waiting for another's fetch */
    uv_timer_t cache_timer;      /* polls for them (cache.c) */
    mg_accesslog_t *log;
    struct mg_h2_worker_s *h2;   /* what its HTTP/2 sessions share (h2_conn.c), or NULL */
    const struct mg_upstream_ops_s *upstream; /* the proxy (upstream.h), for the pipeline */
    /* the route mirrors (mirror.h mg_mirror_request), for the proxy, a
     * layer below them */
    int (*mirror)(mg_request_t *r);
    uv_timer_t shutdown_timer;
    _Atomic uint64_t hook_since; /* ms (monotonic) a hook started running, 0 = none */
    _Atomic int quarantined;     /* stuck in a hook: no longer accepting */
    void *_Atomic running_L;     /* lua_State a hook runs in (watchdog) */
    _Atomic uint64_t budget_ms;  /* the current generation's hook budget */
    _Atomic int budget_armed;    /* the watchdog set the budget hook on running_L */
    _Atomic uint64_t budget_armed_at; /* ms (monotonic) it did */
    int stopping;
    int start_error;
    uv_sem_t *ready;
};

/* A request (or a hook coroutine) takes / lets go of a generation. Freed
 * by the reaper at the end of the loop turn, never from inside a call
 * chain that may still use it. */
static inline mg_wgen_t *mg_wgen_hold(mg_wgen_t *g)
{
    g->refs++;
    return g;
}
static inline void mg_wgen_release(mg_wgen_t *g) { g->refs--; }


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

/* Tells every worker that target sets of the current generation changed
 * (targets.h): each takes the new views at its next loop turn. Control
 * thread. */
void mg_workers_targets_changed(mg_workers_t *ws);

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
