/* redis.c: per-worker asynchronous Redis clients (see redis.h and the redis
 * section of mg_ffi.h).
 *
 * hiredis does the protocol; this file gives it the worker's libuv loop
 * through its event hooks (ev.addRead ... ev.cleanup). hiredis ships an
 * adapter for that (adapters/libuv.h), but its poll handle is malloc'd
 * and freed in a close callback of its own, and it keeps the loop alive:
 * worker.c's last walk closes every handle without callbacks, so the
 * handle would leak or be closed twice, and an idle connection would keep
 * a stopping worker running. Here the handles are embedded in the
 * connection, unref'd, and freed with it in mg_redis_worker_free.
 *
 * A command is an op_t. Once hiredis has accepted it, hiredis owns it: the
 * reply callback runs exactly once (with the reply, or NULL when the
 * connection goes) and frees it. Until then the op may be answered early
 * (never: a timeout drops the whole connection, which runs the callbacks)
 * or cancelled: when the waiting request dies, hooks.c calls op_cancel and
 * the op forgets its hook, so the reply is dropped when it comes.
 *
 * Replies come in the order commands were sent, so each connection keeps
 * its ops in a FIFO; its timer watches the oldest one (and the connect
 * deadline). When the oldest is late the server is deemed stuck and the
 * connection is dropped: every command on it fails with "timeout".
 *
 * Scripts: EVALSHA with the script's SHA-1; on NOSCRIPT (a restarted or
 * flushed server) the same op is sent again once as EVAL, which also loads
 * the script for the next ones. Ops keep their script arguments for that.
 */
#include "redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "mg_ffi.h"

#define MAX_POOL 64
#define MAX_ARGS 32      /* arguments of one command or script call */
#define OP_INLINE 256    /* saved script arguments up to this size live in the op */
#define MAX_FREE_OPS 256 /* idle ops kept per worker */
#define BACKOFF_MIN 50   /* ms before the first new connection attempt */
#define BACKOFF_MAX 1000 /* ms, the longest wait between attempts */
#define WHY_MAX 128

enum { C_DOWN, C_CONNECTING, C_READY };

typedef struct rworker_s rworker_t;
typedef struct conn_s conn_t;
typedef struct mg_redis_op_s op_t;

typedef struct script_s {
    char sha[41];
    char *src;
    size_t len;
} script_t;

struct mg_redis_op_s {
    op_t *next; /* FIFO of its connection, or the free list */
    conn_t *conn;
    mg_hook_co_t *hc;  /* the waiting hook; NULL once cancelled or answered */
    mg_redis_done_fn done; /* or C code waiting (mg_redis_command_c) */
    void *done_arg;
    uint64_t deadline; /* loop ms */
    redisReply *reply; /* while push_reply runs */
    const char *why;   /* no reply: why */
    int script;        /* index into the worker's scripts, -1: a plain command */
    int retried;       /* sent again as EVAL */
    int nkeys;
    int argc; /* saved script arguments */
    size_t lens[MAX_ARGS];
    char *data; /* inl, or malloc'd when bigger */
    char inl[OP_INLINE];
};

struct conn_s {
    mg_redis_t *rs;
    redisAsyncContext *ac;  /* NULL while down */
    redisAsyncContext *pac; /* the context the poll handle serves */
    uv_poll_t poll;         /* initialised per connection */
    uv_timer_t timer;       /* connect deadline, oldest command's deadline */
    int events;
    uint8_t state;
    uint8_t poll_open; /* poll initialised and its close callback not run */
    op_t *head, *tail; /* commands sent, oldest first */
    unsigned pending;
    uint64_t connect_deadline;
};

