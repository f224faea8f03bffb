/* main.c: the moongate command line and the control thread.
 *
 *   moongate run [-c FILE] [--workers N]   serve (default: the bundled demo)
 *   moongate check -c FILE                 validate a config, exit 1 on mistakes
 *   moongate version                       versions of moongate and its libraries
 */
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

/* repl.c */
int mg_repl_main(int argc, char **argv);
#include "control.h"
#include "hooks.h"
#include "metrics.h"
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

/* Every 10 ms: stop hooks that run past their budget (hooks.c). */
static void on_watchdog(uv_timer_t *t)
{
    for (int i = 0; i < workers.n; i++)
        if (!workers.w[i].start_error)
            mg_hooks_watchdog(&workers.w[i]);
}

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

static int cmd_run(const char *file, int nworkers)
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
    mg_gen_t *gen = mg_gen_new(cfg, 1, &why); /* owns cfg from here */
    if (!gen) {
        fprintf(stderr, "moongate: %s: %s\n", file, why ? why : "cannot build the routes");
        mg_shdict_close_all();
        return 1;
    }
    cfg = gen->cfg;
    mg_metrics_init(n);
    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    char *err = NULL;
    if (mg_workers_start(&workers, gen, n, &err) != 0) {
        fprintf(stderr, "moongate: %s\n", err ? err : "cannot start");
        free(err);
        mg_gen_release(gen);
        mg_shdict_close_all();
        mg_metrics_free();
        return 1;
    }
    if (mg_control_start(&control, loop, file, gen, &workers, &err) != 0) {
        fprintf(stderr, "moongate: %s\n", err ? err : "cannot start");
        free(err);
        mg_workers_stop(&workers);
        mg_workers_join(&workers);
        mg_control_free(&control);
        mg_shdict_close_all();
        mg_metrics_free();
        return 1;
    }
    uv_timer_t watchdog;
    uv_timer_init(loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 10, 10);
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
    mg_control_free(&control);
    mg_shdict_close_all(); /* no worker is left to use them */
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    mg_metrics_free();
    mg_log(MG_LOG_NOTICE, "stopped\n");
    return 0;
}

/* moongate reload: asks the running gateway (its admin API, found in the
 * config's settings.admin unless --admin is given) to reload. */
static int cmd_reload(const char *file, const char *admin, const char *token)
{
    char host[256] = "127.0.0.1";
    int port = 9901;
    char *tok = token ? strdup(token) : NULL;
    if (admin) {
        if (mg_admin_parse_addr(admin, host, sizeof(host), &port) != 0) {
            fprintf(stderr, "moongate: --admin takes HOST:PORT, got '%s'\n", admin);
            free(tok);
            return 2;
        }
    } else if (file) {
        mg_config_t *cfg = NULL;
        char *errors = NULL;
        if (mg_config_load(file, &cfg, &errors) != 0) {
            fprintf(stderr, "%s", errors ? errors : "cannot load the config\n");
            free(errors);
            free(tok);
            return 1;
        }
        snprintf(host, sizeof(host), "%s", cfg->admin_host);
        port = cfg->admin_port;
        if (!tok && cfg->admin_token)
            tok = strdup(cfg->admin_token);
        mg_config_free(cfg);
    }
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    const char *err = NULL;
    int rc = mg_admin_call(host, port, tok, "POST", "/reload", "", 0, 30000, &status, &body,
                           &len, &err);
    free(tok);
    if (rc != 0) {
        fprintf(stderr, "moongate: %s:%d: %s\n", host, port, err);
        return 1;
    }
    /* {"ok":false,...,"error":"..."}: print the reason as text */
    const char *e = status != 200 ? strstr(body, "\"error\":\"") : NULL;
    if (e) {
        for (e += 9; *e && *e != '"'; e++) {
            if (*e == '\\' && e[1]) {
                e++;
                fputc(*e == 'n' ? '\n' : *e == 't' ? '\t' : *e, stderr);
            } else {
                fputc(*e, stderr);
            }
        }
        fputc('\n', stderr);
    } else {
        fwrite(body, 1, len, status == 200 ? stdout : stderr);
    }
    free(body);
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
    printf("%s: ok (%zu listeners, %zu upstreams, %zu routes, %d tests passed)\n", file,
           cfg->nlisteners, cfg->nupstreams, cfg->nroutes, ntests);
    mg_config_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    const char *file = NULL, *admin = NULL, *token = getenv("MOONGATE_ADMIN_TOKEN");
    int nworkers = 0;
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
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
    if (!strcmp(cmd, "repl"))
        return mg_repl_main(argc, argv);
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(argv[i], "--admin") && i + 1 < argc) {
            admin = argv[++i];
        } else if (!strcmp(argv[i], "--token") && i + 1 < argc) {
            token = argv[++i];
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            nworkers = atoi(argv[++i]);
            if (nworkers < 1 || nworkers > 1024) {
                fprintf(stderr, "moongate: --workers takes a number from 1 to 1024\n");
                return 2;
            }
        } else {
            fprintf(stderr, "moongate: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        print_version();
        return 0;
    }

    if (!strcmp(cmd, "run"))
        return cmd_run(file ? file : default_config(), nworkers);
    if (!strcmp(cmd, "check")) {
        if (!file) {
            fprintf(stderr, "moongate: check needs -c FILE\n");
            return 2;
        }
        return cmd_check(file);
    }
    if (!strcmp(cmd, "reload"))
        return cmd_reload(file, admin, token);
    fprintf(stderr, "moongate: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
