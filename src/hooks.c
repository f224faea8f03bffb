/* hooks.c: coroutines that run a request's Lua hooks (see hooks.h).
 *
 * The Lua side (lua/moongate/runtime.lua, `driver`) is a loop that yields
 * between phases, so one coroutine serves many requests in turn. It yields
 *   (DONE) | (RESPONDED, status, body, header block, content type)
 *   | (WAIT) | (ERROR, message)
 * and C resumes it with (request, phase, first, route index, slot) to run a
 * phase (the request's address only the first time a slot is sent), or with the
 * results of a wait.
 *
 * Time budget: the watchdog (control thread) sets a count hook on a state
 * whose hook runs past timeouts.hook; the hook then abandons the request's
 * coroutine by yielding it from the hook (it is never resumed), which no
 * pcall or error handler in it can stop. The state's memory cap
 * (lua_state.h) applies while a coroutine or a handler runs.
 *
 * Ownership: the worker's mg_lua_worker_t owns every mg_hook_co_t (pool or
 * lent to a request through r->co). A coroutine whose request died while it
 * waited is dropped (its registry ref released, its timer closed).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include <lua.h>
#include "errlog.h"
#include "hooks.h"
#include "header_names.h"
#include "lua_route.h"
#include "lua_state.h"
#include "metrics.h"
#include "worker.h"

struct mg_hook_co_s {
    mg_hook_co_t *next_free;
    mg_worker_t *w;
    mg_lua_worker_t *lw;    /* the generation's Lua side it belongs to */
    lua_State *co;
    int ref;
    mg_request_t *r;        /* request it serves, NULL when idle or detached */
    uv_timer_t timer;       /* gw.sleep */
    mg_hook_cancel_fn cancel; /* the operation it waits for, if not a sleep */
    void *cancel_arg;
    mg_hook_push_fn later_push; /* mg_hook_wake_later */
    void *later_arg;
    uint8_t waiting;
    uint8_t dropped;        /* no request will resume it again */
    uint8_t over_budget;    /* abandoned by the budget hook (it yielded) */
    int budget_ref;         /* then: its message and traceback (registry) */
    uint64_t wait_since;    /* uv_hrtime when it began its current wait */
    uint64_t waited_ns;     /* all its waits so far: mg_ffi_hook_clock leaves them out */
};

static _Thread_local mg_worker_t *current_worker;
static _Thread_local mg_lua_worker_t *current_lw; /* running or initialising */
static void free_user_timers(mg_lua_worker_t *lw);
static void budget_disarm(mg_worker_t *w, lua_State *L);
static atomic_ullong hook_errors;

static mg_lua_worker_t *lw_of(const mg_wgen_t *g) { return g->lua; }

/* ---- init --------------------------------------------------------------- */

int mg_hooks_init(mg_wgen_t *g, char **err)
{
    mg_lua_worker_t *lw = lw_of(g);
    mg_worker_t *w = g->w;
    lua_State *L = lw->L;
    current_worker = w;
    current_lw = lw; /* timers declared by the config start here */
    /* runtime.init(cfg) -> global mask, { route masks } */
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.runtime");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        *err = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, "driver");
    lw->driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "detach");
    lw->detach_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "report_error");
    lw->report_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "init");
    lua_pushvalue(L, -3); /* cfg */
    lua_pushinteger(L, w->id);
    if (lua_pcall(L, 2, 2, 0) != 0) {
        *err = strdup(lua_tostring(L, -1));
        lua_pop(L, 2);
        return -1;
    }
    lw->global_mask = (uint8_t)lua_tointeger(L, -2);
    size_t n = g->cfg->nroutes;
    lw->route_mask = calloc(n ? n : 1, 1);
    if (!lw->route_mask) {
        *err = strdup("out of memory");
        lua_pop(L, 3);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        lw->route_mask[i] = (uint8_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 3); /* masks, global mask, runtime */
    return 0;
}

