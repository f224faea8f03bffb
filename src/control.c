/* control.c: the control thread's side of a running gateway: reloads
 * (validate whole, run the config's own tests, build the generation in
 * every worker, then switch all at once), their triggers (file changes,
 * SIGHUP, POST /reload), and the admin API's answers.
 *
 * Everything here runs on the control thread's loop. The newest config is
 * also kept loaded in a Lua state of its own (ctl->L) for the live REPL.
 */
#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include <lua.h>
#include "errlog.h"
#include "accesslog.h"
#include "admin.h"
#include "admin_client.h"
#include "cache.h"
#include "health.h"
#include "discovery.h"
#include "sbuf.h"
#include "targets.h"
#include "control.h"
#include "http.h"
#include "hooks.h"
#include "lua_state.h"
#include "metrics.h"
#include "otlp.h"
#include "tracing.h"
#include "metrics_user.h"
#include "outlier.h"
#include "watch.h"

/* repl.c: evaluates live-REPL input in L (the newest config loaded). */
int mg_repl_server_eval(struct lua_State *L, const char *code, size_t len, char **out,
                        size_t *out_len);

#include "version.h"

unsigned long long mg_hooks_error_total(void);
static void on_watchdog(uv_timer_t *t);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the control Lua state ---------------------------------------------- */

static int l_status(lua_State *L);
static int l_upstreams(lua_State *L);
static int l_metrics(lua_State *L);

/* Watches every file the load just made in L read (a refused one too:
 * fixing the module it failed on must reload). */
static void watch_loaded(mg_control_t *ctl, lua_State *L)
{
    if (!ctl->watch)
        return;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.config");
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_getfield(L, -1, "loaded_files");
        /* the strings are kept on the stack while mg_watch_set reads them */
        if (lua_pcall(L, 0, 1, 0) == 0 && lua_istable(L, -1) && lua_checkstack(L, 256)) {
            const char *files[256];
            size_t n = 0;
            for (int i = 1; n < 256; i++, n++) {
                lua_rawgeti(L, top + 2, i);
                if (!(files[n] = lua_tostring(L, -1)))
                    break;
            }
            mg_watch_set(ctl->watch, files, n);
        }
    }
    lua_settop(L, top);
}

/* A state with `file` loaded and its gw.test examples run. Returns it, or
 * NULL with *err (malloc'd) holding the failures. With `cfg`, also converts
 * the loaded config to C (one load serves both). */
