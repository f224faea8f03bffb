/* lua_state.c: see lua_state.h. */
#include "lua_state.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Computed once (pthread_once): workers may create states concurrently.
 * Empty when no candidate holds the library: the system Lua path is used. */
static char lua_dir[PATH_MAX + 32];
static char lua_dir_tried[3 * PATH_MAX + 64]; /* for mg_lua_dir_help() */
static pthread_once_t lua_dir_once = PTHREAD_ONCE_INIT;

/* Does dir hold moongate's library (dir/moongate/init.lua)? */
static int has_library(const char *dir)
{
    char f[PATH_MAX + 64];
    if (snprintf(f, sizeof(f), "%s/moongate/init.lua", dir) >= (int)sizeof(f))
        return 0;
    return access(f, R_OK) == 0;
}

static void tried(const char *dir)
{
    size_t len = strlen(lua_dir_tried);
    snprintf(lua_dir_tried + len, sizeof(lua_dir_tried) - len, "%s%s", len ? ", " : "", dir);
}

/* Takes candidate `dir` (made canonical) if it holds the library. */
static int take(const char *dir)
{
    char real[PATH_MAX];
    if (realpath(dir, real) == NULL || !has_library(real)) {
        tried(dir);
        return 0;
    }
    snprintf(lua_dir, sizeof(lua_dir), "%s", real);
    return 1;
}

/* The lookup order documented in README.md ("Installing"). */
static void find_lua_dir(void)
{
    const char *env = getenv("MOONGATE_LUA_DIR");
    char exe[PATH_MAX], cand[PATH_MAX + 32];

    if (env != NULL && env[0] != '\0') {
        /* an explicit choice is kept even when wrong: the error names it */
        snprintf(lua_dir, sizeof(lua_dir), "%s", env);
        size_t len = strlen(lua_dir);
        while (len > 1 && lua_dir[len - 1] == '/')
            lua_dir[--len] = '\0';
        if (!has_library(lua_dir)) {
            char what[PATH_MAX + 64];
            snprintf(what, sizeof(what), "%s (MOONGATE_LUA_DIR)", lua_dir);
            tried(what);
        }
        return;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0 && (size_t)n < sizeof(exe) - 1) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL)
            *slash = '\0';
        snprintf(cand, sizeof(cand), "%s/../lua", exe);
        if (take(cand))
            return;
        snprintf(cand, sizeof(cand), "%s/../share/moongate/lua", exe);
        if (take(cand))
            return;
    }
    lua_dir[0] = '\0'; /* package.path as LuaJIT has it (LUA_PATH) */
}

const char *mg_lua_dir_help(void)
{
    static char help[sizeof(lua_dir_tried) + 256];
    pthread_once(&lua_dir_once, find_lua_dir);
    snprintf(help, sizeof(help),
             "moongate's Lua library (moongate/init.lua) is not in %s%s; set MOONGATE_LUA_DIR "
             "to the directory that holds moongate/init.lua (the source tree's lua/, or "
             "PREFIX/share/moongate/lua)",
             lua_dir_tried[0] ? lua_dir_tried : "", lua_dir[0] ? "" : " nor on the Lua path");
    return help;
}

const char *mg_lua_dir(void)
{
    pthread_once(&lua_dir_once, find_lua_dir);
    return lua_dir;
}

/* Runs under lua_cpcall: a memory error here is caught, not a panic. */
static int setup(lua_State *L)
{
    const char *dir = lua_touserdata(L, 1);

    luaL_openlibs(L);
    /* A route's chain of policies runs as one trace, from the hook driver
     * through every policy: five bundled ones (cors, ip, key_auth, jwt,
     * limit) pass LuaJIT's defaults of 4000 recorded IR instructions and
     * 500 constants in one trace ("trace too long"), and an aborted trace
     * leaves the chain to the interpreter on every request. Twice the
     * defaults hold them. */
    lua_getglobal(L, "jit");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "opt");
        lua_getfield(L, -1, "start");
        lua_pushliteral(L, "maxrecord=8000");
        lua_pushliteral(L, "maxirconst=1000");
        lua_call(L, 2, 0);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (dir[0] == '\0')
        return 0; /* found nowhere: maybe on the system Lua path */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir,
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    return 0;
}

lua_State *mg_lua_open(void)
{
    lua_State *L = luaL_newstate();

    if (L == NULL)
        return NULL;
    if (lua_cpcall(L, setup, (void *)mg_lua_dir()) != 0) {
        lua_close(L);
        return NULL;
    }
    return L;
}

/* ---- the memory cap ----------------------------------------------------- */

/* Wraps LuaJIT's own allocator (kept: it is faster than malloc for Lua's
 * small blocks). One per capped state, owned by it; mg_lua_close frees it
 * after putting the original allocator back (LuaJIT releases its arena at
 * close only when its own allocator is in place). */
typedef struct {
    lua_Alloc f;
    void *ud;
    size_t used, limit;
    const int *active;  /* the cap applies while non-zero */
} heap_t;

static void *heap_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    heap_t *h = ud;
    if (p == NULL)
        osize = 0;
    /* only growth can be refused: a shrink or a free never fails */
    if (nsize > osize && *h->active && h->used + (nsize - osize) > h->limit)
        return NULL;
    void *q = h->f(h->ud, p, osize, nsize);
    if (q != NULL || nsize == 0)
        h->used = h->used - osize + nsize;
    return q;
}

int mg_lua_cap_memory(lua_State *L, size_t limit, const int *active)
{
    heap_t *h = malloc(sizeof(*h));
    if (h == NULL)
        return -1;
    h->f = lua_getallocf(L, &h->ud);
    h->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    h->limit = limit;
    h->active = active;
    lua_setallocf(L, heap_alloc, h);
    return 0;
}

void mg_lua_relieve(lua_State *L)
{
    void *ud;
    if (lua_getallocf(L, &ud) != heap_alloc)
        return;
    heap_t *h = ud;
    if (h->used > h->limit / 4 * 3)
        lua_gc(L, LUA_GCCOLLECT, 0);
}

void mg_lua_close(lua_State *L)
{
    void *ud;
    if (lua_getallocf(L, &ud) != heap_alloc) {
        lua_close(L);
        return;
    }
    heap_t *h = ud;
    lua_setallocf(L, h->f, h->ud);
    lua_close(L);
    free(h);
}
