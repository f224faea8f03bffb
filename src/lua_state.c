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

/* Computed once (pthread_once): workers may create states concurrently. */
static char lua_dir[PATH_MAX + 8];
static pthread_once_t lua_dir_once = PTHREAD_ONCE_INIT;

static void find_lua_dir(void)
{
    const char *env = getenv("MOONGATE_LUA_DIR");
    char exe[PATH_MAX], real[PATH_MAX];
    char *slash;
    ssize_t n;
    size_t len;

    if (env != NULL && env[0] != '\0' && strlen(env) < sizeof(lua_dir)) {
        strcpy(lua_dir, env);
    } else {
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0 || (size_t)n >= sizeof(exe) - 1) {
            strcpy(lua_dir, "lua"); /* no /proc: relative to the cwd */
            return;
        }
        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash != NULL)
            *slash = '\0';
        /* a build tree (<exe>/../lua), else an install (make install, the
         * Debian package: <prefix>/bin and <prefix>/share/moongate/lua) */
        static const char *const rel[] = { "/../lua", "/../share/moongate/lua" };
        len = strlen(exe);
        static const char init[] = "/moongate/init.lua";
        char probe[sizeof(lua_dir) + sizeof(init)];
        for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
            size_t rl = strlen(rel[i]);
            if (len + rl >= sizeof(lua_dir))
                break;
            memcpy(lua_dir, exe, len);
            memcpy(lua_dir + len, rel[i], rl + 1);
            memcpy(probe, lua_dir, len + rl);
            memcpy(probe + len + rl, init, sizeof(init));
            if (access(probe, R_OK) == 0)
                break;
        }
        if (realpath(lua_dir, real) != NULL)
            strcpy(lua_dir, real);
    }
    len = strlen(lua_dir);
    while (len > 1 && lua_dir[len - 1] == '/')
        lua_dir[--len] = '\0';
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