static lua_State *load_and_test(mg_control_t *ctl, const char *file, mg_config_t **cfg,
                                char **err)
{
    lua_State *L = mg_lua_open();
    if (!L) {
        *err = strdup("out of memory");
        return NULL;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.selftest");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        *err = mg_strf("%s: cannot run its tests: %s", file, lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    lua_getfield(L, -1, "run");
    lua_pushstring(L, file);
    if (lua_pcall(L, 1, 3, 0) != 0) {
        *err = mg_strf("%s: cannot run its tests: %s", file, lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    watch_loaded(ctl, L);
    /* (n, failures, cfg) or (nil, load errors) */
    int failed = lua_isnil(L, -3) || lua_objlen(L, -2) > 0;
    if (failed) {
        mg_sbuf_t b = { 0 };
        size_t n = lua_objlen(L, -2);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, -2, (int)i);
            mg_sb_printf(&b, "%s%s", i > 1 ? "\n" : "", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        *err = b.p ? b.p : strdup("config tests failed");
        lua_close(L);
        return NULL;
    }
    ctl->ntests = (int)lua_tointeger(L, -3);
    if (cfg && mg_config_convert(L, lua_gettop(L), file, cfg, err) != 0) {
        lua_close(L);
        return NULL;
    }
    if (cfg && (*cfg)->warnings) /* accepted, but the operator should know */
        mg_log(MG_LOG_WARN, "%s", (*cfg)->warnings);
    lua_settop(L, 0);
    /* what the live REPL reaches as require "moongate.control" */
    lua_newtable(L);
    lua_pushstring(L, file);
    lua_setfield(L, -2, "file");
    lua_pushlightuserdata(L, ctl);
    lua_pushcclosure(L, l_status, 1);
    lua_setfield(L, -2, "status");
    lua_pushlightuserdata(L, ctl);
    lua_pushcclosure(L, l_upstreams, 1);
    lua_setfield(L, -2, "upstreams");
    lua_pushlightuserdata(L, ctl);
    lua_pushcclosure(L, l_metrics, 1);
    lua_setfield(L, -2, "metrics");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "moongate.control");
    lua_settop(L, 0);
    return L;
}

/* ---- reload --------------------------------------------------------------- */

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void listener_name(char *out, size_t cap, const mg_listener_t *l)
{
    snprintf(out, cap, strchr(l->host, ':') ? "[%s]:%u" : "%s:%u", l->host, l->port);
}

static int same_listener(const mg_listener_t *a, const mg_listener_t *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* Index in `in` (n) of a listener like l, or -1. */
static long find_listener(const mg_listener_t *in, size_t n, const mg_listener_t *l)
{
    for (size_t i = 0; i < n; i++)
        if (same_listener(&in[i], l))
            return (long)i;
    return -1;
}

/* a reload keeps them: say what to do instead */
#define RESTART "restart moongate to "

/* The listener changes between old and cfg, one "file:line: reason" line
 * each: a changed host on a kept port, a new one, a removed one, and only
 * when the set is the same, a new order (workers find a listener's TLS
 * context by its position). */
static void listener_changes(mg_sbuf_t *b, const mg_config_t *old, const mg_config_t *cfg)
{
    char was[300], now[300];
    const char *file = cfg->file;
    /* an unmatched new listener on the port of an unmatched old one is a
     * change of host */
    unsigned char *paired = calloc(old->nlisteners + 1, 1);
    int moved = 0;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const mg_listener_t *l = &cfg->listeners[i];
        listener_name(now, sizeof(now), l);
        long j = find_listener(old->listeners, old->nlisteners, l);
        if (j >= 0) {
            if (paired)
                paired[j] = 1;
            moved |= (size_t)j != i;
            continue;
        }
        const mg_listener_t *o = NULL;
        for (size_t k = 0; k < old->nlisteners && paired; k++)
            if (!paired[k] && old->listeners[k].port == l->port &&
                find_listener(cfg->listeners, cfg->nlisteners, &old->listeners[k]) < 0) {
                o = &old->listeners[k];
                paired[k] = 1;
                break;
            }
        if (o) {
            listener_name(was, sizeof(was), o);
            mg_sb_printf(b, "%s:%d: listener %s was %s; %s\n", l->source ? l->source : file,
                      l->line, now, was, RESTART "change a listener's address");
        } else {
            mg_sb_printf(b, "%s:%d: listener %s is new; %s\n", l->source ? l->source : file,
                      l->line, now, RESTART "add a listener");
        }
    }
    int removed = 0;
    for (size_t k = 0; k < old->nlisteners; k++) {
        if (paired && paired[k])
            continue;
        if (find_listener(cfg->listeners, cfg->nlisteners, &old->listeners[k]) >= 0)
            continue;
        removed = 1;
        listener_name(was, sizeof(was), &old->listeners[k]);
        mg_sb_printf(b, "%s: listener %s (line %d of the running version) is gone; %s\n", file,
                  was, old->listeners[k].line, RESTART "remove a listener");
    }
    if (moved && !removed && b->len == 0) {
        for (size_t i = 0; i < cfg->nlisteners; i++)
            if (!same_listener(&cfg->listeners[i], &old->listeners[i])) {
                listener_name(now, sizeof(now), &cfg->listeners[i]);
                mg_sb_printf(b, "%s:%d: listener %s moved (listeners keep their order); %s\n",
                          cfg->listeners[i].source ? cfg->listeners[i].source : file,
                          cfg->listeners[i].line, now, RESTART "reorder listeners");
                break;
            }
    }
    free(paired);
}

static int same_names(const mg_config_t *a, const mg_config_t *b)
{
    if (a->admin_nnames != b->admin_nnames)
        return 0;
    for (size_t i = 0; i < a->admin_nnames; i++)
        if (!same_str(a->admin_names[i], b->admin_names[i]))
            return 0;
    return 1;
}

/* What a reload cannot change (the process keeps them): every change, one
 * "file:line: reason" line each, in a malloc'd string; NULL when none. */
static char *fixed_changes(const mg_config_t *old, const mg_config_t *cfg, int nworkers)
{
    mg_sbuf_t b = { 0 };
    char at[600];
    listener_changes(&b, old, cfg);
    /* the settings' own line, or the file when gw.settings is gone */
    if (cfg->settings_line)
        snprintf(at, sizeof(at), "%s:%d", cfg->settings_source ? cfg->settings_source : cfg->file,
                 cfg->settings_line);
    else
        snprintf(at, sizeof(at), "%s", cfg->file);
    if (cfg->workers && cfg->workers != nworkers)
        mg_sb_printf(&b, "%s: settings.workers changed from %d to %d; %s\n", at, nworkers,
                  cfg->workers, RESTART "change the number of workers");
    if (!same_str(old->access_log, cfg->access_log))
        mg_sb_printf(&b, "%s: settings.access_log changed from \"%s\" to \"%s\"; %s\n", at,
                  old->access_log ? old->access_log : "", cfg->access_log ? cfg->access_log : "",
                  RESTART "move the access log");
    if (!same_str(old->error_log, cfg->error_log))
        mg_sb_printf(&b, "%s: settings.error_log changed from \"%s\" to \"%s\"; %s\n", at,
                  old->error_log ? old->error_log : "", cfg->error_log ? cfg->error_log : "",
                  RESTART "move the error log");
    if (old->admin_enabled != cfg->admin_enabled)
        mg_sb_printf(&b, "%s: settings.admin %s; %s\n", at,
                  cfg->admin_enabled ? "turns the admin API on" : "turns the admin API off",
                  RESTART "apply it");
    else if (cfg->admin_enabled) {
        if (old->admin_port != cfg->admin_port || !same_str(old->admin_host, cfg->admin_host))
            mg_sb_printf(&b, "%s: settings.admin moves the admin API from %s:%u to %s:%u; %s\n",
                      at, old->admin_host, old->admin_port, cfg->admin_host, cfg->admin_port,
                      RESTART "move the admin API");
        if (!same_str(old->admin_token, cfg->admin_token))
            mg_sb_printf(&b, "%s: settings.admin.token changed; %s\n", at,
                      RESTART "change the admin token");
        if (!same_names(old, cfg))
            mg_sb_printf(&b, "%s: settings.admin.names changed; %s\n", at,
                      RESTART "change the admin API's names");
    }
    if (b.oom) {
        free(b.p);
        return strdup("out of memory");
    }
    if (b.len && b.p[b.len - 1] == '\n')
        b.p[--b.len] = 0;
    return b.p;
}

static void set_result(mg_control_t *ctl, int ok, const char *msg)
{
    free(ctl->last_msg);
    ctl->last_msg = strdup(msg ? msg : "");
    ctl->last_ok = ok;
    ctl->last_time = now_s();
    if (ok)
        ctl->reloads_ok++;
    else
        ctl->reloads_failed++;
    mg_metrics_reload(ok);
}

int mg_control_reload(mg_control_t *ctl, char **why)
{
    char *err = NULL;
    mg_config_t *cfg = NULL;
    *why = NULL;
    /* one load: validated whole, its examples run, converted for C */
    lua_State *L = load_and_test(ctl, ctl->file, &cfg, &err);
    if (!L) {
        /* drop the trailing newline of the last error */
        size_t n = err ? strlen(err) : 0;
        if (n && err[n - 1] == '\n')
            err[n - 1] = 0;
        goto refused;
    }
    err = fixed_changes(ctl->gen->cfg, cfg, ctl->workers->n);
    if (err) {
        mg_config_free(cfg);
        lua_close(L);
        goto refused;
    }
    const char *reason = NULL;
    mg_gen_t *gen = mg_gen_new(cfg, ctl->next_number, &reason); /* owns cfg now */
    if (!gen) {
        err = mg_strf("%s: %s", ctl->file, reason ? reason : "cannot build the routes");
        lua_close(L);
        goto refused;
    }
    const char *terr = NULL;
    if (mg_tracing_prepare(gen->cfg, &terr) != 0) {
        err = mg_strf("%s:%d: %s", gen->cfg->settings_source ? gen->cfg->settings_source
                                                              : ctl->file,
                      gen->cfg->settings_line, terr);
        mg_gen_release(gen);
        lua_close(L);
        goto refused;
    }
    /* its names' addresses and the admin changes, then the state of the
     * targets it keeps: before any worker runs gen */
    if (mg_discovery_load(ctl->discovery, gen) != 0) {
        err = strdup("out of memory publishing the upstreams' targets");
        mg_gen_release(gen);
        lua_close(L);
        goto refused;
    }
    mg_outlier_carry(ctl->gen, gen);
    if (mg_workers_reload(ctl->workers, gen, &err) != 0) {
        mg_gen_release(gen);
        lua_close(L);
        goto refused;
    }
    ctl->next_number++;
    mg_discovery_switch(ctl->discovery, gen);
    mg_health_switch(ctl->health, gen);
    mg_otlp_apply(gen);
    mg_gen_release(ctl->gen);
    ctl->gen = gen;
    if (ctl->watchdog.loop && uv_is_active((uv_handle_t *)&ctl->watchdog))
        uv_timer_start(&ctl->watchdog, on_watchdog, 0, 0); /* its budget may be smaller */
    if (ctl->L)
        lua_close(ctl->L);
    ctl->L = L;
    set_result(ctl, 1, "ok");
    mg_log_set_level(gen->cfg->log_level);
    mg_log(MG_LOG_NOTICE, "reloaded %s (generation %llu)\n", ctl->file,
            (unsigned long long)gen->number);
    return 0;

refused:
    if (!err)
        err = strdup("reload failed");
    mg_log(MG_LOG_ERROR, "reload refused, still serving generation %llu:\n%s\n",
            (unsigned long long)ctl->gen->number, err);
    set_result(ctl, 0, err);
    *why = err;
    return -1;
}

/* ---- triggers: files, SIGHUP -------------------------------------------- */

static void on_debounced(uv_timer_t *t)
{
    mg_control_t *ctl = t->data;
    char *why = NULL;
    mg_control_reload(ctl, &why);
    free(why);
}

/* An editor's save is several events (write, rename, chmod): one reload
 * 150 ms after the last. */
static void on_file_changed(void *data)
{
    mg_control_t *ctl = data;
    uv_timer_start(&ctl->debounce, on_debounced, 150, 0);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    mg_control_t *ctl = s->data;
    char *why = NULL;
    mg_control_reload(ctl, &why);
    free(why);
}

/* SIGUSR1, as nginx: logrotate has moved the log files away. */
static void on_sigusr1(uv_signal_t *s, int signum)
{
    mg_control_reopen_logs(s->data);
}

const char *mg_control_reopen_logs(mg_control_t *ctl)
{
    int rc = mg_errlog_reopen();
    mg_accesslog_reopen(); /* each worker, at its next flush (<= 200 ms) */
    if (rc != 0) {
        mg_log(MG_LOG_ERROR, "cannot reopen the error log %s: %s (still writing "
               "to the old file)", ctl->gen->cfg->error_log, strerror(-rc));
        return "cannot reopen the error log";
    }
    mg_log(MG_LOG_NOTICE, "log files reopened");
    return NULL;
}

/* ---- admin answers -------------------------------------------------------- */

static mg_control_t *the_ctl; /* admin handlers have no user data */

static int reply(mg_sbuf_t *b, int status, char **body, size_t *len, const char **ctype,
                 const char *type)
{
    if (b->oom) {
        free(b->p);
        return 500;
    }
    *body = b->p ? b->p : strdup("");
    *len = b->len;
    *ctype = type;
    return status;
}

static void status_json(mg_control_t *ctl, mg_sbuf_t *b)
{
    size_t conns = 0;
    for (int i = 0; i < ctl->workers->n; i++)
        conns += ctl->workers->w[i].nconns;
    mg_sb_printf(b, "{\"version\":\"%s\",\"file\":", MG_VERSION);
    mg_sb_json(b, ctl->file_abs);
    mg_sb_printf(b, ",\"generation\":{\"number\":%llu,\"loaded_at\":%.3f,\"tests\":%d}",
              (unsigned long long)ctl->gen->number, ctl->gen->loaded_at, ctl->ntests);
    mg_sb_printf(b, ",\"last_reload\":");
    if (ctl->last_time == 0) {
        mg_sb_printf(b, "null");
    } else {
        mg_sb_printf(b, "{\"ok\":%s,\"at\":%.3f,\"message\":", ctl->last_ok ? "true" : "false",
                  ctl->last_time);
        mg_sb_json(b, ctl->last_msg);
        mg_sb_printf(b, "}");
    }
    mg_sb_printf(b, ",\"reloads\":{\"ok\":%llu,\"failed\":%llu}",
              (unsigned long long)ctl->reloads_ok, (unsigned long long)ctl->reloads_failed);
    mg_sb_printf(b, ",\"workers\":%d,\"workers_stuck\":[", ctl->workers->n);
    int first = 1;
    for (int i = 0; i < ctl->workers->n; i++)
        if (atomic_load(&ctl->workers->w[i].quarantined)) {
            mg_sb_printf(b, "%s%d", first ? "" : ",", i);
            first = 0;
        }
    mg_sb_printf(b, "],\"connections\":%zu,\"uptime\":%.3f,\"hook_errors\":%llu}\n", conns,
              now_s() - ctl->started, mg_hooks_error_total());
}

static int h_status(char **body, size_t *len, const char **ctype)
{
    mg_sbuf_t b = { 0 };
    status_json(the_ctl, &b);
    return reply(&b, 200, body, len, ctype, "application/json");
}

static int h_routes(char **body, size_t *len, const char **ctype)
{
    const mg_config_t *cfg = the_ctl->gen->cfg;
    mg_sbuf_t b = { 0 };
    mg_sb_printf(&b, "{\"generation\":%llu,\"routes\":[", (unsigned long long)the_ctl->gen->number);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const mg_route_t *r = &cfg->routes[i];
        mg_sb_printf(&b, "%s{\"name\":", i ? "," : "");
        mg_sb_json(&b, r->name);
        mg_sb_printf(&b, ",\"path\":");
        mg_sb_json(&b, r->path);
        mg_sb_printf(&b, ",\"host\":");
        if (r->host)
            mg_sb_json(&b, r->host);
        else
            mg_sb_printf(&b, "null");
        mg_sb_printf(&b, ",\"methods\":[");
        for (size_t m = 0; m < r->nmethods; m++) {
            mg_sb_printf(&b, m ? "," : "");
            mg_sb_json(&b, r->methods[m]);
        }
        mg_sb_printf(&b, "],\"upstream\":");
        if (r->upstream >= 0 && !r->split)
            mg_sb_json(&b, cfg->upstreams[r->upstream].name);
        else
            mg_sb_printf(&b, "null");
        /* split, canary and mirror only on the routes that have them */
        for (size_t e = 0; r->split && e < r->split->n; e++) {
            mg_sb_printf(&b, "%s{\"upstream\":", e ? "," : ",\"split\":[");
            mg_sb_json(&b, cfg->upstreams[r->split->entries[e].upstream].name);
            mg_sb_printf(&b, ",\"weight\":%d}%s", r->split->entries[e].weight,
                         e + 1 == r->split->n ? "]" : "");
        }
        if (r->canary) {
            mg_sb_printf(&b, ",\"canary\":{\"%s\":", r->canary->header ? "header" : "cookie");
            mg_sb_json(&b, r->canary->header ? r->canary->header : r->canary->cookie);
            mg_sb_printf(&b, ",\"upstream\":");
            mg_sb_json(&b, cfg->upstreams[r->canary->upstream].name);
            mg_sb_printf(&b, "}");
        }
        if (r->mirror) {
            mg_sb_printf(&b, ",\"mirror\":");
            mg_sb_json(&b, cfg->upstreams[r->mirror->upstream].name);
        }
        mg_sb_printf(&b, ",\"handler\":%s,\"listen\":%u,\"line\":%d}",
                  r->has_handler ? "true" : "false", r->listen_port, r->line);
    }
    mg_sb_printf(&b, "]}\n");
    return reply(&b, 200, body, len, ctype, "application/json");
}

/* Does upstream i keep the shared counts of outlier.h (an outlier policy,
 * retries of its own or of a route to it, or a route deadline)? */
static int upstream_tracked(const mg_config_t *cfg, size_t i)
{
    const mg_upstream_t *u = &cfg->upstreams[i];
    if (u->outlier || u->retries)
        return 1;
    for (size_t r = 0; r < cfg->nroutes; r++)
        if (mg_route_goes_to(&cfg->routes[r], (int)i) &&
            (cfg->routes[r].retries || cfg->routes[r].timeouts.total))
            return 1;
    return 0;
}

/* A target's outlier state and counts, for /upstreams. */
static void target_outlier_json(mg_sbuf_t *b, const mg_outlier_target_t *ot, uint64_t now)
{
    uint64_t until = atomic_load(&ot->ejected_until);
    mg_sb_printf(b, ",\"outlier\":{\"ejected\":%s,\"ejected_for\":%.3f,\"ejections\":%u,"
                 "\"ejected_total\":%llu,\"attempts\":%llu,\"attempts_while_ejected\":%llu,"
                 "\"failures\":%llu,\"reason\":",
              until > now ? "true" : "false", until > now ? (double)(until - now) / 1000 : 0.0,
              atomic_load(&ot->ejections), (unsigned long long)atomic_load(&ot->ejected_total),
              (unsigned long long)atomic_load(&ot->attempts),
              (unsigned long long)atomic_load(&ot->attempts_ejected),
              (unsigned long long)atomic_load(&ot->failures));
    if (ot->reason[0] && atomic_load(&ot->ejected_total)) {
        char why[sizeof(ot->reason)];
        memcpy(why, ot->reason, sizeof(why)); /* a racy copy, NUL-ended here */
        why[sizeof(why) - 1] = '\0';
        mg_sb_json(b, why);
    } else {
        mg_sb_printf(b, "null");
    }
    mg_sb_printf(b, "}");
}

static void upstreams_json(mg_control_t *ctl, mg_sbuf_t *b)
{
    const mg_config_t *cfg = ctl->gen->cfg;
    uint64_t now = uv_hrtime() / 1000000;
    mg_sb_printf(b, "{\"generation\":%llu,\"upstreams\":[", (unsigned long long)ctl->gen->number);
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        const mg_lb_shared_t *lb = ctl->gen->lb ? &ctl->gen->lb[i] : NULL;
        const mg_tset_t *ts = &ctl->gen->tsets[i];
        const mg_tview_t *v = ts->view; /* the published one: the control thread's own */
        mg_sb_printf(b, "%s{\"name\":", i ? "," : "");
        mg_sb_json(b, u->name);
        mg_sb_printf(b, ",\"balancer\":\"%s\",\"protocol\":\"%s\",\"max_targets\":%zu,"
                        "\"targets\":[",
                     mg_balancer_name(u->balancer), mg_upstream_protocol_name(u->protocol),
                     ts->cap);
        int first = 1;
        for (size_t t = 0; t < v->n; t++) {
            if (!v->e[t].serial)
                continue;
            const mg_slot_t *sl = &ts->slot[t];
            /* passive health and connections as the workers see them: a
             * racy read of their pools, fine for a status page; only of a
             * worker that synced a view with this filling of the slot (its
             * pool exists then, and the acquire of `synced` makes it
             * visible here) */
            int down = 0, idle = 0, busy = 0;
            for (int k = 0; k < ctl->workers->n; k++) {
                mg_wgen_t *g = ctl->workers->w[k].g;
                if (!g || g->gen != ctl->gen || !g->ups ||
                    atomic_load(&g->ups[i].synced) < sl->filled_in)
                    continue;
                const mg_pool_t *p = g->ups[i].pools[t];
                if (!p || p->serial != sl->serial)
                    continue;
                if (p->down_until > now)
                    down++;
                idle += p->nidle;
                busy += (int)atomic_load(&p->nconns) - p->nidle;
            }
            const mg_target_health_t *hs = ctl->gen->health ? &ctl->gen->health[i][t] : NULL;
            int out = hs && atomic_load(&hs->down);
            mg_sb_printf(b, "%s{\"target\":", first ? "" : ",");
            first = 0;
            mg_sb_json(b, sl->t.name);
            mg_sb_printf(b, ",\"source\":\"%s\"", mg_tsrc_name(sl->source));
            if (sl->from) {
                mg_sb_printf(b, ",\"from\":");
                mg_sb_json(b, sl->from);
            }
            if (v->tiers || sl->source == MG_TSRC_SRV)
                mg_sb_printf(b, ",\"priority\":%u", v->e[t].priority);
            mg_sb_printf(b, ",\"weight\":%d,\"state\":\"%s\",\"health\":\"%s\","
                         "\"workers_marking_down\":%d,\"idle_connections\":%d,"
                         "\"busy_connections\":%d",
                      v->e[t].weight, v->e[t].draining ? "draining" : "active",
                      down || out ? "down" : "up", down, idle, busy > 0 ? busy : 0);
            if (lb && lb->t) /* the balancer's counts, shared by the workers */
                mg_sb_printf(b, ",\"in_flight\":%u",
                          (unsigned)atomic_load_explicit(&lb->t[t].inflight, memory_order_relaxed));
            if (lb && lb->t && mg_balancer_of(u->balancer)->observe)
                mg_sb_printf(b, ",\"latency_ms\":%.3f",
                          (double)atomic_load_explicit(&lb->t[t].ewma_ns, memory_order_relaxed) /
                              1e6);
            if (upstream_tracked(cfg, i))
                target_outlier_json(b, &ctl->gen->outlier[i].targets[t], now);
            if (u->health_path && hs) {
                /* the control thread's own state: no race here */
                mg_sb_printf(b, ",\"checks\":{\"state\":\"%s\",\"failed_in_a_row\":%d,"
                             "\"ok_in_a_row\":%d,\"last_error\":",
                          out ? "down" : hs->checked ? "up" : "unchecked", hs->fail_streak,
                          hs->ok_streak);
                if (hs->last_error[0])
                    mg_sb_json(b, hs->last_error);
                else
                    mg_sb_printf(b, "null");
                mg_sb_printf(b, "}");
            }
            mg_sb_printf(b, "}");
        }
        mg_sb_printf(b, "]");
        if (upstream_tracked(cfg, i)) {
            const mg_outlier_t *o = &ctl->gen->outlier[i];
            mg_sb_printf(b, ",\"retries\":{\"requests_active\":%lld,\"retrying\":%lld,"
                         "\"retries\":%llu,\"budget_refused\":%llu}",
                      (long long)atomic_load(&o->active), (long long)atomic_load(&o->retrying),
                      (unsigned long long)atomic_load(&o->retries),
                      (unsigned long long)atomic_load(&o->budget_refused));
        }
        mg_discovery_upstream_json(ctl->discovery, i, b);
        mg_sb_printf(b, "}");
    }
    mg_sb_printf(b, "]}\n");
}