struct mg_redis_s {
    mg_redis_t *next;
    rworker_t *rw;
    char *host;
    int port;
    char *username; /* NULL: AUTH password (the default user) */
    char *password; /* NULL: no AUTH */
    size_t username_len, password_len;
    int db;
    int npool;
    uint64_t connect_timeout, timeout; /* ms */
    int up;                            /* no failure since the last success */
    int failed_once;                   /* a failure was logged: log the recovery */
    uint64_t retry_at;                 /* loop ms: no new connection before */
    uint64_t backoff;
    conn_t *conns;
    char why[WHY_MAX]; /* the last failure */
};

struct rworker_s {
    mg_worker_t *w;
    mg_redis_t *clients;
    script_t *scripts;
    int nscripts, cap_scripts;
    op_t *free_ops;
    int nfree_ops;
    int closed;  /* no new commands */
    int freeing; /* never resume a hook again */
};

static _Thread_local rworker_t *tls_rw;

static uv_loop_t *loop_of(const mg_redis_t *rs) { return &rs->rw->w->loop; }

static void say(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    mg_ffi_log(level, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

/* ---- ops ---------------------------------------------------------------- */

static op_t *op_get(rworker_t *rw, size_t bytes)
{
    op_t *op = rw->free_ops;

    if (op != NULL) {
        rw->free_ops = op->next;
        rw->nfree_ops--;
    } else if ((op = malloc(sizeof(*op))) == NULL) {
        return NULL;
    }
    op->next = NULL;
    op->conn = NULL;
    op->hc = NULL;
    op->done = NULL;
    op->done_arg = NULL;
    op->reply = NULL;
    op->why = NULL;
    op->script = -1;
    op->retried = 0;
    op->nkeys = op->argc = 0;
    op->data = op->inl;
    if (bytes > OP_INLINE && (op->data = malloc(bytes)) == NULL) {
        free(op);
        return NULL;
    }
    return op;
}

static void op_put(rworker_t *rw, op_t *op)
{
    if (op->data != op->inl)
        free(op->data);
    if (rw->nfree_ops >= MAX_FREE_OPS || rw->freeing) {
        free(op);
        return;
    }
    op->next = rw->free_ops;
    rw->free_ops = op;
    rw->nfree_ops++;
}

/* hooks.c: the request waiting for op died. The reply will be dropped. */
static void op_cancel(void *arg)
{
    op_t *op = arg;

    op->hc = NULL;
}

static void fifo_push(conn_t *c, op_t *op)
{
    op->next = NULL;
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    c->pending++;
}

/* Replies come in order: the op answered is the oldest. */
static void fifo_pop(conn_t *c, op_t *op)
{
    if (c->head != op) { /* cannot happen; keep the list sound anyway */
        op_t **p = &c->head, *prev = NULL;

        while (*p && *p != op)
            prev = *p, p = &(*p)->next;
        if (!*p)
            return;
        *p = op->next;
        if (c->tail == op)
            c->tail = prev;
    } else {
        c->head = op->next;
        if (c->tail == op)
            c->tail = NULL;
    }
    c->pending--;
    op->next = NULL;
}

/* ---- replies to Lua --------------------------------------------------- */

static void push_value(lua_State *L, const redisReply *r, int depth)
{
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_ARRAY:
        if (depth > 8 || !lua_checkstack(L, 4)) {
            lua_pushnil(L);
            break;
        }
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_value(L, r->element[i], depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default:
        lua_pushnil(L);
    }
}

/* What the hook's yield returns: true and the reply (an array as one value
 * per element), or nil and a reason. */
static int push_reply(lua_State *L, void *arg)
{
    op_t *op = arg;
    const redisReply *r = op->reply;

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        if (r)
            lua_pushlstring(L, r->str, r->len);
        else
            lua_pushstring(L, op->why ? op->why : "no reply");
        return 2;
    }
    lua_pushboolean(L, 1);
    if (r->type != REDIS_REPLY_ARRAY) {
        push_value(L, r, 0);
        return 2;
    }
    if (r->elements > 7000 || !lua_checkstack(L, (int)r->elements + 4)) {
        push_value(L, r, 0); /* too many for the stack: one table */
        return 2;
    }
    for (size_t i = 0; i < r->elements; i++)
        push_value(L, r->element[i], 1);
    return 1 + (int)r->elements;
}

/* The op is over: resume its hook (if any still waits) and recycle it. */
static void op_finish(rworker_t *rw, op_t *op, redisReply *reply, const char *why)
{
    mg_hook_co_t *hc = op->hc;
    mg_redis_done_fn done = op->done;

    op->done = NULL;
    if (done != NULL && !rw->freeing)
        done(op->done_arg, reply, reply ? NULL : why);

    op->hc = NULL;
    if (hc != NULL && !rw->freeing) {
        op->reply = reply;
        op->why = why;
        mg_hook_wait_end(hc, push_reply, op);
    }
    op_put(rw, op);
}

/* ---- connections -------------------------------------------------------- */

static void conn_arm(conn_t *c);
static void on_timer(uv_timer_t *t);
static int conn_connect(conn_t *c);

/* A connection attempt failed or an established connection is gone: the
 * connection is down and forgets its context (hiredis frees it, or the
 * caller does). Backs the client off, says so in the log once, and
 * schedules the next attempt. */
static void conn_failed(conn_t *c, const char *why)
{
    mg_redis_t *rs = c->rs;
    int any_ready = 0;

    c->state = C_DOWN;
    c->ac = NULL;
    uv_timer_stop(&c->timer);
    snprintf(rs->why, sizeof(rs->why), "%s", why && *why ? why : "connection lost");
    for (int i = 0; i < rs->npool; i++)
        any_ready |= rs->conns[i].state == C_READY;
    if (rs->up && !any_ready) {
        rs->up = 0;
        rs->backoff = BACKOFF_MIN;
        if (!rs->rw->closed) {
            say(3, "redis %s:%d unavailable (%s): commands fail until it answers again", rs->host,
                rs->port, rs->why);
            rs->failed_once = 1;
        }
    } else if (!any_ready) {
        rs->backoff = rs->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : rs->backoff * 2;
    }
    rs->retry_at = uv_now(loop_of(rs)) + rs->backoff;
    /* try again in the background: ready before traffic needs it */
    if (!rs->rw->closed)
        uv_timer_start(&c->timer, on_timer, rs->backoff, 0);
}

/* Drops the connection ourselves (timeout, refused handshake, shutdown):
 * its pending commands fail with `why` (now, or right after the hiredis
 * callback that called this returns). */
static void conn_drop(conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;

    if (ac == NULL)
        return;
    conn_failed(c, why);
    redisAsyncFree(ac);
}

/* hiredis event hooks (privdata = the connection) */
static void on_poll(uv_poll_t *h, int status, int events)
{
    conn_t *c = h->data;

    if (status < 0)
        events = UV_READABLE | UV_WRITABLE; /* let hiredis find the error */
    if (c->pac && (events & UV_READABLE))
        redisAsyncHandleRead(c->pac);
    if (c->pac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(c->pac);
    if (status < 0 && c->pac && c->pac == c->ac) /* libuv stopped polling it */
        conn_drop(c, uv_strerror(status));
}

static void ev_update(conn_t *c, int events)
{
    if (!c->poll_open || uv_is_closing((uv_handle_t *)&c->poll) || events == c->events)
        return;
    c->events = events;
    if (events)
        uv_poll_start(&c->poll, events, on_poll);
    else
        uv_poll_stop(&c->poll);
}

static void ev_add_read(void *p)
{
    conn_t *c = p;
    ev_update(c, c->events | UV_READABLE);
}

static void ev_del_read(void *p)
{
    conn_t *c = p;
    ev_update(c, c->events & ~UV_READABLE);
}

static void ev_add_write(void *p)
{
    conn_t *c = p;
    ev_update(c, c->events | UV_WRITABLE);
}

static void ev_del_write(void *p)
{
    conn_t *c = p;
    ev_update(c, c->events & ~UV_WRITABLE);
}

static void on_poll_closed(uv_handle_t *h)
{
    conn_t *c = h->data;

    c->poll_open = 0;
}

/* hiredis is freeing the context: the poll handle goes (its fd is closed
 * by hiredis right after). */
static void ev_cleanup(void *p)
{
    conn_t *c = p;

    c->pac = NULL;
    c->events = 0;
    if (c->poll_open && !uv_is_closing((uv_handle_t *)&c->poll))
        uv_close((uv_handle_t *)&c->poll, on_poll_closed);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;

    if (status != REDIS_OK && c->ac == ac)
        conn_failed(c, ac->errstr); /* hiredis frees ac next */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;

    if (c->ac == ac)
        conn_failed(c, status == REDIS_OK ? "closed" : ac->errstr);
}

static void on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    conn_t *c = privdata;
    redisReply *reply = r;
    char why[WHY_MAX];

    if (reply == NULL || c->ac != ac || reply->type != REDIS_REPLY_ERROR)
        return;
    snprintf(why, sizeof(why), "refused: %.*s", (int)reply->len, reply->str);
    conn_drop(c, why);
}

/* PING answered: the connection serves commands. */
static void on_ready(redisAsyncContext *ac, void *r, void *privdata)
{
    conn_t *c = privdata;
    mg_redis_t *rs = c->rs;
    redisReply *reply = r;

    if (reply == NULL || c->ac != ac)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        on_handshake(ac, r, privdata);
        return;
    }
    c->state = C_READY;
    if (!rs->up && rs->failed_once)
        say(2, "redis %s:%d answers again", rs->host, rs->port);
    rs->up = 1;
    rs->backoff = BACKOFF_MIN;
    conn_arm(c);
}

