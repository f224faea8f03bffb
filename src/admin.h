/* admin.h: the admin API, an HTTP/1.1 server on the control thread's loop.
 *
 * Default 127.0.0.1:9901. It refuses to bind a non-loopback address unless
 * a token is configured; with a token every request needs
 * "Authorization: Bearer <token>" (compared in constant time).
 *
 * Web pages in the operator's browser must not reach it (cross-site
 * requests, DNS rebinding), so before anything else every request needs a
 * Host naming this admin API (its address; localhost, 127.0.0.1 and [::1]
 * with the port on a loopback address; any IP literal with the port on a
 * wildcard address; the configured names), no foreign Origin and no
 * Sec-Fetch-Site other than same-origin or none: 403 otherwise (400 without
 * exactly one Host). Without a token, a state-changing request (POST,
 * DELETE) also needs its endpoint's Content-Type, which no page can send
 * without a CORS preflight, which we never grant: 415 otherwise.
 *
 *   GET  /status      JSON: version, generation, last reload, workers, ...
 *   GET  /routes      JSON: the routes of the newest generation
 *   GET  /upstreams   JSON: upstreams, targets, health
 *   GET  /metrics     Prometheus text, or OpenMetrics when Accept prefers
 *                     application/openmetrics-text
 *   POST /reload      reload the config; 200 with the result, 409/422 when refused
 *                     (Content-Type: application/json)
 *   POST /repl        body: Lua source for the live REPL; answer: its output
 *                     (Content-Type: text/x-lua)
 *   DELETE /cache     removes the response cache's answers (?route=NAME: that
 *                     route's only; Content-Type: application/json)
 *   POST   /upstreams/NAME/targets          adds a target (discovery.h)
 *   PUT    /upstreams/NAME/targets/TARGET   sets its weight, drains it
 *   DELETE /upstreams/NAME/targets/TARGET   removes it
 *                     (a JSON body; Content-Type: application/json)
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
    int (*metrics)(int openmetrics, char **body, size_t *len, const char **ctype);
    /* `query`: the request's query string, without '?' (?file=PATH: only
     * when this gateway runs PATH) */
    int (*reload)(const char *query, size_t query_len, char **body, size_t *len,
                  const char **ctype);
    int (*repl)(const char *req_body, size_t req_len, char **body, size_t *len,
                const char **ctype);
    /* `query`: the request's query string, without '?' */
    int (*cache_purge)(const char *query, size_t query_len, char **body, size_t *len,
                       const char **ctype);
    int (*logs_reopen)(char **body, size_t *len, const char **ctype);
    /* /upstreams/NAME/targets[/TARGET]: `path` as the URL has it (without
     * the query), `req_body` the JSON body */
    int (*targets)(const char *method, const char *path, size_t plen, const char *req_body,
                   size_t req_len, char **body, size_t *len, const char **ctype);
} mg_admin_handlers_t;

typedef struct mg_admin_s mg_admin_t;

/* Where it listens and whom it answers (all borrowed: copied by start). */
typedef struct mg_admin_opts_s {
    const char *host;          /* numeric IPv4/IPv6 address or "localhost" */
    int port;                  /* 0: any free port (tests) */
    const char *token;         /* NULL or "": none (loopback addresses only) */
    const char *const *names;  /* more names for the Host header: "name" or
                                  "name:port" (a name alone also matches
                                  with the admin port) */
    size_t nnames;
} mg_admin_opts_t;

/* Checks o without binding (what `moongate check` reports): a numeric
 * address, the token rule, names. Returns 0, or -1 with *err (malloc'd,
 * one sentence that says what would be valid). */
int mg_admin_check(const mg_admin_opts_t *o, char **err);
/* Starts listening as o says. Returns 0, or -1 with *err (malloc'd). */
int mg_admin_start(mg_admin_t **out, uv_loop_t *loop, const mg_admin_opts_t *o,
                   const mg_admin_handlers_t *h, char **err);
/* The Content-Type the endpoint `method path` (a query is ignored) needs
 * from a client without the token, or NULL when it changes nothing (GET).
 * For clients (admin_client.c), so that both sides read one table. */
const char *mg_admin_content_type(const char *method, const char *path);
/* Stops listening and closes its connections (their close callbacks free
 * everything; run the loop afterwards). */
void mg_admin_stop(mg_admin_t *a);

#endif