static void co_free_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Drops a coroutine that is lent out (its generation's hold goes too). */
static void co_destroy(mg_hook_co_t *hc)
{
    mg_lua_worker_t *lw = hc->lw;
    luaL_unref(lw->L, LUA_REGISTRYINDEX, hc->ref);
    lw->ncos--;
    uv_close((uv_handle_t *)&hc->timer, co_free_cb);
    mg_wgen_release(lw->g);
}

void mg_hooks_close(mg_wgen_t *g)
{
    mg_lua_worker_t *lw = lw_of(g);
    while (lw->free_cos) {
        mg_hook_co_t *hc = lw->free_cos;
        lw->free_cos = hc->next_free;
        luaL_unref(lw->L, LUA_REGISTRYINDEX, hc->ref);
        /* at worker exit the final walk closed the timer already; after a
         * reload the loop still runs it: free in its close callback */
        if (uv_is_closing((uv_handle_t *)&hc->timer))
            free(hc);
        else
            uv_close((uv_handle_t *)&hc->timer, co_free_cb);
    }
    free(lw->route_mask);
    lw->route_mask = NULL;
    free(lw->slot_seen);
    lw->slot_seen = NULL;
    lw->nslot_seen = 0;
    free_user_timers(lw);
}

int mg_hooks_has(const mg_wgen_t *g, const mg_route_t *route, int phase)
{
    const mg_lua_worker_t *lw = g->lua;
    unsigned mask = lw->global_mask;
    if (route)
        mask |= lw->route_mask[route->index];
    return (mask >> phase) & 1;
}

/* ---- the coroutine pool ------------------------------------------------- */

/* Lends out a coroutine of generation g (which it then holds). */
static mg_hook_co_t *co_get(mg_wgen_t *g)
{
    mg_lua_worker_t *lw = lw_of(g);
    mg_worker_t *w = g->w;
    mg_hook_co_t *hc = lw->free_cos;
    if (hc) {
        lw->free_cos = hc->next_free;
        mg_wgen_hold(g);
        return hc;
    }
    hc = calloc(1, sizeof(*hc));
    if (!hc)
        return NULL;
    lua_State *L = lw->L;
    hc->w = w;
    hc->lw = lw;
    hc->co = lua_newthread(L);
    hc->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_timer_init(&w->loop, &hc->timer);
    hc->timer.data = hc;
    lw->ncos++;
    mg_wgen_hold(g);
    /* start the driver: it yields once, ready for its first request */
    lua_rawgeti(hc->co, LUA_REGISTRYINDEX, lw->driver_ref);
    if (lua_resume(hc->co, 0) != LUA_YIELD) {
        mg_log(MG_LOG_ERROR, "worker %d: hook driver failed to start: %s\n", w->id,
                lua_tostring(hc->co, -1));
        co_destroy(hc);
        return NULL;
    }
    lua_settop(hc->co, 0);
    return hc;
}

static void co_put(mg_hook_co_t *hc)
{
    mg_lua_worker_t *lw = hc->lw;
    hc->r = NULL;
    hc->waiting = 0;
    hc->wait_since = 0; /* a wait that was cancelled */
    lua_settop(hc->co, 0);
    hc->next_free = lw->free_cos;
    lw->free_cos = hc;
    mg_wgen_release(lw->g);
}

/* ---- running ------------------------------------------------------------ */

static void report_error(mg_hook_co_t *hc, int st)
{
    mg_lua_worker_t *lw = hc->lw;
    lua_State *L = lw->L;
    const char *msg = "hook exceeded its time budget";
    if (hc->over_budget) {
        /* the budget hook left its message and traceback in the registry
         * (the stack of a coroutine that yielded from a hook is not to be
         * walked) */
        lua_rawgeti(L, LUA_REGISTRYINDEX, lw->report_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, hc->budget_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, hc->budget_ref);
    } else if (st == LUA_ERRMEM) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lw->report_ref);
        lua_pushfstring(L, "hook ran out of memory: the Lua heap is limited to %d MB "
                           "(limits.lua_memory)",
                        (int)(lw->g->cfg->limits.lua_memory >> 20));
        msg = lua_tostring(L, -1);
    } else {
        if (lua_isstring(hc->co, -1))
            msg = lua_tostring(hc->co, -1);
        else
            msg = "error object is not a string";
        lua_rawgeti(L, LUA_REGISTRYINDEX, lw->report_ref);
        if (st == LUA_ERRRUN)
            luaL_traceback(L, hc->co, msg, 0);
        else
            lua_pushstring(L, msg);
    }
    mg_request_t *r = hc->r;
    if (r)
        lua_pushlstring(L, r->request_id, r->request_id_len);
    else
        lua_pushnil(L);
    lua_pushinteger(L, r ? r->hook_phase : MG_PHASE_TIMER);
    if (lua_pcall(L, 3, 0, 0) != 0) {
        mg_log(MG_LOG_ERROR, "worker %d: hook error: %s\n", hc->w->id, msg);
        lua_pop(L, 1);
    }
}

