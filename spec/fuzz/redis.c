/* redis.c: fuzz target for Redis replies as the gateway takes them
 * (src/redis.c, included here to reach push_reply; the Makefile links
 * this target without redis.o): bytes from a server go through hiredis's
 * reader, the way redisAsyncContext feeds it, and every reply is handed
 * to a hook the way a finished command is (push_reply: nil and the error,
 * or true and the values, an array as one value per element).
 *
 * Input: one byte giving the size of the pieces the bytes arrive in, then
 * what the server sends. Array and bulk lengths over MAX_LEN are cut
 * short by the harness: hiredis 0.14 (Debian 12) has no element limit of
 * its own, and a reply announcing 2^40 elements makes it try an
 * allocation of that size (not moongate's code; see docs/fuzzing.md).
 */
#include "../../src/redis.c"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>

#define MAX_LEN 100000

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = luaL_newstate();
    if (!L)
        abort();
    return 0;
}

/* Are all array ('*') and bulk ('$') lengths in p at most MAX_LEN? */
static int sane_lengths(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '*' && p[i] != '$')
            continue;
        long long v = 0;
        size_t j = i + 1;
        if (j < n && p[j] == '-')
            j++;
        while (j < n && p[j] >= '0' && p[j] <= '9' && v <= MAX_LEN)
            v = v * 10 + (p[j++] - '0');
        if (v > MAX_LEN)
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || !sane_lengths((const char *)data + 1, size - 1))
        return 0;
    size_t step = data[0] ? data[0] : size;
    redisReader *rd = redisReaderCreate();
    if (!rd)
        return 0;
    op_t op;
    memset(&op, 0, sizeof(op));
    for (size_t at = 1; at < size;) {
        size_t k = size - at < step ? size - at : step;
        if (redisReaderFeed(rd, (const char *)data + at, k) != REDIS_OK)
            break;
        at += k;
        void *reply = NULL;
        int rc;
        while ((rc = redisReaderGetReply(rd, &reply)) == REDIS_OK && reply) {
            op.reply = reply;
            int n = push_reply(L, &op);
            if (n < 1 || lua_gettop(L) != n)
                abort();
            lua_settop(L, 0);
            freeReplyObject(reply);
            reply = NULL;
        }
        if (rc != REDIS_OK)
            break; /* a protocol error: the connection is dropped */
    }
    /* no reply at all: what a lost connection gives the hook */
    op.reply = NULL;
    op.why = "closed";
    push_reply(L, &op);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
    redisReaderFree(rd);
    return 0;
}
