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
#include "config.h"
#include "hooks.h"
#include "lua_state.h"
#include "shdict.h"
#include "worker.h"

#define MG_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moongate <command> [options]\n"
            "  run [-c FILE] [--workers N]   serve FILE (default: the bundled demo)\n"
            "  check -c FILE                 validate FILE; print file:line: reason per mistake\n"
            "  version                       print versions\n");
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
        fprintf(stderr, "moongate: second signal, exiting now\n");
        _exit(1);
    }
    fprintf(stderr, "moongate: %s, finishing in-flight requests\n",
            signum == SIGTERM ? "SIGTERM" : "SIGINT");
    mg_workers_stop(&workers);
    uv_stop(s->loop);
}

static int cmd_run(const char *file, int nworkers)
{
    mg_config_t *cfg = NULL;
    char *errors = NULL;
    if (mg_config_load(file, &cfg, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "moongate: cannot load the config\n");
        free(errors);
        return 1;
    }
    int n = nworkers > 0 ? nworkers : cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
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
    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    char *err = NULL;
    if (mg_workers_start(&workers, cfg, n, &err) != 0) {
        fprintf(stderr, "moongate: %s\n", err ? err : "cannot start");
        free(err);
        mg_shdict_close_all();
        mg_config_free(cfg);
        return 1;
    }
    uv_timer_t watchdog;
    uv_timer_init(loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 10, 10);
    for (size_t i = 0; i < cfg->nlisteners; i++)
        fprintf(stderr, "moongate: listening on %s:%u (%d workers)\n", cfg->listeners[i].host,
                cfg->listeners[i].port, n);
    uv_run(loop, UV_RUN_DEFAULT);
    /* a worker stuck in a hook would never end: do not wait for it forever */
    if (mg_workers_join_within(&workers, cfg->timeouts.shutdown + 2000) < 0) {
        fprintf(stderr, "moongate: a worker did not stop (stuck in a hook); exiting anyway\n");
        _exit(1);
    }
    mg_shdict_close_all(); /* no worker is left to use them */
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    mg_config_free(cfg);
    fprintf(stderr, "moongate: stopped\n");
    return 0;
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
    printf("%s: ok (%zu listeners, %zu upstreams, %zu routes)\n", file, cfg->nlisteners,
           cfg->nupstreams, cfg->nroutes);
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
    const char *file = NULL;
    int nworkers = 0;
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            file = argv[++i];
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
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
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
    fprintf(stderr, "moongate: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
