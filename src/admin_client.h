/* admin_client.h: a blocking HTTP/1.1 client for the admin API, for the
 * command line (`moongate reload`, `moongate repl --attach`). */
#ifndef MG_ADMIN_CLIENT_H
#define MG_ADMIN_CLIENT_H

#include <stddef.h>

/* Sends one request to host:port (numeric IPv4/IPv6 or "localhost") and
 * reads the whole answer. token may be NULL. Returns 0 with *status and
 * *body (malloc'd, NUL-terminated, caller frees), or -1 with *err (static).
 * Gives up after timeout_ms. */
int mg_admin_call(const char *host, int port, const char *token, const char *method,
                  const char *path, const char *body, size_t body_len, int timeout_ms,
                  int *status, char **resp, size_t *resp_len, const char **err);

/* Splits "host:port" / "[v6]:port" / "port" into host (static storage of
 * the caller, cap bytes) and port. Returns 0 or -1. */
int mg_admin_parse_addr(const char *addr, char *host, size_t cap, int *port);

#endif
