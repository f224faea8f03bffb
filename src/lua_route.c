/* lua_route.c: a worker's Lua state for one generation, and routes
 * answered by Lua handlers.
 *
 * The state runs the config file once when the generation is built; the normalised
 * config table it returns stays in the registry so that route i's handler
 * is cfg.routes[i + 1].handler. A handler gets the same request object as
 * hooks (moongate.runtime; the hooks' own one when they ran, so req.ctx
 * carries over). This path serves demo services and tests, not the proxy
 * hot path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include "errlog.h"
#include "hooks.h"
#include "lua_route.h"
#include "lua_state.h"

int mg_config_run_lua(lua_State *L, const char *file, char **errors);

int mg_lua_gen_init(mg_wgen_t *g, char **err)
{
    mg_lua_worker_t *lw = calloc(1, sizeof(*lw));
    if (!lw) {
        *err = strdup("out of memory");
        return -1;
    }
    lw->g = g;
    lw->L = mg_lua_open();
    if (!lw->L) {
        free(lw);
        *err = strdup("cannot create a Lua state");
        return -1;
    }
    lua_State *L = lw->L;
    /* the hooks' heap is bounded (limits.lua_memory); the config's run is
     * bounded by moongate.budget */
    if (g->cfg->limits.lua_memory && mg_lua_cap_memory(L, g->cfg->limits.lua_memory, &lw->in_lua) != 0) {
        mg_lua_close(L);
        free(lw);
        *err = strdup("out of memory");
        return -1;
    }
    if (mg_config_run_lua(L, g->cfg->file, err) != 0) {
        mg_lua_close(L);
        free(lw);
        return -1;
    }
    g->lua = lw;
    if (mg_hooks_init(g, err) != 0) {
        g->lua = NULL;
        mg_lua_close(L);
        free(lw);
        return -1;
    }
    lw->cfg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.handler");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        *err = strdup(lua_tostring(L, -1));
        mg_hooks_close(g);
        g->lua = NULL;
        mg_lua_close(L);
        free(lw);
        return -1;
    }
    lua_getfield(L, -1, "invoke");
    lw->invoke_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

void mg_lua_gen_go_live(mg_wgen_t *g)
{
    if (g->lua)
        mg_hooks_go_live(g);
}

void mg_lua_gen_retire(mg_wgen_t *g)
{
    if (g->lua)
        mg_hooks_retire(g);
}

void mg_lua_gen_close(mg_wgen_t *g)
{
    mg_lua_worker_t *lw = g->lua;
    if (!lw)
        return;
    mg_hooks_close(g);
    mg_lua_close(lw->L);
    free(lw);
    g->lua = NULL;
}

void mg_lua_route_call(mg_request_t *r)
{
    mg_worker_t *w = r->w;
    mg_lua_worker_t *lw = r->g->lua;
    lua_State *L = lw->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lw->invoke_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lw->cfg_ref);
    lua_getfield(L, -1, "routes");
    lua_rawgeti(L, -1, r->route->index + 1);
    lua_getfield(L, -1, "handler");
    lua_replace(L, -4); /* stack: invoke, handler, routes, route */
    lua_pop(L, 2);
    /* the request object hooks get (moongate.runtime), theirs if they ran */
    lua_pushlightuserdata(L, r);
    mg_hooks_push_thread(L, r);
    mg_hooks_budget_begin(w, L);
    lw->in_lua++;
    int rc = lua_pcall(L, 3, 5, 0);
    lw->in_lua--;
    mg_hooks_budget_end(w);
    if (rc != 0 || !lua_toboolean(L, -5))
        mg_lua_relieve(L);
    if (rc != 0 || !lua_toboolean(L, -5)) {
        const char *msg = lua_tostring(L, lua_isstring(L, -4) ? -4 : -1);
        mg_log(MG_LOG_ERROR, "worker %d: request %s: handler of route %s failed: %s\n",
                w->id, r->request_id, r->route->name, msg ? msg : "?");
        lua_settop(L, top);
        mg_request_respond_error(r, 500, "handler error");
        return;
    }
    int status = (int)lua_tointeger(L, -4);
    size_t blen = 0, nf;
    const char *body = lua_tolstring(L, -3, &blen);
    mg_hfield_t *f = mg_hooks_answer_fields(L, lua_gettop(L) - 1, r, &nf);
    const char *ctype = lua_tostring(L, -1);
    /* the strings stay referenced on the stack until the answer is written */
    mg_request_respond(r, status, ctype ? ctype : "text/plain", body ? body : "", blen, f, nf);
    lua_settop(L, top);
}
