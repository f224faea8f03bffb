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
 *
 * At the terminal, Ctrl-C is ours (sigaction without SA_RESTART, so that
 * libedit's read returns): at the prompt it cancels the line or the chunk
 * being typed, while a chunk runs it stops the chunk; it never ends the
 * process there. Tab asks the session for completions (session:completions).
 */
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

#define QUIT_HINT "(to quit: exit, quit or Ctrl-D)\n"

/* Ctrl-C ------------------------------------------------------------------ */

/* Ctrl-C while a chunk runs stops it (as lua.c does): the hook raises an
 * error at the next Lua instruction; the session prints it and goes on.
 * User chunks run interpreted (repl.lua turns the JIT off for them), so
 * the hook is reached; code compiled elsewhere may finish first, and a
 * second Ctrl-C during the same chunk ends the process. */
static lua_State *volatile running;
static volatile sig_atomic_t stopping;    /* `running` was asked to stop */
static volatile sig_atomic_t sigint_seen; /* since the prompt was shown */

static void interrupted_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void on_sigint(int sig)
{
    sigint_seen = 1;
    lua_State *L = running;
    if (!L)
        return;
    if (stopping) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stopping = 1;
    lua_sethook(L, interrupted_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void catch_sigint(int on)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on ? on_sigint : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the prompt's read() returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}


/* Tab completion ------------------------------------------------------------ */

/* The session that completes (the one whose prompt is shown), and its
 * candidates for the word being completed: a Lua table in the registry. */
static lua_State *complete_L;
static int complete_s;                /* the session's stack index */
static int complete_ref = LUA_NOREF;  /* the candidates */
static int complete_next;

/* rl_completion_matches()'s generator: state 0 asks the session for the
 * candidates of `text`, every call returns the next one (malloc'd, libedit
 * frees it) or NULL. */
static char *complete_gen(const char *text, int state)
{
    lua_State *L = complete_L;
    if (!L)
        return NULL;
    if (state == 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, complete_ref);
        complete_ref = LUA_NOREF;
        complete_next = 1;
        lua_getfield(L, complete_s, "completions");
        lua_pushvalue(L, complete_s);
        lua_pushstring(L, text);
        if (lua_pcall(L, 2, 1, 0) != 0 || !lua_istable(L, -1)) {
            lua_pop(L, 1);
            return NULL;
        }
        complete_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (complete_ref == LUA_NOREF)
        return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, complete_ref);
    lua_rawgeti(L, -1, complete_next++);
    const char *c = lua_tostring(L, -1);
    char *r = c ? strdup(c) : NULL;
    lua_pop(L, 2);
    return r;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never file names */
    return rl_completion_matches(text, complete_gen);
}

/* Lua names are words with their dots and colons: "gw.http.re", "req:se" */
static char word_breaks[] = " \t\n\"\\'`@$><=;|&{(,[]})+-*/%^~#";


/* Input ------------------------------------------------------------------ */

typedef struct {
    int interactive;    /* stdin is a terminal: libedit, prompts, history */
    char history[4096]; /* history file, "" for none */
    char *buf;          /* getline() buffer (non-interactive) */
    size_t cap;
} input_t;

static int at_terminal; /* stdin is a terminal (set by input_open) */

/* what input_line() got */
enum { IN_LINE, IN_EOF, IN_INTERRUPTED };

static void input_open(input_t *in)
{
    memset(in, 0, sizeof(*in));
    in->interactive = at_terminal = isatty(STDIN_FILENO);
    if (!in->interactive)
        return;
    rl_readline_name = "moongate";
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = word_breaks;
    rl_completer_word_break_characters = word_breaks;
    rl_completion_append_character = '\0';
    using_history();
    stifle_history(HISTORY_MAX);
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(in->history, sizeof(in->history), "%s/%s", home, HISTORY_FILE);
        read_history(in->history);
    }
    catch_sigint(1);
}

/* Reads the next line into *line (malloc'd, the caller frees; without its
 * newline). Returns IN_LINE, IN_EOF at the end of input, or IN_INTERRUPTED
 * (*line NULL) when Ctrl-C was pressed at the prompt. */
static int input_line(input_t *in, int more, char **line)
{
    *line = NULL;
    if (in->interactive) {
        sigint_seen = 0;
        char *l = readline(more ? PROMPT_MORE : PROMPT);
        if (sigint_seen) {
            free(l);
            return IN_INTERRUPTED;
        }
        if (!l)
            return IN_EOF;
        if (l[strspn(l, " \t")] != '\0') {
            add_history(l);
            /* written at once: a crash or a kill keeps it */
            if (in->history[0])
                write_history(in->history);
        }
        *line = l;
        return IN_LINE;
    }
    ssize_t n = getline(&in->buf, &in->cap, stdin);
    if (n < 0)
        return IN_EOF;
    if (n > 0 && in->buf[n - 1] == '\n')
        in->buf[--n] = '\0';
    if (n > 0 && in->buf[n - 1] == '\r')
        in->buf[--n] = '\0';
    *line = strdup(in->buf);
    return *line ? IN_LINE : IN_EOF;
}

static void input_close(input_t *in, int at_eof)
{
    free(in->buf);
    in->buf = NULL;
    if (in->interactive) {
        if (at_eof)
            fputc('\n', stdout); /* after the ^D at the prompt */
        catch_sigint(0);
    }
}

static void put(const char *s, size_t len)
{
    fwrite(s, 1, len, stdout);
    fflush(stdout);
}


/* Sessions in our own state ------------------------------------------------ */

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
    /* at the terminal Ctrl-C is always ours; in a pipe only while a
     * chunk runs (at getline() it ends the process, as it should) */
    int own = interruptible && !at_terminal;
    if (interruptible) {
        stopping = 0;
        running = L;
        if (own)
            catch_sigint(1);
        /* a Ctrl-C after the line was read but before this call began found
         * nothing running: it meant this chunk, so stop it at once (a second
         * one in the window still ends the process: stopping is set) */
        if (at_terminal && sigint_seen && !stopping) {
            stopping = 1;
            lua_sethook(L, interrupted_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
        }
    }
    int rc = lua_pcall(L, nargs, nres, eh);
    if (interruptible) {
        if (own)
            catch_sigint(0);
        running = NULL;
        lua_sethook(L, NULL, 0, 0);
        sigint_seen = 0; /* this Ctrl-C is spent: not the next call's */
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

static int session_flag(lua_State *L, int s, const char *field)
{
    lua_getfield(L, s, field);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

typedef struct admin_addr_s admin_addr_t;
static int attach_send(const admin_addr_t *a, const char *chunk, size_t len, FILE *out);

/* Reads lines to the end of input (or exit/quit) and feeds them to the
 * session at stack index `s`: offline (a NULL) it runs them and prints the
 * output; attached, the complete chunks it hands back go to the gateway.
 * Closes `in`. Returns 1 when a chunk failed (syntax or runtime error, or
 * one left open at the end), else 0. */
static int session_loop(lua_State *L, int s, input_t *in, const admin_addr_t *a)
{
    complete_L = L;
    complete_s = s;
    int more = 0, failed = 0, st;
    char *line;
    while ((st = input_line(in, more, &line)) != IN_EOF) {
        if (st == IN_INTERRUPTED) {
            /* like a shell: the line (and chunk) typed so far is dropped */
            if (more)
                call_method(L, s, "cancel", NULL, 0, 0, 0);
            const char *say = more ? "^C\n" : "^C\n" QUIT_HINT;
            put(say, strlen(say));
            more = 0;
            continue;
        }
        int rc = call_method(L, s, "feed", line, strlen(line), 2, a == NULL);
        free(line);
        if (rc != 0) {
            failed = 1;
            more = 0;
            continue;
        }
        size_t n;
        const char *out = lua_tolstring(L, -2, &n);
        more = lua_toboolean(L, -1);
        if (out && a)
            failed |= attach_send(a, out, n, stdout) != 0; /* unreachable now: say so, go on */
        else if (out)
            put(out, n);
        lua_pop(L, 2);
        if (session_flag(L, s, "quit"))
            break;
    }
    input_close(in, st == IN_EOF);
    if (call_method(L, s, "finish", NULL, 0, 1, 0) == 0) {
        size_t n;
        const char *out = lua_tolstring(L, -1, &n);
        put(out, n);
        lua_pop(L, 1);
    }
    lua_getfield(L, s, "failed");
    failed |= lua_tointeger(L, -1) > 0;
    lua_pop(L, 1);
    complete_L = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, complete_ref);
    complete_ref = LUA_NOREF;
    return failed;
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

    int failed = session_loop(L, s, &in, NULL) || bad_config;
    lua_close(L);
    return failed && !in.interactive ? 1 : 0;
}


/* --attach: chunks go to the admin API ------------------------------------- */

struct admin_addr_s {
    char host[256];
    int port;
    const char *token; /* NULL: no Authorization header */
};

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
        input_close(&in, 0);
        return 1;
    }
    lua_State *L = mg_lua_open();
    if (!L || push_session(L, NULL, 1) != 0) {
        if (L)
            lua_close(L);
        input_close(&in, 0);
        return 1;
    }
    int failed = session_loop(L, lua_gettop(L), &in, &a);
    lua_close(L);
    return failed && !in.interactive ? 1 : 0;
}


/* The command ------------------------------------------------------------ */

int mg_repl_main(const char *file, const char *attach, const char *token)
{
    if (!token)
        token = getenv("MOONGATE_ADMIN_TOKEN");
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
