/* repl.c: `moongate repl` (docs/repl.md) and the admin API's POST /repl.
 *
 * Everything a session does (loading the config with moongate.testing,
 * multi-line input, try, printing values) is lua/moongate/repl.lua; it
 * never prints, it returns text. This file is the terminal around it: it
 * reads lines, feeds them, writes the answers. Offline, the session lives
 * in a Lua state of our own. With --attach, a local check-only session
 * only says when a chunk is complete, and the chunk goes to the gateway's
 * admin API, whose answer is printed: the gateway runs it with
 * mg_repl_server_eval() in its own state.
 */
#include "usage.h"
#include "repl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include "admin_client.h"
#include "lua_state.h"

#define PROMPT "moongate> "
#define PROMPT_MORE "     ...> "
#define HISTORY_FILE ".moongate_history"
#define HISTORY_MAX 1000
#define ATTACH_TIMEOUT_S 60 /* > server budget (3 s) + real upstream calls */

static void usage(FILE *f)
{
    mg_usage_command(f, "repl");
}


/* Input ------------------------------------------------------------------ */

typedef struct {
    int interactive;    /* stdin is a terminal: libedit, prompts, history */
    char history[4096]; /* history file, "" for none */
    char *buf;          /* getline() buffer (non-interactive) */
    size_t cap;
} input_t;

static void input_open(input_t *in)
{
    memset(in, 0, sizeof(*in));
    in->interactive = isatty(STDIN_FILENO);
    if (!in->interactive)
        return;
    rl_readline_name = "moongate";
    using_history();
    stifle_history(HISTORY_MAX);
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(in->history, sizeof(in->history), "%s/%s", home, HISTORY_FILE);
        read_history(in->history);
    }
}

/* The next line, without its newline, malloc'd (the caller frees), or NULL
 * at the end of input. */
static char *input_line(input_t *in, int more)
{
    if (in->interactive) {
        char *line = readline(more ? PROMPT_MORE : PROMPT);
        if (line && line[strspn(line, " \t")] != '\0') {
            add_history(line);
            /* written at once: a Ctrl-C at the prompt ends the process */
            if (in->history[0])
                write_history(in->history);
        }
        return line;
    }
    ssize_t n = getline(&in->buf, &in->cap, stdin);
    if (n < 0)
        return NULL;
    if (n > 0 && in->buf[n - 1] == '\n')
        in->buf[--n] = '\0';
    if (n > 0 && in->buf[n - 1] == '\r')
        in->buf[--n] = '\0';
    return strdup(in->buf);
}

static void input_close(input_t *in)
{
    free(in->buf);
    in->buf = NULL;
    if (in->interactive)
        fputc('\n', stdout); /* after the ^D at the prompt */
}

static void put(const char *s, size_t len)
{
    fwrite(s, 1, len, stdout);
    fflush(stdout);
}


/* Sessions in our own state ------------------------------------------------ */

/* Ctrl-C while a chunk runs stops it (as lua.c does): the hook raises an
 * error at the next Lua instruction; the session prints it and goes on.
 * User chunks run interpreted (repl.lua turns the JIT off for them), so
 * the hook is reached; code compiled elsewhere may finish first. */
static lua_State *running;

