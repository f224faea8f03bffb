/* lua_route.h: routes answered by a Lua function of the config
 * (`gw.route { path = ..., handler = function(req) ... end }`). */
#ifndef MG_LUA_ROUTE_H
#define MG_LUA_ROUTE_H

#include "gateway.h"

/* Creates worker w's Lua state and runs the config file in it, keeping the
 * handler functions. Returns 0, or -1 with *err (malloc'd) set. */
int mg_lua_worker_init(mg_worker_t *w, char **err);
void mg_lua_worker_close(mg_worker_t *w);
/* Calls the handler of c->r's route and sends its answer (500 with the
 * request id when the handler fails). */
void mg_lua_route_call(mg_worker_t *w, mg_conn_t *c);

#endif
