/* repl.h: `moongate repl`, a Lua prompt with a config loaded (docs/repl.md).
 *
 * The sessions themselves are Lua (lua/moongate/repl.lua); this side reads
 * lines (libedit when stdin is a terminal), prints what the session
 * answers, talks to a running gateway's admin API for --attach, and gives
 * the admin API its POST /repl entry.
 */
#ifndef MG_REPL_H
#define MG_REPL_H

#include <stddef.h>

struct lua_State;

/* The `repl` command, its options parsed by main.c:
 *
 *   moongate repl [-c FILE]                        file: offline, FILE loaded
 *                                                  with moongate.testing
 *   moongate repl --attach HOST:PORT [--token T]   attach: each complete
 *                                                  chunk is sent as POST /repl
 *
 * (token NULL: $MOONGATE_ADMIN_TOKEN, if set). Reads stdin to its end:
 * interactive with prompts, history (~/.moongate_history) and Tab
 * completion when it is a terminal, plain lines otherwise. At the terminal
 * Ctrl-C cancels the line or chunk being typed (a running chunk: stops it);
 * `exit`, `quit` or Ctrl-D end the session. Returns the process exit code:
 * 0 at the end of input; 1 when the session cannot start (--attach: gateway
 * not reachable or token refused) and, when stdin is not a terminal, when
 * the config did not load or any chunk failed (a syntax or runtime error),
 * so that a script sees it; 2 for a bad HOST:PORT. */
int mg_repl_main(const char *file, const char *attach, const char *token);

/* POST /repl: runs chunk `code` (`len` bytes, a whole chunk) in the live
 * session of state L, creating it on first use; the session is kept in L's
 * registry and follows package.loaded["moongate.control"].file (and
 * .generation, when set: a new value reloads the session's copy of the
 * config). An empty chunk answers the session's banner.
 *
 * Returns 0 with *out (malloc'd, NUL-terminated, the caller frees) and
 * *out_len set to the session's output, user errors included ("repl:1:
 * attempt to ..."). Returns -ENOMEM (*out NULL) when out of memory, -EIO
 * with *out holding the reason when the session itself failed (its Lua
 * module missing, ...). Runs on the caller's thread and blocks it while the
 * chunk runs: at most 3 s of CPU, plus up to 5 s per `try { real = true }`
 * upstream call (socket timeouts). Leaves L's stack as it found it; never longjmps. */
int mg_repl_server_eval(struct lua_State *L, const char *code, size_t len, char **out,
                        size_t *out_len);

#endif