static void interrupted_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void on_sigint(int sig)
{
    signal(sig, SIG_DFL); /* a second Ctrl-C ends the process */
    if (running)
        lua_sethook(running, interrupted_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Calls session:method(arg) with the session at stack index `s`, leaving
 * `nres` results on the stack. Returns 0, or -1 with the error message
 * printed to stderr (nothing left on the stack). */
static int call_method(lua_State *L, int s, const char *method, const char *arg, size_t len,
                       int nres, int interruptible)
{
    lua_pushcfunction(L, traceback);
    int eh = lua_gettop(L);
    lua_getfield(L, s, method);
    lua_pushvalue(L, s);
    int nargs = 1;
    if (arg) {
        lua_pushlstring(L, arg, len);
        nargs = 2;
    }
    if (interruptible) {
        running = L;
        signal(SIGINT, on_sigint);
    }
    int rc = lua_pcall(L, nargs, nres, eh);
    if (interruptible) {
        signal(SIGINT, SIG_DFL);
        running = NULL;
        lua_sethook(L, NULL, 0, 0);
    }
    lua_remove(L, eh);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "moongate repl: %s\n", msg ? msg : "error");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* Pushes require("moongate.repl").new(opts) where opts = { file = file }
 * or { check_only = true }. Returns 0, or -1 with the reason printed. */
static int push_session(lua_State *L, const char *file, int check_only)
{
    lua_pushcfunction(L, traceback);
    int eh = lua_gettop(L);
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "moongate.repl");
    if (lua_pcall(L, 1, 1, eh) != 0) {
        fprintf(stderr, "moongate repl: %s\n", lua_tostring(L, -1));
        lua_pop(L, 2);
        return -1;
    }
    lua_getfield(L, -1, "new");
    lua_createtable(L, 0, 2);
    if (file) {
        lua_pushstring(L, file);
        lua_setfield(L, -2, "file");
    }
    if (check_only) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "check_only");
    }
    if (lua_pcall(L, 1, 1, eh) != 0) {
        fprintf(stderr, "moongate repl: %s\n", lua_tostring(L, -1));
        lua_pop(L, 3);
        return -1;
    }
    lua_replace(L, eh); /* the session where the handler was */
    lua_pop(L, 1);      /* the module */
    return 0;
}

/* Offline: a session over `file` (or none) in a state of our own. */
static int run_offline(const char *file)
{
    lua_State *L = mg_lua_open();
    if (!L) {
        fprintf(stderr, "moongate repl: out of memory\n");
        return 1;
    }
    if (push_session(L, file, 0) != 0) {
        lua_close(L);
        return 1;
    }
    int s = lua_gettop(L);
    input_t in;
    input_open(&in);

    /* the banner greets a person; a script only hears of a bad config */
    lua_getfield(L, s, "loaded");
    int bad_config = file && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (in.interactive || bad_config) {
        if (call_method(L, s, "banner", NULL, 0, 1, 0) == 0) {
            size_t n;
            const char *b = lua_tolstring(L, -1, &n);
            fwrite(b, 1, n, in.interactive ? stdout : stderr);
            lua_pop(L, 1);
        }
    }

    int more = 0;
    char *line;
    while ((line = input_line(&in, more)) != NULL) {
        int rc = call_method(L, s, "feed", line, strlen(line), 2, 1);
        free(line);
        if (rc != 0) {
            more = 0;
            continue;
        }
        size_t n;
        const char *out = lua_tolstring(L, -2, &n);
        if (out)
            put(out, n);
        more = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    input_close(&in);
    if (call_method(L, s, "finish", NULL, 0, 1, 0) == 0) {
        size_t n;
        const char *out = lua_tolstring(L, -1, &n);
        put(out, n);
    }
    lua_close(L);
    return 0;
}


/* --attach: chunks go to the admin API ------------------------------------- */

typedef struct {
    char host[256];
    int port;
    const char *token; /* NULL: no Authorization header */
} admin_addr_t;

/* Sends one chunk as POST /repl and prints the answer to `out` (NULL: only
 * an error answer is printed, to stderr). Returns 0, or -1 when the gateway
 * could not be reached or refused us (the reason printed to stderr). */
static int attach_send(const admin_addr_t *a, const char *chunk, size_t len, FILE *out)
{
    int status = 0;
    char *answer = NULL;
    size_t alen = 0;
    const char *err = NULL;
    if (mg_admin_call(a->host, a->port, a->token, "POST", "/repl", chunk, len,
                      ATTACH_TIMEOUT_S * 1000, &status, &answer, &alen, &err) != 0) {
        fprintf(stderr, "moongate repl: %s:%d: %s\n", a->host, a->port, err);
        return -1;
    }
    int refused = status == 401 || status == 403 || status == 404 || status == 405;
    if (status != 200)
        fprintf(stderr, "moongate repl: the admin API answered %d%s\n", status,
                status == 401 || status == 403 ? " (wrong or missing --token)"
                : status == 404 || status == 405
                    ? " (no POST /repl there: is it moongate's admin API?)"
                    : "");
    if (!out && status != 200)
        out = stderr;
    if (out) {
        fwrite(answer, 1, alen, out);
        if (alen > 0 && answer[alen - 1] != '\n')
            fputc('\n', out);
        fflush(out);
    }
    free(answer);
    return refused ? -1 : 0;
}

static int run_attach(const char *addr, const char *token)
{
    admin_addr_t a;
    if (mg_admin_parse_addr(addr, a.host, sizeof(a.host), &a.port) != 0) {
        fprintf(stderr, "moongate repl: --attach takes HOST:PORT, got '%s'\n", addr);
        return 2;
    }
    a.token = token && *token ? token : NULL;
    input_t in;
    input_open(&in);
    /* an empty chunk answers the banner: it proves the gateway is there
     * and the token is right before anyone types */
    if (attach_send(&a, "", 0, in.interactive ? stdout : NULL) != 0) {
        input_close(&in);
        return 1;
    }
    lua_State *L = mg_lua_open();
    if (!L || push_session(L, NULL, 1) != 0) {
        if (L)
            lua_close(L);
        input_close(&in);
        return 1;
    }
    int s = lua_gettop(L);
    int more = 0;
    char *line;
    while ((line = input_line(&in, more)) != NULL) {
        int rc = call_method(L, s, "feed", line, strlen(line), 2, 0);
        free(line);
        if (rc != 0) {
            more = 0;
            continue;
        }
        size_t n;
        const char *chunk = lua_tolstring(L, -2, &n);
        more = lua_toboolean(L, -1);
        if (chunk)
            attach_send(&a, chunk, n, stdout); /* unreachable now: say so, go on */
        lua_pop(L, 2);
    }
    input_close(&in);
    if (call_method(L, s, "finish", NULL, 0, 1, 0) == 0) {
        size_t n;
        const char *out = lua_tolstring(L, -1, &n);
        put(out, n);
    }
    lua_close(L);
    return 0;
}


/* The command ------------------------------------------------------------ */

int mg_repl_main(int argc, char **argv)
{
    const char *file = NULL, *attach = NULL, *token = getenv("MOONGATE_ADMIN_TOKEN");
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(argv[i], "--attach") && i + 1 < argc) {
            attach = argv[++i];
        } else if (!strcmp(argv[i], "--token") && i + 1 < argc) {
            token = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "moongate repl: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (file && attach) {
        fprintf(stderr, "moongate repl: -c and --attach exclude each other (an attached "
                        "session uses the gateway's config)\n");
        return 2;
    }
    return attach ? run_attach(attach, token) : run_offline(file);
}


