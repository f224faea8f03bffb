/* hooks.h: runs a request's Lua hooks, phase by phase, in a coroutine taken
 * from the worker's pool, so that a hook may wait (gw.sleep, gw.http) without
 * blocking the worker.
 *
 * Each run returns at once with one of:
 *   MG_HOOK_DONE       the phase finished; go on
 *   MG_HOOK_RESPONDED  a hook answered (gw.respond); for phases before the
 *                      upstream the answer has been sent
 *   MG_HOOK_WAIT       a hook waits on I/O; mg_conn_hook_resumed() is called
 *                      when the phase ends
 *   MG_HOOK_ERROR      a hook failed (logged); the caller answers 500
 */
#ifndef MG_HOOKS_H
#define MG_HOOKS_H

#include "gateway.h"
#include "mg_ffi.h"

enum { MG_HOOK_DONE = 0, MG_HOOK_RESPONDED = 1, MG_HOOK_WAIT = 2, MG_HOOK_ERROR = 3 };

/* Sets up hooks for worker w once its Lua state has run the config (the
 * cfg table on top of the stack). Returns 0 or -1 with *err (malloc'd). */
int mg_hooks_init(mg_worker_t *w, char **err);
void mg_hooks_close(mg_worker_t *w);

/* Does any hook run in `phase` for a request on `route` (may be NULL)? */
int mg_hooks_has(const mg_worker_t *w, const mg_route_t *route, int phase);

int mg_hooks_run(mg_request_t *r, int phase);

/* The request ends: its coroutine goes back to the pool, or, while a hook
 * still waits, the wait is cancelled (phases before the log) or left to
 * finish on its own (on_log). */
void mg_hooks_release(mg_request_t *r);

/* Called from the control thread: interrupts hooks running past their
 * budget where LuaJIT allows (see README, "Time budget"). */
void mg_hooks_watchdog(mg_worker_t *w, uint64_t now_ms);

#endif
