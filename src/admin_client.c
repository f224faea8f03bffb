/* admin_client.c: blocking admin API calls for the command line.
 *
 * Each request says what the server checks (admin.h): a Host naming the
 * address it connects to, and the Content-Type its endpoint needs (from
 * admin.c's own table), so that the CLI passes where a web page is
 * refused. The answer is read until the server closes (each call says
 * Connection: close, so no connection is ever reused) and parsed by the
 * upstream response parser, h1_response.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "admin.h"
#include "admin_client.h"
#include "span.h"
#include "h1_response.h"

int mg_admin_parse_addr(const char *addr, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hl;
    if (!colon) {
        snprintf(host, cap, "127.0.0.1");
        *port = atoi(addr);
        return *port > 0 && *port < 65536 ? 0 : -1;
    }
    hl = (size_t)(colon - addr);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap)
        return -1;
    memcpy(host, h, hl);
    host[hl] = 0;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, cap, "127.0.0.1");
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

static int wait_fd(int fd, short ev, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = ev };
    return poll(&p, 1, timeout_ms) > 0 ? 0 : -1;
}

/* The whole answer buf[0..len) (read until the server closed) parsed by
 * the upstream response parser (h1_response.c); its body is moved to the
 * front of buf and NUL-terminated. Returns 0 or -1. */
static int parse_answer(char *buf, size_t len, int *status, size_t *body_len)
{
    mg_h1r_t p;
    mg_header_t hs[64];
    uint8_t tok[64];
    long n = mg_h1r_head(&p, buf, 0, len, hs, tok, 64, 0);
    if (n < 0)
        return -1;
    size_t at = (size_t)n, out = 0;
    while (p.state != MG_H1_DONE) {
        const char *data;
        size_t used, dlen;
        int rc = mg_h1r_body(&p, buf + at, len - at, &used, &data, &dlen);
        if (rc < 0)
            return -1;
        memmove(buf + out, data, dlen); /* the body only moves forward */
        out += dlen;
        at += used;
        if (rc == 0 && (at == len || used == 0) && mg_h1r_eof(&p) < 0)
            return -1; /* the server closed before the end */
    }
    buf[out] = 0;
    *status = p.status;
    *body_len = out;
    return 0;
}

int mg_admin_call(const char *host, int port, const char *token, const char *method,
                  const char *path, const char *body, size_t body_len, int timeout_ms,
                  int *status, char **resp, size_t *resp_len, const char **err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    memset(&sa, 0, sizeof(sa));
    struct sockaddr_in *in = (struct sockaddr_in *)&sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        salen = sizeof(*in);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        salen = sizeof(*in6);
    } else {
        *err = "the admin address must be numeric (e.g. 127.0.0.1:9901)";
        return -1;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, salen) < 0) {
        *err = "cannot connect to the admin API (is moongate running? see settings.admin)";
        if (fd >= 0)
            close(fd);
        return -1;
    }
    const char *ctype = mg_admin_content_type(method, path);
    char head[16384]; /* the path may carry ?file=<a percent-encoded path> */
    int n = snprintf(head, sizeof(head),
                     sa.ss_family == AF_INET6
                         ? "%s %s HTTP/1.1\r\nHost: [%s]:%d\r\nConnection: close\r\n"
                         : "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n",
                     method, path, host, port);
    if (n > 0 && (size_t)n < sizeof(head))
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n%s%s%s%s%s%s\r\n",
                      body_len, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                      ctype ? "\r\n" : "", token ? "Authorization: Bearer " : "",
                      token ? token : "", token ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head) || write(fd, head, (size_t)n) != n ||
        (body_len && write(fd, body, body_len) != (ssize_t)body_len)) {
        *err = "cannot send to the admin API";
        close(fd);
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        *err = "out of memory";
        return -1;
    }
    for (;;) {
        if (wait_fd(fd, POLLIN, timeout_ms) < 0) {
            free(buf);
            close(fd);
            *err = "the admin API did not answer in time";
            return -1;
        }
        if (len == cap) {
            char *p = realloc(buf, cap * 2 + 1);
            if (!p) {
                free(buf);
                close(fd);
                *err = "out of memory";
                return -1;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (parse_answer(buf, len, status, resp_len) < 0) {
        free(buf);
        *err = "the admin API sent an invalid answer";
        return -1;
    }
    *resp = buf;
    return 0;
}