/* POST /repl --------------------------------------------------------------- */

/* registry key of the live session of a state: this variable's address */
static const char session_key;

struct eval_args {
    const char *code;
    size_t len;
};

/* Protected: the session (created on first use), session:eval(code). */
static int server_eval(lua_State *L)
{
    const struct eval_args *a = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, (void *)&session_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, LUA_GLOBALSINDEX, "require");
        lua_pushliteral(L, "moongate.repl");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "new");
        lua_createtable(L, 0, 1);
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "server");
        lua_call(L, 1, 1);
        lua_pushlightuserdata(L, (void *)&session_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_getfield(L, -1, "eval");
    lua_pushvalue(L, -2);
    lua_pushlstring(L, a->code, a->len);
    lua_call(L, 2, 1);
    if (!lua_isstring(L, -1))
        return luaL_error(L, "moongate.repl: session:eval returned %s", luaL_typename(L, -1));
    return 1;
}

static int copy_out(const char *s, size_t len, char **out, size_t *out_len)
{
    *out = malloc(len + 1);
    if (!*out)
        return -ENOMEM;
    memcpy(*out, s, len);
    (*out)[len] = '\0';
    *out_len = len;
    return 0;
}

int mg_repl_server_eval(struct lua_State *L, const char *code, size_t len, char **out,
                        size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    int top = lua_gettop(L);
    struct eval_args a = { code ? code : "", code ? len : 0 };
    if (!lua_checkstack(L, 8))
        return -ENOMEM;
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, server_eval);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 1, top + 1);
    size_t n = 0;
    const char *s = lua_tolstring(L, -1, &n);
    if (rc == LUA_ERRMEM) {
        lua_settop(L, top);
        return -ENOMEM;
    }
    if (!s) {
        s = "moongate.repl: error object is not a string";
        n = strlen(s);
    }
    int r = copy_out(s, n, out, out_len);
    lua_settop(L, top);
    if (r != 0)
        return r;
    return rc == 0 ? 0 : -EIO;
}
