/* main.c: the moongate command line and the control thread.
 *
 *   moongate run [-c FILE] [--workers N] [--admin HOST:PORT|off]
 *                                          serve (default: the bundled demo)
 *   moongate check -c FILE                 validate a config, exit 1 on mistakes
 *   moongate reload [-c FILE] [--json]     reload a running gateway (admin API)
 *   moongate repl [-c FILE | --attach H:P]   the REPL (repl.c)
 *   moongate version                       versions of moongate and its libraries
 *
 * Every command's options are parsed here, from one table: a mistake is
 * answered with the option's fix ("-c needs a file (moongate check -c
 * gateway.lua)"), exit code 2. (Their help text: usage.c.)
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <luajit.h>
#include <openssl/opensslv.h>
#include <uv.h>
#include <llhttp.h>
#include "errlog.h"
#include "config.h"
#include "admin_client.h"

#include "control.h"
#include "hooks.h"
#include "metrics.h"
#include "otlp.h"
#include "tracing.h"
#include "metrics_user.h"
#include "repl.h"
#include "lua_state.h"
#include "shdict.h"
#include "worker.h"

#include "usage.h"
#include "version.h"

static void usage(FILE *f)
{
    mg_usage(f);
}

static void print_version(void)
{
    printf("moongate %s\n%s\nlibuv %s\nllhttp %d.%d.%d\n%s\n", MG_VERSION, LUAJIT_VERSION,
           uv_version_string(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
           LLHTTP_VERSION_PATCH, OPENSSL_VERSION_TEXT);
}

static char demo_path[4096];

static const char *default_config(void)
{
    snprintf(demo_path, sizeof(demo_path), "%s/../examples/msa/gateway.lua", mg_lua_dir());
    return demo_path;
}

static mg_workers_t workers;
static int stop_requested;

static void on_signal(uv_signal_t *s, int signum)
{
    if (stop_requested++) {
        mg_log(MG_LOG_WARN, "second signal, exiting now\n");
        _exit(1);
    }
    mg_log(MG_LOG_NOTICE, "%s, finishing in-flight requests\n",
            signum == SIGTERM ? "SIGTERM" : "SIGINT");
    mg_workers_stop(&workers);
    uv_stop(s->loop);
}

static mg_control_t control;

static int cmd_run(const char *file, int nworkers, const char *admin)
{
    mg_config_t *cfg = NULL;
    char *errors = NULL;
    if (mg_config_load(file, &cfg, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "moongate: cannot load the config\n");
        free(errors);
        return 1;
    }
    mg_log_set_level(cfg->log_level);
    int lrc = mg_errlog_open(cfg->error_log);
    if (lrc != 0) {
        fprintf(stderr, "moongate: %s: settings.error_log %s: %s (a file the gateway can "
                "create or append to)\n", file, cfg->error_log, strerror(-lrc));
        mg_config_free(cfg);
        return 1;
    }
    int n = nworkers > 0       ? nworkers
            : cfg->workers > 0 ? cfg->workers
                               : (int)uv_available_parallelism();
    if (n < 1)
        n = 1;
    signal(SIGPIPE, SIG_IGN);
    /* shared dictionaries live in the process, not in a config: a reload
     * finds the same ones (a new name is created, an old one kept) */
    for (size_t i = 0; i < cfg->nshared_dicts; i++) {
        const mg_shared_dict_decl_t *sd = &cfg->shared_dicts[i];
        mg_shdict_t *d = mg_shdict_open(sd->name, (size_t)sd->size);
        if (d == NULL) {
            fprintf(stderr, "moongate: shared dict %s: out of memory\n", sd->name);
            mg_shdict_close_all();
            mg_config_free(cfg);
            return 1;
        }
    }
    const char *why = NULL;
    mg_umetrics_init(n); /* before the first generation acquires its metrics */
    mg_gen_t *gen = mg_gen_new(cfg, 1, &why); /* owns cfg from here */
    if (!gen) {
        fprintf(stderr, "moongate: %s: %s\n", file, why ? why : "cannot build the routes");
        mg_shdict_close_all();
        return 1;
    }
    cfg = gen->cfg;
    mg_metrics_init(n);
    const char *terr = NULL;
    if (mg_tracing_init(n) != 0 || mg_tracing_prepare(cfg, &terr) != 0) {
        fprintf(stderr, "moongate: %s\n", terr ? terr : "out of memory");
        mg_gen_release(gen);
        mg_tracing_free();
        mg_shdict_close_all();
        mg_metrics_free();
        return 1;
    }
    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    char *err = NULL;
    /* the control side first: its admin API must listen before any
     * listener does (a gateway without it does not start) */
    if (mg_control_start(&control, loop, file, gen, &workers, admin, &err) != 0) {
        mg_log(MG_LOG_CRIT, "not starting: %s\n", err ? err : "cannot start");
        free(err);
        uv_run(loop, UV_RUN_NOWAIT); /* close callbacks of a half-started admin API */
        mg_control_free(&control);   /* releases gen */
        mg_shdict_close_all();
        mg_tracing_free();
        mg_metrics_free();
        return 1;
    }
    if (mg_workers_start(&workers, gen, n, &err) != 0) {
        fprintf(stderr, "moongate: %s\n", err ? err : "cannot start");
        free(err);
        mg_control_stop(&control);
        uv_run(loop, UV_RUN_NOWAIT);
        mg_control_free(&control);
        mg_shdict_close_all();
        mg_tracing_free();
        mg_metrics_free();
        return 1;
    }
    mg_control_watch_hooks(&control);
    mg_otlp_apply(gen);
    for (size_t i = 0; i < cfg->nlisteners; i++)
        mg_log(MG_LOG_INFO, "listening on %s:%u (%d workers)\n", cfg->listeners[i].host,
                cfg->listeners[i].port, n);
    uv_run(loop, UV_RUN_DEFAULT);
    uint64_t deadline = control.gen->cfg->timeouts.shutdown + 2000;
    mg_control_stop(&control);
    /* a worker stuck in a hook would never end: do not wait for it forever */
    if (mg_workers_join_within(&workers, deadline) < 0) {
        mg_log(MG_LOG_WARN, "a worker did not stop (stuck in a hook); exiting anyway\n");
        _exit(1);
    }
    mg_otlp_stop(); /* the last spans go (a second at most) */
    mg_tracing_free();
    mg_control_free(&control);
    mg_shdict_close_all(); /* no worker is left to use them */
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    mg_metrics_free();
    mg_log(MG_LOG_NOTICE, "stopped\n");
    return 0;
}

