/* harness.h: a moongate worker inside a libFuzzer process, without sockets.
 *
 * The gateway targets (http_conn, upstream, accesslog) load a config of
 * their own (spec/fuzz/<target>.lua), build its generation and run one
 * worker on the fuzzer's thread with mg_worker_setup(): the real Lua
 * state, hooks, router, pools, cache and access log. Connections are made
 * with mg_conn_open_memory() and fed with mg_conn_feed(); what the gateway
 * writes to a client or an upstream is collected here instead of a socket.
 * Nothing here copies gateway logic: it only plays libuv's part.
 *
 * Everything is single-threaded and lives for the whole process.
 */
#ifndef MG_FUZZ_HARNESS_H
#define MG_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include "http1.h"
#include "upstream.h"

/* Starts the worker on spec/fuzz/<config> (found next to the binary's
 * repository, or in $MG_FUZZ_DIR); exits the process on failure. */
mg_worker_t *mg_fuzz_start(const char *config);

/* Bytes written to clients / upstreams since the last mg_fuzz_reset. */
typedef struct mg_fuzz_out_s {
    char *data;
    size_t len, cap;
} mg_fuzz_out_t;
extern mg_fuzz_out_t mg_fuzz_client_out, mg_fuzz_upstream_out;
/* Appends bufs to o (grown as needed): 0, or UV_ENOMEM. */
int mg_fuzz_out_add(mg_fuzz_out_t *o, const uv_buf_t *bufs, unsigned n);
int mg_fuzz_client_sink(mg_wq_t *q, const uv_buf_t *bufs, unsigned n);
int mg_fuzz_upstream_sink(mg_wq_t *q, const uv_buf_t *bufs, unsigned n);
void mg_fuzz_reset(void);

/* Runs the worker's loop without waiting, a few turns: hooks woken later,
 * close callbacks. */
void mg_fuzz_settle(mg_worker_t *w);

/* Is the only client connection still there (not freed)? */
int mg_fuzz_conn_alive(mg_worker_t *w);

/* Feeds data to c in pieces of `step` bytes (0: all at once), letting the
 * loop run when it stops reading; stops when it closes or does not read
 * again. */
void mg_fuzz_feed(mg_worker_t *w, mg_conn_t *c, const uint8_t *data, size_t n, size_t step);

/* Closes the client connection (if alive) and every idle upstream
 * connection, and runs the loop until they are freed. */
void mg_fuzz_close_all(mg_worker_t *w, mg_conn_t *c);

/* A connection without a socket, idle in pool p, for a request to take. */
mg_upconn_t *mg_fuzz_upstream_ready(mg_pool_t *p);

/* The current fuzz input, for hooks that read it through ffi.C. */
const char *mg_fuzz_input(size_t *len);
void mg_fuzz_set_input(const uint8_t *data, size_t len);

#endif