/* The connection's deadlines (connecting, oldest command) and, while it is
 * down, its next attempt to connect. */
static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    uint64_t now = uv_now(t->loop);

    if (c->state == C_DOWN) {
        if (c->rs->rw->closed)
            return;
        if (c->poll_open || c->head != NULL) /* the old connection is still going */
            uv_timer_start(&c->timer, on_timer, 10, 0);
        else
            conn_connect(c);
        return;
    }
    if (c->state == C_CONNECTING && now >= c->connect_deadline) {
        conn_drop(c, "connect timeout");
        return;
    }
    if (c->head && now >= c->head->deadline) {
        conn_drop(c, "timeout");
        return;
    }
    conn_arm(c);
}

/* Sets the timer to the next deadline: connecting, or the oldest command. */
static void conn_arm(conn_t *c)
{
    uint64_t next = UINT64_MAX, now = uv_now(loop_of(c->rs));

    if (c->state == C_CONNECTING)
        next = c->connect_deadline;
    if (c->head && c->head->deadline < next)
        next = c->head->deadline;
    if (next == UINT64_MAX || c->state == C_DOWN) {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, on_timer, next > now ? next - now : 0, 0);
}

/* Starts connecting. Returns 0, or -1 when the attempt failed at once
 * (then the client backs off). */
