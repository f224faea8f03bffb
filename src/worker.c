/* worker.c: worker threads, their listeners, buffers and shutdown. */
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "errlog.h"
#include "accesslog.h"
#include "cache.h"
#include "lua_route.h"
#include "redis.h"
#include "trace.h"
#include "tls_client.h"
#include "http1.h"
#include "h2_conn.h"
#include "upstream.h"
#include "worker.h"
#include "mirror.h"

#define MAX_FREE_BUFS 256

/* ---- pooled read buffers ------------------------------------------------ */

/* ---- listening ---------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    mg_worker_t *w = server->loop->data;
    if (status < 0 || w->stopping)
        return;
    mg_conn_accept(w, server, (uint16_t)(uintptr_t)server->data);
}

/* The address of listener l, or -1 with *err (malloc'd). */
static int listener_addr(const mg_listener_t *l, struct sockaddr_storage *sa, socklen_t *len,
                         char **err)
{
    if (uv_ip4_addr(l->host, l->port, (struct sockaddr_in *)sa) == 0) {
        *len = sizeof(struct sockaddr_in);
        return AF_INET;
    }
    if (uv_ip6_addr(l->host, l->port, (struct sockaddr_in6 *)sa) == 0) {
        *len = sizeof(struct sockaddr_in6);
        return AF_INET6;
    }
    *err = mg_strf("listen %s:%u: not a numeric address", l->host, l->port);
    return -1;
}

/* SO_REUSEPORT lets any process of the same user join a listening group and
 * take part of its connections: a second gateway started by mistake would
 * quietly serve some of the first one's traffic. So before the workers bind,
 * each address is claimed for this process:
 *  - a lock every moongate takes, an abstract Unix socket named after the
 *    address (unique per network namespace, like ports; the kernel drops it
 *    when the process dies, however it dies), closes the race between two
 *    gateways starting at once;
 *  - a probe bind without SO_REUSEPORT fails when anyone else (another
 *    program, an older moongate) already listens there.
 * Either gives the usual "Address already in use". Returns the lock's fd, or
 * -1 with *err (malloc'd). */
static int claim_addr(const mg_listener_t *l, char **err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    int family = listener_addr(l, &sa, &salen, err);
    if (family < 0)
        return -1;
    char ip[INET6_ADDRSTRLEN] = "";
    inet_ntop(family,
              family == AF_INET ? (void *)&((struct sockaddr_in *)&sa)->sin_addr
                                : (void *)&((struct sockaddr_in6 *)&sa)->sin6_addr,
              ip, sizeof(ip));
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    /* sun_path[0] = 0: the abstract namespace, no file */
    int n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "moongate/listen/%s/%u", ip,
                     l->port);
    socklen_t unlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int lock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lock < 0 || bind(lock, (struct sockaddr *)&un, unlen) < 0) {
        int e = errno;
        *err = mg_strf("listen %s:%u: %s%s", l->host, l->port, strerror(e),
                       e == EADDRINUSE ? " (another moongate serves it)" : "");
        if (lock >= 0)
            close(lock);
        return -1;
    }
    /* SO_REUSEADDR so that connections of an earlier run in TIME_WAIT do
     * not count: only a listening (or bound) socket conflicts */
    int probe = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (probe < 0 || setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(probe, (struct sockaddr *)&sa, salen) < 0) {
        int e = errno;
        *err = mg_strf("listen %s:%u: %s", l->host, l->port, strerror(e));
        if (probe >= 0)
            close(probe);
        close(lock);
        return -1;
    }
    close(probe);
    return lock;
}

/* A socket of our own so that SO_REUSEPORT is set before bind (libuv 1.44
 * has no flag for it): each worker gets its own accept queue. */
static int listen_on(mg_worker_t *w, uv_tcp_t *t, const mg_listener_t *l, char **err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    int family = listener_addr(l, &sa, &salen, err);
    if (family < 0)
        return -1;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        *err = mg_strf("listen %s:%u: %s", l->host, l->port, strerror(e));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uv_tcp_init(&w->loop, t);
    t->data = (void *)(uintptr_t)l->port;
    w->listeners_open++;
    w->listen_fds[w->nlisteners] = fd;
    if (uv_tcp_open(t, fd) < 0 || uv_listen((uv_stream_t *)t, 4096, on_connection) < 0) {
        *err = mg_strf("listen %s:%u: cannot start listening", l->host, l->port);
        return -1;
    }
    return 0;
}