/* The string value of top-level key `name` in one of our admin answers,
 * unescaped into out (cap bytes). Returns 0, or -1 when absent. (Our
 * answers escape every quote inside strings, so `"name":"` cannot match
 * inside a value.) */
static int json_str(const char *body, const char *name, char *out, size_t cap)
{
    char key[64];
    snprintf(key, sizeof(key), "\"%s\":\"", name);
    const char *e = strstr(body, key);
    if (!e || cap == 0)
        return -1;
    size_t o = 0;
    for (e += strlen(key); *e && *e != '"' && o + 4 < cap; e++) {
        unsigned u;
        if (e[0] == '\\' && e[1] == 'u' && sscanf(e + 2, "%4x", &u) == 1 && strlen(e) >= 6) {
            /* control characters come as \u00XX; others (BMP) as UTF-8 */
            if (u < 0x80) {
                out[o++] = (char)u;
            } else if (u < 0x800) {
                out[o++] = (char)(0xC0 | (u >> 6));
                out[o++] = (char)(0x80 | (u & 0x3F));
            } else {
                out[o++] = (char)(0xE0 | (u >> 12));
                out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (u & 0x3F));
            }
            e += 5;
        } else if (*e == '\\' && e[1]) {
            e++;
            out[o++] = *e == 'n' ? '\n' : *e == 't' ? '\t' : *e;
        } else {
            out[o++] = *e;
        }
    }
    out[o] = 0;
    return 0;
}

/* Appends s to out, percent-encoded for a query value. */
static void query_escape(char *out, size_t cap, const char *s)
{
    size_t o = strlen(out);
    for (; *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~/", ch))
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", ch);
    }
    out[o] = 0;
}

/* The pid of a `moongate run -c X` whose X is the file at `abs` (X read
 * relative to that process's working directory), or 0 (Linux /proc; only
 * processes we may inspect). For the advice when FILE has no admin API. */
