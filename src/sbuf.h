/* sbuf.h: a growable string for answers built in pieces (the admin API's
 * JSON and metrics text: control.c, discovery.c). Any thread; one buffer
 * is one thread's.
 *
 * Ownership: p is malloc'd and the caller's (free it); a failed growth sets
 * oom and keeps what was written so far. */
#ifndef MG_SBUF_H
#define MG_SBUF_H

#include <stddef.h>

typedef struct mg_sbuf_s {
    char *p;
    size_t len, cap;
    int oom;
} mg_sbuf_t;

void mg_sb_printf(mg_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string, quotes included (NULL: ""). */
void mg_sb_json(mg_sbuf_t *b, const char *s);

#endif
