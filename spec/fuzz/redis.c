/* redis.c: fuzz target for what a Redis server sends the gateway, through
 * src/redis.c's own read path (included here to reach its statics; the
 * Makefile links this target without redis.o): conn_take feeds hiredis's
 * reader under the connection's limits (elements per reply, bytes not
 * parsed yet), answers the handshake (AUTH / SELECT / PING) first, then the
 * commands in flight in order, sends a script again as EVAL on NOSCRIPT,
 * and drops the connection on a protocol error, a refused handshake, a
 * reply to no command or a reply over the limits. Each answer is handed to
 * Lua as a hook gets it (push_reply: nil and the error, or true and the
 * values, an array as one value per element); whatever is still in flight
 * at the end fails as when the connection goes.
 *
 * Input: byte 0 the size of the pieces the bytes arrive in (0: at once);
 * byte 1: bits 0-1 the handshake replies expected (0-3), bits 2-5 the
 * commands in flight (0-15), bit 6 every other one a script (EVALSHA),
 * bit 7 the first one a script; then what the server sends.
 *
 * No socket: the connection is never wired, so what it would write
 * (a script's EVAL) stays in its buffer. No limit is cut by the harness:
 * a reply announcing 2^31 elements must be refused by redis.c itself.
 */
#include "../../src/redis.c"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>

static lua_State *L;
static mg_worker_t worker;
static rworker_t *rw;
static mg_redis_t *client;
static int answered, expected;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    rw = calloc(1, sizeof(*rw));
    client = calloc(1, sizeof(*client));
    if (!L || !rw || !client || uv_loop_init(&worker.loop) != 0)
        abort();
    rw->w = &worker;
    rw->closed = 1; /* no log lines, no reconnection, no flush */
    uv_prepare_init(&worker.loop, &rw->flusher);
    client->rw = rw;
    client->host = "fuzz";
    client->port = 6379;
    client->npool = 1;
    client->timeout = client->connect_timeout = 60000;
    client->up = 1;
    if (!(client->conns = calloc(1, sizeof(conn_t))))
        abort();
    client->conns[0].rs = client;
    uv_timer_init(&worker.loop, &client->conns[0].timer);
    client->conns[0].timer.data = &client->conns[0];
    if (mg_ffi_redis_script(client, "return 1", 8) != 0)
        abort();
    return 0;
}

/* A command's answer, as the waiting hook would get it. */
static void on_done(void *arg, const struct redisReply *reply, const char *why)
{
    op_t shown;

    (void)arg;
    if (!reply && !why)
        abort(); /* a failure always says why */
    memset(&shown, 0, sizeof(shown));
    shown.reply = (redisReply *)reply;
    shown.why = why;
    int n = push_reply(L, &shown);
    if (n < 1 || lua_gettop(L) != n)
        abort();
    lua_settop(L, 0);
    answered++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    conn_t *c = &client->conns[0];

    if (size < 2)
        return 0;
    size_t step = data[0] ? data[0] : size;
    int nops = (data[1] >> 2) & 15;

    /* a connection as conn_connect leaves it, its handshake and commands
     * written ahead */
    c->state = C_CONNECTING;
    c->reply_elements = 0;
    c->too_large = 0;
    c->hello = data[1] & 3;
    if (!(c->reader = reader_new(c)))
        abort();
    answered = 0;
    expected = nops;
    for (int i = 0; i < nops; i++) {
        op_t *op = op_get(rw, 0);
        int script = ((data[1] & 64) && i % 2 == 1) || ((data[1] & 128) && i == 0);

        if (!op)
            abort();
        op->done = on_done;
        if (script) {
            op->script = 0;
            if (send_script(c, op, 0) != 0)
                abort();
        } else {
            const char *av[1] = { "PING" };
            size_t al[1] = { 4 };
            if (conn_send(c, 1, av, al) != 0)
                abort();
        }
        track(c, op);
    }
    if (c->hello == 0)
        conn_ready(c);
    for (size_t at = 2; at < size && c->state != C_DOWN;) {
        size_t k = size - at < step ? size - at : step;
        conn_take(c, (const char *)data + at, k);
        at += k;
    }
    /* what is still in flight: as when the connection goes */
    conn_drop(c, "closed");
    if (answered != expected || c->head || c->reader || c->out)
        abort(); /* every command answered exactly once, nothing kept */
    uv_run(&worker.loop, UV_RUN_NOWAIT);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
