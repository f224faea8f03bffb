/* hooks.h: runs a request's Lua hooks, phase by phase, in a coroutine taken
 * from the worker's pool, so that a hook may wait (gw.sleep, gw.http) without
 * blocking the worker.
 *
 * Each run returns at once with one of:
 *   MG_HOOK_DONE       the phase finished; go on
 *   MG_HOOK_RESPONDED  a hook answered (gw.respond); for phases before the
 *                      upstream the answer has been sent
 *   MG_HOOK_WAIT       a hook waits on I/O; r->pipe->hook_resumed() is called
 *                      when the phase ends
 *   MG_HOOK_ERROR      a hook failed (logged); the caller answers 500
 */
#ifndef MG_HOOKS_H
#define MG_HOOKS_H

#include "logfields.h"
#include "request.h"
#include "worker.h"
#include "mg_ffi.h"

enum { MG_HOOK_DONE = 0, MG_HOOK_RESPONDED = 1, MG_HOOK_WAIT = 2, MG_HOOK_ERROR = 3 };

/* Sets up hooks for generation g once its Lua state has run the config
 * (the cfg table on top of the stack). Returns 0 or -1 with *err (malloc'd). */
int mg_hooks_init(mg_wgen_t *g, char **err);
/* g is no longer current: its timers stop. */
void mg_hooks_retire(mg_wgen_t *g);
/* g becomes current (in its worker's thread): its timers start. */
void mg_hooks_go_live(mg_wgen_t *g);
void mg_hooks_close(mg_wgen_t *g);

/* Does any hook of generation g run in `phase` for a request on `route`
 * (may be NULL)? */
int mg_hooks_has(const mg_wgen_t *g, const mg_route_t *route, int phase);

int mg_hooks_run(mg_request_t *r, int phase);

/* Pushes onto L (the generation's state) the coroutine that ran r's hooks,
 * or nil when none did: a route handler then gets the hooks' request object
 * (same req.ctx). */
void mg_hooks_push_thread(struct lua_State *L, mg_request_t *r);
/* A value a hook kept in req.ctx, as the access log writes it: type is
 * a LUA_T* (nil when absent); s/len a string's bytes, or another type's
 * name (table, function, ...); num a number, or a boolean's 0/1. */
typedef struct mg_ctx_value_s {
    int type;
    const char *s;
    size_t len;
    double num;
} mg_ctx_value_t;
/* Reads req.ctx[KEY] of r's hooks for each of fmt's ctx fields into
 * vals[0..fmt->nctx) (all nil when no hook ran or none used req.ctx).
 * The strings stay valid until mg_hooks_ctx_end(r, mark) with what it
 * returns. Runs no Lua code: raw table reads on r's generation's state,
 * between hook runs (not from inside a Lua call). */
int mg_hooks_ctx_begin(mg_request_t *r, const mg_logformat_t *fmt, mg_ctx_value_t *vals);
void mg_hooks_ctx_end(mg_request_t *r, int mark);
/* The request ends: its coroutine goes back to the pool, or, while a hook
 * still waits, the wait is cancelled (phases before the log) or left to
 * finish on its own (on_log). */
void mg_hooks_release(mg_request_t *r);

/* ---- waiting on C operations (gw.sleep, gw.http, Redis, ...) ----------
 * An FFI function that starts an asynchronous operation for the running
 * hook calls mg_hook_wait_begin(); the Lua side then yields (WAIT). When
 * the operation completes it calls mg_hook_wait_end() exactly once, with a
 * function that pushes the results the Lua side's yield returns. If the
 * request dies first, `cancel(arg)` is called instead (then the operation
 * must not call mg_hook_wait_end, and must release its own resources).
 * `arg` is the operation's own pointer; the hooks code never frees it. */
struct lua_State;
typedef int (*mg_hook_push_fn)(struct lua_State *co, void *arg);
typedef void (*mg_hook_cancel_fn)(void *arg);

/* Returns the running coroutine, or NULL when no hook is running (then
 * nothing was registered). */
mg_hook_co_t *mg_hook_wait_begin(mg_hook_cancel_fn cancel, void *arg);
void mg_hook_wait_end(mg_hook_co_t *hc, mg_hook_push_fn push, void *arg);
/* Like mg_hook_wait_end, but on the next turn of the loop: for results that
 * arrive while the waiting hook may still be on the C stack. */
void mg_hook_wake_later(mg_hook_co_t *hc, mg_hook_push_fn push, void *arg);
/* The worker whose hook is running on this thread (NULL outside hooks). */
mg_worker_t *mg_hook_worker(void);

/* Called from the control thread: interrupts hooks running past their
 * budget where LuaJIT allows (see README, "Time budget"). Returns how soon
 * (ms) the worker needs another look: MG_HOOKS_WATCH_MS while it runs Lua,
 * else its budget (a run that starts meanwhile cannot be over it sooner).
 * Sets *stuck when the interrupt did not take: then the caller quarantines
 * the worker. */
#define MG_HOOKS_WATCH_MS 10
uint64_t mg_hooks_watchdog(mg_worker_t *w, int *stuck);
/* Around Lua that runs outside the hook coroutines (route handlers): the
 * budget covers it too. begin returns the worker's previous state for end. */
void mg_hooks_budget_begin(mg_worker_t *w, struct lua_State *L);

/* The header list a Lua answer gave at stack index idx ({ name, value,
 * ... }, moongate.runtime header_block) as fields in r's arena; *n gets
 * their count (0 for none, or when out of memory). The strings stay
 * referenced by the table, which the caller keeps on the stack until the
 * answer is sent. */
mg_hfield_t *mg_hooks_answer_fields(struct lua_State *L, int idx, mg_request_t *r, size_t *n);
void mg_hooks_budget_end(mg_worker_t *w);

#endif