static int h_upstreams(char **body, size_t *len, const char **ctype)
{
    mg_sbuf_t b = { 0 };
    upstreams_json(the_ctl, &b);
    return reply(&b, 200, body, len, ctype, "application/json");
}

/* moongate_upstream_target_up: 1 or 0 per target of the upstreams with
 * active health checks (the control thread's own state). */
static void upstream_health_metrics(mg_control_t *ctl, mg_sbuf_t *b)
{
    const mg_config_t *cfg = ctl->gen->cfg;
    int header = 0;
    for (size_t i = 0; i < cfg->nupstreams && ctl->gen->health; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        if (!u->health_path)
            continue;
        if (!header) {
            mg_sb_printf(b, "# HELP moongate_upstream_target_up Target in balancing (active health "
                         "checks): 1 up, 0 taken out.\n"
                         "# TYPE moongate_upstream_target_up gauge\n");
            header = 1;
        }
        size_t n = mg_metrics_escape_label(NULL, 0, u->name);
        char *un = malloc(n + 1);
        if (!un)
            continue;
        mg_metrics_escape_label(un, n + 1, u->name);
        const mg_tview_t *v = ctl->gen->tsets[i].view;
        for (size_t t = 0; t < v->n; t++) {
            if (!v->e[t].serial)
                continue;
            char tn[300]; /* "host:port", a checked host name: nothing to escape */
            mg_metrics_escape_label(tn, sizeof(tn), ctl->gen->tsets[i].slot[t].t.name);
            mg_sb_printf(b, "moongate_upstream_target_up{upstream=\"%s\",target=\"%s\"} %d\n", un,
                      tn, atomic_load(&ctl->gen->health[i][t].down) ? 0 : 1);
        }
        free(un);
    }
}