/* Resumes hc with nargs values already pushed; returns what it yielded.
 * For RESPONDED the answer stays on hc->co's stack (indices 2..5) until the
 * caller clears it. */
static int co_resume(mg_hook_co_t *hc, int nargs)
{
    mg_worker_t *w = hc->w;
    mg_lua_worker_t *lw = hc->lw;
    mg_hook_co_t *outer = lw->running;
    mg_lua_worker_t *outer_lw = current_lw;
    lw->running = hc;
    current_worker = w;
    current_lw = lw;
    hc->over_budget = 0;
    /* relaxed: the watchdog only needs to see these eventually (it acts
     * after 100 ms), and a full barrier per hook run is not free */
    atomic_store_explicit(&w->running_L, lw->L, memory_order_relaxed);
    /* the loop's cached time: no clock read per hook (watchdog resolution
     * is 10 ms anyway) */
    atomic_store_explicit(&w->hook_since, uv_now(&w->loop) ? uv_now(&w->loop) : 1,
                          memory_order_relaxed);
    lw->in_lua++;
    int st = lua_resume(hc->co, nargs);
    lw->in_lua--;
    atomic_store_explicit(&w->hook_since, 0, memory_order_relaxed);
    budget_disarm(w, lw->L);
    lw->running = outer;
    current_lw = outer_lw;
    if (st != LUA_YIELD || hc->over_budget) {
        /* a hook raised an error: the driver ends with it (it runs no pcall
         * of its own); log it with the traceback, then drop the coroutine */
        mg_lua_relieve(lw->L); /* maybe it failed for want of memory */
        if (hc->cancel) {
            /* the budget stopped it after it began a wait (gw.http's
             * operation started): that operation must not wake it later */
            mg_hook_cancel_fn cancel = hc->cancel;
            hc->cancel = NULL;
            cancel(hc->cancel_arg);
        }
        report_error(hc, st);
        atomic_fetch_add(&hook_errors, 1);
        hc->dropped = 1;
        return MG_HOOK_ERROR;
    }
    int code = (int)lua_tointeger(hc->co, 1);
    hc->waiting = code == MG_HOOK_WAIT;
    if (hc->waiting) /* a clock read only on the wait path */
        hc->wait_since = uv_hrtime();
    return code;
}

mg_hfield_t *mg_hooks_answer_fields(lua_State *L, int idx, mg_request_t *r, size_t *n)
{
    *n = 0;
    if (!lua_istable(L, idx))
        return NULL;
    size_t k = lua_objlen(L, idx) / 2;
    mg_hfield_t *f = k ? mg_request_alloc(r, k * sizeof(*f)) : NULL;
    if (!f)
        return NULL;
    for (size_t i = 0; i < k; i++) {
        size_t nl = 0, vl = 0;
        lua_rawgeti(L, idx, (int)(2 * i + 1));
        lua_rawgeti(L, idx, (int)(2 * i + 2));
        /* strings only: a number converted on the stack would not be the
         * table's, and could be collected once popped */
        int ok = lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING;
        const char *nm = ok ? lua_tolstring(L, -2, &nl) : NULL;
        const char *v = ok ? lua_tolstring(L, -1, &vl) : NULL;
        lua_pop(L, 2); /* the table keeps both strings */
        if (!ok)
            continue;
        f[(*n)++] = mg_hfield(nm, nl, v, vl, mg_hname_lookup(nm, nl));
    }
    return f;
}

/* Sends the answer a hook gave (on hc's stack) as the request's response. */
static void send_hook_answer(mg_request_t *r, lua_State *co)
{
    int status = (int)lua_tointeger(co, 2);
    size_t blen = 0, nf;
    const char *body = lua_tolstring(co, 3, &blen);
    mg_hfield_t *f = mg_hooks_answer_fields(co, 4, r, &nf);
    const char *ctype = lua_tostring(co, 5);
    mg_request_respond(r, status, ctype ? ctype : "text/plain", body ? body : "", blen, f, nf);
}