/* ---- shutdown ----------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h)
{
    mg_worker_t *w = h->loop->data;
    w->listeners_open--;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* ---- generations ------------------------------------------------------- */

/* Builds worker w's side of generation gen: pools, Lua state, hooks.
 * Returns NULL with *err (malloc'd) on failure. */
static mg_wgen_t *wgen_new(mg_worker_t *w, mg_gen_t *gen, char **err)
{
    mg_wgen_t *g = calloc(1, sizeof(*g));
    if (!g) {
        *err = strdup("out of memory");
        return NULL;
    }
    g->w = w;
    g->gen = gen;
    g->cfg = gen->cfg;
    g->router = gen->router;
    atomic_fetch_add(&gen->refs, 1);
    g->split_cw = calloc(g->cfg->split_weights + 1, sizeof(*g->split_cw));
    g->mirror_inflight = calloc(g->cfg->nroutes + 1, sizeof(*g->mirror_inflight));
    if (!g->split_cw || !g->mirror_inflight || mg_pools_init(g) < 0) {
        *err = strdup("out of memory");
    } else if (mg_lua_gen_init(g, err) == 0) {
        return g;
    }
    free(g->split_cw);
    free(g->mirror_inflight);
    mg_pools_free(g);
    mg_gen_release(gen);
    free(g);
    return NULL;
}

/* After the loop ended or once nothing holds it. */
static void wgen_free(mg_wgen_t *g)
{
    mg_pools_close(g);
    mg_lua_gen_close(g);
    mg_pools_free(g);
    free(g->split_cw);
    free(g->mirror_inflight);
    mg_gen_release(g->gen);
    free(g);
}

/* Runs after every loop turn: frees retired generations nobody holds. */
static void on_reap(uv_check_t *h)
{
    mg_worker_t *w = h->data;
    mg_wgen_t **pp = &w->retired;
    while (*pp) {
        mg_wgen_t *g = *pp;
        if (g->refs == 0) {
            *pp = g->next;
            wgen_free(g);
        } else {
            pp = &g->next;
        }
    }
    if (!w->retired)
        uv_check_stop(&w->reaper);
}

/* Makes g current; the old current generation is retired (its requests
 * finish on it) and its pools hand their idle connections over. */
static void wgen_switch(mg_worker_t *w, mg_wgen_t *g)
{
    mg_wgen_t *old = w->g;
    /* heads are built in the worker's scratch: room for the new limits */
    size_t need = g->cfg->limits.header_size + g->cfg->limits.request_line * 3 + 65536;
    if (need > w->scratch_cap) {
        char *p = realloc(w->scratch, need);
        if (p) {
            w->scratch = p;
            w->scratch_cap = need;
        }
    }
    g->refs++; /* the worker's own hold while current */
    w->g = g;
    atomic_store(&w->budget_ms, g->cfg->timeouts.hook);
    mg_lua_gen_go_live(g);
    if (!old)
        return;
    mg_lua_gen_retire(old);  /* its timers stop now */
    old->next = w->retired;
    w->retired = old;
    /* every older generation's pools now lead to this one's */
    for (mg_wgen_t *r = w->retired; r; r = r->next)
        mg_pools_adopt(g, r);
    mg_wgen_release(old);
    uv_check_start(&w->reaper, on_reap);
}

/* Everything left is closed; the loop then ends. */
static void worker_finish(mg_worker_t *w)
{
    if (w->stopping == 2)
        return;
    w->stopping = 2;
    mg_pools_close(w->g);
    for (mg_wgen_t *r = w->retired; r; r = r->next)
        mg_pools_close(r);
    mg_http_client_close(w);
    mg_redis_worker_close(w);
    mg_accesslog_close(w);
    mg_cache_worker_close(w);
    if (!uv_is_closing((uv_handle_t *)&w->shutdown_timer))
        uv_close((uv_handle_t *)&w->shutdown_timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&w->wakeup))
        uv_close((uv_handle_t *)&w->wakeup, NULL);
}