/* The shared counts of outlier.h, one family at a time (the text format
 * wants a family's samples together), for the upstreams that keep them. */
enum { OM_EJECTED, OM_EJECTIONS, OM_ATTEMPTS, OM_ATTEMPTS_EJECTED, OM_FAILURES, OM_TARGET_FAMILIES };
static const char *const target_families[][3] = {
    { "moongate_upstream_target_ejected", "gauge", "Target ejected by outlier detection: 1, else 0." },
    { "moongate_upstream_target_ejections_total", "counter", "Outlier ejections of the target." },
    { "moongate_upstream_target_attempts_total", "counter", "Tries sent to the target." },
    { "moongate_upstream_target_attempts_ejected_total", "counter",
      "Tries sent to the target while it was ejected (no other target was up)." },
    { "moongate_upstream_target_failures_total", "counter",
      "Tries on the target that got no answer (connect, reset, timeout)." },
};
static const char *const upstream_families[][3] = {
    { "moongate_upstream_retries_total", "counter", "Retries sent (retries = { ... })." },
    { "moongate_upstream_retries_budget_refused_total", "counter",
      "Retries the retry budget refused." },
    { "moongate_upstream_requests_active", "gauge", "Requests in flight with a retry policy." },
    { "moongate_upstream_retries_active", "gauge", "Of them, requests being retried." },
};

