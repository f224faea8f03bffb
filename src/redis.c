/* redis.c: per-worker asynchronous Redis clients (see redis.h and the redis
 * section of mg_ffi.h).
 *
 * hiredis does the protocol only: its reader (redisReader) parses replies
 * and redisFormatCommandArgv formats commands. The transport is this
 * file's, on the worker's libuv loop: a uv_tcp_t, with TLS over it for
 * rediss (tls_client.h, the upstreams' TLS client: verification, CA, SNI,
 * client certificate, session resumption). Plain and TLS connections take
 * the same path; conn_write and conn_read_start are the only places that
 * ask which. (Debian 12's hiredis 0.14 has no TLS, and its async context
 * would own the socket.) Handles are embedded in the connection and
 * unref'd: an idle connection never keeps a stopping worker running.
 *
 * Connecting: a host name is resolved with uv_getaddrinfo (off the loop's
 * thread; an address is used as it is), TCP connects, TLS shakes hands,
 * then AUTH / SELECT / PING, written ahead, are answered: the connection is
 * ready. connect_timeout covers all of it.
 *
 * Writing: a command is formatted into its connection's output buffer; the
 * worker's prepare handle writes the buffers that hold bytes once per loop
 * turn, before the loop waits: the commands of one turn (requests read
 * together) leave in one write, one TLS record. Until the transport is up
 * the buffer only grows. So a command call never fails later than its
 * return, and never answers before it.
 *
 * A command is an op_t, in its connection's FIFO from the moment it is
 * buffered: replies come in the order commands were sent. The connection's
 * timer watches the oldest op (and the connect deadline). When the oldest
 * is late the server is deemed stuck and the connection is dropped: every
 * op on it fails ("timeout"). An op is answered exactly once (its reply, or
 * a failure when its connection goes) unless cancelled: when the waiting
 * request dies, hooks.c calls op_cancel and the op forgets its hook; the
 * reply is dropped when it comes.
 *
 * Limits: what a server sends is input like any other. A reply holds at
 * most MAX_REPLY_ELEMENTS array elements in all and MAX_REPLY_BYTES bytes
 * not parsed yet; beyond either the connection is dropped ("reply too
 * large"). hiredis 0.14 has no element limit of its own (a reply that
 * announces 2^31 elements is an allocation of that many pointers).
 *
 * Scripts: EVALSHA with the script's SHA-1; on NOSCRIPT (a restarted or
 * flushed server) the same op is sent again once as EVAL, which also loads
 * the script for the next ones. Ops keep their script arguments for that.
 */
#include "redis.h"

#include <hiredis/hiredis.h>
#include <lua.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "mg_ffi.h"
#include "tls_client.h"
#include "wq.h"

#define MAX_POOL 64
#define MAX_ARGS 32      /* arguments of one command or script call */
#define OP_INLINE 256    /* saved script arguments up to this size live in the op */
#define MAX_FREE_OPS 256 /* idle ops kept per worker */
#define BACKOFF_MIN 50   /* ms before the first new connection attempt */
#define BACKOFF_MAX 1000 /* ms, the longest wait between attempts */
#define WHY_MAX 256
#define OUT_KEEP 65536   /* an output buffer larger than this is freed once written */
#define MAX_REPLY_ELEMENTS (1u << 20)          /* array elements in one reply, nested ones too */
#define MAX_REPLY_BYTES ((size_t)64 << 20)     /* bytes of one reply not parsed yet */
#define KEEPALIVE_S 60   /* TCP keep-alive of idle connections (NAT, load balancers) */

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

/* One connection of a client's pool, reused attempt after attempt. An
 * attempt owns tcp (tcp_open from uv_tcp_init to its close callback), the
 * getaddrinfo request while `resolving`, tls (rediss), reader and out; a
 * new attempt starts only once the last one's tcp and request are over. */