/* A client connection closed (w->conn_closed, called by the protocol). */
static void conn_closed(mg_worker_t *w)
{
    if (w->stopping == 1 && w->nconns == 0)
        worker_finish(w);
}

static void on_shutdown_deadline(uv_timer_t *t)
{
    mg_worker_t *w = t->data;
    /* in-flight requests had their time: close what is left */
    mg_link_t *l = w->conns.next;
    while (l != &w->conns) {
        mg_link_t *next = l->next;
        mg_conn_abort(mg_container_of(l, mg_conn_t, link));
        l = next;
    }
    if (w->nconns == 0)
        worker_finish(w);
}

static void begin_stop(mg_worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *)&w->listeners[i]))
            uv_close((uv_handle_t *)&w->listeners[i], on_listener_closed);
    mg_link_t *l = w->conns.next;
    while (l != &w->conns) {
        mg_link_t *next = l->next;
        mg_conn_close_if_idle(mg_container_of(l, mg_conn_t, link));
        l = next;
    }
    uv_timer_start(&w->shutdown_timer, on_shutdown_deadline, w->g->cfg->timeouts.shutdown, 0);
    if (w->nconns == 0)
        worker_finish(w);
}

/* Commands from the control thread (stop, and the two steps of a reload:
 * build the new generation everywhere first, then switch everywhere). */
static void on_wakeup(uv_async_t *a)
{
    mg_worker_t *w = a->data;
    if (atomic_exchange(&w->targets_changed, 0) && w->g && !w->stopping &&
        mg_pools_sync(w->g) < 0)
        mg_log(MG_LOG_ERROR, "worker %d: out of memory taking the new upstream targets\n", w->id);
    int cmd = atomic_exchange(&w->ctl_cmd, MG_CTL_NONE);
    switch (cmd) {
    case MG_CTL_STOP:
        begin_stop(w);
        return; /* nobody waits for a stop */
    case MG_CTL_COMMIT:
        if (w->prepared && !w->stopping) {
            wgen_switch(w, w->prepared);
            /* HTTP/2 connections keep the settings they began with: their
             * clients are asked to open a new one (GOAWAY) */
            for (mg_link_t *l = w->conns.next; l != &w->conns; l = l->next)
                mg_conn_reload(mg_container_of(l, mg_conn_t, link));
        } else if (w->prepared)
            wgen_free(w->prepared);
        w->prepared = NULL;
        break;
    case MG_CTL_ABORT:
        if (w->prepared)
            wgen_free(w->prepared);
        w->prepared = NULL;
        break;
    default:
        return;
    }
    uv_sem_post(w->ctl_done);
}

/* ---- the thread --------------------------------------------------------- */

static void make_reqid_prefix(mg_worker_t *w)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[6] = { 0 };
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, rnd, sizeof(rnd));
        (void)n;
        close(fd);
    }
    rnd[5] = (unsigned char)((rnd[5] & 0xf0) | (w->id & 0x0f));
    for (int i = 0; i < 6; i++) {
        w->reqid_prefix[2 * i] = hex[rnd[i] >> 4];
        w->reqid_prefix[2 * i + 1] = hex[rnd[i] & 15];
    }
    w->reqid_prefix[12] = 0;
}

char *mg_worker_setup(mg_worker_t *w, mg_gen_t *gen)
{
    char *err = NULL;
    const mg_config_t *cfg = gen->cfg;
    w->loop.data = w;
    mg_list_init(&w->conns);
    w->upstream = &mg_proxy_ops; /* the pipeline reaches the proxy through it */
    w->mirror = mg_mirror_request; /* ... the proxy the mirrors */
    make_reqid_prefix(w);
    w->trace_rng = mg_trace_seed();
    w->conn_closed = conn_closed;
    int bufs_rc = mg_bufs_init(&w->bufs, MAX_FREE_BUFS);
    w->scratch_cap = cfg->limits.header_size + cfg->limits.request_line * 3 + 65536;
    w->scratch = malloc(w->scratch_cap);
    if (bufs_rc < 0 || !w->scratch)
        return strdup("out of memory");
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_check_init(&w->loop, &w->reaper);
    w->reaper.data = w;
    mg_wgen_t *g = wgen_new(w, gen, &err);
    if (!g)
        return err;
    wgen_switch(w, g);
    uv_timer_init(&w->loop, &w->shutdown_timer);
    w->shutdown_timer.data = w;
    mg_cache_worker_init(w);
    int rc = mg_accesslog_open(w);
    if (rc < 0) {
        err = mg_strf("access_log %s: %s", cfg->access_log, strerror(-rc));
        return err;
    }
    return NULL;
}

