/* repl_fallback.c: weak stand-ins until repl.c provides the REPL (removed then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct lua_State;
__attribute__((weak)) int mg_repl_main(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "repl: not built\n"); return 2; }
__attribute__((weak)) int mg_repl_server_eval(struct lua_State *L, const char *code, size_t len, char **out, size_t *out_len) { (void)L; (void)code; (void)len; *out = strdup("repl not built\n"); *out_len = strlen(*out); return 0; }
