/* logfields.c: access-log field names, checked and compiled (logfields.h). */
#include <stdlib.h>
#include <string.h>
#include "errlog.h"
#include "header_names.h"
#include "logfields.h"
#include "mg_ffi.h"

/* By kind: the built-ins' names, in the order of the default line. */
static const char *const builtin[MG_LF__BUILTIN] = {
    [MG_LF_TIME] = "time",
    [MG_LF_REQUEST_ID] = "request_id",
    [MG_LF_TRACE_ID] = "trace_id",
    [MG_LF_SPAN_ID] = "span_id",
    [MG_LF_CLIENT] = "client",
    [MG_LF_PEER] = "peer",
    [MG_LF_METHOD] = "method",
    [MG_LF_PATH] = "path",
    [MG_LF_QUERY] = "query",
    [MG_LF_STATUS] = "status",
    [MG_LF_BYTES] = "bytes",
    [MG_LF_ROUTE] = "route",
    [MG_LF_UPSTREAM] = "upstream",
    [MG_LF_TARGET] = "target",
    [MG_LF_UPSTREAM_TIME] = "upstream_time",
    [MG_LF_CACHE] = "cache",
    [MG_LF_TOTAL_TIME] = "total_time",
    [MG_LF_PROTO] = "proto",
    [MG_LF_SPLIT] = "split",
    [MG_LF_MIRROR] = "mirror",
    [MG_LF_UP_ATTEMPTS] = "upstream_attempts",
    [MG_LF_UP_CONNECT] = "upstream_connect_time",
    [MG_LF_UP_TLS] = "upstream_tls_time",
    [MG_LF_UP_FIRST_BYTE] = "upstream_first_byte_time",
};

/* The default line: today's fields (trace ids only when the request has
 * them, split and mirror only on routes that have one, the peer only with
 * trusted_proxies). */
static const mg_lf_kind_t default_line[] = {
    MG_LF_TIME, MG_LF_REQUEST_ID, MG_LF_TRACE_ID, MG_LF_SPAN_ID, MG_LF_CLIENT, MG_LF_PEER,
    MG_LF_METHOD, MG_LF_PATH, MG_LF_QUERY, MG_LF_PROTO, MG_LF_STATUS, MG_LF_BYTES,
    MG_LF_ROUTE, MG_LF_UPSTREAM, MG_LF_TARGET, MG_LF_UPSTREAM_TIME, MG_LF_SPLIT,
    MG_LF_MIRROR, MG_LF_CACHE, MG_LF_TOTAL_TIME,
};

static const struct {
    const char *prefix;
    size_t len;
    mg_lf_kind_t kind;
} prefixed[] = {
    { "req.header.", 11, MG_LF_REQ_HEADER },
    { "res.header.", 11, MG_LF_RES_HEADER },
    { "req.ctx.", 8, MG_LF_CTX },
};

/* The bytes every field needs at least: `,"key":` and a value (a number,
 * null, true, a time, or a string cut to `"..."`). */
#define VALUE_MIN 32

const char *mg_logfield_name(mg_lf_kind_t k)
{
    return k < MG_LF__BUILTIN ? builtin[k] : NULL;
}

/* A JSON key or a req.ctx key: 1..MG_LOG_KEY_MAX printable ASCII bytes but
 * '"', '\\' and '=' (so that a key never needs escaping, and "KEY=SOURCE"
 * splits at its first '='). */
static int key_ok(const char *s, size_t len)
{
    if (len == 0 || len > MG_LOG_KEY_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '=')
            return 0;
    }
    return 1;
}

/* What source s/len names: its kind, and its argument in *arg. -1 when
 * nothing. */
static int parse_source(const char *s, size_t len, const char **arg, size_t *arg_len)
{
    *arg = NULL;
    *arg_len = 0;
    for (int k = 0; k < MG_LF__BUILTIN; k++)
        if (strlen(builtin[k]) == len && memcmp(builtin[k], s, len) == 0)
            return k;
    for (size_t i = 0; i < sizeof(prefixed) / sizeof(prefixed[0]); i++) {
        size_t pl = prefixed[i].len;
        if (len <= pl || memcmp(s, prefixed[i].prefix, pl) != 0)
            continue;
        *arg = s + pl;
        *arg_len = len - pl;
        if (prefixed[i].kind == MG_LF_CTX)
            return key_ok(*arg, *arg_len) ? (int)MG_LF_CTX : -1;
        for (size_t j = 0; j < *arg_len; j++)
            if (!mg_hname_tchar[(unsigned char)(*arg)[j]])
                return -1;
        return prefixed[i].kind;
    }
    return -1;
}