static char *worker_setup(mg_worker_t *w, mg_gen_t *gen)
{
    char *err = mg_worker_setup(w, gen);
    const mg_config_t *cfg = gen->cfg;
    if (err)
        return err;
    w->listeners = calloc(cfg->nlisteners, sizeof(uv_tcp_t));
    w->listen_fds = calloc(cfg->nlisteners, sizeof(int));
    if (!w->listeners || !w->listen_fds)
        return strdup("out of memory");
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (listen_on(w, &w->listeners[i], &cfg->listeners[i], &err) < 0)
            return err;
        w->nlisteners++;
    }
    return NULL;
}

static _Atomic int start_failed;

static void worker_main(void *arg)
{
    mg_worker_t *w = arg;
    char name[16]; /* shown by top -H and ps -L, and found by the syscall spec */
    snprintf(name, sizeof(name), "mg-worker-%d", w->id);
    pthread_setname_np(pthread_self(), name);
    char *err = worker_setup(w, w->ctl_gen);
    if (err) {
        mg_log(MG_LOG_ERROR, "worker %d: %s\n", w->id, err);
        free(err);
        w->start_error = 1;
        atomic_store(&start_failed, 1);
    }
    uv_sem_post(w->ready);
    /* gw.http's https:// default (the system CA bundle, some 140
     * certificates), built once here, listening already, rather than inside
     * the first hook that needs it (its time budget) */
    if (w->id == 0 && !w->start_error)
        mg_tls_client_default(NULL);
    if (!w->start_error)
        uv_run(&w->loop, UV_RUN_DEFAULT);
    mg_worker_teardown(w);
}

void mg_worker_teardown(mg_worker_t *w)
{
    /* close whatever is left (also after a failed start) */
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    mg_h2_worker_free(w);
    mg_accesslog_free(w);
    while (w->retired) {
        mg_wgen_t *g = w->retired;
        w->retired = g->next;
        wgen_free(g);
    }
    if (w->g)
        wgen_free(w->g);
    w->g = NULL;
    mg_http_client_free(w);
    mg_redis_worker_free(w);
    while (w->free_requests) {
        mg_request_t *r = w->free_requests;
        w->free_requests = r->next_free;
        free(r->headers);
        free(r->htok);
        free(r->scratch);
        free(r);
    }
    mg_bufs_free(&w->bufs);
    free(w->scratch);
    free(w->listeners);
    free(w->listen_fds);
    uv_loop_close(&w->loop);
}

static void release_claims(mg_workers_t *ws)
{
    for (size_t i = 0; i < ws->nclaims; i++)
        close(ws->claims[i]);
    free(ws->claims);
    ws->claims = NULL;
    ws->nclaims = 0;
}

