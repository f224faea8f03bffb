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
 * and closes it with lua_close() (mg_lua_close() once capped). Safe to call
 * from any thread. */
lua_State *mg_lua_open(void);

/* Caps the heap of state L (made by mg_lua_open, nothing of it running) at
 * `limit` bytes while *active is non-zero: then an allocation past it
 * fails, which Lua raises as "not enough memory" (an error like any other:
 * the hook that allocated fails). The caller sets *active only around
 * protected runs (lua_pcall, lua_resume): its own pushes between them never
 * fail, and a failed allocation outside a protected call would abort the
 * process. The count starts with what L holds now. Returns 0, or -1 when
 * out of memory. A capped state must be closed with mg_lua_close. */
int mg_lua_cap_memory(lua_State *L, size_t limit, const int *active);

/* After a failed Lua run in a capped state: collects its garbage when the
 * heap is near the cap (LuaJIT does not collect when an allocation fails,
 * and its collector's pace would wait for more than the cap allows). */
void mg_lua_relieve(lua_State *L);

/* Closes L, capped or not. */
void mg_lua_close(lua_State *L);

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
