/* list.h: an intrusive doubly linked list (idle pools, a worker's
 * connections, the cache's waiting requests). A link is its own empty list
 * after mg_list_init or mg_list_remove. */
#ifndef MG_LIST_H
#define MG_LIST_H

#include <stddef.h>

typedef struct mg_link_s {
    struct mg_link_s *prev, *next;
} mg_link_t;

static inline void mg_list_init(mg_link_t *h) { h->prev = h->next = h; }
static inline int mg_list_empty(const mg_link_t *h) { return h->next == h; }
static inline void mg_list_push(mg_link_t *h, mg_link_t *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}
static inline void mg_list_remove(mg_link_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define mg_container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

#endif