struct conn_s {
    mg_redis_t *rs;
    conn_t *next_dirty; /* in the worker's list of buffers to write */
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    mg_wq_t wq;             /* the socket's queue (ciphertext with TLS) */
    mg_tls_link_t *tls;     /* NULL: plain TCP */
    redisReader *reader;    /* NULL while down */
    uv_timer_t timer;       /* connect deadline, oldest command's deadline, next attempt */
    uint8_t state;
    uint8_t tcp_open, resolving, dirty;
    uint8_t wired;          /* connected (TLS done): out may be written */
    uint8_t hello;          /* AUTH / SELECT / PING replies still to come */
    uint8_t too_large;      /* the reader failed on our limit, not on memory */
    unsigned gen;           /* drops so far: a caller sees whether it dropped c */
    size_t reply_elements;  /* array elements of the reply being parsed */
    char *out;              /* formatted commands not written yet */
    size_t out_len, out_cap;
    op_t *head, *tail;      /* commands sent, oldest first */
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
    mg_tls_client_t *tls;              /* rediss: one reference; NULL: plain */
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
    uv_prepare_t flusher; /* writes the dirty connections' buffers */
    conn_t *dirty;
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
 * connection is down. Keeps why (copied: it may be the TLS link's text),
 * backs the client off, says so in the log once, and schedules the next
 * attempt. */
static void conn_failed(conn_t *c, const char *why)
{
    mg_redis_t *rs = c->rs;
    int any_ready = 0;

    c->state = C_DOWN;
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

static void on_tcp_closed(uv_handle_t *h)
{
    conn_t *c = h->data;

    c->tcp_open = 0;
}

/* Ends the attempt's transport: TLS (close_notify when it can), the
 * socket, a resolution under way (its callback still comes). */
static void transport_close(conn_t *c)
{
    mg_tls_link_close(c->tls);
    c->tls = NULL;
    c->wq.closed = 1; /* queued writes now only free their memory */
    c->wired = 0;
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->gai);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* The connection goes (a failure, a timeout, a refused handshake,
 * shutdown): down, its transport closed, every command on it answered with
 * why. Hooks may run (and send commands elsewhere) before it returns;
 * callers that go on with c compare c->gen. */
static void conn_drop(conn_t *c, const char *why)
{
    rworker_t *rw = c->rs->rw;
    char reason[WHY_MAX];
    op_t *op;

    if (c->state == C_DOWN)
        return;
    c->gen++;
    conn_failed(c, why); /* before the link goes: why may be its text */
    snprintf(reason, sizeof(reason), "%s", c->rs->why);
    transport_close(c);
    if (c->reader) /* hiredis 0.14's free does not take NULL */
        redisReaderFree(c->reader);
    c->reader = NULL;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    c->hello = 0;
    op = c->head;
    c->head = c->tail = NULL;
    c->pending = 0;
    while (op) {
        op_t *next = op->next;

        op->next = NULL;
        op_finish(rw, op, NULL, reason);
        op = next;
    }
}

/* ---- transport: the only place that asks whether TLS carries it --------- */

static int conn_write(conn_t *c, const uv_buf_t *b, unsigned n)
{
    return c->tls ? mg_tls_link_write(c->tls, b, n) : mg_wq_write(&c->wq, b, n);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static int conn_read_start(conn_t *c)
{
    if (c->tls)
        return mg_tls_link_read_start(c->tls, on_alloc, on_read);
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Why reading or writing failed, in words (into buf, WHY_MAX bytes). A
 * TLS 1.3 server judges the client's certificate after the client's
 * handshake ended: its refusal is an alert, or, when the commands written
 * behind the handshake reach it first, a reset that loses the alert. */
static const char *io_error(const conn_t *c, int code, char *buf)
{
    const char *why = code == UV_EOF ? "closed by the server" : uv_strerror(code);

    if (code == UV_EPROTO && c->tls)
        return mg_tls_link_error(c->tls);
    if (c->tls && c->state == C_CONNECTING &&
        (code == UV_EOF || code == UV_ECONNRESET || code == UV_EPIPE)) {
        snprintf(buf, WHY_MAX, "%s right after the TLS handshake (does the server want a "
                 "client certificate? tls.cert and tls.key)", why);
        return buf;
    }
    return why;
}

/* ---- writing ------------------------------------------------------------ */

/* Writes what c's buffer holds, once the transport is up. */
static void conn_flush(conn_t *c)
{
    uv_buf_t b;
    int rc;

    if (!c->wired || c->out_len == 0)
        return;
    b = uv_buf_init(c->out, (unsigned)c->out_len);
    rc = conn_write(c, &b, 1); /* copies what the socket does not take now */
    c->out_len = 0;
    if (c->out_cap > OUT_KEEP) { /* a big SET: do not keep its buffer */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (rc < 0) {
        char why[WHY_MAX];

        conn_drop(c, io_error(c, rc, why));
    }
}

static void on_flush(uv_prepare_t *p)
{
    rworker_t *rw = p->data;
    conn_t *c;

    while ((c = rw->dirty) != NULL) {
        rw->dirty = c->next_dirty;
        c->next_dirty = NULL;
        c->dirty = 0;
        conn_flush(c); /* a drop runs hooks, which may add to the list */
    }
    uv_prepare_stop(p);
}

/* Formats the command into c's buffer, to be written before the loop next
 * waits. 0, or -1 (out of memory: nothing was added). */
static int conn_send(conn_t *c, int argc, const char **argv, const size_t *argvlen)
{
    rworker_t *rw = c->rs->rw;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    if (len < 0)
        return -1;
    if (c->out_len + (size_t)len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 512;
        char *n;

        while (cap < c->out_len + (size_t)len)
            cap *= 2;
        if ((n = realloc(c->out, cap)) == NULL) {
            redisFreeCommand(cmd);
            return -1;
        }
        c->out = n;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, cmd, (size_t)len);
    c->out_len += (size_t)len;
    redisFreeCommand(cmd);
    if (c->wired && !c->dirty && !rw->closed) {
        c->dirty = 1;
        c->next_dirty = rw->dirty;
        rw->dirty = c;
        uv_prepare_start(&rw->flusher, on_flush);
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

/* hiredis's reply functions, but arrays are counted against the limit of
 * the connection being read (the reader's privdata). */
static redisReplyObjectFunctions reply_fns;
static void *(*hiredis_create_array)(const redisReadTask *task, int elements);
static pthread_once_t reply_fns_once = PTHREAD_ONCE_INIT;

static void *create_array(const redisReadTask *task, int elements)
{
    conn_t *c = task->privdata;

    if (elements < 0 || (size_t)elements > MAX_REPLY_ELEMENTS - c->reply_elements) {
        c->too_large = 1;
        return NULL; /* hiredis: an out-of-memory error, the connection goes */
    }
    c->reply_elements += (size_t)elements;
    return hiredis_create_array(task, elements);
}

static void reply_fns_init(void)
{
    redisReader *r = redisReaderCreate();

    if (r == NULL)
        return;
    reply_fns = *r->fn;
    hiredis_create_array = reply_fns.createArray;
    reply_fns.createArray = create_array;
    redisReaderFree(r);
}

static redisReader *reader_new(conn_t *c)
{
    redisReader *r;

    pthread_once(&reply_fns_once, reply_fns_init);
    if (hiredis_create_array == NULL || (r = redisReaderCreate()) == NULL)
        return NULL;
    r->fn = &reply_fns;
    r->privdata = c;
    return r;
}

static void conn_ready(conn_t *c)
{
    mg_redis_t *rs = c->rs;

    c->state = C_READY;
    if (!rs->up && rs->failed_once)
        say(2, "redis %s:%d answers again", rs->host, rs->port);
    rs->up = 1;
    rs->backoff = BACKOFF_MIN;
    conn_arm(c);
}

static int send_script(conn_t *c, op_t *op, int as_eval);
static void track(conn_t *c, op_t *op);

/* One reply (ours to free): the handshake's, or the oldest command's. */
static void conn_reply(conn_t *c, redisReply *reply)
{
    op_t *op = c->head;
    char why[WHY_MAX];

    if (c->hello > 0) { /* AUTH, SELECT, PING */
        if (reply->type == REDIS_REPLY_ERROR) {
            snprintf(why, sizeof(why), "refused: %.*s", (int)reply->len, reply->str);
            freeReplyObject(reply);
            conn_drop(c, why);
            return;
        }
        freeReplyObject(reply);
        if (--c->hello == 0)
            conn_ready(c);
        return;
    }
    if (op == NULL) { /* RESP2 sends nothing unasked */
        freeReplyObject(reply);
        conn_drop(c, "a reply to no command");
        return;
    }
    c->head = op->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->pending--;
    op->next = NULL;
    if (reply->type == REDIS_REPLY_ERROR && op->script >= 0 && !op->retried && reply->len >= 8 &&
        memcmp(reply->str, "NOSCRIPT", 8) == 0 && send_script(c, op, 1) == 0) {
        freeReplyObject(reply);
        track(c, op); /* the same op, now an EVAL */
        return;
    }
    op_finish(c->rs->rw, op, reply, NULL);
    freeReplyObject(reply);
}

/* Bytes from the server (plaintext): every reply they complete is
 * answered. Drops c on a protocol error or a reply over the limits. */
static void conn_take(conn_t *c, const char *p, size_t n)
{
    unsigned gen = c->gen;

    if (redisReaderFeed(c->reader, p, n) != REDIS_OK) {
        conn_drop(c, "out of memory");
        return;
    }
    for (;;) {
        void *reply = NULL;

        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            char why[WHY_MAX];

            snprintf(why, sizeof(why), "%s", c->too_large ? "reply too large"
                                                           : c->reader->errstr);
            conn_drop(c, why);
            return;
        }
        if (reply == NULL)
            break;
        c->reply_elements = 0;
        conn_reply(c, reply);
        if (c->gen != gen) /* dropped (by the reply, or by a hook it resumed) */
            return;
    }
    if (c->reader->len - c->reader->pos > MAX_REPLY_BYTES)
        conn_drop(c, "reply too large");
}

static _Thread_local char read_buf[16384]; /* on_alloc and on_read run back to back */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    *b = uv_buf_init(read_buf, sizeof(read_buf));
}

/* The socket's bytes, or with TLS the link's plaintext (s->data is c). */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;
    char why[WHY_MAX];

    if (nread > 0)
        conn_take(c, b->base, (size_t)nread);
    else if (nread < 0)
        conn_drop(c, io_error(c, (int)nread, why));
}

/* ---- connecting --------------------------------------------------------- */

/* The transport is up: reading starts and what was buffered goes. */
static void conn_wire(conn_t *c)
{
    int rc = conn_read_start(c);

    if (rc < 0) {
        conn_drop(c, uv_strerror(rc));
        return;
    }
    c->wired = 1;
    conn_flush(c);
}

static void on_tls_ready(void *owner, const char *err)
{
    conn_t *c = owner;

    if (err)
        conn_drop(c, err); /* "TLS certificate verify failed: ..." */
    else
        conn_wire(c);
}

/* TLS: the socket's ciphertext, to the link. */
static void on_raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;

    mg_tls_link_on_read(c->tls, nread, b);
}

static void on_wq_error(mg_wq_t *q, int status)
{
    conn_t *c = (conn_t *)((char *)q - offsetof(conn_t, wq));
    char why[WHY_MAX];

    conn_drop(c, io_error(c, status, why));
}

static void on_connected(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    mg_redis_t *rs = c->rs;
    int rc;

    if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)&c->tcp))
        return; /* the attempt was dropped */
    if (status < 0) {
        conn_drop(c, uv_strerror(status));
        return;
    }
    uv_tcp_keepalive(&c->tcp, 1, KEEPALIVE_S);
    if (rs->tls == NULL) {
        conn_wire(c);
        return;
    }
    c->tls = mg_tls_link_new(rs->tls, rs->host, (uint16_t)rs->port, (uv_stream_t *)&c->tcp, &c->wq,
                             on_raw_read);
    if (c->tls == NULL) {
        conn_drop(c, "out of memory");
        return;
    }
    if ((rc = mg_tls_link_handshake(c->tls, on_tls_ready, c)) < 0)
        conn_drop(c, uv_strerror(rc));
}

/* Connects the attempt's socket to addr. */
static void conn_dial(conn_t *c, const struct sockaddr *addr)
{
    int rc = uv_tcp_init(loop_of(c->rs), &c->tcp);

    if (rc < 0) {
        conn_drop(c, uv_strerror(rc));
        return;
    }
    c->tcp_open = 1;
    c->tcp.data = c;
    uv_unref((uv_handle_t *)&c->tcp);
    mg_wq_init(&c->wq, (uv_stream_t *)&c->tcp, NULL, on_wq_error);
    uv_tcp_nodelay(&c->tcp, 1); /* commands are small and wait for their reply */
    c->connect_req.data = c;
    if ((rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connected)) < 0)
        conn_drop(c, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn_t *c = req->data;
    char why[WHY_MAX];

    c->resolving = 0;
    if (c->state != C_CONNECTING) { /* dropped meanwhile (cancelled, or too late) */
        uv_freeaddrinfo(res);
        return;
    }
    if (status < 0 || res == NULL) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", c->rs->host,
                 status < 0 ? uv_strerror(status) : "no address");
        uv_freeaddrinfo(res);
        conn_drop(c, why);
        return;
    }
    conn_dial(c, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* AUTH [username] password, SELECT db, PING: buffered first, answered
 * first (conn_reply counts them in c->hello). */
static int send_hello(conn_t *c)
{
    mg_redis_t *rs = c->rs;
    const char *av[3];
    size_t al[3];
    char db[16];
    int n = 0;

    if (rs->password) {
        av[n] = "AUTH", al[n++] = 4;
        if (rs->username) /* a Redis 6 ACL user */
            av[n] = rs->username, al[n++] = rs->username_len;
        av[n] = rs->password, al[n++] = rs->password_len;
        if (conn_send(c, n, av, al) != 0)
            return -1;
        c->hello++;
    }
    if (rs->db) {
        av[0] = "SELECT", al[0] = 6;
        av[1] = db, al[1] = (size_t)snprintf(db, sizeof(db), "%d", rs->db);
        if (conn_send(c, 2, av, al) != 0)
            return -1;
        c->hello++;
    }
    av[0] = "PING", al[0] = 4;
    if (conn_send(c, 1, av, al) != 0)
        return -1;
    c->hello++;
    return 0;
}

/* Starts an attempt. Returns 0, or -1 when it failed at once (then the
 * client backs off). */
static int conn_connect(conn_t *c)
{
    mg_redis_t *rs = c->rs;
    uv_loop_t *loop = loop_of(rs);
    unsigned gen = c->gen;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } addr;

    c->state = C_CONNECTING;
    c->hello = 0;
    c->too_large = 0;
    c->reply_elements = 0;
    c->connect_deadline = uv_now(loop) + rs->connect_timeout;
    if ((c->reader = reader_new(c)) == NULL || send_hello(c) != 0) {
        conn_drop(c, "out of memory");
        return -1;
    }
    conn_arm(c);
    if (uv_ip4_addr(rs->host, rs->port, &addr.in) == 0 ||
        uv_ip6_addr(rs->host, rs->port, &addr.in6) == 0) {
        conn_dial(c, &addr.sa);
    } else {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_NUMERICSERV };
        char port[8];
        int rc;

        snprintf(port, sizeof(port), "%d", rs->port);
        c->gai.data = c;
        if ((rc = uv_getaddrinfo(loop, &c->gai, on_resolved, rs->host, port, &hints)) < 0)
            conn_drop(c, uv_strerror(rc));
        else
            c->resolving = 1;
    }
    return c->gen == gen ? 0 : -1;
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
        if (c->tcp_open || c->resolving) /* the last attempt is still going */
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

        if (c->state == C_DOWN && now >= rs->retry_at && !c->tcp_open && !c->resolving)
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

