/* lua_state.h: creating the LuaJIT states moongate runs Lua in.
 *
 * Every state (the config loader's, each worker's) is made here so that all
 * of them find moongate's Lua modules (lua/moongate/) the same way.
 */
#ifndef MG_LUA_STATE_H
#define MG_LUA_STATE_H

#include <lua.h>

/* Creates a LuaJIT state with the standard libraries open and
 * "<dir>/?.lua;<dir>/?/init.lua;" prepended to package.path, dir being
 * mg_lua_dir(). Returns NULL when out of memory. The caller owns the state
 * and closes it with lua_close(). Safe to call from any thread. */
lua_State *mg_lua_open(void);

/* The directory holding moongate's Lua modules: $MOONGATE_LUA_DIR if set
 * (read once, at the first call), else "<dir of the executable>/../lua"
 * (canonicalised when it exists). A static string, never NULL. */
const char *mg_lua_dir(void);

#endif