static int conn_connect(conn_t *c)
{
    mg_redis_t *rs = c->rs;
    uv_loop_t *loop = loop_of(rs);
    redisAsyncContext *ac = redisAsyncConnect(rs->host, rs->port);

    if (ac == NULL) {
        conn_failed(c, "out of memory");
        return -1;
    }
    if (ac->err) {
        char why[WHY_MAX];

        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        conn_failed(c, why);
        return -1;
    }
    if (uv_poll_init(loop, &c->poll, ac->c.fd) != 0) {
        redisAsyncFree(ac);
        conn_failed(c, "cannot poll the socket");
        return -1;
    }
    uv_unref((uv_handle_t *)&c->poll);
    c->poll.data = c;
    c->poll_open = 1;
    c->events = 0;
    c->pac = ac;
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    c->state = C_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* pipelined behind the connect: the first replies on this connection */
    if (rs->password && rs->username) /* a Redis 6 ACL user */
        redisAsyncCommand(ac, on_handshake, c, "AUTH %b %b", rs->username, rs->username_len,
                          rs->password, rs->password_len);
    else if (rs->password)
        redisAsyncCommand(ac, on_handshake, c, "AUTH %b", rs->password, rs->password_len);
    if (rs->db)
        redisAsyncCommand(ac, on_handshake, c, "SELECT %d", rs->db);
    redisAsyncCommand(ac, on_ready, c, "PING");
    c->connect_deadline = uv_now(loop) + rs->connect_timeout;
    conn_arm(c);
    return 0;
}

