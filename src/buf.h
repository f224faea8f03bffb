/* buf.h: read buffers and the per-worker pool they are recycled through
 * (buf.c). Worker thread only. */
#ifndef MG_BUF_H
#define MG_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Pooled read buffer. Held by a connection only while it has unparsed bytes
 * or a request in progress; idle keep-alive connections hold none. */
typedef struct mg_buf_s {
    char *data;
    uint32_t cap;
    uint32_t len;    /* bytes received */
    uint32_t parsed; /* bytes handed to llhttp */
} mg_buf_t;

#define MG_BUF_SIZE 16384

/* A stack of free MG_BUF_SIZE buffers (owned by the pool). */
typedef struct mg_bufs_s {
    char **free;
    size_t n, cap;
} mg_bufs_t;

/* Room for cap free buffers. Returns 0 or -1 (out of memory). */
int mg_bufs_init(mg_bufs_t *pool, size_t cap);
void mg_bufs_free(mg_bufs_t *pool);
/* Gives b an empty MG_BUF_SIZE buffer (b->data NULL when out of memory). */
void mg_buf_get(mg_bufs_t *pool, mg_buf_t *b);
/* Takes b's buffer back (or frees one that grew); b is then empty. */
void mg_buf_put(mg_bufs_t *pool, mg_buf_t *b);
/* Makes room for `need` bytes, keeping what b holds. Returns 0 or -1. */
int mg_buf_grow(mg_bufs_t *pool, mg_buf_t *b, size_t need);

#endif
