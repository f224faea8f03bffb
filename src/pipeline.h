/* pipeline.h: the steps of a request after its head (pipeline.c), the same
 * for every protocol: request id and target checks, on_request, routing,
 * on_route, route policies, then a handler route, the cache or the
 * upstream; and the end of a request (access log, on_log).
 *
 * A protocol calls mg_pipeline_head() once a head is parsed; the pipeline
 * answers through r->proto. Each step may stop to wait (a hook, the cache,
 * the protocol's own body checks); it goes on from where it stopped.
 */
#ifndef MG_PIPELINE_H
#define MG_PIPELINE_H

#include "request.h"

/* A complete head was parsed into r (r->state MG_RS_UPSTREAM). */
void mg_pipeline_head(mg_request_t *r);
/* Its checks before any hook (Host, the target, escaped slashes): 0 to go
 * on (r->path and r->query set), 1 when r was answered. Also the testing
 * kit's (http_conn.c mg_ffi_kit_head_checks). */
int mg_pipeline_checks(mg_request_t *r);
/* Its checks once routed and on_route ran: no route and no upstream a hook
 * picked (404, or 405 with Allow), a declared body over the route's limit
 * (413). 0 to go on, 1 when r was answered. Also the testing kit's. */
int mg_pipeline_routed(mg_request_t *r);
/* req:body() (mg_ffi.h) and the protocol telling that the whole body is
 * now in r->body_buf: the hook waiting for it resumes. */
void mg_pipeline_body_read(mg_request_t *r);
/* The upstream failed before its answer started (502-504 may be answered
 * with an expired cached answer). May end r. */
void mg_pipeline_upstream_failed(mg_request_t *r, int status, const char *message);
/* The request is over for the client: access log line, metrics, then
 * on_log hooks (they delay no one; one that waits goes on detached). */
void mg_pipeline_log(mg_request_t *r);

/* The request ends: its upstream connection, hooks, cache state, arena,
 * body and generation are let go and it goes back to the worker's free
 * list. The protocol calls it (and forgets r). */
void mg_pipeline_free(mg_request_t *r);

#endif
