/* lua_route.h: routes answered by a Lua function of the config
 * (`gw.route { path = ..., handler = function(req) ... end }`). */
#ifndef MG_LUA_ROUTE_H
#define MG_LUA_ROUTE_H

#include "request.h"
#include "worker.h"

struct lua_State;

/* A worker's Lua state and what the core keeps of it. Owned by the worker
 * (w->lua); only that worker's thread touches it. */
typedef struct mg_lua_worker_s {
    mg_wgen_t *g;           /* the generation it belongs to */
    struct lua_State *L;
    int cfg_ref;            /* the normalised config table */
    int invoke_ref;         /* moongate.handler.invoke */
    /* hooks.c */
    int driver_ref;         /* moongate.runtime.driver */
    int detach_ref;         /* moongate.runtime.detach */
    int report_ref;         /* moongate.runtime.report_error */
    int co_req_ref;         /* moongate.runtime.co_req: coroutine -> request object */
    int log_keys_ref;       /* the access log's req.ctx keys (a list), or LUA_NOREF */
    uint8_t global_mask;    /* 1 << phase for each global hook */
    uint8_t *route_mask;    /* per route: 1 << phase for its policies */
    uint8_t *slot_seen;     /* per request slot: the driver has its pointer */
    size_t nslot_seen;
    mg_hook_co_t *free_cos; /* idle coroutines */
    size_t ncos;            /* coroutines alive */
    mg_hook_co_t *running;  /* coroutine being resumed, or NULL */
    void *timers;           /* gw.timer handles (hooks.c) */
    int live;               /* its worker runs it: timers may start */
    int in_lua;             /* hooks or a handler running: the memory cap applies */
} mg_lua_worker_t;

/* Creates generation g's Lua state in its worker and runs the config file
 * in it, keeping the handler and hook functions. Returns 0, or -1 with
 * *err (malloc'd) set. */
int mg_lua_gen_init(mg_wgen_t *g, char **err);
/* g is no longer current: its timers stop. */
void mg_lua_gen_retire(mg_wgen_t *g);
/* g becomes current (worker thread): its timers start. */
void mg_lua_gen_go_live(mg_wgen_t *g);
void mg_lua_gen_close(mg_wgen_t *g);
/* Calls the handler of c->r's route and sends its answer (500 with the
 * request id when the handler fails). */
void mg_lua_route_call(mg_request_t *r);

#endif