/* Sends script op as EVALSHA, or as EVAL with its source. Returns 0 once
 * the command is buffered (the caller tracks op). */
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
    if (conn_send(c, op->argc + 3, av, al) != 0)
        return -1;
    op->retried |= as_eval;
    return 0;
}

/* Queues op (its command buffered) on c and watches its deadline. */
static void track(conn_t *c, op_t *op)
{
    op->conn = c;
    op->deadline = uv_now(loop_of(c->rs)) + c->rs->timeout;
    op->next = NULL;
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    c->pending++;
    if (c->head == op || !uv_is_active((uv_handle_t *)&c->timer))
        conn_arm(c); /* its deadline may come before the connect deadline */
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
    uv_prepare_init(&w->loop, &tls_rw->flusher);
    uv_unref((uv_handle_t *)&tls_rw->flusher);
    tls_rw->flusher.data = tls_rw;
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
                                mg_tls_client_t *tls, const char **err)
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
                           memcmp(rs->username, username, username_len) == 0)) &&
            mg_tls_client_same(rs->tls, tls)) {
            if (tls && rs->tls != tls) { /* a reload's: its files may be newer */
                mg_tls_client_ref(tls);
                mg_tls_client_release(rs->tls);
                rs->tls = tls;
            }
            return rs;
        }
    rs = calloc(1, sizeof(*rs));
    if (rs == NULL || (rs->host = strndup(host, host_len)) == NULL ||
        (password && (rs->password = strndup(password, password_len)) == NULL) ||
        (username && (rs->username = strndup(username, username_len)) == NULL) ||
        (rs->conns = calloc((size_t)pool, sizeof(conn_t))) == NULL) {
        if (rs) {
            free(rs->host);
            free(rs->password);
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
    if (tls)
        mg_tls_client_ref(tls);
    rs->tls = tls;
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

/* The op's command is buffered: its hook now waits for it. */
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
    if (conn_send(c, argc, argv, argvlen) != 0) {
        op_put(rw, op);
        *err = "out of memory";
        return MG_FFI_ENOMEM;
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
    if (conn_send(c, argc, argv, argvlen) != 0) {
        op_put(rw, op);
        *err = "out of memory";
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
        *err = "out of memory";
        return MG_FFI_ENOMEM;
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
    if (!uv_is_closing((uv_handle_t *)&rw->flusher))
        uv_close((uv_handle_t *)&rw->flusher, NULL);
}

/* Closes h unless it is closing already; says whether it did. */
static int close_handle(uv_handle_t *h)
{
    if (uv_is_closing(h))
        return 0;
    uv_close(h, NULL);
    return 1;
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

            if (c->state != C_DOWN)
                closing = 1;               /* the drop closes its socket and TLS */
            conn_drop(c, "shutting down"); /* its hooks are not resumed */
            closing |= close_handle((uv_handle_t *)&c->timer);
        }
    closing |= close_handle((uv_handle_t *)&rw->flusher);
    if (closing) /* called while handles were open: let libuv finish with them */
        uv_run(&w->loop, UV_RUN_NOWAIT);
    while (rw->clients) {
        mg_redis_t *rs = rw->clients;

        rw->clients = rs->next;
        free(rs->conns);
        free(rs->host);
        free(rs->password);
        free(rs->username);
        mg_tls_client_release(rs->tls);
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