/* After a run or a resume of a request's coroutine: act on the result. */
static int settle(mg_request_t *r, mg_hook_co_t *hc, int code)
{
    lua_State *co = hc->co;
    if (hc->dropped) {
        r->co = NULL;
        hc->r = NULL;
        co_destroy(hc);
        return MG_HOOK_ERROR;
    }
    if (code == MG_HOOK_WAIT) {
        r->hook_waiting = 1;
        lua_settop(co, 0);
        return code;
    }
    r->hook_waiting = 0;
    if (code == MG_HOOK_RESPONDED && r->hook_phase < MG_PHASE_RESPONSE) {
        /* the strings stay on co's stack while they are written */
        send_hook_answer(r, co);
        lua_settop(co, 0);
        return code;
    }
    if (code == MG_HOOK_ERROR)
        atomic_fetch_add(&hook_errors, 1);
    lua_settop(co, 0);
    return code;
}

void mg_hooks_push_thread(lua_State *L, mg_request_t *r)
{
    if (!r->co) {
        lua_pushnil(L);
        return;
    }
    lua_pushthread(r->co->co);
    lua_xmove(r->co->co, L, 1);
}

/* The request for the driver: its struct's address the first time the
 * driver meets its slot (it keeps a cdata pointer per slot: structs are
 * never freed while the worker runs), else nil (a light userdata costs a
 * lookup in LuaJIT's table of pointer segments). */
static void push_request(mg_hook_co_t *hc, mg_request_t *r)
{
    mg_lua_worker_t *lw = hc->lw;
    if (r->slot < lw->nslot_seen && lw->slot_seen[r->slot]) {
        lua_pushnil(hc->co);
        return;
    }
    if (r->slot >= lw->nslot_seen) {
        size_t n = lw->nslot_seen ? lw->nslot_seen : 64;
        while (n <= r->slot)
            n *= 2;
        uint8_t *p = realloc(lw->slot_seen, n);
        if (!p) { /* the pointer then, every time */
            lua_pushlightuserdata(hc->co, r);
            return;
        }
        memset(p + lw->nslot_seen, 0, n - lw->nslot_seen);
        lw->slot_seen = p;
        lw->nslot_seen = n;
    }
    lw->slot_seen[r->slot] = 1;
    lua_pushlightuserdata(hc->co, r);
}

int mg_hooks_run(mg_request_t *r, int phase)
{
    int first = 0;
    if (!r->co) {
        r->co = co_get(r->g);
        if (!r->co)
            return MG_HOOK_ERROR;
        r->co->r = r;
        first = 1;
    }
    mg_hook_co_t *hc = r->co;
    r->hook_phase = (uint8_t)phase;
    push_request(hc, r);
    lua_pushinteger(hc->co, phase);
    lua_pushboolean(hc->co, first);
    lua_pushinteger(hc->co, r->route ? r->route->index : -1);
    lua_pushinteger(hc->co, r->slot);
    return settle(r, hc, co_resume(hc, 5));
}

/* A wait ended (timer, I/O): resume the coroutine with nargs pushed values
 * and continue its request where the phase left off. */
static void wake(mg_hook_co_t *hc, int nargs)
{
    mg_request_t *r = hc->r;
    if (hc->wait_since) {
        hc->waited_ns += uv_hrtime() - hc->wait_since;
        hc->wait_since = 0;
    }
    /* the answer a hook gives may end r (and close its connection) */
    const mg_proto_t *p = r ? r->proto : NULL;
    void *conn = r ? r->conn : NULL;
    uint32_t serial = r ? r->serial : 0;
    int code = co_resume(hc, nargs);
    if (!r) {
        /* detached: an on_log hook still running after its request */
        if (hc->dropped) {
            co_destroy(hc);
        } else if (code != MG_HOOK_WAIT) {
            if (code == MG_HOOK_ERROR)
                atomic_fetch_add(&hook_errors, 1);
            co_put(hc);
        }
        return;
    }
    int phase = r->hook_phase;
    code = settle(r, hc, code);
    if (code == MG_HOOK_WAIT || !mg_request_still(r, serial, p, conn))
        return;
    r->pipe->hook_resumed(r, phase, code);
}

static void on_sleep_done(uv_timer_t *t)
{
    wake(t->data, 0);
}

mg_hook_co_t *mg_hook_wait_begin(mg_hook_cancel_fn cancel, void *arg)
{
    mg_hook_co_t *hc = current_lw ? current_lw->running : NULL;
    if (!hc)
        return NULL;
    hc->cancel = cancel;
    hc->cancel_arg = arg;
    return hc;
}

