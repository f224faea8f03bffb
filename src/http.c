/* http.c: HTTP syntax that every side of the gateway shares (RFC 9110):
 * reason phrases, token lists (Connection, Upgrade, Vary) and header lines.
 * Pure functions over caller buffers: no state, no allocation.
 */
#include <string.h>
#include <strings.h>
#include "http.h"
#include "header_names.h"

const char *mg_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

int mg_token_char(unsigned char ch)
{
    return mg_hname_tchar[ch];
}

int mg_token_next(const char *v, size_t vl, size_t *at, const char **tok, size_t *tl)
{
    size_t i = *at;
    while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
        i++;
    size_t st = i;
    while (i < vl && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
        i++;
    *at = i;
    *tok = v + st;
    *tl = i - st;
    return i > st;
}

/* Does the comma-separated token list v (a Connection value) name `tok`? */
int mg_token_listed(const char *v, size_t vl, const char *tok, size_t tl)
{
    size_t at = 0, l;
    const char *t;
    while (mg_token_next(v, vl, &at, &t, &l))
        if (l == tl && strncasecmp(t, tok, tl) == 0)
            return 1;
    return 0;
}


/* mg_upstream_t.protocol's names (http.h) */
static const char *const protocol_names[] = { "h1", "h2", "grpc" };

int mg_upstream_protocol_parse(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, protocol_names[i]) == 0)
            return i;
    return -1;
}

const char *mg_upstream_protocol_name(int protocol)
{
    return protocol >= 0 && protocol < 3 ? protocol_names[protocol] : "?";
}