int mg_workers_start(mg_workers_t *ws, mg_gen_t *gen, int n, char **err)
{
    memset(ws, 0, sizeof(*ws));
    const mg_config_t *cfg = gen->cfg;
    ws->claims = calloc(cfg->nlisteners + 1, sizeof(int));
    ws->w = calloc((size_t)n, sizeof(mg_worker_t));
    if (!ws->w || !ws->claims) {
        free(ws->w);
        free(ws->claims);
        ws->w = NULL;
        ws->claims = NULL;
        *err = strdup("out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        int fd = claim_addr(&cfg->listeners[i], err);
        if (fd < 0) {
            release_claims(ws);
            free(ws->w);
            ws->w = NULL;
            return -1;
        }
        ws->claims[ws->nclaims++] = fd;
    }
    uv_sem_t ready;
    uv_sem_init(&ready, 0);
    for (int i = 0; i < n; i++) {
        mg_worker_t *w = &ws->w[i];
        w->id = i;
        w->ctl_gen = gen;
        w->ready = &ready;
        uv_loop_init(&w->loop);
        if (uv_thread_create(&w->thread, worker_main, w) != 0) {
            *err = strdup("cannot create a worker thread");
            ws->n = i;
            mg_workers_stop(ws);
            mg_workers_join(ws);
            uv_sem_destroy(&ready);
            return -1;
        }
        ws->n = i + 1;
    }
    for (int i = 0; i < n; i++)
        uv_sem_wait(&ready);
    uv_sem_destroy(&ready);
    if (atomic_load(&start_failed)) {
        *err = strdup("a worker failed to start (see above)");
        mg_workers_stop(ws);
        mg_workers_join(ws);
        return -1;
    }
    return 0;
}

/* Sends cmd to every worker and waits until each has handled it. */
static void command_all(mg_workers_t *ws, int cmd, mg_gen_t *gen)
{
    uv_sem_t done;
    uv_sem_init(&done, 0);
    int sent = 0;
    for (int i = 0; i < ws->n; i++) {
        mg_worker_t *w = &ws->w[i];
        if (w->start_error || atomic_load(&w->quarantined))
            continue; /* a stuck worker keeps the generation it has */
        w->ctl_gen = gen;
        w->ctl_done = &done;
        atomic_store(&w->ctl_cmd, cmd);
        uv_async_send(&w->wakeup);
        sent++;
    }
    for (int i = 0; i < sent; i++)
        uv_sem_wait(&done);
    uv_sem_destroy(&done);
}

void mg_workers_targets_changed(mg_workers_t *ws)
{
    for (int i = 0; i < ws->n; i++) {
        atomic_store(&ws->w[i].targets_changed, 1);
        uv_async_send(&ws->w[i].wakeup);
    }
}

int mg_workers_reload(mg_workers_t *ws, mg_gen_t *gen, char **err)
{
    /* Each worker's side is built here, on the control thread, so that the
     * workers keep serving meanwhile: nothing in it touches a worker's loop
     * before the switch (timers start then). */
    for (int i = 0; i < ws->n && !*err; i++) {
        mg_worker_t *w = &ws->w[i];
        if (w->start_error || atomic_load(&w->quarantined))
            continue;
        char *why = NULL;
        w->prepared = wgen_new(w, gen, &why);
        if (!w->prepared) {
            *err = mg_strf("worker %d: %s", w->id, why ? why : "cannot build the generation");
            free(why);
        }
    }
    if (*err) {
        for (int i = 0; i < ws->n; i++) {
            mg_worker_t *w = &ws->w[i];
            if (w->prepared)
                wgen_free(w->prepared);
            w->prepared = NULL;
        }
        return -1;
    }
    command_all(ws, MG_CTL_COMMIT, gen);
    return 0;
}

void mg_workers_stop(mg_workers_t *ws)
{
    for (int i = 0; i < ws->n; i++) {
        mg_worker_t *w = &ws->w[i];
        if (!w->start_error) {
            atomic_store(&w->ctl_cmd, MG_CTL_STOP);
            uv_async_send(&w->wakeup);
        }
    }
}

/* A worker stuck in a hook LuaJIT cannot interrupt stops accepting: its
 * listening sockets are shut down from this (the control) thread, and the
 * kernel sends new connections to the other workers. */
void mg_worker_quarantine(mg_worker_t *w)
{
    if (atomic_exchange(&w->quarantined, 1))
        return;
    for (size_t i = 0; i < w->nlisteners; i++)
        shutdown(w->listen_fds[i], SHUT_RDWR);
}

int mg_workers_join_within(mg_workers_t *ws, uint64_t ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (int i = 0; i < ws->n; i++)
        if (pthread_timedjoin_np(ws->w[i].thread, NULL, &deadline) != 0)
            return -1;
    free(ws->w);
    ws->w = NULL;
    ws->n = 0;
    release_claims(ws);
    return 0;
}

void mg_workers_join(mg_workers_t *ws)
{
    for (int i = 0; i < ws->n; i++)
        uv_thread_join(&ws->w[i].thread);
    free(ws->w);
    ws->w = NULL;
    ws->n = 0;
    release_claims(ws);
}