void mg_hook_wait_end(mg_hook_co_t *hc, mg_hook_push_fn push, void *arg)
{
    hc->cancel = NULL;
    hc->cancel_arg = NULL;
    int n = push ? push(hc->co, arg) : 0;
    wake(hc, n);
}

static void on_wake_later(uv_timer_t *t)
{
    mg_hook_co_t *hc = t->data;
    mg_hook_push_fn push = hc->later_push;
    hc->later_push = NULL;
    mg_hook_wait_end(hc, push, hc->later_arg);
}

void mg_hook_wake_later(mg_hook_co_t *hc, mg_hook_push_fn push, void *arg)
{
    hc->cancel = NULL;
    hc->later_push = push;
    hc->later_arg = arg;
    uv_timer_start(&hc->timer, on_wake_later, 0, 0);
}

mg_worker_t *mg_hook_worker(void)
{
    return current_worker;
}

void mg_hooks_release(mg_request_t *r)
{
    mg_hook_co_t *hc = r->co;
    if (!hc)
        return;
    r->co = NULL;
    if (!hc->waiting) {
        co_put(hc);
        return;
    }
    mg_lua_worker_t *lw = hc->lw;
    hc->r = NULL;
    /* the Lua side must not touch the request any more */
    lua_State *L = lw->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lw->detach_ref);
    lua_pushthread(hc->co);
    lua_xmove(hc->co, L, 1);
    if (lua_pcall(L, 1, 0, 0) != 0)
        lua_pop(L, 1);
    if (r->hook_phase == MG_PHASE_LOG)
        return; /* let on_log finish: it delays no client */
    /* the client is gone: cancel the wait and drop the coroutine */
    uv_timer_stop(&hc->timer);
    if (hc->cancel) {
        mg_hook_cancel_fn cancel = hc->cancel;
        hc->cancel = NULL;
        cancel(hc->cancel_arg);
    }
    co_destroy(hc);
}

/* ---- FFI: waiting, logging ---------------------------------------------- */

int mg_ffi_worker_id(void)
{
    return current_worker ? current_worker->id : -1;
}

int mg_ffi_sleep(double seconds)
{
    mg_hook_co_t *hc = current_lw ? current_lw->running : NULL;
    if (!hc)
        return MG_FFI_EPHASE;
    if (!(seconds >= 0) || seconds > 86400 * 365)
        return MG_FFI_EINVAL;
    uv_timer_start(&hc->timer, on_sleep_done, (uint64_t)(seconds * 1000.0 + 0.5), 0);
    return 0;
}

void mg_ffi_log(int level, const char *msg, size_t len)
{
    mg_log(level, "worker %d: %.*s", mg_ffi_worker_id(), (int)len, msg);
}

void mg_ffi_hook_error_count(void)
{
    atomic_fetch_add(&hook_errors, 1);
}

/* ---- FFI: hook metrics (moongate_hook_seconds_total) --------------------
 * The clock is the running coroutine's own: uv_hrtime() less the time it
 * spent waiting (gw.sleep, gw.http, ...), so that a hook's cost is its Lua
 * run's wall time, not the I/O it waited on. A double of nanoseconds: no
 * boxed 64-bit cdata for the JIT to allocate. */
static inline double hook_clock(void)
{
    /* CLOCK_MONOTONIC, as uv_hrtime (waited_ns) reads it, without its
     * wrapper: this runs twice per hook */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    mg_hook_co_t *hc = current_lw ? current_lw->running : NULL;
    return (double)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec -
                    (hc ? hc->waited_ns : 0));
}

double mg_ffi_hook_clock(void) { return hook_clock(); }

void mg_ffi_hook_spent(uint32_t hook_id, double since)
{
    double ns = hook_clock() - since;
    if (current_worker)
        mg_metrics_hook(current_worker->id, hook_id, ns > 0 ? (uint64_t)ns : 0);
}

uint32_t mg_ffi_hook_metric_id(const char *phase, const char *policy)
{
    return mg_metrics_hook_id(phase, policy);
}

unsigned long long mg_hooks_error_total(void)
{
    return atomic_load(&hook_errors);
}

/* ---- gw.timer ------------------------------------------------------------- */

typedef struct user_timer_s {
    struct user_timer_s *next;
    uv_timer_t t;
    mg_lua_worker_t *lw;
    int id;
    int started;            /* its handle is initialised (live generation) */
    uint64_t after, every;  /* ms */
} user_timer_t;