static long find_run_pid(const char *abs)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    long found = 0;
    while (d && !found && (e = readdir(d))) {
        char path[64], args[8192], cwd[4096];
        long pid = strtol(e->d_name, NULL, 10);
        if (pid <= 0 || pid == (long)getpid())
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(args, 1, sizeof(args) - 1, f) : 0;
        if (f)
            fclose(f);
        args[n] = 0;
        /* argv: NUL-separated; look for "moongate", "run", "-c" X */
        const char *argv0 = args, *conf = NULL;
        int run = 0;
        for (size_t i = 0; i < n; i += strlen(args + i) + 1) {
            const char *a = args + i;
            if (i > 0 && !strcmp(a, "run"))
                run = 1;
            if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + strlen(a) + 1 < n)
                conf = a + strlen(a) + 1;
        }
        if (!strstr(argv0, "moongate") || !run || !conf)
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/cwd", pid);
        ssize_t cl = readlink(path, cwd, sizeof(cwd) - 1);
        if (cl < 0)
            continue;
        cwd[cl] = 0;
        char full[8192];
        snprintf(full, sizeof(full), conf[0] == '/' ? "%s" : "%s/%s",
                 conf[0] == '/' ? conf : cwd, conf);
        char *real = realpath(full, NULL);
        if (real && !strcmp(real, abs))
            found = pid;
        free(real);
    }
    if (d)
        closedir(d);
    return found;
}

/* moongate reload: asks a running gateway to reload, through its admin API.
 * With -c FILE, the address and token come from FILE's settings.admin, and
 * the request names FILE (POST /reload?file=ABSOLUTE-PATH): a gateway
 * running another file refuses (409), so the one that happens to answer on
 * that address is never reloaded by mistake. --admin HOST:PORT overrides
 * the address; without -c, whatever answers there is reloaded. --json
 * prints the admin API's answer as it is. */