static void outlier_metrics(mg_control_t *ctl, mg_sbuf_t *b)
{
    const mg_config_t *cfg = ctl->gen->cfg;
    uint64_t now = uv_hrtime() / 1000000;
    for (int f = 0; f < OM_TARGET_FAMILIES + 4; f++) {
        int header = 0;
        for (size_t i = 0; i < cfg->nupstreams; i++) {
            if (!upstream_tracked(cfg, i))
                continue;
            const char *const *fam = f < OM_TARGET_FAMILIES ? target_families[f]
                                                             : upstream_families[f - OM_TARGET_FAMILIES];
            if (!header)
                mg_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam[0], fam[2], fam[0], fam[1]);
            header = 1;
            const mg_outlier_t *o = &ctl->gen->outlier[i];
            size_t n = mg_metrics_escape_label(NULL, 0, cfg->upstreams[i].name);
            char *un = malloc(n + 1);
            if (!un)
                continue;
            mg_metrics_escape_label(un, n + 1, cfg->upstreams[i].name);
            if (f >= OM_TARGET_FAMILIES) {
                long long v = f == OM_TARGET_FAMILIES       ? (long long)atomic_load(&o->retries)
                              : f == OM_TARGET_FAMILIES + 1 ? (long long)atomic_load(&o->budget_refused)
                              : f == OM_TARGET_FAMILIES + 2 ? (long long)atomic_load(&o->active)
                                                            : (long long)atomic_load(&o->retrying);
                mg_sb_printf(b, "%s{upstream=\"%s\"} %lld\n", fam[0], un, v);
            }
            const mg_tview_t *tv = ctl->gen->tsets[i].view;
            for (size_t t = 0; f < OM_TARGET_FAMILIES && t < tv->n; t++) {
                if (!tv->e[t].serial)
                    continue;
                const mg_outlier_target_t *ot = &o->targets[t];
                char tn[300];
                mg_metrics_escape_label(tn, sizeof(tn), ctl->gen->tsets[i].slot[t].t.name);
                unsigned long long v =
                    f == OM_EJECTED      ? (unsigned long long)(atomic_load(&ot->ejected_until) > now)
                    : f == OM_EJECTIONS  ? (unsigned long long)atomic_load(&ot->ejected_total)
                    : f == OM_ATTEMPTS   ? (unsigned long long)atomic_load(&ot->attempts)
                    : f == OM_FAILURES   ? (unsigned long long)atomic_load(&ot->failures)
                                         : (unsigned long long)atomic_load(&ot->attempts_ejected);
                mg_sb_printf(b, "%s{upstream=\"%s\",target=\"%s\"} %llu\n", fam[0], un, tn, v);
            }
            free(un);
        }
    }
}

