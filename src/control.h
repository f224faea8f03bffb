/* control.h: reloads and the admin API of a running gateway (control
 * thread only). */
#ifndef MG_CONTROL_H
#define MG_CONTROL_H

#include <uv.h>
#include "upstream.h"
#include "worker.h"
#include "upstream.h"
#include "worker.h"

struct lua_State;
struct mg_admin_s;

typedef struct mg_control_s {
    uv_loop_t *loop;
    const char *file;           /* the config file (borrowed) */
    char *file_abs;             /* its absolute path (owned), what /status says */
    mg_workers_t *workers;      /* borrowed */
    mg_gen_t *gen;              /* newest generation (the control's hold) */
    uint64_t next_number;
    struct lua_State *L;        /* newest config loaded, for the live REPL */
    int ntests;                 /* gw.test examples it passed */
    int last_ok;
    char *last_msg;
    double last_time;
    double started;
    unsigned long long reloads_ok, reloads_failed;
    struct mg_watch_s *watch;   /* every file the config read (watch.h) */
    uv_timer_t debounce;
    uv_timer_t watchdog;        /* hook budgets (mg_control_watch_hooks) */
    uv_signal_t sighup;
    uv_signal_t sigusr1;        /* reopen the log files */
    struct mg_admin_s *admin;
    struct mg_health_s *health;  /* active health checks (health.h) */
    struct mg_discovery_s *discovery; /* DNS and admin target changes (discovery.h) */
} mg_control_t;

/* Sets up reload triggers and the admin API for the workers (called before
 * they start: nothing here runs before the loop does). gen is the
 * generation they run (ctl takes over the caller's hold). admin_addr
 * (`moongate run --admin`): NULL for settings.admin, "off", or "HOST:PORT"
 * in place of settings.admin's host and port. Returns 0, or -1
 * with *err (malloc'd) when the config's own tests fail or the admin API
 * cannot listen (then call mg_control_stop, run the loop, mg_control_free). */
int mg_control_start(mg_control_t *ctl, uv_loop_t *loop, const char *file, mg_gen_t *gen,
                     mg_workers_t *workers, const char *admin_addr, char **err);
/* Reloads the config file: all or nothing. Returns 0, or -1 with *why
 * (malloc'd, "file:line: reason" lines) when the new version is refused;
 * the running one keeps serving either way. */
int mg_control_reload(mg_control_t *ctl, char **why);
/* Reopens the error log now and has every worker reopen its access log
 * at its next flush (SIGUSR1, POST /logs/reopen). Returns NULL, or a static
 * reason when the error log could not be reopened (the old file kept). */
const char *mg_control_reopen_logs(mg_control_t *ctl);
void mg_control_stop(mg_control_t *ctl);

/* Starts the hook budget watchdog over ctl->workers (once they run): every
 * MG_HOOKS_WATCH_MS while a worker runs Lua; when none does, after the
 * smallest budget (at most 1 s), so an idle gateway seldom wakes. Stopped
 * by mg_control_stop. */
void mg_control_watch_hooks(mg_control_t *ctl);
void mg_control_free(mg_control_t *ctl);
/* moongate check: runs the gw.test examples of file. */
int mg_control_selftest(const char *file, int *ntests, char **err);

#endif
