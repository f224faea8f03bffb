/* redis.h: a small asynchronous Redis client for hooks, on hiredis and the
 * worker's libuv loop (rate limits in cluster mode; anything else a hook
 * wants from Redis through lua/moongate/redis.lua).
 *
 * Each worker has its own clients, one per distinct server and settings,
 * made on first use by a hook (mg_ffi_redis_client in mg_ffi.h) and kept
 * until the worker exits; each client is a pool of 1..64 connections.
 * A hook starts a command with an mg_ffi_redis_* function and yields; the
 * reply, a timeout or the loss of the connection resumes it. Nothing here
 * ever blocks the worker, and no command waits longer than its client's
 * timeout (connect_timeout while connecting).
 *
 * Failures: a connection that fails (refused, closed, timed out, AUTH
 * refused) fails the commands it carries and the client is "down": new
 * commands fail at once, without waiting, until a connection attempt
 * (tried again in the background after 50 ms, backing off to 1 s) has
 * answered PING.
 *
 * Ownership: the worker's state (clients, connections, free commands) is
 * owned by this file and lives in a thread-local pointer of the worker's
 * thread; the two calls below end it.
 */
#ifndef MG_REDIS_H
#define MG_REDIS_H

#include "worker.h"

struct redisReply;
typedef struct mg_redis_s mg_redis_t;
typedef struct mg_redis_op_s mg_redis_op_t;

/* For C code on a worker's thread (the response cache): sends a command
 * on client rs (from mg_ffi_redis_client). The reply (or NULL and why, on
 * failure or timeout) goes to done(arg, ...) on the worker's loop, never
 * before this returns. Returns a handle for mg_redis_op_cancel, or NULL
 * with *err when the command cannot start (then done is never called).
 * `done` may be NULL: the reply is dropped. */
typedef void (*mg_redis_done_fn)(void *arg, const struct redisReply *reply, const char *why);
mg_redis_op_t *mg_redis_command_c(mg_redis_t *rs, int argc, const char **argv,
                                  const size_t *argvlen, mg_redis_done_fn done, void *arg,
                                  const char **err);
/* The caller no longer waits: done will not be called. Only before done
 * ran (the handle is reused after). */
void mg_redis_op_cancel(mg_redis_op_t *op);

/* While the worker shuts down, on its thread, with the loop still running
 * (worker_finish): closes every connection; commands still waiting are
 * answered with (nil, "shutting down"); new commands fail. */
void mg_redis_worker_close(mg_worker_t *w);

/* After the worker's loop has ended, on its thread: frees everything (also
 * when mg_redis_worker_close did not run). Never runs Lua. */
void mg_redis_worker_free(mg_worker_t *w);

#endif