/* A timer's callback runs in a pooled coroutine that serves no request;
 * if it waits, it finishes on its own like a detached on_log hook. */
static void on_user_timer(uv_timer_t *t)
{
    user_timer_t *ut = t->data;
    mg_lua_worker_t *lw = ut->lw;
    if (lw->g->w->stopping)
        return;
    mg_hook_co_t *hc = co_get(lw->g);
    if (!hc)
        return;
    hc->r = NULL;
    lua_pushnil(hc->co);
    lua_pushinteger(hc->co, MG_PHASE_TIMER);
    lua_pushboolean(hc->co, 1);
    lua_pushinteger(hc->co, ut->id);
    lua_pushinteger(hc->co, 0);
    int code = co_resume(hc, 5);
    if (hc->dropped)
        co_destroy(hc);
    else if (code != MG_HOOK_WAIT)
        co_put(hc);
}

/* In the worker's thread: the handle joins its loop. */
static void start_timer(user_timer_t *ut)
{
    mg_worker_t *w = ut->lw->g->w;
    uv_timer_init(&w->loop, &ut->t);
    ut->t.data = ut;
    ut->started = 1;
    uv_timer_start(&ut->t, on_user_timer, ut->after, ut->every);
    /* timers alone do not keep a stopping worker alive */
    uv_unref((uv_handle_t *)&ut->t);
}

int mg_ffi_timer_start(int id, double after, double every)
{
    mg_lua_worker_t *lw = current_lw;
    if (!lw || !(after >= 0) || !(every >= 0))
        return MG_FFI_EPHASE;
    user_timer_t *ut = calloc(1, sizeof(*ut));
    if (!ut)
        return MG_FFI_ENOMEM;
    ut->lw = lw;
    ut->id = id;
    ut->after = (uint64_t)(after * 1000.0 + 0.5);
    ut->every = (uint64_t)(every * 1000.0 + 0.5);
    ut->next = lw->timers;
    lw->timers = ut;
    /* a generation being built (maybe on the control thread) starts its
     * timers when its worker switches to it */
    if (lw->live)
        start_timer(ut);
    return 0;
}

void mg_hooks_go_live(mg_wgen_t *g)
{
    mg_lua_worker_t *lw = lw_of(g);
    lw->live = 1;
    for (user_timer_t *ut = lw->timers; ut; ut = ut->next)
        if (!ut->started)
            start_timer(ut);
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The generation is no longer current: its timers stop (their handles are
 * closed and freed; a callback still waiting finishes on its own). */
void mg_hooks_retire(mg_wgen_t *g)
{
    mg_lua_worker_t *lw = lw_of(g);
    while (lw->timers) {
        user_timer_t *ut = lw->timers;
        lw->timers = ut->next;
        if (ut->started)
            uv_close((uv_handle_t *)&ut->t, timer_closed);
        else
            free(ut);
    }
}

/* After the loop ended (every handle is closed): frees the timers. */
static void free_user_timers(mg_lua_worker_t *lw)
{
    while (lw->timers) {
        user_timer_t *ut = lw->timers;
        lw->timers = ut->next;
        if (!ut->started || uv_is_closing((uv_handle_t *)&ut->t))
            free(ut);
        else
            uv_close((uv_handle_t *)&ut->t, timer_closed);
    }
}

/* ---- time budget -------------------------------------------------------- */

/* Is the function running in L one of moongate's own modules? Those are
 * let finish after the deadline (they end quickly, and the error handling
 * of a route handler runs in them). */
static int running_ours(lua_State *L)
{
    static _Thread_local char prefix[4200];
    static _Thread_local size_t plen;
    if (!mg_lua_dir()[0])
        return 0; /* found on LuaJIT's own path: nothing is told apart */
    if (!plen)
        plen = (size_t)snprintf(prefix, sizeof(prefix), "@%s/moongate/", mg_lua_dir());
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar) || !lua_getinfo(L, "S", &ar) || !ar.source)
        return 0;
    return strncmp(ar.source, prefix, plen) == 0;
}