static int cmd_reload(const char *file, const char *admin, const char *token, int json)
{
    char host[256] = "127.0.0.1";
    int port = 9901;
    char *tok = token ? strdup(token) : NULL;
    char path[16384] = "/reload";
    char *abs = NULL;
    if (admin && mg_admin_parse_addr(admin, host, sizeof(host), &port) != 0) {
        fprintf(stderr, "moongate: --admin takes HOST:PORT, got '%s'\n", admin);
        free(tok);
        return 2;
    }
    if (file) {
        mg_config_t *cfg = NULL;
        char *errors = NULL;
        if (mg_config_load(file, &cfg, &errors) != 0) {
            fprintf(stderr, "%s", errors ? errors : "cannot load the config\n");
            free(errors);
            free(tok);
            return 1;
        }
        if (!cfg->admin_enabled && !admin) {
            char *real = realpath(file, NULL);
            long pid = real ? find_run_pid(real) : 0;
            free(real);
            char how[64] = "kill -HUP <its pid>";
            if (pid)
                snprintf(how, sizeof(how), "kill -HUP %ld", pid);
            fprintf(stderr,
                    "moongate: %s sets admin = false, so no admin API can reload it: reload "
                    "its gateway with %s, or save the file (it is watched)\n",
                    file, how);
            mg_config_free(cfg);
            free(tok);
            return 1;
        }
        if (!admin) {
            snprintf(host, sizeof(host), "%s", cfg->admin_host);
            if (!strcmp(host, "localhost"))
                snprintf(host, sizeof(host), "127.0.0.1");
            else if (!strcmp(host, "0.0.0.0"))
                snprintf(host, sizeof(host), "127.0.0.1"); /* wildcard: reach it locally */
            else if (!strcmp(host, "::"))
                snprintf(host, sizeof(host), "::1");
            port = cfg->admin_port;
        }
        if (!tok && cfg->admin_token)
            tok = strdup(cfg->admin_token);
        mg_config_free(cfg);
        abs = realpath(file, NULL);
        if (!abs) {
            fprintf(stderr, "moongate: %s: cannot resolve its path\n", file);
            free(tok);
            return 1;
        }
        strcat(path, "?file=");
        query_escape(path, sizeof(path), abs);
    }
    /* --token, else FILE's, else the environment's */
    const char *env = getenv("MOONGATE_ADMIN_TOKEN");
    if (!tok && env && *env)
        tok = strdup(env);
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    const char *err = NULL;
    char where[300];
    snprintf(where, sizeof(where), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    int rc = mg_admin_call(host, port, tok, "POST", path, "", 0, 30000, &status, &body, &len,
                           &err);
    free(tok);
    if (rc != 0) {
        if (file)
            fprintf(stderr, "moongate: %s (%s's admin address): %s\n", where, file, err);
        else
            fprintf(stderr, "moongate: %s: %s\n", where, err);
        free(abs);
        return 1;
    }
    if (json) {
        fwrite(body, 1, len, stdout);
        free(body);
        free(abs);
        return status == 200 ? 0 : 1;
    }
    static char msg[65536], other[8192];
    if (status == 200) {
        if (json_str(body, "message", msg, sizeof(msg)) == 0)
            printf("%s\n", msg);
        else
            fwrite(body, 1, len, stdout); /* an older gateway */
    } else if (status == 409 && json_str(body, "file", other, sizeof(other)) == 0) {
        fprintf(stderr, "moongate: the gateway on %s runs %s, not %s: not reloading it "
                        "(each gateway needs its own admin port)\n",
                where, other, abs ? abs : "this file");
    } else if (status == 422 && json_str(body, "error", msg, sizeof(msg)) == 0) {
        fprintf(stderr, "%s\n", msg); /* file:line: reason lines */
    } else {
        if (json_str(body, "error", msg, sizeof(msg)) != 0)
            snprintf(msg, sizeof(msg), "%.*s", (int)(len < 2000 ? len : 2000), body);
        fprintf(stderr, "moongate: the admin API on %s answered %d: %s\n", where, status, msg);
    }
    free(body);
    free(abs);
    return status == 200 ? 0 : 1;
}

static int cmd_check(const char *file)
{
    mg_config_t *cfg = NULL;
    char *errors = NULL;
    if (mg_config_load(file, &cfg, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "cannot load the config\n");
        free(errors);
        return 1;
    }
    int ntests = 0;
    char *terr = NULL;
    if (mg_control_selftest(file, &ntests, &terr) != 0) {
        fprintf(stderr, "%s\n", terr ? terr : "the config's tests failed");
        free(terr);
        mg_config_free(cfg);
        return 1;
    }
    if (cfg->warnings)
        fprintf(stderr, "%s", cfg->warnings);
    printf("%s: ok (%zu listeners, %zu upstreams, %zu routes, %d tests passed)\n", file,
           cfg->nlisteners, cfg->nupstreams, cfg->nroutes, ntests);
    mg_config_free(cfg);
    return 0;
}

/* ---- arguments ------------------------------------------------------------- */

/* Every option of every command: what its value is called in an error and
 * an example of it, so that a mistake is answered with the fix. */
typedef struct {
    const char *name, *alias; /* alias: NULL for none */
    const char *needs;        /* "-c needs a file"; NULL: a flag, no value */
    const char *example;      /* "-c gateway.lua" */
} option_t;

enum { OPT_CONFIG, OPT_WORKERS, OPT_ADMIN, OPT_TOKEN, OPT_ATTACH, OPT_JSON, OPT__COUNT };

static const option_t options[OPT__COUNT] = {
    [OPT_CONFIG] = { "-c", "--config", "a file", "gateway.lua" },
    [OPT_WORKERS] = { "--workers", NULL, "a number from 1 to 1024", "4" },
    [OPT_ADMIN] = { "--admin", NULL, "HOST:PORT", "127.0.0.1:9901" },
    [OPT_TOKEN] = { "--token", NULL, "the admin API's token", "\"$ADMIN_TOKEN\"" },
    [OPT_ATTACH] = { "--attach", NULL, "HOST:PORT", "127.0.0.1:9901" },
    [OPT_JSON] = { "--json", NULL, NULL, NULL },
};

#define O(x) (1u << (x))

typedef struct {
    const char *name;
    unsigned takes; /* O(OPT_...) bits */
} command_t;

/* (their help text and synopses: usage.c) */
static const command_t commands[] = {
    { "run", O(OPT_CONFIG) | O(OPT_WORKERS) | O(OPT_ADMIN) },
    { "check", O(OPT_CONFIG) },
    { "reload", O(OPT_CONFIG) | O(OPT_ADMIN) | O(OPT_TOKEN) | O(OPT_JSON) },
    { "repl", O(OPT_CONFIG) | O(OPT_ATTACH) | O(OPT_TOKEN) },
    { "version", 0 },
};

static const command_t *find_command(const char *name)
{
    if (!strcmp(name, "--version"))
        name = "version";
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static int find_option(const char *arg)
{
    for (int i = 0; i < OPT__COUNT; i++)
        if (!strcmp(arg, options[i].name) || (options[i].alias && !strcmp(arg, options[i].alias)))
            return i;
    return -1;
}

/* Parses argv[2..] for command `cmd` into val[OPT_*]. Returns 0, or 2 with
 * the mistake and its fix printed. A value that is itself one of our
 * options counts as missing ("check -c --workers 2"). */
static int parse_options(const command_t *cmd, int argc, char **argv, const char *val[OPT__COUNT])
{
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            mg_usage_command(stdout, cmd->name);
            exit(0);
        }
        int o = find_option(argv[i]);
        if (o < 0 && argv[i][0] != '-' && (cmd->takes & O(OPT_CONFIG))) {
            fprintf(stderr, "moongate %s: unknown argument '%s' (a config file goes after -c: "
                            "moongate %s -c %s)\n", cmd->name, argv[i], cmd->name, argv[i]);
            return 2;
        }
        if (o < 0) {
            fprintf(stderr, "moongate %s: unknown argument '%s' (usage: moongate %s)\n",
                    cmd->name, argv[i], mg_usage_synopsis(cmd->name));
            return 2;
        }
        const option_t *op = &options[o];
        if (!(cmd->takes & O(o))) {
            fprintf(stderr, "moongate %s: %s is not an option of %s (usage: moongate %s)\n",
                    cmd->name, argv[i], cmd->name, mg_usage_synopsis(cmd->name));
            return 2;
        }
        if (!op->needs) {
            val[o] = argv[i]; /* a flag: set */
            continue;
        }
        if (i + 1 >= argc || find_option(argv[i + 1]) >= 0) {
            fprintf(stderr, "moongate %s: %s needs %s (moongate %s %s %s)\n", cmd->name, argv[i],
                    op->needs, cmd->name, op->name, op->example);
            return 2;
        }
        if (val[o]) {
            fprintf(stderr, "moongate %s: %s given twice\n", cmd->name, op->name);
            return 2;
        }
        val[o] = argv[++i];
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (argc < 3) {
            usage(stdout);
            return 0;
        }
        if (mg_usage_command(stdout, argv[2]) != 0) {
            fprintf(stderr, "moongate: no command '%s' (moongate help lists them)\n", argv[2]);
            return 2;
        }
        return 0;
    }
    const command_t *cmd = find_command(argv[1]);
    if (!cmd) {
        fprintf(stderr, "moongate: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    const char *val[OPT__COUNT] = { 0 };
    if (parse_options(cmd, argc, argv, val) != 0)
        return 2;
    const char *file = val[OPT_CONFIG];
    if (!strcmp(cmd->name, "version")) {
        print_version();
        return 0;
    }
    if (!strcmp(cmd->name, "repl")) {
        if (file && val[OPT_ATTACH]) {
            fprintf(stderr, "moongate repl: -c and --attach exclude each other (an attached "
                            "session uses the gateway's config)\n");
            return 2;
        }
        return mg_repl_main(file, val[OPT_ATTACH], val[OPT_TOKEN]);
    }
    if (!strcmp(cmd->name, "run")) {
        int nworkers = 0;
        if (val[OPT_WORKERS]) {
            char *end = NULL;
            long n = strtol(val[OPT_WORKERS], &end, 10);
            if (*val[OPT_WORKERS] == '\0' || *end != '\0' || n < 1 || n > 1024) {
                fprintf(stderr, "moongate run: --workers takes a number from 1 to 1024, got '%s'\n",
                        val[OPT_WORKERS]);
                return 2;
            }
            nworkers = (int)n;
        }
        return cmd_run(file ? file : default_config(), nworkers, val[OPT_ADMIN]);
    }
    if (!strcmp(cmd->name, "check")) {
        if (!file) {
            fprintf(stderr, "moongate check: needs a config file (moongate check -c gateway.lua)\n");
            return 2;
        }
        return cmd_check(file);
    }
    /* (cmd_reload: --token, else FILE's, else $MOONGATE_ADMIN_TOKEN) */
    return cmd_reload(file, val[OPT_ADMIN], val[OPT_TOKEN], val[OPT_JSON] != NULL);
}