/* The connection a new command goes to: the ready one with the fewest
 * commands in flight; while none is ready, a connecting one if the client
 * has not failed since its last success (at start), else none (fail fast).
 * Connections that are down and due for a new attempt start one. */
static conn_t *pick(mg_redis_t *rs)
{
    uint64_t now = uv_now(loop_of(rs));
    conn_t *best = NULL, *wait = NULL;

    for (int i = 0; i < rs->npool; i++) {
        conn_t *c = &rs->conns[i];

        if (c->state == C_DOWN && now >= rs->retry_at && !c->poll_open && c->head == NULL)
            conn_connect(c);
        if (c->state == C_READY) {
            if (!best || c->pending < best->pending)
                best = c;
        } else if (c->state == C_CONNECTING) {
            if (!wait || c->pending < wait->pending)
                wait = c;
        }
    }
    if (best)
        return best;
    return rs->up ? wait : NULL;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Sends script op as EVALSHA, or as EVAL with its source. Returns 0 once
 * hiredis owns the op. */
static int send_script(conn_t *c, op_t *op, int as_eval)
{
    rworker_t *rw = c->rs->rw;
    const script_t *sc = &rw->scripts[op->script];
    const char *av[MAX_ARGS + 3];
    size_t al[MAX_ARGS + 3];
    const char *p = op->data;
    char nk[16];

    av[0] = as_eval ? "EVAL" : "EVALSHA";
    al[0] = strlen(av[0]);
    av[1] = as_eval ? sc->src : sc->sha;
    al[1] = as_eval ? sc->len : 40;
    al[2] = (size_t)snprintf(nk, sizeof(nk), "%d", op->nkeys);
    av[2] = nk;
    for (int i = 0; i < op->argc; i++) {
        av[3 + i] = p;
        al[3 + i] = op->lens[i];
        p += op->lens[i];
    }
    if (redisAsyncCommandArgv(c->ac, on_reply, op, op->argc + 3, av, al) != REDIS_OK)
        return -1;
    op->retried |= as_eval;
    return 0;
}

/* Queues op (accepted by hiredis) on c and watches its deadline. */
static void track(conn_t *c, op_t *op)
{
    op->conn = c;
    op->deadline = uv_now(loop_of(c->rs)) + c->rs->timeout;
    fifo_push(c, op);
    if (c->head == op || !uv_is_active((uv_handle_t *)&c->timer))
        conn_arm(c); /* its deadline may come before the connect deadline */
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    op_t *op = privdata;
    conn_t *c = op->conn;
    rworker_t *rw = c->rs->rw;
    redisReply *reply = r;

    fifo_pop(c, op);
    if (reply && reply->type == REDIS_REPLY_ERROR && op->script >= 0 && !op->retried &&
        c->ac == ac && reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0 &&
        send_script(c, op, 1) == 0) {
        track(c, op); /* same op, now an EVAL */
        return;
    }
    if (reply == NULL && c->ac == ac)
        conn_failed(c, ac->errstr); /* hiredis is freeing ac after an error */
    op_finish(rw, op, reply, c->rs->why);
}

/* ---- FFI ---------------------------------------------------------------- */

static rworker_t *worker_state(int create)
{
    mg_worker_t *w = mg_hook_worker();

    if (w == NULL)
        return NULL;
    if (tls_rw != NULL)
        return tls_rw->w == w ? tls_rw : NULL;
    if (!create || (tls_rw = calloc(1, sizeof(*tls_rw))) == NULL)
        return NULL;
    tls_rw->w = w;
    return tls_rw;
}

static uint64_t to_ms(double s)
{
    double ms = s * 1000.0 + 0.5;

    return ms < 1 ? 1 : (uint64_t)ms;
}

mg_redis_t *mg_ffi_redis_client(const char *host, size_t host_len, int port, const char *username,
                                size_t username_len, const char *password, size_t password_len,
                                int db, int pool, double connect_timeout, double timeout,
                                const char **err)
{
    rworker_t *rw = worker_state(1);
    uint64_t cto, to;
    mg_redis_t *rs;

    if (rw == NULL) {
        *err = mg_hook_worker() ? "out of memory" : "not in a worker";
        return NULL;
    }
    if (rw->closed) {
        *err = "shutting down";
        return NULL;
    }
    if (host_len == 0 || host_len > 255 || memchr(host, 0, host_len) || port < 1 || port > 65535 ||
        db < 0 || pool < 1 || pool > MAX_POOL || !(connect_timeout > 0) || !(timeout > 0) ||
        connect_timeout > 86400 || timeout > 86400 ||
        (password && memchr(password, 0, password_len)) || (username && !password) ||
        (username && memchr(username, 0, username_len))) {
        *err = "bad settings";
        return NULL;
    }
    cto = to_ms(connect_timeout);
    to = to_ms(timeout);
    for (rs = rw->clients; rs; rs = rs->next)
        if (strlen(rs->host) == host_len && memcmp(rs->host, host, host_len) == 0 &&
            rs->port == port && rs->db == db && rs->npool == pool && rs->connect_timeout == cto &&
            rs->timeout == to && (rs->password != NULL) == (password != NULL) &&
            (!password || (rs->password_len == password_len &&
                           memcmp(rs->password, password, password_len) == 0)) &&
            (rs->username != NULL) == (username != NULL) &&
            (!username || (rs->username_len == username_len &&
                           memcmp(rs->username, username, username_len) == 0)))
            return rs;
    rs = calloc(1, sizeof(*rs));
    if (rs == NULL || (rs->host = strndup(host, host_len)) == NULL ||
        (password && (rs->password = strndup(password, password_len)) == NULL) ||
        (username && (rs->username = strndup(username, username_len)) == NULL) ||
        (rs->conns = calloc((size_t)pool, sizeof(conn_t))) == NULL) {
        if (rs) {
            free(rs->host);
            free(rs->password);
        free(rs->username);
            free(rs->username);
            free(rs);
        }
        *err = "out of memory";
        return NULL;
    }
    rs->rw = rw;
    rs->port = port;
    rs->password_len = password_len;
    rs->username_len = username_len;
    rs->db = db;
    rs->npool = pool;
    rs->connect_timeout = cto;
    rs->timeout = to;
    rs->up = 1;
    rs->backoff = BACKOFF_MIN;
    for (int i = 0; i < pool; i++) {
        conn_t *c = &rs->conns[i];

        c->rs = rs;
        c->state = C_DOWN;
        uv_timer_init(&rw->w->loop, &c->timer);
        uv_unref((uv_handle_t *)&c->timer);
        c->timer.data = c;
    }
    rs->next = rw->clients;
    rw->clients = rs;
    return rs;
}

int mg_ffi_redis_script(mg_redis_t *rs, const char *src, size_t len)
{
    rworker_t *rw = rs->rw;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    script_t *sc;

    for (int i = 0; i < rw->nscripts; i++)
        if (rw->scripts[i].len == len && memcmp(rw->scripts[i].src, src, len) == 0)
            return i;
    if (len == 0 || !EVP_Digest(src, len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return MG_FFI_EINVAL;
    if (rw->nscripts == rw->cap_scripts) {
        int cap = rw->cap_scripts ? rw->cap_scripts * 2 : 4;
        script_t *n = realloc(rw->scripts, (size_t)cap * sizeof(*n));

        if (n == NULL)
            return MG_FFI_ENOMEM;
        rw->scripts = n;
        rw->cap_scripts = cap;
    }
    sc = &rw->scripts[rw->nscripts];
    if ((sc->src = malloc(len)) == NULL)
        return MG_FFI_ENOMEM;
    memcpy(sc->src, src, len);
    sc->len = len;
    for (int i = 0; i < 20; i++)
        snprintf(sc->sha + 2 * i, 3, "%02x", md[i]);
    return rw->nscripts++;
}

/* Checks that a command may start now and finds its connection. */
static conn_t *start_check(mg_redis_t *rs, int argc, const size_t *argvlen, size_t *bytes, int *rc,
                           const char **err)
{
    rworker_t *rw = rs->rw;
    conn_t *c;

    *bytes = 0;
    if (rw->closed) {
        *err = "shutting down";
        *rc = MG_REDIS_ECLOSED;
        return NULL;
    }
    if (mg_hook_worker() != rw->w) {
        *err = "not in a hook of this worker";
        *rc = MG_FFI_EPHASE;
        return NULL;
    }
    if (argc < 0 || argc > MAX_ARGS) {
        *err = "too many arguments";
        *rc = MG_FFI_EINVAL;
        return NULL;
    }
    for (int i = 0; i < argc; i++)
        *bytes += argvlen[i];
    c = pick(rs);
    if (c == NULL) {
        *err = rs->why[0] ? rs->why : "unavailable";
        *rc = MG_REDIS_EDOWN;
    }
    return c;
}

/* The op is with hiredis: its hook now waits for it. */
static int wait_for(rworker_t *rw, conn_t *c, op_t *op, const char **err)
{
    mg_hook_co_t *hc;

    track(c, op);
    hc = mg_hook_wait_begin(op_cancel, op);
    if (hc == NULL) {
        *err = "not in a hook"; /* the reply will be dropped */
        return MG_FFI_EPHASE;
    }
    op->hc = hc;
    return 0;
}

int mg_ffi_redis_command(mg_redis_t *rs, int argc, const char **argv, const size_t *argvlen,
                         const char **err)
{
    rworker_t *rw = rs->rw;
    size_t bytes;
    int rc = 0;
    conn_t *c;
    op_t *op;

    if (argc < 1) {
        *err = "no command";
        return MG_FFI_EINVAL;
    }
    if ((c = start_check(rs, argc, argvlen, &bytes, &rc, err)) == NULL)
        return rc;
    if ((op = op_get(rw, 0)) == NULL) {
        *err = "out of memory";
        return MG_FFI_ENOMEM;
    }
    if (redisAsyncCommandArgv(c->ac, on_reply, op, argc, argv, argvlen) != REDIS_OK) {
        op_put(rw, op);
        *err = "cannot send";
        return MG_REDIS_EDOWN;
    }
    return wait_for(rw, c, op, err);
}

mg_redis_op_t *mg_redis_command_c(mg_redis_t *rs, int argc, const char **argv,
                                  const size_t *argvlen, mg_redis_done_fn done, void *arg,
                                  const char **err)
{
    rworker_t *rw = rs->rw;
    conn_t *c;
    op_t *op;

    if (rw->closed) {
        *err = "shutting down";
        return NULL;
    }
    if (argc < 1 || argc > MAX_ARGS) {
        *err = "bad arguments";
        return NULL;
    }
    if ((c = pick(rs)) == NULL) {
        *err = rs->why[0] ? rs->why : "unavailable";
        return NULL;
    }
    if ((op = op_get(rw, 0)) == NULL) {
        *err = "out of memory";
        return NULL;
    }
    if (redisAsyncCommandArgv(c->ac, on_reply, op, argc, argv, argvlen) != REDIS_OK) {
        op_put(rw, op);
        *err = "cannot send";
        return NULL;
    }
    track(c, op);
    op->done = done;
    op->done_arg = arg;
    return op;
}

void mg_redis_op_cancel(mg_redis_op_t *op)
{
    if (op)
        op->done = NULL;
}

int mg_ffi_redis_eval(mg_redis_t *rs, int script, int nkeys, int argc, const char **argv,
                      const size_t *argvlen, const char **err)
{
    rworker_t *rw = rs->rw;
    size_t bytes;
    int rc = 0;
    conn_t *c;
    op_t *op;
    char *p;

    if (script < 0 || script >= rw->nscripts || nkeys < 0 || nkeys > argc) {
        *err = "bad script or key count";
        return MG_FFI_EINVAL;
    }
    if ((c = start_check(rs, argc, argvlen, &bytes, &rc, err)) == NULL)
        return rc;
    if ((op = op_get(rw, bytes)) == NULL) {
        *err = "out of memory";
        return MG_FFI_ENOMEM;
    }
    op->script = script;
    op->nkeys = nkeys;
    op->argc = argc;
    p = op->data;
    for (int i = 0; i < argc; i++) {
        op->lens[i] = argvlen[i];
        memcpy(p, argv[i], argvlen[i]);
        p += argvlen[i];
    }
    if (send_script(c, op, 0) != 0) {
        op_put(rw, op);
        *err = "cannot send";
        return MG_REDIS_EDOWN;
    }
    return wait_for(rw, c, op, err);
}

int mg_ffi_redis_up(mg_redis_t *rs)
{
    for (int i = 0; i < rs->npool; i++)
        if (rs->conns[i].state == C_READY)
            return 1;
    return rs->up;
}

/* ---- worker exit -------------------------------------------------------- */

void mg_redis_worker_close(mg_worker_t *w)
{
    rworker_t *rw = tls_rw;

    if (rw == NULL || rw->w != w)
        return;
    rw->closed = 1;
    for (mg_redis_t *rs = rw->clients; rs; rs = rs->next)
        for (int i = 0; i < rs->npool; i++) {
            conn_t *c = &rs->conns[i];

            conn_drop(c, "shutting down");
            if (!uv_is_closing((uv_handle_t *)&c->timer))
                uv_close((uv_handle_t *)&c->timer, NULL);
        }
}

void mg_redis_worker_free(mg_worker_t *w)
{
    rworker_t *rw = tls_rw;
    int closing = 0;

    if (rw == NULL || rw->w != w)
        return;
    rw->closed = rw->freeing = 1;
    for (mg_redis_t *rs = rw->clients; rs; rs = rs->next)
        for (int i = 0; i < rs->npool; i++) {
            conn_t *c = &rs->conns[i];

            if (c->poll_open && !uv_is_closing((uv_handle_t *)&c->poll))
                closing = 1;               /* the drop below closes it */
            conn_drop(c, "shutting down"); /* its hooks are not resumed */
            if (!uv_is_closing((uv_handle_t *)&c->timer)) {
                uv_close((uv_handle_t *)&c->timer, NULL);
                closing = 1;
            }
            if (c->poll_open && !uv_is_closing((uv_handle_t *)&c->poll)) {
                uv_close((uv_handle_t *)&c->poll, NULL);
                closing = 1;
            }
        }
    if (closing) /* called while handles were open: let libuv finish with them */
        uv_run(&w->loop, UV_RUN_NOWAIT);
    while (rw->clients) {
        mg_redis_t *rs = rw->clients;

        rw->clients = rs->next;
        free(rs->conns);
        free(rs->host);
        free(rs->password);
        free(rs->username);
        free(rs);
    }
    for (int i = 0; i < rw->nscripts; i++)
        free(rw->scripts[i].src);
    free(rw->scripts);
    while (rw->free_ops) {
        op_t *op = rw->free_ops;

        rw->free_ops = op->next;
        free(op);
    }
    free(rw);
    tls_rw = NULL;
}
