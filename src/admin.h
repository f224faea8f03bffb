/* admin.h: the admin API, an HTTP/1.1 server on the control thread's loop.
 *
 * Default 127.0.0.1:9901. It refuses to bind a non-loopback address unless
 * a token is configured; with a token every request needs
 * "Authorization: Bearer <token>" (compared in constant time).
 *
 *   GET  /status      JSON: version, generation, last reload, workers, ...
 *   GET  /routes      JSON: the routes of the newest generation
 *   GET  /upstreams   JSON: upstreams, targets, health
 *   GET  /metrics     Prometheus text
 *   POST /reload      reload the config; 200 with the result, 409/422 when refused
 *   POST /repl        body: Lua source for the live REPL; answer: its output
 *   DELETE /cache     removes the response cache's answers (?route=NAME: that
 *                     route's only)
 *
 * The answers come from the handlers the caller provides, which run on the
 * control thread and return a malloc'd body.
 */
#ifndef MG_ADMIN_H
#define MG_ADMIN_H

#include <stddef.h>
#include <uv.h>

typedef struct mg_admin_handlers_s {
    /* Each returns an HTTP status and sets *body (malloc'd, caller of the
     * handler frees) and *ctype (static). `req_body` is the request body. */
    int (*status)(char **body, size_t *len, const char **ctype);
    int (*routes)(char **body, size_t *len, const char **ctype);
    int (*upstreams)(char **body, size_t *len, const char **ctype);
    int (*metrics)(char **body, size_t *len, const char **ctype);
    int (*reload)(char **body, size_t *len, const char **ctype);
    int (*repl)(const char *req_body, size_t req_len, char **body, size_t *len,
                const char **ctype);
    /* `query`: the request's query string, without '?' */
    int (*cache_purge)(const char *query, size_t query_len, char **body, size_t *len,
                       const char **ctype);
    int (*logs_reopen)(char **body, size_t *len, const char **ctype);
} mg_admin_handlers_t;

typedef struct mg_admin_s mg_admin_t;

/* Starts listening on host:port. `token` may be NULL (then only loopback
 * addresses are allowed). Returns 0, or -1 with *err (malloc'd). */
int mg_admin_start(mg_admin_t **out, uv_loop_t *loop, const char *host, int port,
                   const char *token, const mg_admin_handlers_t *h, char **err);
/* Stops listening and closes its connections (their close callbacks free
 * everything; run the loop afterwards). */
void mg_admin_stop(mg_admin_t *a);

#endif
