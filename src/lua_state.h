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

/* The directory holding moongate's Lua modules, looked up once (at the
 * first call) in this order: $MOONGATE_LUA_DIR when set (taken as given),
 * else the first of "<dir of the executable>/../lua" (the source tree) and
 * "<dir of the executable>/../share/moongate/lua" (make install) that holds
 * moongate/init.lua, canonicalised. "" when neither does: the states then
 * rely on LuaJIT's own package.path (LUA_PATH, the system Lua directories).
 * A static string, never NULL. */
const char *mg_lua_dir(void);

/* What to tell the user when moongate's modules cannot be required: where
 * they were looked for and to set MOONGATE_LUA_DIR. A static string. */
const char *mg_lua_dir_help(void);

#endif