/* The span queues and the exporter (tracing.h, otlp.h). */
static void tracing_metrics(mg_sbuf_t *b)
{
    mg_otlp_counts_t c;
    mg_otlp_counts(&c);
    mg_sb_printf(b, "# HELP moongate_trace_spans_dropped_total Spans lost: their worker's queue "
                 "was full, or the collector refused or lost their batch.\n"
                 "# TYPE moongate_trace_spans_dropped_total counter\n"
                 "moongate_trace_spans_dropped_total{reason=\"queue_full\"} %llu\n"
                 "moongate_trace_spans_dropped_total{reason=\"export_failed\"} %llu\n"
                 "# HELP moongate_trace_spans_exported_total Spans the collector took.\n"
                 "# TYPE moongate_trace_spans_exported_total counter\n"
                 "moongate_trace_spans_exported_total %llu\n"
                 "# HELP moongate_trace_exports_total Batches of spans sent, by result.\n"
                 "# TYPE moongate_trace_exports_total counter\n"
                 "moongate_trace_exports_total{result=\"ok\"} %llu\n"
                 "moongate_trace_exports_total{result=\"failed\"} %llu\n"
                 "# HELP moongate_trace_spans_queued Spans waiting for the exporter.\n"
                 "# TYPE moongate_trace_spans_queued gauge\n"
                 "moongate_trace_spans_queued %llu\n",
              (unsigned long long)mg_tracing_dropped(), (unsigned long long)c.spans_failed,
              (unsigned long long)c.spans_exported, (unsigned long long)c.exports_ok,
              (unsigned long long)c.exports_failed, (unsigned long long)mg_tracing_queued());
}

static char *metrics_text(mg_control_t *ctl, int om, size_t *len)
{
    mg_sbuf_t b = { 0 };
    mg_sb_printf(&b, "# HELP moongate_generation Number of the config generation serving.\n"
                  "# TYPE moongate_generation gauge\nmoongate_generation %llu\n"
                  "# HELP moongate_hook_errors_total Lua hook errors.\n"
                  "# TYPE moongate_hook_errors_total counter\nmoongate_hook_errors_total %llu\n"
                  "# HELP moongate_workers Worker threads.\n"
                  "# TYPE moongate_workers gauge\nmoongate_workers %d\n"
                  "# HELP moongate_access_log_dropped_total Access-log lines lost to a slow log.\n"
                  "# TYPE moongate_access_log_dropped_total counter\n"
                  "moongate_access_log_dropped_total %llu\n",
              (unsigned long long)ctl->gen->number, mg_hooks_error_total(), ctl->workers->n,
              mg_accesslog_dropped_total());
    upstream_health_metrics(ctl, &b);
    outlier_metrics(ctl, &b);
    tracing_metrics(&b);
    mg_discovery_metrics(ctl->discovery, &b);
    /* the config's own metrics (metrics_user.c), the live generation's */
    size_t ulen = 0;
    char *user = mg_umetrics_render(ctl->gen->umetrics, ctl->gen->cfg->nmetrics, &ulen);
    if (!user)
        b.oom = 1;
    else if (ulen)
        mg_sb_printf(&b, "%s", user);
    free(user);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    char *text = om ? mg_metrics_render_openmetrics(b.p, len) : mg_metrics_render(b.p, len);
    free(b.p);
    return text;
}

static int h_metrics(int om, char **body, size_t *len, const char **ctype)
{
    *body = metrics_text(the_ctl, om, len);
    *ctype = om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                : "text/plain; version=0.0.4";
    return *body ? 200 : 500;
}

/* POST /reload[?file=PATH]: with PATH (what `moongate reload -c` sends),
 * only when this gateway runs that file (409 otherwise), so that a reload
 * never reaches another config's gateway that answers on the same address. */
static long query_arg(const char *q, size_t ql, const char *name, char *out, size_t cap);

static int h_reload(const char *q, size_t ql, char **body, size_t *len, const char **ctype)
{
    mg_control_t *ctl = the_ctl;
    char *why = NULL;
    mg_sbuf_t b = { 0 };
    char want[4096];
    long wl = query_arg(q, ql, "file", want, sizeof(want));
    if (wl >= 0 && strcmp(want, ctl->file_abs) != 0) {
        char msg[8400];
        snprintf(msg, sizeof(msg), "this gateway runs %s, not %s", ctl->file_abs, want);
        mg_sb_printf(&b, "{\"ok\":false,\"file\":");
        mg_sb_json(&b, ctl->file_abs);
        mg_sb_printf(&b, ",\"error\":");
        mg_sb_json(&b, msg);
        mg_sb_printf(&b, "}\n");
        return reply(&b, 409, body, len, ctype, "application/json");
    }
    int rc = mg_control_reload(ctl, &why);
    const mg_config_t *cfg = ctl->gen->cfg;
    mg_sb_printf(&b, "{\"ok\":%s,\"file\":", rc == 0 ? "true" : "false");
    mg_sb_json(&b, ctl->file_abs);
    mg_sb_printf(&b, ",\"generation\":%llu,\"routes\":%zu,\"upstreams\":%zu,",
              (unsigned long long)ctl->gen->number, cfg->nroutes, cfg->nupstreams);
    if (rc == 0) {
        char msg[4400];
        snprintf(msg, sizeof(msg), "reloaded %s: generation %llu (%zu route%s, %zu upstream%s)",
                 ctl->file_abs, (unsigned long long)ctl->gen->number, cfg->nroutes,
                 cfg->nroutes == 1 ? "" : "s", cfg->nupstreams, cfg->nupstreams == 1 ? "" : "s");
        mg_sb_printf(&b, "\"message\":");
        mg_sb_json(&b, msg);
    } else {
        mg_sb_printf(&b, "\"error\":");
        mg_sb_json(&b, why);
    }
    mg_sb_printf(&b, "}\n");
    free(why);
    return reply(&b, rc == 0 ? 200 : 422, body, len, ctype, "application/json");
}