/* Splits "KEY=SOURCE" (or "SOURCE") into its key and source. */
static void split(const char *s, size_t len, const char **key, size_t *key_len,
                  const char **src, size_t *src_len)
{
    const char *eq = memchr(s, '=', len);
    *src = eq ? eq + 1 : s;
    *src_len = eq ? len - (size_t)(eq + 1 - s) : len;
    *key = eq ? s : *src;
    *key_len = eq ? (size_t)(eq - s) : *src_len;
}

int mg_logfield_check(const char *s, size_t len, char *out, size_t cap)
{
    const char *key, *src, *arg;
    size_t key_len, src_len, arg_len;
    if (len >= cap || memchr(s, '\0', len))
        return MG_STR_BAD;
    split(s, len, &key, &key_len, &src, &src_len);
    int kind = parse_source(src, src_len, &arg, &arg_len);
    if (kind < 0 || !key_ok(key, key_len))
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    if (kind == MG_LF_REQ_HEADER || kind == MG_LF_RES_HEADER) /* names in lower case */
        for (char *p = out + (arg - s); p < out + len; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return MG_STR_VALUE;
}

mg_logformat_t *mg_logformat_new(char *const *names, size_t n, int with_peer, char **err)
{
    size_t ndef = sizeof(default_line) / sizeof(default_line[0]);
    size_t count = n ? n : ndef, text = 0;
    *err = NULL;
    if (count > MG_LOG_MAX_FIELDS) {
        *err = mg_strf("lists %zu fields (at most %d)", count, MG_LOG_MAX_FIELDS);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        text += strlen(names[i]) + 1;
    /* the fields, then the by-slot pointers, then the names' copy */
    size_t size = sizeof(mg_logformat_t) + count * sizeof(mg_logfield_t) +
                  2 * count * sizeof(mg_logfield_t *) + text;
    mg_logformat_t *fmt = calloc(1, size);
    if (!fmt)
        return NULL;
    fmt->res = (const mg_logfield_t **)(fmt->f + count);
    fmt->ctx = fmt->res + count;
    char *copy = (char *)(fmt->ctx + count);
    for (size_t i = 0; i < count; i++) {
        mg_logfield_t *f = &fmt->f[fmt->n];
        if (!n) {
            if (default_line[i] == MG_LF_PEER && !with_peer)
                continue;
            f->kind = default_line[i];
            f->key = builtin[f->kind];
            f->key_len = strlen(f->key);
            f->optional = f->kind == MG_LF_TRACE_ID || f->kind == MG_LF_SPAN_ID ||
                          f->kind == MG_LF_SPLIT || f->kind == MG_LF_MIRROR;
        } else {
            size_t len = strlen(names[i]);
            const char *src;
            size_t src_len;
            memcpy(copy, names[i], len + 1);
            split(copy, len, &f->key, &f->key_len, &src, &src_len);
            int kind = parse_source(src, src_len, &f->arg, &f->arg_len);
            copy += len + 1;
            if (kind < 0) { /* the config's check let it through: a bug */
                *err = mg_strf("fields[%zu]: \"%s\" is not a field", i + 1, names[i]);
                free(fmt);
                return NULL;
            }
            f->kind = (mg_lf_kind_t)kind;
            for (size_t j = 0; j < fmt->n; j++) {
                if (fmt->f[j].key_len == f->key_len && !memcmp(fmt->f[j].key, f->key, f->key_len)) {
                    *err = mg_strf("fields[%zu]: the key \"%.*s\" is fields[%zu]'s too (give one "
                                   "of them another: \"other_key=%s\")",
                                   i + 1, (int)f->key_len, f->key, j + 1, src);
                    free(fmt);
                    return NULL;
                }
            }
        }
        if (f->kind == MG_LF_RES_HEADER) {
            f->slot = (uint16_t)fmt->nres;
            fmt->res[fmt->nres++] = f;
        } else if (f->kind == MG_LF_CTX) {
            f->slot = (uint16_t)fmt->nctx;
            fmt->ctx[fmt->nctx++] = f;
        } else if (f->kind == MG_LF_UP_FIRST_BYTE) {
            fmt->first_byte = 1;
        }
        fmt->n++;
    }
    size_t tail = 2; /* "}\n" */
    for (size_t i = fmt->n; i-- > 0;) {
        fmt->f[i].tail_min = tail;
        tail += fmt->f[i].key_len + 4 + VALUE_MIN;
    }
    return fmt;
}

void mg_logformat_free(mg_logformat_t *f)
{
    free(f);
}