/* Set by the watchdog (another thread) once a hook is over its budget; it
 * then fires on every instruction until the Lua run ends. In a request's
 * coroutine it yields: the coroutine is abandoned (never resumed again), so
 * no pcall, xpcall handler or inner coroutine of the hook can swallow it.
 * Elsewhere (a route handler, a coroutine the hook made) it raises an error
 * on every instruction of the config's code until the run ends. */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    mg_worker_t *w = current_worker;
    uint64_t since = w ? atomic_load(&w->hook_since) : 0;
    uint64_t now = uv_hrtime() / 1000000;
    uint64_t budget = w ? atomic_load(&w->budget_ms) : 0;
    if (!since || now - since < budget) {
        /* the slow hook ended before we got here */
        if (w)
            budget_disarm(w, L);
        return;
    }
    mg_hook_co_t *hc = current_lw ? current_lw->running : NULL;
    int abandon = hc && hc->co == L;
    if (!abandon && running_ours(L))
        return;
    lua_Debug here;
    if (lua_getstack(L, 0, &here) && lua_getinfo(L, "Sl", &here) && here.currentline > 0)
        lua_pushfstring(L, "%s:%d: ", here.short_src, here.currentline);
    else
        lua_pushliteral(L, "");
    lua_pushfstring(L, "hook exceeded its time budget of %d ms", (int)budget);
    lua_concat(L, 2);
    if (!abandon)
        lua_error(L);
    luaL_traceback(L, L, lua_tostring(L, -1), 0);
    hc->budget_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    hc->over_budget = 1;
    lua_yield(L, 0); /* from a hook: LuaJIT unwinds to lua_resume */
}

/* In the worker's thread, after a Lua run: the hook the watchdog may have
 * set goes (the next run starts with a clean slate). */
static void budget_disarm(mg_worker_t *w, lua_State *L)
{
    if (atomic_exchange(&w->budget_armed, 0))
        lua_sethook(L, NULL, 0, 0);
}

int mg_ffi_budget_over(void)
{
    mg_worker_t *w = current_worker;
    uint64_t since = w ? atomic_load(&w->hook_since) : 0;
    return since && uv_hrtime() / 1000000 - since >= atomic_load(&w->budget_ms);
}

void mg_hooks_budget_begin(mg_worker_t *w, lua_State *L)
{
    current_worker = w;
    atomic_store_explicit(&w->running_L, L, memory_order_relaxed);
    atomic_store_explicit(&w->hook_since, uv_now(&w->loop) ? uv_now(&w->loop) : 1,
                          memory_order_relaxed);
}

void mg_hooks_budget_end(mg_worker_t *w)
{
    atomic_store_explicit(&w->hook_since, 0, memory_order_relaxed);
    budget_disarm(w, atomic_load(&w->running_L));
}

uint64_t mg_hooks_watchdog(mg_worker_t *w, int *stuck)
{
    /* hook_since is loop time: libuv's monotonic clock in ms, like this */
    uint64_t now_ms = uv_hrtime() / 1000000;
    uint64_t since = atomic_load(&w->hook_since);
    /* the budget of the generation the worker had when the watchdog looked:
     * a racy read of a pointer that stays valid (the config lives on while
     * any generation holds it, and this is only a threshold) */
    uint64_t budget = atomic_load(&w->budget_ms);
    lua_State *L = atomic_load(&w->running_L);
    *stuck = 0;
    if (!since)
        return budget;
    if (now_ms - since < budget || !L)
        return MG_HOOKS_WATCH_MS;
    /* lua_sethook is safe to call asynchronously; the hook fires at the next
     * instruction the interpreter runs (not inside a compiled loop). Set
     * once per overrun: it stays until the worker disarms it. */
    if (!atomic_exchange(&w->budget_armed, 1)) {
        atomic_store(&w->budget_armed_at, now_ms);
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        return MG_HOOKS_WATCH_MS;
    }
    /* counted from the arming, not from the hook's start: this thread may
     * have been busy (a reload) while the hook ran past its budget */
    uint64_t armed_at = atomic_load(&w->budget_armed_at);
    if (now_ms - armed_at > 1000 && !atomic_load(&w->quarantined)) {
        /* the interrupt did not take: a loop compiled to machine code */
        mg_log(MG_LOG_CRIT,
                "worker %d: a hook has run %llu ms and cannot be interrupted "
                "(a loop LuaJIT compiled); the worker stops accepting connections, "
                "the others go on serving\n",
                w->id, (unsigned long long)(now_ms - since));
        *stuck = 1;
    }
    return MG_HOOKS_WATCH_MS;
}