static int h_logs_reopen(char **body, size_t *len, const char **ctype)
{
    mg_sbuf_t b = { 0 };
    const char *why = mg_control_reopen_logs(the_ctl);
    if (why) {
        mg_sb_printf(&b, "{\"ok\":false,\"error\":");
        mg_sb_json(&b, why);
        mg_sb_printf(&b, "}\n");
    } else {
        mg_sb_printf(&b, "{\"ok\":true}\n");
    }
    return reply(&b, why ? 500 : 200, body, len, ctype, "application/json");
}

/* The value of `name` in a query string, %XX and '+' decoded into out
 * (cap bytes). Returns its length, or -1 when absent or too long. */
static long query_arg(const char *q, size_t ql, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), at = 0;
    while (at < ql) {
        size_t end = at;
        while (end < ql && q[end] != '&')
            end++;
        if (end - at > nl && q[at + nl] == '=' && memcmp(q + at, name, nl) == 0) {
            size_t o = 0;
            for (size_t i = at + nl + 1; i < end; i++) {
                char ch = q[i];
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%' && i + 2 < end && isxdigit((unsigned char)q[i + 1]) &&
                           isxdigit((unsigned char)q[i + 2])) {
                    char hex[3] = { q[i + 1], q[i + 2], 0 };
                    ch = (char)strtol(hex, NULL, 16);
                    i += 2;
                }
                if (o + 1 >= cap)
                    return -1;
                out[o++] = ch;
            }
            out[o] = 0;
            return (long)o;
        }
        at = end + 1;
    }
    return -1;
}

/* DELETE /cache[?route=NAME]: every dictionary the routes' caches use. */
static int h_cache_purge(const char *q, size_t ql, char **body, size_t *len, const char **ctype)
{
    const mg_config_t *cfg = the_ctl->gen->cfg;
    char route[512];
    long rl = query_arg(q, ql, "route", route, sizeof(route));
    mg_sbuf_t b = { 0 };
    if (rl >= 0) {
        size_t i;
        for (i = 0; i < cfg->nroutes; i++)
            if (cfg->routes[i].cache && strcmp(cfg->routes[i].name, route) == 0)
                break;
        if (i == cfg->nroutes) {
            char why[600];
            snprintf(why, sizeof(why), "no route with a cache is called %s", route);
            mg_sb_printf(&b, "{\"ok\":false,\"error\":");
            mg_sb_json(&b, why);
            mg_sb_printf(&b, "}\n");
            return reply(&b, 404, body, len, ctype, "application/json");
        }
    }
    long removed = 0;
    mg_sb_printf(&b, "{\"ok\":true,\"dicts\":[");
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const mg_route_cache_t *rc = cfg->routes[i].cache;
        size_t j;
        if (!rc || !rc->dict || (rl >= 0 && strcmp(cfg->routes[i].name, route) != 0))
            continue;
        for (j = 0; j < i; j++) /* each dictionary once */
            if (cfg->routes[j].cache && cfg->routes[j].cache->dict == rc->dict &&
                (rl < 0 || strcmp(cfg->routes[j].name, route) == 0))
                break;
        if (j < i)
            continue;
        long n = mg_cache_purge(rc->dict, rl >= 0 ? route : NULL, rl >= 0 ? (size_t)rl : 0);
        if (n < 0)
            b.oom = 1;
        removed += n > 0 ? n : 0;
        if (b.len > 0 && b.p[b.len - 1] != '[')
            mg_sb_printf(&b, ",");
        mg_sb_json(&b, rc->dict_name);
    }
    mg_sb_printf(&b, "],\"removed\":%ld}\n", removed);
    return reply(&b, 200, body, len, ctype, "application/json");
}

static int h_repl(const char *req, size_t req_len, char **body, size_t *len, const char **ctype)
{
    *ctype = "text/plain; charset=utf-8";
    if (!the_ctl->L) {
        *body = strdup("the REPL is not available\n");
        *len = strlen(*body);
        return 503;
    }
    if (mg_repl_server_eval(the_ctl->L, req, req_len, body, len) != 0)
        return 500;
    return 200;
}

/* ---- Lua side of the live REPL -------------------------------------------- */

/* Pushes what json(ctl) writes, ctl being the closure's upvalue. */
static int push_json(lua_State *L, void (*json)(mg_control_t *, mg_sbuf_t *))
{
    mg_sbuf_t b = { 0 };
    json(lua_touserdata(L, lua_upvalueindex(1)), &b);
    lua_pushlstring(L, b.p ? b.p : "", b.len);
    free(b.p);
    return 1;
}

static int l_status(lua_State *L) { return push_json(L, status_json); }

static int l_upstreams(lua_State *L) { return push_json(L, upstreams_json); }

static int l_metrics(lua_State *L)
{
    size_t len = 0;
    char *text = metrics_text(lua_touserdata(L, lua_upvalueindex(1)), 0, &len);
    lua_pushlstring(L, text ? text : "", len);
    free(text);
    return 1;
}

/* ---- start / stop ------------------------------------------------------------ */

/* POST, PUT, DELETE /upstreams/NAME/targets[/TARGET] (discovery.h) */
static int h_targets(const char *method, const char *path, size_t plen, const char *req,
                     size_t req_len, char **body, size_t *len, const char **ctype)
{
    *ctype = "application/json";
    return mg_discovery_admin(the_ctl->discovery, method, path, plen, req, req_len, body, len);
}

static const mg_admin_handlers_t handlers = {
    .status = h_status,
    .routes = h_routes,
    .upstreams = h_upstreams,
    .metrics = h_metrics,
    .reload = h_reload,
    .repl = h_repl,
    .cache_purge = h_cache_purge,
    .logs_reopen = h_logs_reopen,
    .targets = h_targets,
};

