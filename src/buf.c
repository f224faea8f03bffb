/* buf.c: a worker's pool of read buffers (buf.h). */
#include <stdlib.h>
#include <string.h>
#include "buf.h"

int mg_bufs_init(mg_bufs_t *pool, size_t cap)
{
    pool->free = malloc(sizeof(char *) * cap);
    pool->n = 0;
    pool->cap = pool->free ? cap : 0;
    return pool->free ? 0 : -1;
}

void mg_bufs_free(mg_bufs_t *pool)
{
    for (size_t i = 0; i < pool->n; i++)
        free(pool->free[i]);
    free(pool->free);
    pool->free = NULL;
    pool->n = pool->cap = 0;
}

void mg_buf_get(mg_bufs_t *pool, mg_buf_t *b)
{
    if (pool->n > 0) {
        b->data = pool->free[--pool->n];
    } else {
        b->data = malloc(MG_BUF_SIZE);
        if (!b->data)
            return;
    }
    b->cap = MG_BUF_SIZE;
    b->len = b->parsed = 0;
}

void mg_buf_put(mg_bufs_t *pool, mg_buf_t *b)
{
    if (!b->data)
        return;
    if (b->cap == MG_BUF_SIZE && pool->n < pool->cap)
        pool->free[pool->n++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->cap = b->len = b->parsed = 0;
}

int mg_buf_grow(mg_bufs_t *pool, mg_buf_t *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    char *p = malloc(need);
    if (!p)
        return -1;
    memcpy(p, b->data, b->len);
    /* the old buffer may be a pooled one: give it back */
    mg_buf_t old = *b;
    old.len = old.parsed = 0;
    mg_buf_put(pool, &old);
    b->data = p;
    b->cap = (uint32_t)need;
    return 0;
}
