/* harness.c: see harness.h. */
#include "harness.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "metrics.h"
#include "shdict.h"
#include "targets.h"
#include "worker.h"

mg_fuzz_out_t mg_fuzz_client_out, mg_fuzz_upstream_out;
static mg_worker_t worker;
static const uint8_t *input;
static size_t input_len;

/* The repository: $MG_FUZZ_DIR, else two levels above the binary
 * (build/fuzz/<target>). */
static void repo_dir(char *out, size_t cap)
{
    const char *env = getenv("MG_FUZZ_DIR");
    char exe[PATH_MAX], real[PATH_MAX];
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        snprintf(out, cap, ".");
        return;
    }
    exe[n] = 0;
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
    }
    snprintf(out, cap, "%s", realpath(exe, real) ? real : exe);
}

/* At exit, before LeakSanitizer looks: the worker's teardown, as a
 * stopping gateway's (what LuaJIT's states hold is not scanned). */
static void stop(void)
{
    mg_worker_teardown(&worker);
    mg_metrics_free();
    mg_shdict_close_all();
    free(mg_fuzz_client_out.data);
    free(mg_fuzz_upstream_out.data);
}

mg_worker_t *mg_fuzz_start(const char *config)
{
    char dir[PATH_MAX], file[PATH_MAX + 64], lua[PATH_MAX + 8];
    repo_dir(dir, sizeof(dir));
    snprintf(lua, sizeof(lua), "%s/lua", dir);
    setenv("MOONGATE_LUA_DIR", lua, 0);
    snprintf(file, sizeof(file), "%s/spec/fuzz/%s", dir, config);

    mg_config_t *cfg = NULL;
    char *errors = NULL;
    if (mg_config_load(file, &cfg, &errors) != 0) {
        fprintf(stderr, "fuzz: %s", errors ? errors : "cannot load the config\n");
        exit(1);
    }
    for (size_t i = 0; i < cfg->nshared_dicts; i++)
        if (!mg_shdict_open(cfg->shared_dicts[i].name, (size_t)cfg->shared_dicts[i].size)) {
            fprintf(stderr, "fuzz: shared dict %s: out of memory\n", cfg->shared_dicts[i].name);
            exit(1);
        }
    const char *why = NULL;
    mg_gen_t *gen = mg_gen_new(cfg, 1, &why);
    if (!gen) {
        fprintf(stderr, "fuzz: %s: %s\n", file, why ? why : "cannot build the routes");
        exit(1);
    }
    mg_metrics_init(1);
    uv_loop_init(&worker.loop);
    worker.id = 0;
    char *err = mg_worker_setup(&worker, gen);
    if (err) {
        fprintf(stderr, "fuzz: worker: %s\n", err);
        exit(1);
    }
    mg_gen_release(gen); /* the worker holds it */
    atexit(stop);
    return &worker;
}

int mg_fuzz_out_add(mg_fuzz_out_t *o, const uv_buf_t *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (o->len + bufs[i].len > o->cap) {
            size_t cap = o->cap ? o->cap : 65536;
            while (cap < o->len + bufs[i].len)
                cap *= 2;
            char *p = realloc(o->data, cap);
            if (!p)
                return UV_ENOMEM;
            o->data = p;
            o->cap = cap;
        }
        memcpy(o->data + o->len, bufs[i].base, bufs[i].len);
        o->len += bufs[i].len;
    }
    return 0;
}

int mg_fuzz_client_sink(mg_wq_t *q, const uv_buf_t *bufs, unsigned n)
{
    (void)q;
    return mg_fuzz_out_add(&mg_fuzz_client_out, bufs, n);
}

int mg_fuzz_upstream_sink(mg_wq_t *q, const uv_buf_t *bufs, unsigned n)
{
    (void)q;
    return mg_fuzz_out_add(&mg_fuzz_upstream_out, bufs, n);
}

void mg_fuzz_reset(void)
{
    mg_fuzz_client_out.len = 0;
    mg_fuzz_upstream_out.len = 0;
}

void mg_fuzz_settle(mg_worker_t *w)
{
    /* a hook woken "later" runs on a 0 ms timer: the next turn */
    for (int i = 0; i < 4; i++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
}

int mg_fuzz_conn_alive(mg_worker_t *w) { return w->nconns > 0; }

void mg_fuzz_feed(mg_worker_t *w, mg_conn_t *c, const uint8_t *data, size_t n, size_t step)
{
    size_t at = 0;
    if (step == 0)
        step = n;
    while (at < n && mg_fuzz_conn_alive(w)) {
        size_t k = n - at < step ? n - at : step;
        size_t took = c->state == MG_CS_CLOSING ? 0 : mg_conn_feed(c, (const char *)data + at, k);
        at += took;
        mg_fuzz_settle(w);
        if (took == 0 && (!mg_fuzz_conn_alive(w) || c->state == MG_CS_CLOSING || !c->reading))
            break; /* it does not read (closed, or waits for what never comes) */
    }
}

static void close_idle(mg_wgen_t *g)
{
    for (size_t i = 0; g && i < g->cfg->nupstreams; i++)
        for (size_t t = 0; t < g->ups[i].view->n; t++) {
            mg_pool_t *p = g->ups[i].pools[t];
            if (!p)
                continue;
            while (!mg_list_empty(&p->idle))
                mg_upconn_close(mg_container_of(p->idle.next, mg_upconn_t, link));
            g->w->upstream->sessions_close(p); /* HTTP/2 sessions (h2_upstream.c) */
            p->fails = 0;
            p->down_until = 0;
            p->h2_limit = 0;
        }
}

void mg_fuzz_close_all(mg_worker_t *w, mg_conn_t *c)
{
    if (mg_fuzz_conn_alive(w))
        mg_conn_abort(c);
    mg_fuzz_settle(w);
    close_idle(w->g);
    for (int i = 0; i < 100 && mg_fuzz_conn_alive(w); i++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    if (mg_fuzz_conn_alive(w)) {
        fprintf(stderr, "fuzz: a closed connection was never freed\n");
        abort();
    }
}

mg_upconn_t *mg_fuzz_upstream_ready(mg_pool_t *p)
{
    mg_upconn_t *u = mg_upconn_new(p);
    if (!u)
        abort();
    u->wq.sink = mg_fuzz_upstream_sink;
    u->connected = 1;
    mg_pool_put_idle(p, u);
    return u;
}

const char *mg_fuzz_input(size_t *len)
{
    *len = input_len;
    return (const char *)input;
}

void mg_fuzz_set_input(const uint8_t *data, size_t len)
{
    input = data;
    input_len = len;
}
