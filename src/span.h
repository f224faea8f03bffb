/* span.h: a header as (offset, length) pairs into the buffer it was read
 * into. Offsets, never raw pointers: the buffer may be reallocated while a
 * head grows. */
#ifndef MG_SPAN_H
#define MG_SPAN_H

#include <stdint.h>

typedef struct mg_span_s {
    uint32_t off;
    uint32_t len;
} mg_span_t;

typedef struct mg_header_s {
    mg_span_t name;
    mg_span_t value;
} mg_header_t;

#endif
