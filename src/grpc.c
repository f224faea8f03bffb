/* grpc.c: gRPC's rules as the gateway applies them (grpc.h). */
#include <string.h>
#include <strings.h>
#include "grpc.h"
#include "mg_ffi.h"

int mg_grpc_content_type(const char *v, size_t len)
{
    static const char base[] = "application/grpc";
    const size_t n = sizeof(base) - 1;
    if (len < n || strncasecmp(v, base, n) != 0)
        return 0;
    return len == n || v[n] == '+' || v[n] == ';';
}

int mg_grpc_path_split(const char *path, size_t len, const char **service, size_t *service_len,
                       const char **method, size_t *method_len)
{
    if (len < 4 || path[0] != '/')
        return 0;
    const char *slash = memchr(path + 1, '/', len - 1);
    if (!slash || slash == path + 1 || slash == path + len - 1)
        return 0;
    const char *m = slash + 1;
    size_t ml = len - (size_t)(m - path);
    if (memchr(m, '/', ml) || memchr(path, '?', len))
        return 0;
    *service = path + 1;
    *service_len = (size_t)(slash - path - 1);
    *method = m;
    *method_len = ml;
    return 1;
}

int64_t mg_grpc_timeout_ms(const char *v, size_t len)
{
    /* TimeoutValue is 1-8 digits; the unit says how many ns one is */
    if (len < 2 || len > 9)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < len - 1; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': return (int64_t)(n * 3600000); /* 99,999,999 h fits in 2^63 ms */
    case 'M': return (int64_t)(n * 60000);
    case 'S': return (int64_t)(n * 1000);
    case 'm': return (int64_t)n;
    case 'u': return (int64_t)((n + 999) / 1000);
    case 'n': return (int64_t)((n + 999999) / 1000000);
    default: return -1;
    }
}

/* The one mapping of the gateway's own answers to gRPC statuses; what is
 * not here is UNKNOWN (2xx: OK). Mostly gRPC's own table for HTTP statuses
 * (doc/http-grpc-status-mapping.md), where the gateway knows better what it
 * meant: its 429 is a quota (RESOURCE_EXHAUSTED), its 504 a deadline. */
static const struct {
    uint16_t http;
    uint8_t grpc;
} http_to_grpc[] = {
    { 400, MG_GRPC_INTERNAL },           { 401, MG_GRPC_UNAUTHENTICATED },
    { 403, MG_GRPC_PERMISSION_DENIED },  { 404, MG_GRPC_UNIMPLEMENTED },
    { 405, MG_GRPC_UNIMPLEMENTED },      { 408, MG_GRPC_DEADLINE_EXCEEDED },
    { 413, MG_GRPC_RESOURCE_EXHAUSTED }, { 429, MG_GRPC_RESOURCE_EXHAUSTED },
    { 431, MG_GRPC_RESOURCE_EXHAUSTED }, { 500, MG_GRPC_INTERNAL },
    { 501, MG_GRPC_UNIMPLEMENTED },      { 502, MG_GRPC_UNAVAILABLE },
    { 503, MG_GRPC_UNAVAILABLE },        { 504, MG_GRPC_DEADLINE_EXCEEDED },
};

int mg_grpc_status_of_http(int http_status)
{
    if (http_status >= 200 && http_status < 300)
        return MG_GRPC_OK;
    for (size_t i = 0; i < sizeof(http_to_grpc) / sizeof(http_to_grpc[0]); i++)
        if (http_to_grpc[i].http == http_status)
            return http_to_grpc[i].grpc;
    return MG_GRPC_UNKNOWN;
}

static const char *const status_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *mg_grpc_status_name(int code)
{
    if (code < 0 || code >= (int)(sizeof(status_names) / sizeof(status_names[0])))
        return "UNKNOWN";
    return status_names[code];
}

size_t mg_grpc_message_encode(const char *msg, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            if (o + 1 > cap)
                break;
            out[o++] = (char)ch;
        } else {
            if (o + 3 > cap)
                break;
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    return o;
}

/* letters, digits and '_' in parts separated by single dots (dots: 0 none
 * allowed), no part starting with a digit */
static int ident(const char *s, size_t len, int dots, char *out, size_t cap)
{
    if (len == 0 || len >= cap)
        return MG_STR_BAD;
    int start = 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        int digit = ch >= '0' && ch <= '9';
        if (ch == '.' && dots && !start && i + 1 < len) {
            start = 1;
            continue;
        }
        if (!(alpha || (digit && !start)))
            return MG_STR_BAD;
        start = 0;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}

int mg_grpc_service_check(const char *s, size_t len, char *out, size_t cap)
{
    return ident(s, len, 1, out, cap);
}

int mg_grpc_method_check(const char *s, size_t len, char *out, size_t cap)
{
    return ident(s, len, 0, out, cap);
}

int mg_ffi_grpc_split(const char *ctype, size_t ctype_len, const char *path, size_t path_len,
                      const char **service, size_t *service_len, const char **method,
                      size_t *method_len)
{
    return mg_grpc_content_type(ctype, ctype_len) &&
           mg_grpc_path_split(path, path_len, service, service_len, method, method_len);
}