int mg_control_start(mg_control_t *ctl, uv_loop_t *loop, const char *file, mg_gen_t *gen,
                     mg_workers_t *workers, const char *admin_addr, char **err)
{
    memset(ctl, 0, sizeof(*ctl));
    ctl->loop = loop;
    ctl->file = file;
    ctl->gen = gen;
    ctl->workers = workers;
    ctl->next_number = gen->number + 1;
    ctl->started = now_s();
    ctl->file_abs = realpath(file, NULL);
    if (!ctl->file_abs && !(ctl->file_abs = strdup(file))) {
        *err = strdup("out of memory");
        return -1;
    }
    the_ctl = ctl;
    uv_timer_init(loop, &ctl->debounce);
    ctl->debounce.data = ctl;
    /* filled by each load with the files it read */
    ctl->watch = mg_watch_new(loop, on_file_changed, ctl);
    char *terr = NULL;
    ctl->L = load_and_test(ctl, file, NULL, &terr);
    if (!ctl->L) {
        /* the first load is checked by mg_config_load already; a failing
         * gw.test at start is refused like a reload */
        *err = terr;
        return -1;
    }
    /* the admin API first, before any other handle: a gateway whose admin
     * API is missing would let `moongate reload` and `repl --attach` reach
     * another gateway on that address, or nothing; it does not start */
    const mg_config_t *cfg = gen->cfg;
    char ahost[256];
    int aport = cfg->admin_port;
    snprintf(ahost, sizeof(ahost), "%s", cfg->admin_host ? cfg->admin_host : "");
    if (admin_addr && strcmp(admin_addr, "off") != 0 &&
        mg_admin_parse_addr(admin_addr, ahost, sizeof(ahost), &aport) != 0) {
        *err = mg_strf("--admin takes HOST:PORT or off, got '%s'", admin_addr);
        return -1;
    }
    if (admin_addr ? strcmp(admin_addr, "off") != 0 : cfg->admin_enabled) {
        char *aerr = NULL;
        mg_admin_opts_t o = { .host = ahost, .port = aport, .token = cfg->admin_token,
                              .names = (const char *const *)cfg->admin_names,
                              .nnames = cfg->admin_nnames };
        if (mg_admin_start(&ctl->admin, loop, &o, &handlers, &aerr) != 0) {
            char at[600] = "";
            if (cfg->settings_line)
                snprintf(at, sizeof(at), " (settings.admin at %s:%d)",
                         cfg->settings_source ? cfg->settings_source : file, cfg->settings_line);
            *err = mg_strf("%s: %s; is another gateway running there? Stop it, or give this "
                           "one another admin port%s, or admin = false",
                           file, aerr ? aerr : "admin API: cannot listen", at);
            free(aerr);
            ctl->admin = NULL;
            return -1;
        }
        int v6 = strchr(ahost, ':') != NULL;
        mg_log(MG_LOG_INFO, "admin API on %s%s%s:%d\n", v6 ? "[" : "", ahost, v6 ? "]" : "",
               aport);
    }
    /* the names' addresses before anything reads the targets */
    ctl->discovery = mg_discovery_new(loop, workers);
    if (!ctl->discovery || mg_discovery_load(ctl->discovery, gen) != 0) {
        *err = strdup("out of memory publishing the upstreams' targets");
        return -1;
    }
    mg_discovery_switch(ctl->discovery, gen);
    ctl->health = mg_health_start(loop, gen);
    uv_signal_init(loop, &ctl->sighup);
    ctl->sighup.data = ctl;
    uv_signal_start(&ctl->sighup, on_sighup, SIGHUP);
    uv_signal_init(loop, &ctl->sigusr1);
    ctl->sigusr1.data = ctl;
    uv_signal_start(&ctl->sigusr1, on_sigusr1, SIGUSR1);
    return 0;
}

/* ---- hook budgets --------------------------------------------------------- */

/* A hook that starts just after a look finds the next look at most its
 * budget later, before it can be over it; from then on it is looked at
 * every MG_HOOKS_WATCH_MS, as when this timer ran at that period always. */
#define WATCH_IDLE_MAX_MS 1000

static void on_watchdog(uv_timer_t *t)
{
    mg_control_t *ctl = t->data;
    /* the newest config's budget too: workers adopt it a little later */
    uint64_t next = ctl->gen->cfg->timeouts.hook;
    if (next > WATCH_IDLE_MAX_MS)
        next = WATCH_IDLE_MAX_MS;
    for (int i = 0; i < ctl->workers->n; i++) {
        mg_worker_t *w = &ctl->workers->w[i];
        if (w->start_error)
            continue;
        int stuck;
        uint64_t n = mg_hooks_watchdog(w, &stuck);
        if (stuck)
            mg_worker_quarantine(w);
        if (n < next)
            next = n;
    }
    if (next < MG_HOOKS_WATCH_MS)
        next = MG_HOOKS_WATCH_MS;
    uv_timer_start(t, on_watchdog, next, 0);
}

void mg_control_watch_hooks(mg_control_t *ctl)
{
    uv_timer_init(ctl->loop, &ctl->watchdog);
    ctl->watchdog.data = ctl;
    uv_timer_start(&ctl->watchdog, on_watchdog, MG_HOOKS_WATCH_MS, 0);
}

void mg_control_stop(mg_control_t *ctl)
{
    if (ctl->admin)
        mg_admin_stop(ctl->admin);
    ctl->admin = NULL;
    mg_health_stop(ctl->health);
    ctl->health = NULL;
    mg_discovery_stop(ctl->discovery);
    ctl->discovery = NULL;
    mg_watch_close(ctl->watch);
    ctl->watch = NULL;
    if (!uv_is_closing((uv_handle_t *)&ctl->debounce))
        uv_close((uv_handle_t *)&ctl->debounce, NULL);
    if (ctl->watchdog.loop && !uv_is_closing((uv_handle_t *)&ctl->watchdog))
        uv_close((uv_handle_t *)&ctl->watchdog, NULL);
    if (!uv_is_closing((uv_handle_t *)&ctl->sighup))
        uv_close((uv_handle_t *)&ctl->sighup, NULL);
    if (!uv_is_closing((uv_handle_t *)&ctl->sigusr1))
        uv_close((uv_handle_t *)&ctl->sigusr1, NULL);
}

void mg_control_free(mg_control_t *ctl)
{
    if (ctl->L)
        lua_close(ctl->L);
    ctl->L = NULL;
    free(ctl->last_msg);
    ctl->last_msg = NULL;
    free(ctl->file_abs);
    ctl->file_abs = NULL;
    mg_gen_release(ctl->gen);
    ctl->gen = NULL;
}

/* Runs the gw.test examples of file (moongate check). Returns 0 when they
 * pass, -1 with *err (malloc'd) listing the failures. */
int mg_control_selftest(const char *file, int *ntests, char **err)
{
    mg_control_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    lua_State *L = load_and_test(&tmp, file, NULL, err);
    if (!L)
        return -1;
    lua_close(L);
    *ntests = tmp.ntests;
    return 0;
}
