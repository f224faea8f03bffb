/* admin_harness.c: test-only helper for spec/c/admin_spec.lua, linked into
 * build/libmgtest.so. Runs src/admin.c on its own uv loop in a thread, with
 * canned handlers, so that a luasocket client in the spec can talk to it.
 *
 * Canned answers:
 *   GET  /status     200 {"ok":true,"reloads":N}
 *   GET  /routes     200 []
 *   GET  /upstreams  200, a 256 KiB JSON string (exercises queued writes)
 *   GET  /metrics    200 text/plain "up 1\n"
 *   POST /reload     200 {"reloaded":N,"query":"..."}, N counting the calls
 *   POST /repl       200 text/plain "echo:" .. body, or 422 when the body
 *                    is "fail", or no handler at all with MG_TEST_NO_REPL
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "admin.h"

void mg_admin_set_idle_timeout(mg_admin_t *a, uint64_t ms);
int mg_admin_port(const mg_admin_t *a);

#define MG_TEST_NO_REPL 1

typedef struct mg_test_admin_s {
    pthread_t tid;
    uv_loop_t loop;
    uv_async_t stop;
    mg_admin_t *a;
    const char *host, *token;
    char *names_buf;           /* comma-separated names, split in place */
    const char *names[8];
    size_t nnames;
    int port, flags;
    uint64_t idle_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, rc;
    int close_rc;  /* uv_loop_close: 0 when every handle was closed */
    char *err;
} mg_test_admin_t;

static atomic_int reloads;

static char *dup_body(const char *s, size_t *len)
{
    *len = strlen(s);
    return strdup(s);
}

static int h_status(char **body, size_t *len, const char **ctype)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "{\"ok\":true,\"reloads\":%d}", atomic_load(&reloads));
    *body = dup_body(tmp, len);
    return 200;
}

static int h_routes(char **body, size_t *len, const char **ctype)
{
    *body = dup_body("[]", len);
    return 200;
}

static int h_upstreams(char **body, size_t *len, const char **ctype)
{
    size_t n = 256 * 1024;
    char *b = malloc(n);
    if (!b)
        return 500;
    memset(b, 'u', n);
    b[0] = '"';
    b[n - 1] = '"';
    *body = b;
    *len = n;
    return 200;
}

/* says which format admin.c chose from the Accept header */
static int h_metrics(int openmetrics, char **body, size_t *len, const char **ctype)
{
    *ctype = openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                         : "text/plain; version=0.0.4";
    *body = dup_body(openmetrics ? "up 1\n# EOF\n" : "up 1\n", len);
    return 200;
}

static int h_reload(const char *query, size_t query_len, char **body, size_t *len,
                    const char **ctype)
{
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "{\"reloaded\":%d,\"query\":\"%.*s\"}",
             atomic_fetch_add(&reloads, 1) + 1, (int)(query_len < 100 ? query_len : 100), query);
    *body = dup_body(tmp, len);
    return 200;
}

static int h_repl(const char *req_body, size_t req_len, char **body, size_t *len,
                  const char **ctype)
{
    *ctype = "text/plain";
    if (req_len == 4 && !memcmp(req_body, "fail", 4)) {
        *body = dup_body("{\"error\":\"refused\"}", len);
        *ctype = "application/json";
        return 422;
    }
    char *b = malloc(req_len + 5);
    if (!b)
        return 500;
    memcpy(b, "echo:", 5);
    memcpy(b + 5, req_body, req_len);
    *body = b;
    *len = req_len + 5;
    return 200;
}

static void on_stop(uv_async_t *h)
{
    mg_test_admin_t *t = h->data;
    mg_admin_stop(t->a);
    uv_close((uv_handle_t *)&t->stop, NULL);
}

static void *run(void *arg)
{
    mg_test_admin_t *t = arg;
    /* the spec process does not ignore SIGPIPE as moongate does: a write to
     * a client that went away must fail with EPIPE, not kill busted */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    mg_admin_handlers_t h = { h_status, h_routes, h_upstreams, h_metrics, h_reload,
                              (t->flags & MG_TEST_NO_REPL) ? NULL : h_repl, NULL, NULL, NULL };
    uv_loop_init(&t->loop);
    char *err = NULL;
    mg_admin_opts_t o = { .host = t->host, .port = t->port, .token = t->token,
                          .names = t->names, .nnames = t->nnames };
    int rc = mg_admin_start(&t->a, &t->loop, &o, &h, &err);
    if (rc == 0) {
        if (t->idle_ms)
            mg_admin_set_idle_timeout(t->a, t->idle_ms);
        t->port = mg_admin_port(t->a);
        uv_async_init(&t->loop, &t->stop, on_stop);
        t->stop.data = t;
    }
    pthread_mutex_lock(&t->mu);
    t->started = 1;
    t->rc = rc;
    t->err = err;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    t->close_rc = uv_loop_close(&t->loop);
    return NULL;
}

/* Starts an admin server on host:port (0: any free port) in a new thread;
 * names: NULL or comma-separated settings.admin.names. Returns the handle,
 * or NULL with the server's error copied to err. */
mg_test_admin_t *mg_test_admin_start(const char *host, int port, const char *token,
                                     const char *names, uint64_t idle_ms, int flags, char *err,
                                     size_t errlen);
/* Its port. */
int mg_test_admin_port(const mg_test_admin_t *t);
/* Stops it, waits for its loop to end, frees it. Returns uv_loop_close()'s
 * result: 0 when mg_admin_stop left no handle open. */
int mg_test_admin_stop(mg_test_admin_t *t);

mg_test_admin_t *mg_test_admin_start(const char *host, int port, const char *token,
                                     const char *names, uint64_t idle_ms, int flags, char *err,
                                     size_t errlen)
{
    mg_test_admin_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (names && (t->names_buf = strdup(names))) {
        for (char *save = NULL, *n = strtok_r(t->names_buf, ",", &save); n && t->nnames < 8;
             n = strtok_r(NULL, ",", &save))
            t->names[t->nnames++] = n;
    }
    t->host = host;
    t->token = token;
    t->port = port;
    t->idle_ms = idle_ms;
    t->flags = flags;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (pthread_create(&t->tid, NULL, run, t) != 0) {
        free(t);
        return NULL;
    }
    pthread_mutex_lock(&t->mu);
    while (!t->started)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    if (t->rc == 0)
        return t;
    pthread_join(t->tid, NULL);
    snprintf(err, errlen, "%s", t->err ? t->err : "(no message)");
    free(t->err);
    free(t->names_buf);
    free(t);
    return NULL;
}

int mg_test_admin_port(const mg_test_admin_t *t) { return t->port; }

int mg_test_admin_stop(mg_test_admin_t *t)
{
    uv_async_send(&t->stop);
    pthread_join(t->tid, NULL);
    int rc = t->close_rc;
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->names_buf);
    free(t);
    return rc;
}
