/* lua_route.c: a worker's Lua state for one generation, and routes
 * answered by Lua handlers.
 *
 * The state runs the config file once when the generation is built; the normalised
 * config table it returns stays in the registry so that route i's handler
 * is cfg.routes[i + 1].handler. Requests reach a handler as a plain table
 * (this path serves demo services and tests, not the proxy hot path).
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
    if (mg_config_run_lua(L, g->cfg->file, err) != 0) {
        lua_close(L);
        free(lw);
        return -1;
    }
    g->lua = lw;
    if (mg_hooks_init(g, err) != 0) {
        g->lua = NULL;
        lua_close(L);
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
        lua_close(L);
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
    lua_close(lw->L);
    free(lw);
    g->lua = NULL;
}

static void push_request(lua_State *L, mg_conn_t *c)
{
    mg_request_t *r = c->r;
    lua_createtable(L, 0, 8);
    lua_pushlstring(L, mg_conn_data(c, r->method), r->method.len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, r->path, r->path_len);
    lua_setfield(L, -2, "path");
    lua_pushlstring(L, r->query_len ? r->query + 1 : "", r->query_len ? r->query_len - 1 : 0);
    lua_setfield(L, -2, "query");
    lua_pushlstring(L, r->request_id, r->request_id_len);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, c->client_ip);
    lua_setfield(L, -2, "client");
    lua_pushstring(L, mg_conn_tls(c) ? "https" : "http");
    lua_setfield(L, -2, "scheme");
    lua_createtable(L, 0, (int)r->nheaders);
    for (uint32_t i = 0; i < r->nheaders; i++) {
        char name[256];
        mg_span_t n = r->headers[i].name;
        size_t nl = n.len < sizeof(name) ? n.len : sizeof(name) - 1;
        for (size_t k = 0; k < nl; k++) {
            char ch = mg_conn_data(c, n)[k];
            name[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        lua_pushlstring(L, name, nl);
        lua_rawget(L, -2);
        if (lua_isstring(L, -1)) { /* repeated header: join with ", " */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, mg_conn_data(c, r->headers[i].value), r->headers[i].value.len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, mg_conn_data(c, r->headers[i].value), r->headers[i].value.len);
        }
        lua_pushlstring(L, name, nl);
        lua_insert(L, -2);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    lua_createtable(L, 0, (int)r->match.nparams);
    for (size_t i = 0; i < r->match.nparams; i++) {
        lua_pushlstring(L, r->match.params[i].name, r->match.params[i].name_len);
        lua_pushlstring(L, r->match.params[i].value, r->match.params[i].value_len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "params");
}

void mg_lua_route_call(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    mg_worker_t *w = c->w;
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
    push_request(L, c);
    if (lua_pcall(L, 2, 5, 0) != 0 || !lua_toboolean(L, -5)) {
        const char *msg = lua_tostring(L, lua_isstring(L, -4) ? -4 : -1);
        mg_log(MG_LOG_ERROR, "worker %d: request %s: handler of route %s failed: %s\n",
                w->id, r->request_id, r->route->name, msg ? msg : "?");
        lua_settop(L, top);
        mg_conn_respond_error(c, 500, "handler error");
        return;
    }
    int status = (int)lua_tointeger(L, -4);
    size_t blen = 0, hlen = 0;
    const char *body = lua_tolstring(L, -3, &blen);
    const char *hdrs = lua_tolstring(L, -2, &hlen);
    const char *ctype = lua_tostring(L, -1);
    /* the strings stay referenced on the stack until the answer is written */
    mg_conn_respond(c, status, ctype ? ctype : "text/plain", body ? body : "", blen, hdrs, hlen);
    lua_settop(L, top);
}
