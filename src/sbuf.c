/* sbuf.c: a growable string (sbuf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "sbuf.h"

void mg_sb_printf(mg_sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void mg_sb_json(mg_sbuf_t *b, const char *s)
{
    mg_sb_printf(b, "\"");
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            mg_sb_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            mg_sb_printf(b, "\\u%04x", ch);
        else
            mg_sb_printf(b, "%c", ch);
    }
    mg_sb_printf(b, "\"");
}
