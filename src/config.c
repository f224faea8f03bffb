/* config.c: loads a config file (see config.h and docs/config-dsl.md).
 *
 * The Lua side, lua/moongate/config.lua, runs the file, validates it whole
 * and returns a normalised table. mg_config_load() copies that table into
 * the plain structs of config.h and closes the Lua state: the mg_config_t
 * owns a copy of every string and refers to nothing in Lua. Workers that
 * need the config's Lua functions (handlers, hooks) run the same loader in
 * their own state through mg_config_run_lua().
 *
 * One schema: the fields of each object (settings, limits, timeouts, admin,
 * listen, tls, tls_cert, upstream, target, health, shared_dict, cache, redis,
 * route) are declared once, in the tables below: key, kind, range or
 * check, default, the words of its error, and where C keeps it. A name is
 * read by its owning module's parser (ENUM), a string by its module's check
 * (hosts: uri.c, route hosts: router.c, log targets: errlog.c, TLS: tls.c),
 * a nested table by its own table (OBJECT), a list item by item (LIST).
 * config.lua and redis.lua build their key lists, defaults and checks from
 * them (mg_ffi_config_fields) and conv_fields() copies them with the same
 * tables. How to add an option: docs/config-dsl.md, "How to add a config
 * option". Route patterns are checked in config.lua by the router's own
 * parser (mg_ffi_route_pattern); checks across fields or declarations stay
 * in config.lua.
 *
 * The copy trusts nothing it reads: a field of the wrong type or range (a bug
 * in config.lua, never a user mistake, which config.lua reports itself)
 * becomes an "internal error" line instead of being read.
 *
 * Error text: one "file:line: reason" line per mistake, each line ending in
 * '\n', in one malloc'd string owned by the caller. Only when even that
 * string cannot be allocated is *errors left NULL.
 */
#include "config.h"
#include "dns.h"
#include "errlog.h"
#include "admin.h"
#include "balancer.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "tls.h"
#include "tls_client.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "lua_state.h"
#include "real_ip.h"
#include "shdict.h"
#include "uri.h"
#include "header_names.h"
#include "logfields.h"
#include "metrics_user.h"
#include "router.h"
#include "grpc.h"
#include "http.h"

#define MAX_DOUBLE_INT 9007199254740992.0 /* 2^53: larger doubles skip integers */

/* Growing buffer of error lines. */
typedef struct errs_s {
    char *buf;
    size_t len, cap;
    int oom; /* an append failed: the text is incomplete */
} errs_t;

/* Appends one line (a '\n' is added; newlines and tabs inside the message are
 * folded into spaces so that each mistake stays on one line). */
static void errs_add(errs_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void errs_add(errs_t *e, const char *fmt, ...)
{
    va_list ap;
    int n;
    size_t i;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        e->oom = 1;
        return;
    }
    if (e->len + (size_t)n + 2 > e->cap) {
        size_t cap = (e->cap ? e->cap * 2 : 256) + (size_t)n + 2;
        char *nb = realloc(e->buf, cap);

        if (nb == NULL) {
            e->oom = 1;
            return;
        }
        e->buf = nb;
        e->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(e->buf + e->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    for (i = e->len; i < e->len + (size_t)n; i++)
        if (e->buf[i] == '\n' || e->buf[i] == '\r' || e->buf[i] == '\t')
            e->buf[i] = ' ';
    e->len += (size_t)n;
    e->buf[e->len++] = '\n';
    e->buf[e->len] = '\0';
}

/* Hands the text over (caller frees), or NULL if it could not be built. */
static char *errs_take(errs_t *e)
{
    char *s = e->buf;

    if (s == NULL)
        s = strdup("out of memory\n");
    e->buf = NULL;
    e->len = e->cap = 0;
    return s;
}

/* Stack value at idx as text for an error line. */
static const char *lua_msg(lua_State *L, int idx)
{
    const char *s = lua_tostring(L, idx);

    return s != NULL ? s : "(error object is not a string)";
}

int mg_config_run_lua(lua_State *L, const char *file, char **errors)
{
    int top = lua_gettop(L);
    errs_t e = {0};

    *errors = NULL;
    if (!lua_checkstack(L, 8)) {
        errs_add(&e, "%s: out of memory", file);
        *errors = errs_take(&e);
        return -1;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "moongate.config");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        const char *why = lua_msg(L, -1);
        if (strstr(why, "module 'moongate.config' not found")) /* not the list tried */
            errs_add(&e, "%s: %s", file, mg_lua_dir_help());
        else
            errs_add(&e, "%s: cannot load the config loader: %s", file, why);
        goto fail;
    }
    lua_getfield(L, -1, "load");
    lua_pushstring(L, file);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        errs_add(&e, "%s: internal error in the config loader: %s", file, lua_msg(L, -1));
        goto fail;
    }
    if (lua_type(L, -2) == LUA_TTABLE) {
        lua_pop(L, 1);    /* the nil second result */
        lua_remove(L, -2); /* the moongate.config module */
        return 0;
    }
    if (lua_type(L, -1) == LUA_TTABLE) {
        size_t i, n = lua_objlen(L, -1);

        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, (int)i);
            errs_add(&e, "%s", lua_msg(L, -1));
            lua_pop(L, 1);
        }
    }
    if (e.len == 0 && !e.oom)
        errs_add(&e, "%s: internal error: the config loader returned no config and no errors",
                 file);
fail:
    lua_settop(L, top);
    *errors = errs_take(&e);
    return -1;
}

/* ---- copying the normalised table (at the top of L) into C ---- */

typedef struct conv_s {
    lua_State *L;
    errs_t *errs;
    errs_t warnings;  /* what `moongate check` points out but accepts */
    const char *file;
} conv_t;

/* Reports cfg<what>.<key> (or cfg<what>[i] when key is "[i]") as malformed. */
static void internal(conv_t *cv, const char *what, const char *key, const char *expected)
{
    errs_add(cv->errs, "%s: internal error: cfg%s%s%s is not %s", cv->file, what,
             key[0] == '[' ? "" : ".", key, expected);
}

static char *dup_or_oom(conv_t *cv, const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        cv->errs->oom = 1;
    return d;
}

/* Pops the value at the top of the stack (what<what>.<key>) as an integer in
 * [lo, hi] (hi <= 2^53). */
static int top_uint(conv_t *cv, const char *what, const char *key, double lo, double hi,
                    uint64_t *out)
{
    lua_State *L = cv->L;
    double d;
    int ok;

    d = lua_tonumber(L, -1);
    ok = lua_type(L, -1) == LUA_TNUMBER && d >= lo && d <= hi && d <= MAX_DOUBLE_INT &&
         d == (double)(uint64_t)d;
    lua_pop(L, 1);
    if (!ok) {
        internal(cv, what, key, "an integer in range");
        return -1;
    }
    *out = (uint64_t)d;
    return 0;
}

/* Reads t[key] (t an absolute index) as an integer in [lo, hi] (hi <= 2^53). */
static int get_uint(conv_t *cv, int t, const char *what, const char *key, double lo, double hi,
                    uint64_t *out)
{
    lua_getfield(cv->L, t, key);
    return top_uint(cv, what, key, lo, hi, out);
}

static int get_int(conv_t *cv, int t, const char *what, const char *key, int lo, int hi, int *out)
{
    uint64_t v;

    if (get_uint(cv, t, what, key, lo, hi, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* Pops the value at the top of the stack as a string without NULs, copied
 * into *out (owned by the config). nil gives *out = NULL when optional. */
static int top_str(conv_t *cv, const char *what, const char *key, int optional, char **out)
{
    lua_State *L = cv->L;
    const char *s;
    size_t len;

    *out = NULL;
    if (optional && lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) != LUA_TSTRING || (s = lua_tolstring(L, -1, &len)) == NULL ||
        strlen(s) != len) {
        lua_pop(L, 1);
        internal(cv, what, key, optional ? "nil or a string" : "a string");
        return -1;
    }
    *out = dup_or_oom(cv, s);
    lua_pop(L, 1);
    return *out != NULL ? 0 : -1;
}

/* Reads t[key] as by top_str. */
static int get_str(conv_t *cv, int t, const char *what, const char *key, int optional, char **out)
{
    lua_getfield(cv->L, t, key);
    return top_str(cv, what, key, optional, out);
}

/* Pushes t[key] and returns its absolute index if it is a table; otherwise
 * pops it, reports, and returns 0. */
static int push_table(conv_t *cv, int t, const char *what, const char *key)
{
    lua_getfield(cv->L, t, key);
    if (lua_type(cv->L, -1) != LUA_TTABLE) {
        lua_pop(cv->L, 1);
        internal(cv, what, key, "a table");
        return 0;
    }
    return lua_gettop(cv->L);
}

/* Pushes list[i] and returns its absolute index if it is a table; otherwise
 * reports it (`what` names the list) and returns 0. */
static int push_item(conv_t *cv, int list, size_t i, const char *what)
{
    char key[32];

    lua_rawgeti(cv->L, list, (int)i);
    if (lua_type(cv->L, -1) != LUA_TTABLE) {
        lua_pop(cv->L, 1);
        snprintf(key, sizeof(key), "[%zu]", i);
        internal(cv, what, key, "a table");
        return 0;
    }
    return lua_gettop(cv->L);
}

/* Length of the list at index t, 0 with an error when absurdly long. */
static size_t list_len(conv_t *cv, int t, const char *what)
{
    size_t n = lua_objlen(cv->L, t);

    if (n > 1000000) {
        internal(cv, what, "length", "sane");
        return 0;
    }
    return n;
}

/* Array of n zeroed elements of size sz, counted in *count at once so that
 * mg_config_free() can release a partly filled one. */
static void *alloc_list(conv_t *cv, size_t n, size_t sz, size_t *count)
{
    void *p;

    *count = 0;
    if (n == 0)
        return NULL;
    p = calloc(n, sz);
    if (p == NULL) {
        cv->errs->oom = 1;
        return NULL;
    }
    *count = n;
    return p;
}

/* ---- the schema: each object's fields, declared once ---- */

enum { CT_NONE, CT_U64, CT_INT, CT_U16, CT_BOOL, CT_DOUBLE, CT_ENUM, CT_STR, CT_OBJECT,
       CT_LIST }; /* how stored */

/* listen.tls as converted (conv_listener_tls hands it to mg_tls_ctx_new) */
#define MAX_TLS_CERTS 32
typedef struct tls_opts_s {
    struct tls_pair_s {
        char *cert, *key;
    } certs[MAX_TLS_CERTS];
    size_t ncerts;
    char *min_version, *ciphers;
    char *client_ca, *crl; /* client certificates (mTLS) */
    int client_auth;       /* MG_TLS_CLIENT_REQUIRE / _OPTIONAL */
} tls_opts_t;

#define ANY MAX_DOUBLE_INT
#define NONE NAN
/* a field stored in struct ST's member M, or one config.c does not copy */
#define F(key, kind_, lo, hi, def_, exp, st, m, ct)                                         \
    { .name = key, .kind = kind_, .min = lo, .max = hi, .def = def_, .expected = exp,      \
      .offset = offsetof(st, m), .ctype = ct }
#define LUA(key, kind_, lo, hi, def_)                                                        \
    { .name = key, .kind = kind_, .min = lo, .max = hi, .def = def_, .ctype = CT_NONE }
/* a string of at least `lo` bytes, copied into the char * member M (owned by the config) */
#define STRING(key, lo, def_, exp, st, m)                                                    \
    { .name = key, .kind = MG_FIELD_STRING, .min = lo, .def = NONE, .expected = exp,       \
      .offset = offsetof(st, m), .ctype = CT_STR, .def_str = def_ }
/* the same, always in the normalised table (config.c refuses it absent) */
#define REQUIRED_STRING(key, lo, exp, st, m)                                                 \
    { .name = key, .kind = MG_FIELD_STRING, .min = lo, .def = NONE, .expected = exp,       \
      .offset = offsetof(st, m), .ctype = CT_STR, .flags = MG_FIELD_REQUIRED }
/* a string its module's check_ accepts (a mg_ffi_str_check_fn), kept as it
 * normalises it (a relative file path: from the config's directory) */
#define CHECKED(key, check_, flags_, def_, exp, st, m)                                       \
    { .name = key, .kind = MG_FIELD_STRING, .def = NONE, .expected = exp,                  \
      .offset = offsetof(st, m), .ctype = CT_STR, .def_str = def_, .check = check_,        \
      .flags = flags_ }
/* a string of at least lo bytes that check_ (NULL: any) accepts, with flags
 * (MG_FIELD_INTERNAL: a positional argument, not a key of the user's table) */
#define STRING_F(key, lo, check_, flags_, exp, st, m)                                        \
    { .name = key, .kind = MG_FIELD_STRING, .min = lo, .def = NONE, .expected = exp,       \
      .offset = offsetof(st, m), .ctype = CT_STR, .check = check_, .flags = flags_ }
/* the same, checked by config.lua only (C gets what Lua made of it) */
#define CHECKED_LUA(key, check_, exp)                                                        \
    { .name = key, .kind = MG_FIELD_STRING, .def = NONE, .expected = exp, .check = check_ }
/* a name read by its module's parser, stored as an int (def: a value or NONE) */
#define ENUM(key, parse_, name_of_, def_, exp, st, m)                                       \
    { .name = key, .kind = MG_FIELD_ENUM, .def = def_, .expected = exp,                    \
      .offset = offsetof(st, m), .ctype = CT_ENUM, .parse = parse_, .name_of = name_of_ }
#define SLASHES(def, st, m)                                                                  \
    ENUM("escaped_slashes", mg_uri_slashes_mode, mg_uri_slashes_name, def,                  \
         "must be \"reject\", \"decode\", \"redirect\" or \"keep\"", st, m)
#define SIZE(key, lo, def, st, m) F(key, MG_FIELD_SIZE, lo, ANY, def, NULL, st, m, CT_U64)
#define TIME(key, def, st, m) F(key, MG_FIELD_TIME, 1, ANY, def, NULL, st, m, CT_U64)
#define OTHER(key) LUA(key, MG_FIELD_OTHER, 0, 0, NONE)
/* a nested table read by schema obj, its fields stored in member M of ST
 * (their offsets are from there); TABLE_HERE: in the parent's own struct;
 * NESTED: converted by hand */
#define TABLE(key, obj, flags_, exp, st, m)                                                  \
    { .name = key, .kind = MG_FIELD_OBJECT, .def = NONE, .expected = exp,                  \
      .offset = offsetof(st, m), .ctype = CT_OBJECT, .object = obj, .flags = flags_ }
#define TABLE_HERE(key, obj, flags_, exp)                                                    \
    { .name = key, .kind = MG_FIELD_OBJECT, .def = NONE, .expected = exp, .offset = 0,     \
      .ctype = CT_OBJECT, .object = obj, .flags = flags_ }
/* the same in a struct of its own, calloc'd, its pointer in member M */
#define TABLE_ALLOC(key, obj, flags_, exp, st, m)                                            \
    { .name = key, .kind = MG_FIELD_OBJECT, .def = NONE, .expected = exp,                  \
      .offset = offsetof(st, m), .ctype = CT_OBJECT, .object = obj,                         \
      .item_size = sizeof(*((st *)0)->m), .flags = (flags_) | MG_FIELD_ALLOC }
#define NESTED(key, obj, exp)                                                                \
    { .name = key, .kind = MG_FIELD_OBJECT, .def = NONE, .expected = exp, .object = obj }
/* a list of lo..hi items, each read as field *item_, stored in the array
 * member M of ST (MG_FIELD_ALLOC: a pointer to a malloc'd one), the count
 * in member CM; many: the words for more than hi items */
#define LIST(key, item_, lo, hi, flags_, exp, many, st, m, cm)                             \
    { .name = key, .kind = MG_FIELD_LIST, .min = lo, .max = hi, .def = NONE,               \
      .expected = exp, .offset = offsetof(st, m), .ctype = CT_LIST, .item = item_,         \
      .count_offset = offsetof(st, cm), .item_size = sizeof(*((st *)0)->m),               \
      .too_many = many, .flags = flags_ }
/* an item of a list: how one is read and stored (at the item's own address) */
#define ITEM(kind_, lo, hi, exp, ct)                                                         \
    { .name = "", .kind = kind_, .min = lo, .max = hi, .def = NONE, .expected = exp,       \
      .ctype = ct }

static const mg_ffi_config_field_t settings_fields[] = {
    F("workers", MG_FIELD_INT, 0, 1024, 0, "must be an integer 0-1024 (0 = one per CPU)",
      mg_config_t, workers, CT_INT),
    /* a string is its path (config.lua) */
    TABLE_HERE("access_log", "access_log", MG_FIELD_REQUIRED,
               "must be \"off\", \"stdout\", \"stderr\", a file path or a table like "
               "{ path = \"logs/access.log\", fields = { \"time\", \"status\" } }"),
    CHECKED("error_log", mg_log_error_target_check, 0, "stderr",
            "must be \"stderr\" or a file path", mg_config_t, error_log),
    ENUM("log_level", mg_log_level_parse, mg_log_level_name, MG_LOG_INFO,
         "must be one of debug, info, notice, warn, error, crit", mg_config_t, log_level),
    TABLE("limits", "limits", MG_FIELD_REQUIRED, "must be a table like { body = \"10m\" }",
          mg_config_t, limits),
    TABLE("timeouts", "timeouts", MG_FIELD_REQUIRED, "must be a table like { header = 10 }",
          mg_config_t, timeouts),
    TABLE("http2", "http2", MG_FIELD_REQUIRED,
          "must be a table like { max_concurrent_streams = 100 }", mg_config_t, http2),
    /* false is also allowed (config.lua) */
    TABLE_HERE("admin", "admin", MG_FIELD_REQUIRED,
               "must be false or a table like { host = \"127.0.0.1\", port = 9901, "
               "token = \"...\" }"),
    OTHER("trusted_proxies"), /* a list of CIDRs: conv_trusted_proxies */
    /* given only with trusted_proxies; absent, C's zero: MG_REAL_IP_XFF */
    ENUM("real_ip_header", mg_real_ip_header_parse, mg_real_ip_header_name, NONE,
         "must be \"X-Forwarded-For\", \"Forwarded\" or \"X-Real-IP\"", mg_config_t,
         real_ip_header),
    TABLE_ALLOC("tracing", "tracing", 0,
                "must be a table like { endpoint = \"http://127.0.0.1:4318\" }", mg_config_t,
                tracing),
    /* target host names: discovery.h */
    CHECKED("resolver", mg_dns_server_check, 0, NULL,
            "must be a DNS server's numeric address, \"ADDR\" or \"ADDR:PORT\" (port 53 "
            "by default; IPv6 as \"[ADDR]:PORT\")",
            mg_config_t, resolver),
    TABLE("dns", "dns", MG_FIELD_REQUIRED, "must be a table like { min_ttl = 1, max_ttl = 300 }",
          mg_config_t, dns),
};

static const mg_ffi_config_field_t dns_fields[] = {
    TIME("min_ttl", 1000, mg_dns_settings_t, min_ttl),
    TIME("max_ttl", 300000, mg_dns_settings_t, max_ttl),
    TIME("timeout", 1000, mg_dns_settings_t, timeout),
    F("attempts", MG_FIELD_INT, 1, 10, 3, "must be an integer 1-10", mg_dns_settings_t, attempts,
      CT_INT),
    TIME("retry", 5000, mg_dns_settings_t, retry),
};

/* settings.access_log's fields, each a name logfields.c knows */
static const mg_ffi_config_field_t log_field_item =
    { .name = "", .kind = MG_FIELD_STRING, .def = NONE, .ctype = CT_STR,
      .check = mg_logfield_check,
      .expected = "must be a field: a built-in one (time, request_id, trace_id, span_id, "
                  "client, peer, method, path, query, proto, status, bytes, route, upstream, "
                  "target, upstream_time, split, mirror, cache, total_time, upstream_attempts, "
                  "upstream_connect_time, upstream_tls_time, upstream_first_byte_time), "
                  "\"req.header.NAME\", \"res.header.NAME\" or \"req.ctx.KEY\", optionally "
                  "written under another key as \"KEY=...\" (a key: printable ASCII but "
                  "spaces, quotes, backslashes and '=', 64 bytes at most)" };

static const mg_ffi_config_field_t access_log_fields[] = {
    CHECKED("path", mg_log_access_target_check, 0, "stdout",
            "must be \"off\", \"stdout\", \"stderr\" or a file path", mg_config_t, access_log),
    LIST("fields", &log_field_item, 1, MG_LOG_MAX_FIELDS, MG_FIELD_ALLOC,
         "must be a list of fields like { \"time\", \"status\", \"req.header.user-agent\" }",
         "lists %d fields (at most %d)", mg_config_t, access_log_fields, access_log_nfields),
};

#define PORT_EXPECTED "must be an integer 1-65535"

/* the names' form is admin.c's (mg_admin_check, when converted) */
static const mg_ffi_config_field_t admin_name_item = ITEM(MG_FIELD_STRING, 0, 0, NULL, CT_STR);

static const mg_ffi_config_field_t admin_fields[] = {
    STRING("host", 1, "127.0.0.1", "must be an address string", mg_config_t, admin_host),
    F("port", MG_FIELD_INT, 1, 65535, 9901, PORT_EXPECTED, mg_config_t, admin_port, CT_U16),
    STRING("token", 16, NULL, "must be a string of at least 16 characters", mg_config_t,
           admin_token),
    LIST("names", &admin_name_item, 0, 1000000, MG_FIELD_ALLOC,
         "must be a list of host names like { \"gw1.internal\" }", NULL, mg_config_t,
         admin_names, admin_nnames),
};

/* the port is required */
static const mg_ffi_config_field_t listen_fields[] = {
    F("port", MG_FIELD_INT, 1, 65535, NONE, PORT_EXPECTED, mg_listener_t, port, CT_U16),
    CHECKED("host", mg_uri_host_check, 0, "0.0.0.0", "must be an IP address or a host name",
            mg_listener_t, host),
    NESTED("tls", "tls",
           "must be a table like { cert = \"certs/site.pem\", key = \"certs/site.key\" }"),
    SLASHES(MG_SLASHES_REJECT, mg_listener_t, escaped_slashes),
    F("proxy_protocol", MG_FIELD_BOOL, 0, 1, 0, NULL, mg_listener_t, proxy_protocol, CT_BOOL),
    /* default: on with tls, off without (config.lua always sets it) */
    F("http2", MG_FIELD_BOOL, 0, 1, NONE, NULL, mg_listener_t, http2, CT_BOOL),
};

#define PEM_EXPECTED "must be the path of a PEM file"

/* settings.tracing (docs/tracing.md). `resource` and `headers` are maps in
 * the user's file; config.lua checks them and hands over lists of
 * { name, value } (header names in lower case). */
static const mg_ffi_config_field_t kv_fields[] = {
    REQUIRED_STRING("name", 1, "must be a non-empty string", mg_kv_t, name),
    REQUIRED_STRING("value", 0, "must be a string", mg_kv_t, value),
};

static const mg_ffi_config_field_t kv_item =
    { .name = "", .kind = MG_FIELD_OBJECT, .def = NONE, .ctype = CT_OBJECT, .object = "kv",
      .expected = "must be a name and a value" };

static const mg_ffi_config_field_t tracing_fields[] = {
    CHECKED("endpoint", mg_uri_base_url_check, MG_FIELD_REQUIRED, NULL,
            "must be a collector URL like \"http://127.0.0.1:4318\" (spans go to "
            "<endpoint>/v1/traces)", mg_tracing_cfg_t, endpoint),
    F("sample", MG_FIELD_NUMBER, 0, 1, 1, "must be a number 0-1 (the share of traces recorded)",
      mg_tracing_cfg_t, sample, CT_DOUBLE),
    F("parent_based", MG_FIELD_BOOL, 0, 1, 1, NULL, mg_tracing_cfg_t, parent_based, CT_BOOL),
    STRING("service_name", 1, "moongate", "must be a non-empty string", mg_tracing_cfg_t,
           service_name),
    LIST("resource", &kv_item, 0, 64, MG_FIELD_ALLOC,
         "must be a table of strings like { [\"deployment.environment\"] = \"prod\" }",
         "has %d attributes (at most %d)", mg_tracing_cfg_t, resource, nresource),
    LIST("headers", &kv_item, 0, 32, MG_FIELD_ALLOC,
         "must be a table like { [\"x-api-key\"] = \"...\" }", "has %d headers (at most %d)",
         mg_tracing_cfg_t, headers, nheaders),
    TABLE_HERE("batch", "tracing_batch", 0, "must be a table like { size = 512, interval = 1 }"),
    F("queue", MG_FIELD_INT, 16, 1048576, 2048,
      "must be an integer 16-1048576 (spans each worker keeps for the exporter)",
      mg_tracing_cfg_t, queue, CT_INT),
    TIME("timeout", 10000, mg_tracing_cfg_t, timeout),
    F("policy_spans", MG_FIELD_BOOL, 0, 1, 0, NULL, mg_tracing_cfg_t, policy_spans, CT_BOOL),
    CHECKED("ca", mg_tls_pem_path_check, 0, NULL, PEM_EXPECTED, mg_tracing_cfg_t, ca),
};

static const mg_ffi_config_field_t tracing_batch_fields[] = {
    F("size", MG_FIELD_INT, 1, 65536, 512, "must be an integer 1-65536 (spans per export)",
      mg_tracing_cfg_t, batch_size, CT_INT),
    TIME("interval", 1000, mg_tracing_cfg_t, batch_interval),
};

/* listen.tls: one cert and key, or several chosen by SNI (certs, the first
 * the default); config.lua turns the first form into the second */
static const mg_ffi_config_field_t tls_cert_fields[] = {
    CHECKED("cert", mg_tls_pem_path_check, MG_FIELD_REQUIRED, NULL, PEM_EXPECTED,
            struct tls_pair_s, cert),
    CHECKED("key", mg_tls_pem_path_check, MG_FIELD_REQUIRED, NULL, PEM_EXPECTED,
            struct tls_pair_s, key),
};

static const mg_ffi_config_field_t tls_cert_item =
    { .name = "", .kind = MG_FIELD_OBJECT, .def = NONE, .ctype = CT_OBJECT,
      .object = "tls_cert",
      .expected = "must be a table like { cert = \"certs/site.pem\", key = "
                  "\"certs/site.key\" }" };

static const mg_ffi_config_field_t tls_fields[] = {
    CHECKED_LUA("cert", mg_tls_pem_path_check, PEM_EXPECTED),
    CHECKED_LUA("key", mg_tls_pem_path_check, PEM_EXPECTED),
    LIST("certs", &tls_cert_item, 1, MAX_TLS_CERTS, MG_FIELD_REQUIRED,
         "must be a non-empty list of { cert = \"certs/site.pem\", key = \"certs/site.key\" }",
         "holds %d certificates; at most %d", tls_opts_t, certs, ncerts),
    CHECKED("min_version", mg_tls_version_check, 0, NULL,
            "must be \"TLSv1.2\" or \"TLSv1.3\"", tls_opts_t, min_version),
    STRING("ciphers", 1, NULL, "must be an OpenSSL cipher list string", tls_opts_t, ciphers),
    /* client certificates: client_ca turns them on (config.lua refuses
     * client_auth or crl without it) */
    CHECKED("client_ca", mg_tls_pem_path_check, 0, NULL, PEM_EXPECTED, tls_opts_t, client_ca),
    ENUM("client_auth", mg_tls_client_auth_parse, mg_tls_client_auth_name,
         MG_TLS_CLIENT_REQUIRE, "must be \"require\" or \"optional\"", tls_opts_t,
         client_auth),
    CHECKED("crl", mg_tls_pem_path_check, 0, NULL, PEM_EXPECTED, tls_opts_t, crl),
};

/* min_body_rate: a request body slower than 1 KiB/s (after the grace) is a
 * slow-body attack rather than a client, whose link is rarely below 10 KiB/s */
static const mg_ffi_config_field_t limits_fields[] = {
    SIZE("request_line", 1, 8192, mg_limits_t, request_line),
    SIZE("header_size", 1, 32 * 1024, mg_limits_t, header_size),
    F("header_count", MG_FIELD_INT, 1, INT32_MAX, 100, "must be an integer >= 1", mg_limits_t,
      header_count, CT_U64),
    SIZE("body", 0, 10 * 1024 * 1024, mg_limits_t, body),
    SIZE("min_body_rate", 0, 1024, mg_limits_t, min_body_rate), /* bytes/s, 0: off */
    SIZE("lua_memory", 16 * 1024 * 1024, 1024.0 * 1024 * 1024, mg_limits_t, lua_memory),
};

/* settings.http2: nginx's http2_max_concurrent_streams is 128, HAProxy's 100;
 * 64 KiB of body ahead of the upstream per stream (nginx's preread), 1 MiB
 * per connection; nghttp2's own reset bound is 1000 at once, 33/s */
#define H2_WINDOW_MAX 2147483647.0
static const mg_ffi_config_field_t http2_fields[] = {
    F("max_concurrent_streams", MG_FIELD_INT, 1, 1000000, 100,
      "must be an integer 1-1000000", mg_http2_t, max_concurrent_streams, CT_U64),
    F("initial_window", MG_FIELD_SIZE, 1024, H2_WINDOW_MAX, 65535,
      "must be a size of 1k-2147483647 bytes", mg_http2_t, initial_window, CT_U64),
    F("connection_window", MG_FIELD_SIZE, 65535, H2_WINDOW_MAX, 1048576,
      "must be a size of 65535-2147483647 bytes", mg_http2_t, connection_window, CT_U64),
    F("max_resets", MG_FIELD_INT, 1, INT32_MAX, 200, "must be an integer >= 1", mg_http2_t,
      max_resets, CT_U64),
    F("max_control_frames", MG_FIELD_INT, 1, INT32_MAX, 1000, "must be an integer >= 1",
      mg_http2_t, max_control_frames, CT_U64),
    TIME("rate_window", 10000, mg_http2_t, rate_window),
};

static const mg_ffi_config_field_t timeouts_fields[] = {
    TIME("header", 10000, mg_timeouts_t, header),
    TIME("keepalive", 60000, mg_timeouts_t, keepalive),
    TIME("body", 10000, mg_timeouts_t, body),
    TIME("body_grace", 5000, mg_timeouts_t, body_grace),
    TIME("body_rate_window", 5000, mg_timeouts_t, body_rate_window),
    TIME("send", 60000, mg_timeouts_t, send),
    TIME("shutdown", 10000, mg_timeouts_t, shutdown),
    TIME("hook", 100, mg_timeouts_t, hook),
    LUA("load", MG_FIELD_TIME, 1, ANY, 2000), /* the config run's own budget */
};

/* host and port: config.lua splits them out of "host:port" (its words are
 * its own), with the host grammar of listen.host */
static const mg_ffi_config_field_t target_fields[] = {
    STRING_F("host", 1, mg_uri_host_check, MG_FIELD_REQUIRED | MG_FIELD_INTERNAL,
             "must be an IP address or a host name", mg_target_t, host),
    /* 0: an SRV name's (its records give the ports) */
    { .name = "port", .kind = MG_FIELD_INT, .min = 0, .max = 65535, .def = NONE,
      .expected = PORT_EXPECTED, .offset = offsetof(mg_target_t, port), .ctype = CT_U16,
      .flags = MG_FIELD_REQUIRED | MG_FIELD_INTERNAL },
    F("weight", MG_FIELD_INT, 1, INT32_MAX, 1, "must be an integer >= 1", mg_target_t, weight,
      CT_INT),
    { .name = "srv", .kind = MG_FIELD_BOOL, .min = 0, .max = 1, .def = 0,
      .offset = offsetof(mg_target_t, srv), .ctype = CT_BOOL, .flags = MG_FIELD_INTERNAL },
};

static const mg_ffi_config_field_t target_item =
    { .name = "", .kind = MG_FIELD_OBJECT, .def = NONE, .ctype = CT_OBJECT,
      .object = "target", .expected = "must be a target" };

static const mg_ffi_config_field_t upstream_fields[] = {
    STRING_F("name", 1, NULL, MG_FIELD_REQUIRED | MG_FIELD_INTERNAL,
             "must be a non-empty string", mg_upstream_t, name), /* gw.upstream(name, ...) */
    /* gw.upstream(name, targets): config.lua reads the "host:port" forms */
    LIST("targets", &target_item, 1, 1000000,
         MG_FIELD_REQUIRED | MG_FIELD_INTERNAL | MG_FIELD_ALLOC,
         "must be a non-empty list of \"host:port\" strings", NULL, mg_upstream_t, targets,
         ntargets),
    F("keepalive", MG_FIELD_INT, 0, INT32_MAX, 64, "must be an integer >= 0", mg_upstream_t,
      keepalive, CT_INT),
    /* targets at run time (targets.h): addresses of names, admin additions */
    F("max_targets", MG_FIELD_INT, 1, 4096, 64, "must be an integer 1-4096", mg_upstream_t,
      max_targets, CT_INT),
    TIME("keepalive_timeout", 60000, mg_upstream_t, keepalive_timeout),
    TIME("connect_timeout", 5000, mg_upstream_t, connect_timeout),
    TIME("send_timeout", 60000, mg_upstream_t, send_timeout),
    TIME("read_timeout", 60000, mg_upstream_t, read_timeout),
    TIME("fail_timeout", 10000, mg_upstream_t, fail_timeout),
    F("forwarded", MG_FIELD_BOOL, 0, 1, 1, NULL, mg_upstream_t, forwarded, CT_BOOL),
    F("request_id", MG_FIELD_BOOL, 0, 1, 1, NULL, mg_upstream_t, request_id, CT_BOOL),
    F("override_headers", MG_FIELD_BOOL, 0, 1, 0, NULL, mg_upstream_t, override_headers,
      CT_BOOL),
    TABLE_HERE("health", "health", 0, "must be a table like { path = \"/health\" }"),
    F("max_fails", MG_FIELD_INT, 0, 1000, 1, "must be an integer 0-1000 (0: never skip a target)",
      mg_upstream_t, max_fails, CT_INT),
    ENUM("balancer", mg_balancer_parse, mg_balancer_name, MG_LB_ROUND_ROBIN,
         "must be \"round_robin\", \"least_conn\", \"hash\" or \"p2c_ewma\"", mg_upstream_t,
         balancer),
    OTHER("hash"), /* config.lua normalises it to { on = ..., name = ... } */
    OTHER("tls"), OTHER("retries"), OTHER("outlier"),
    ENUM("protocol", mg_upstream_protocol_parse, mg_upstream_protocol_name, MG_UP_H1,
         "must be \"h1\", \"h2\" or \"grpc\"", mg_upstream_t, protocol),
};

/* upstream.tls and route.cache.redis.tls, and moongate.redis's `tls`
 * (`tls = true`: these defaults); read into a
 * mg_tls_client_opts_t while the config converts, the strings not kept
 * (the SSL_CTX holds what it needs). Paths are made absolute in Lua. */
typedef struct upstream_tls_s {
    int verify, session_reuse;
    char *ca, *sni, *cert, *key, *min_version, *ciphers;
} upstream_tls_t;

static const mg_ffi_config_field_t upstream_tls_fields[] = {
    F("verify", MG_FIELD_BOOL, 0, 1, 1, "must be true or false", upstream_tls_t, verify, CT_BOOL),
    STRING("ca", 1, NULL, "must be the path of a PEM file of CA certificates", upstream_tls_t,
           ca),
    STRING("sni", 1, NULL, "must be a host name", upstream_tls_t, sni),
    STRING("cert", 1, NULL, "must be the path of a PEM certificate file", upstream_tls_t, cert),
    STRING("key", 1, NULL, "must be the path of a PEM private key file", upstream_tls_t, key),
    STRING("min_version", 1, NULL, "must be \"TLSv1.2\" or \"TLSv1.3\"", upstream_tls_t,
           min_version),
    STRING("ciphers", 1, NULL, "must be an OpenSSL cipher list string", upstream_tls_t,
           ciphers),
    F("session_reuse", MG_FIELD_BOOL, 0, 1, 1, "must be true or false", upstream_tls_t,
      session_reuse, CT_BOOL),
};

/* retries = { ... } (route or upstream; src/retry.c). `on` is a list of
 * the names below; by default what cannot make a slow service slower:
 * failures that got no answer, and 502/503. */
static const mg_ffi_config_field_t retries_fields[] = {
    F("attempts", MG_FIELD_INT, 1, 10, 2, "must be an integer 1-10 (tries in all)",
      mg_retry_policy_t, attempts, CT_INT),
    OTHER("on"),
    F("per_try_timeout", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_retry_policy_t, per_try_timeout,
      CT_U64),
    OTHER("backoff"),
    F("budget", MG_FIELD_NUMBER, 0, 1, 0.2, "must be a number 0-1 (a share of the requests in flight)",
      mg_retry_policy_t, budget, CT_DOUBLE),
    F("min_retries", MG_FIELD_INT, 0, 1000, 3, "must be an integer 0-1000", mg_retry_policy_t,
      min_retries, CT_INT),
    F("non_idempotent", MG_FIELD_BOOL, 0, 1, 0, NULL, mg_retry_policy_t, non_idempotent, CT_BOOL),
    SIZE("body", 0, 64 * 1024, mg_retry_policy_t, body),
};

static const mg_ffi_config_field_t backoff_fields[] = {
    F("base", MG_FIELD_TIME, 0, ANY, 25, NULL, mg_retry_policy_t, backoff_base, CT_U64),
    F("max", MG_FIELD_TIME, 0, ANY, 250, NULL, mg_retry_policy_t, backoff_max, CT_U64),
    F("jitter", MG_FIELD_BOOL, 0, 1, 1, NULL, mg_retry_policy_t, backoff_jitter, CT_BOOL),
};

/* outlier = { ... } (upstream; src/outlier.c) */
static const mg_ffi_config_field_t outlier_fields[] = {
    F("consecutive_5xx", MG_FIELD_INT, 0, 1000, 5, "must be an integer 0-1000 (0: off)",
      mg_outlier_policy_t, consecutive_5xx, CT_INT),
    F("consecutive_gateway_failures", MG_FIELD_INT, 0, 1000, 3,
      "must be an integer 0-1000 (0: off)", mg_outlier_policy_t, consecutive_gateway, CT_INT),
    F("latency_factor", MG_FIELD_NUMBER, 0, 1000, 0,
      "must be a number 0-1000 (0: off; else above 1, e.g. 5)", mg_outlier_policy_t,
      latency_factor, CT_DOUBLE),
    TIME("base_ejection_time", 10000, mg_outlier_policy_t, base_ejection),
    TIME("max_ejection_time", 300000, mg_outlier_policy_t, max_ejection),
    F("max_ejection_percent", MG_FIELD_INT, 0, 100, 50, "must be an integer 0-100",
      mg_outlier_policy_t, max_ejection_percent, CT_INT),
};

/* route.timeouts: 0 (the default) is the upstream's own, or no deadline */
static const mg_ffi_config_field_t route_timeouts_fields[] = {
    F("connect", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_route_timeouts_t, connect, CT_U64),
    F("first_byte", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_route_timeouts_t, first_byte, CT_U64),
    F("idle", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_route_timeouts_t, idle, CT_U64),
    F("total", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_route_timeouts_t, total, CT_U64),
};

/* retries.on's names, bit by bit (MG_RETRY_ON_*) */
static const char *const retry_on_names[] = { "connect", "reset", "timeout", "502", "503", "504" };

int mg_ffi_retry_on_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(retry_on_names) / sizeof(retry_on_names[0]); i++)
        if (strcmp(name, retry_on_names[i]) == 0)
            return 1 << i;
    return -1;
}

static const mg_ffi_config_field_t health_fields[] = {
    CHECKED("path", mg_uri_path_check, MG_FIELD_REQUIRED, NULL,
            "must be a path like \"/health\" (no spaces)", mg_upstream_t, health_path),
    TIME("interval", 5000, mg_upstream_t, health_interval),
    TIME("timeout", 2000, mg_upstream_t, health_timeout),
    F("fall", MG_FIELD_INT, 1, 100, 3, "must be an integer 1-100", mg_upstream_t, health_fall,
      CT_INT),
    F("rise", MG_FIELD_INT, 1, 100, 2, "must be an integer 1-100", mg_upstream_t, health_rise,
      CT_INT),
};

static const mg_ffi_config_field_t status_item =
    ITEM(MG_FIELD_INT, 200, 599, "must be a status 200-599", CT_U16);
static const mg_ffi_config_field_t vary_item =
    { .name = "", .kind = MG_FIELD_STRING, .def = NONE, .expected = "must be a header name",
      .ctype = CT_STR, .check = mg_hname_check };

/* `cache = true` gets the defaults (the lists' are config.lua's: the
 * statuses RFC 9111 lets a cache keep without explicit freshness) */
static const mg_ffi_config_field_t cache_fields[] = {
    TIME("ttl", 60000, mg_route_cache_t, ttl),
    F("stale", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_route_cache_t, stale, CT_U64),
    SIZE("max_body", 0, 1024 * 1024, mg_route_cache_t, max_body),
    LIST("statuses", &status_item, 1, MG_MAX_CACHE_STATUSES,
         MG_FIELD_REQUIRED | MG_FIELD_UNIQUE,
         "must be a non-empty list of statuses like { 200, 404 }",
         "lists %d statuses (at most %d)", mg_route_cache_t, statuses, nstatuses),
    LIST("vary", &vary_item, 0, MG_MAX_CACHE_VARY, MG_FIELD_REQUIRED | MG_FIELD_UNIQUE,
         "must be a list of request header names like { \"accept\" }",
         "names %d headers (at most %d)", mg_route_cache_t, vary, nvary),
    F("authorized", MG_FIELD_BOOL, 0, 1, 0, "must be a boolean", mg_route_cache_t, authorized,
      CT_BOOL),
    CHECKED("dict", mg_shdict_name_check, 0, "cache", "must be a shared dict name",
            mg_route_cache_t, dict_name),
    F("lock", MG_FIELD_TIME, 0, ANY, 5000, NULL, mg_route_cache_t, lock, CT_U64),
    /* checked by moongate.redis (which also takes "host:port") */
    TABLE_HERE("redis", "redis", 0,
               "must be \"host:port\" or a table like { host = \"127.0.0.1\", port = 6379 }"),
};

/* route.cache.redis, and every moongate.redis client (lua/moongate/redis.lua
 * checks a client's options with it) */
static const mg_ffi_config_field_t redis_fields[] = {
    CHECKED("host", mg_uri_host_check, 0, "127.0.0.1", "must be an address or host name",
            mg_route_cache_t, redis_host),
    F("port", MG_FIELD_INT, 1, 65535, 6379, PORT_EXPECTED, mg_route_cache_t, redis_port, CT_INT),
    /* redis.lua says it with the value's type only: a password is never shown */
    STRING("password", 1, NULL, "must be a non-empty string", mg_route_cache_t,
           redis_password),
    /* a Redis 6 ACL user (AUTH username password); redis.lua wants password with it */
    STRING("username", 1, NULL, "must be a non-empty string (a Redis ACL user name)",
           mg_route_cache_t, redis_username),
    F("db", MG_FIELD_INT, 0, INT32_MAX, 0, "must be an integer 0-2147483647", mg_route_cache_t,
      redis_db, CT_INT),
    F("pool", MG_FIELD_INT, 1, 64, 2, "must be an integer 1-64", mg_route_cache_t, redis_pool,
      CT_INT), /* connections per worker */
    F("timeout", MG_FIELD_SECONDS, 0, HUGE_VAL, 0.2, NULL, mg_route_cache_t, redis_timeout,
      CT_DOUBLE), /* per command */
    F("connect_timeout", MG_FIELD_SECONDS, 0, HUGE_VAL, 1, NULL, mg_route_cache_t,
      redis_connect_timeout, CT_DOUBLE),
    /* redis.lua: "redis[s]://[user[:password]@]host[:port][/db]" instead of
     * host ... db, and rediss's TLS (true or upstream_tls's fields; C reads
     * route.cache.redis.tls with those, conv_cache_redis_tls) */
    OTHER("url"), OTHER("tls"),
};

/* route.methods (upper case; config.lua knows the names) and
 * route.upgrades (tokens, lower case; absent: { "websocket" }, conv_route) */
static const mg_ffi_config_field_t method_item =
    ITEM(MG_FIELD_STRING, 1, 0, "must be a method name", CT_STR);
static const mg_ffi_config_field_t upgrade_item =
    { .name = "", .kind = MG_FIELD_STRING, .def = NONE, .ctype = CT_STR,
      .check = mg_hname_check,
      .expected = "must be a protocol name (an HTTP token like \"websocket\", without "
                  "\"/version\")" };

/* route.headers: the user writes a map { ["X-Version"] = "2" }; config.lua
 * checks it by hand (its words are its own) and hands over a list sorted by
 * name, names in lower case */
static const mg_ffi_config_field_t route_header_fields[] = {
    CHECKED("name", mg_hname_check, MG_FIELD_REQUIRED, NULL, "must be a header name",
            mg_route_header_t, name),
    REQUIRED_STRING("value", 0, "must be a string (no CR, LF or NUL)", mg_route_header_t,
                    value),
};

static const mg_ffi_config_field_t route_header_item =
    { .name = "", .kind = MG_FIELD_OBJECT, .def = NONE, .ctype = CT_OBJECT,
      .object = "route_header", .expected = "must be a header name and value" };

/* gw.route. listen's default 0 is C's "any port", outside the 1-65535 a
 * config may write: conv_fields admits a field's default besides its range.
 * max_body has no default here: config.lua fills in limits.body. The name
 * defaults to the path (config.lua); the path's pattern is the router's
 * (mg_ffi_route_pattern, and again when the router is built). */
static const mg_ffi_config_field_t route_fields[] = {
    REQUIRED_STRING("name", 1, "must be a non-empty string", mg_route_t, name),
    REQUIRED_STRING("path", 0, "must be a pattern like \"/orders/**\"", mg_route_t, path),
    OTHER("upstream"), OTHER("handler"),
    LIST("methods", &method_item, 1, MG_MAX_METHODS, MG_FIELD_UNIQUE,
         "must be a list like { \"GET\", \"POST\" }", "lists %d methods (at most %d)",
         mg_route_t, methods, nmethods),
    CHECKED("host", mg_router_host_check, 0, NULL,
            "must be a host name, optionally with a leading \"*.\" (like "
            "\"api.example.com\" or \"*.example.com\")", mg_route_t, host),
    LIST("headers", &route_header_item, 0, MG_MAX_ROUTE_HEADERS, MG_FIELD_REQUIRED,
         "must be a table like { [\"X-Version\"] = \"2\" }", "has %d headers (at most %d)",
         mg_route_t, headers, nheaders),
    F("listen", MG_FIELD_INT, 1, 65535, 0, PORT_EXPECTED, mg_route_t, listen_port, CT_U16),
    CHECKED("strip_prefix", mg_router_prefix_check, 0, NULL,
            "must be a path starting with '/'", mg_route_t, strip_prefix),
    STRING("rewrite", 0, NULL, "must be a path template like \"/v1/:id/**\"", mg_route_t,
           rewrite),
    SIZE("max_body", 0, NONE, mg_route_t, max_body),
    OTHER("policies"),
    TABLE_ALLOC("cache", "cache", 0, "must be true or a table like { ttl = 30 }", mg_route_t,
                cache),
    LIST("upgrades", &upgrade_item, 0, MG_MAX_UPGRADES, MG_FIELD_UNIQUE,
         "must be a list like { \"websocket\" } ({} allows none)",
         "lists %d protocols (at most %d)", mg_route_t, upgrades, nupgrades),
    SLASHES(NONE, mg_route_t, escaped_slashes), /* absent: the listener's (INHERIT) */
    OTHER("retries"), OTHER("timeouts"),
    TABLE_HERE("grpc", "route_grpc", 0,
               "must be a table like { service = \"pkg.Service\", method = \"Method\" }"),
    /* traffic split, canary and mirror (docs/traffic.md): checked in
     * config.lua, their upstream names resolved there to indices */
    OTHER("split"), OTHER("canary"), OTHER("mirror"),
};

/* route.grpc: config.lua makes the route's path of them (grpc.c checks
 * the names) */
static const mg_ffi_config_field_t route_grpc_fields[] = {
    CHECKED("service", mg_grpc_service_check, MG_FIELD_REQUIRED, NULL,
            "must be a gRPC service name like \"helloworld.Greeter\"", mg_route_t,
            grpc_service),
    CHECKED("method", mg_grpc_method_check, 0, NULL,
            "must be a gRPC method name like \"SayHello\"", mg_route_t, grpc_method),
};

/* route.split's entries (the list; its `key` is upstream.hash's form) */
static const mg_ffi_config_field_t split_item_fields[] = {
    OTHER("upstream"),
    F("weight", MG_FIELD_INT, 0, 1000000, 1, "must be an integer 0-1000000", mg_split_entry_t,
      weight, CT_INT),
};

/* route.canary: exactly one of header and cookie (config.lua) */
static const mg_ffi_config_field_t canary_fields[] = {
    CHECKED("header", mg_hname_check, 0, NULL, "must be a header name", mg_canary_t, header),
    STRING("cookie", 1, NULL, "must be a cookie name", mg_canary_t, cookie),
    STRING("value", 0, NULL, "must be a string", mg_canary_t, value),
    OTHER("upstream"),
};

/* route.mirror (`mirror = "name"`: these defaults) */
static const mg_ffi_config_field_t mirror_fields[] = {
    OTHER("upstream"),
    SIZE("body", 0, 64 * 1024, mg_mirror_t, body),
    F("concurrency", MG_FIELD_INT, 1, 1000000, 32, "must be an integer 1-1000000",
      mg_mirror_t, concurrency, CT_INT),
    TIME("timeout", 10000, mg_mirror_t, timeout),
    F("percent", MG_FIELD_NUMBER, 0, 100, 100, "must be a number 0-100", mg_mirror_t, percent,
      CT_DOUBLE),
};

/* smaller dictionaries hold next to nothing; the size is required */
static const mg_ffi_config_field_t shared_dict_fields[] = {
    STRING_F("name", 1, mg_shdict_name_check, MG_FIELD_REQUIRED | MG_FIELD_INTERNAL,
             "must be 1-64 letters, digits, '_', '-' or '.'", mg_shared_dict_decl_t,
             name), /* gw.shared_dict(name, ...) */
    SIZE("size", 8192, NONE, mg_shared_dict_decl_t, size),
};

#define OBJECT(name, fields) { name, fields, sizeof(fields) / sizeof(fields[0]) }
static const struct {
    const char *name;
    const mg_ffi_config_field_t *fields;
    size_t n;
} objects[] = {
    OBJECT("settings", settings_fields), OBJECT("access_log", access_log_fields),
    OBJECT("limits", limits_fields),
    OBJECT("timeouts", timeouts_fields), OBJECT("http2", http2_fields),
    OBJECT("upstream", upstream_fields),
    OBJECT("target", target_fields),     OBJECT("health", health_fields),
    OBJECT("upstream_tls", upstream_tls_fields),
    OBJECT("shared_dict", shared_dict_fields), OBJECT("cache", cache_fields),
    OBJECT("admin", admin_fields),       OBJECT("listen", listen_fields),
    OBJECT("tls", tls_fields),           OBJECT("tls_cert", tls_cert_fields),
    OBJECT("redis", redis_fields),       OBJECT("route", route_fields),
    OBJECT("route_header", route_header_fields),
    OBJECT("retries", retries_fields),   OBJECT("backoff", backoff_fields),
    OBJECT("outlier", outlier_fields),   OBJECT("route_timeouts", route_timeouts_fields),
    OBJECT("route_grpc", route_grpc_fields),
    OBJECT("split_item", split_item_fields), OBJECT("canary", canary_fields),
    OBJECT("mirror", mirror_fields),
    OBJECT("tracing", tracing_fields),   OBJECT("tracing_batch", tracing_batch_fields),
    OBJECT("kv", kv_fields),
    OBJECT("dns", dns_fields),
};

const mg_ffi_config_field_t *mg_ffi_config_fields(const char *object, size_t *n)
{
    for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++) {
        if (strcmp(objects[i].name, object) == 0) {
            *n = objects[i].n;
            return objects[i].fields;
        }
    }
    *n = 0;
    return NULL;
}

static void conv_fields(conv_t *cv, int t, const char *what, const char *object, void *base);

/* Copies the string at the top of the stack (popped) as field f into *at,
 * re-checked by its module's check, which config.lua's result must pass
 * unchanged. */
static void conv_str(conv_t *cv, const char *what, const mg_ffi_config_field_t *f, char **at)
{
    int optional = f->def_str == NULL && !(f->flags & MG_FIELD_REQUIRED);

    if (top_str(cv, what, f->name, optional, at) != 0 || *at == NULL)
        return;
    size_t len = strlen(*at);
    if (len < f->min) {
        internal(cv, what, f->name, "a long enough string"); /* Lua's bug */
    } else if (f->check) {
        char *norm = malloc(len + 3); /* mg_ffi_str_check_fn's room */
        if (norm == NULL)
            cv->errs->oom = 1;
        else if (f->check(*at, len, norm, len + 3) < 0 || strcmp(norm, *at) != 0)
            internal(cv, what, f->name, "a value its module's check keeps as is");
        free(norm);
    }
}

/* Copies the list at the top of the stack (popped) as field f of the struct
 * at base. */
static void conv_list(conv_t *cv, const char *what, const mg_ffi_config_field_t *f, void *base)
{
    lua_State *L = cv->L;
    int list = lua_gettop(L);
    size_t *count = (size_t *)((char *)base + f->count_offset);
    char *items = (char *)base + f->offset;
    char iwhat[128], key[32];

    snprintf(iwhat, sizeof(iwhat), "%s.%s", what, f->name);
    size_t n = lua_objlen(L, list);
    if (n < f->min || n > f->max) {
        internal(cv, what, f->name, "a list of a length in range");
        n = 0;
    }
    if (f->flags & MG_FIELD_ALLOC) {
        void *p = n ? calloc(n, f->item_size) : NULL;
        if (n && !p) {
            cv->errs->oom = 1;
            n = 0;
        }
        *(void **)items = p;
        items = p;
    }
    *count = n; /* at once: mg_config_free() sees a partly filled one */
    for (size_t i = 0; i < n; i++) {
        const mg_ffi_config_field_t *it = f->item;
        char *at = items + i * f->item_size;
        snprintf(key, sizeof(key), "[%zu]", i + 1);
        lua_rawgeti(L, list, (int)i + 1);
        if (it->ctype == CT_OBJECT) {
            if (lua_type(L, -1) == LUA_TTABLE) {
                char owhat[160];
                snprintf(owhat, sizeof(owhat), "%s%s", iwhat, key);
                conv_fields(cv, lua_gettop(L), owhat, it->object, at);
            } else {
                internal(cv, iwhat, key, "a table");
            }
            lua_pop(L, 1);
        } else if (it->ctype == CT_STR) {
            mg_ffi_config_field_t one = *it;
            one.name = key;
            conv_str(cv, iwhat, &one, (char **)at);
        } else if (it->ctype == CT_U16) {
            uint64_t v;
            if (top_uint(cv, iwhat, key, it->min, it->max, &v) == 0)
                *(uint16_t *)at = (uint16_t)v;
        } else {
            lua_pop(L, 1);
            internal(cv, iwhat, key, "of a kind a list can hold");
        }
    }
    lua_pop(L, 1);
}

/* Copies every stored field of `object` from the table at t into the
 * struct at base, range-checked by the same declaration config.lua used. */
static void conv_fields(conv_t *cv, int t, const char *what, const char *object, void *base)
{
    size_t n;
    const mg_ffi_config_field_t *f = mg_ffi_config_fields(object, &n);
    lua_State *L = cv->L;

    if (!lua_checkstack(L, 8)) {
        cv->errs->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++, f++) {
        void *at = (char *)base + f->offset;

        if (f->ctype == CT_NONE)
            continue;
        lua_getfield(L, t, f->name);
        /* a default below the range is a sentinel config.lua fills in */
        double lo = f->def < f->min && lua_type(L, -1) == LUA_TNUMBER &&
                    lua_tonumber(L, -1) == f->def ? f->def : f->min;

        if (f->ctype == CT_U64) {
            top_uint(cv, what, f->name, lo, f->max, at);
        } else if (f->ctype == CT_INT) {
            uint64_t v;
            if (top_uint(cv, what, f->name, lo, f->max, &v) == 0)
                *(int *)at = (int)v;
        } else if (f->ctype == CT_U16) {
            uint64_t v;
            if (top_uint(cv, what, f->name, lo, f->max, &v) == 0)
                *(uint16_t *)at = (uint16_t)v;
        } else if (f->ctype == CT_DOUBLE) {
            double d = lua_tonumber(L, -1);
            /* a NUMBER's range is inclusive, a SECONDS' exclusive */
            int in = f->kind == MG_FIELD_NUMBER ? d >= f->min && d <= f->max
                                                : d > f->min && d < f->max;
            if (lua_type(L, -1) == LUA_TNUMBER && in)
                *(double *)at = d;
            else
                internal(cv, what, f->name, "a number in range");
            lua_pop(L, 1);
        } else if (f->ctype == CT_ENUM) {
            char *name = NULL;
            if (top_str(cv, what, f->name, isnan(f->def), &name) == 0 && name) {
                int v = f->parse(name);
                if (v < 0)
                    internal(cv, what, f->name, "a name its parser knows");
                else
                    *(int *)at = v;
            }
            free(name);
        } else if (f->ctype == CT_STR) {
            conv_str(cv, what, f, at);
        } else if (f->ctype == CT_BOOL) {
            *(int *)at = lua_isnil(L, -1) ? f->def != 0 : lua_toboolean(L, -1);
            lua_pop(L, 1);
        } else if (f->ctype == CT_OBJECT || f->ctype == CT_LIST) {
            if (lua_isnil(L, -1) && !(f->flags & MG_FIELD_REQUIRED)) {
                lua_pop(L, 1);
            } else if (lua_type(L, -1) != LUA_TTABLE) {
                lua_pop(L, 1);
                internal(cv, what, f->name, "a table");
            } else if (f->ctype == CT_LIST) {
                conv_list(cv, what, f, base);
            } else {
                char owhat[128];
                snprintf(owhat, sizeof(owhat), "%s.%s", what, f->name);
                if (f->flags & MG_FIELD_ALLOC) {
                    /* stored before it is filled: mg_config_free() sees it */
                    if (!(*(void **)at = calloc(1, f->item_size)))
                        cv->errs->oom = 1;
                    at = *(void **)at;
                }
                if (at)
                    conv_fields(cv, lua_gettop(L), owhat, f->object, at);
                lua_pop(L, 1);
            }
        } else {
            lua_pop(L, 1);
        }
    }
}

/* settings.access_log.fields compiled (after trusted_proxies: the
 * default line has the peer only with them). */
static void conv_log_format(conv_t *cv, mg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->access_log_nfields; i++)
        if (!cfg->access_log_fields[i])
            return; /* out of memory, reported */
    char *err = NULL;
    cfg->log_format = mg_logformat_new(cfg->access_log_fields, cfg->access_log_nfields,
                                       cfg->trusted_proxies != NULL, &err);
    if (!cfg->log_format && !err)
        cv->errs->oom = 1;
    else if (!cfg->log_format)
        errs_add(cv->errs, "%s:%d: settings.access_log.%s",
                 cfg->settings_source ? cfg->settings_source : cv->file, cfg->settings_line, err);
    free(err);
}

static void conv_admin(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int t = push_table(cv, cfg_t, "", "admin");

    if (!t)
        return;
    lua_getfield(cv->L, t, "enabled");
    cfg->admin_enabled = lua_toboolean(cv->L, -1);
    lua_pop(cv->L, 1);
    lua_pop(cv->L, 1); /* its fields are the settings' (conv_fields) */
    /* admin.c's own rules (address, token, names), so that `moongate
     * check` reports what `run` would refuse */
    char *err = NULL;
    for (size_t i = 0; i < cfg->admin_nnames; i++)
        if (!cfg->admin_names[i])
            return; /* out of memory, reported */
    mg_admin_opts_t o = { .host = cfg->admin_host, .port = cfg->admin_port,
                          .token = cfg->admin_token,
                          .names = (const char *const *)cfg->admin_names,
                          .nnames = cfg->admin_nnames };
    if (cfg->admin_enabled && cfg->admin_host && mg_admin_check(&o, &err) != 0) {
        errs_add(cv->errs, "%s:%d: settings.admin: %s",
                 cfg->settings_source ? cfg->settings_source : cv->file, cfg->settings_line,
                 err ? err : "out of memory");
        free(err);
    }
}

/* settings.trusted_proxies, each entry already checked by config.lua with
 * cidr.c's own parser (mg_ffi_cidr_check): built into one set here. */
/* cfg.metrics: { { name, help, kind, labels, buckets, max_series }, ... }
 * (config.lua checked them with metrics_user.c's rules: checked again). */
static void conv_metric(conv_t *cv, int t, const char *what, mg_umetric_decl_t *m)
{
    lua_State *L = cv->L;
    char *kind = NULL;
    uint64_t max_series = 1;
    if (get_str(cv, t, what, "name", 0, &m->name) || get_str(cv, t, what, "help", 0, &m->help) ||
        get_str(cv, t, what, "kind", 0, &kind) ||
        get_uint(cv, t, what, "max_series", 1, MG_UMETRIC_SERIES_MAX, &max_series)) {
        free(kind);
        return;
    }
    m->kind = mg_umetric_kind_parse(kind);
    m->max_series = (uint32_t)max_series;
    free(kind);
    int list = push_table(cv, t, what, "labels");
    if (!list)
        return;
    m->labels = alloc_list(cv, list_len(cv, list, what), sizeof(char *), &m->nlabels);
    for (size_t i = 0; i < m->nlabels; i++) {
        lua_rawgeti(L, list, (int)i + 1);
        if (top_str(cv, what, "labels[i]", 0, &m->labels[i]) != 0)
            break;
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "buckets");
    if (lua_istable(L, -1)) {
        list = lua_gettop(L);
        m->buckets = alloc_list(cv, list_len(cv, list, what), sizeof(double), &m->nbuckets);
        for (size_t i = 0; i < m->nbuckets; i++) {
            lua_rawgeti(L, list, (int)i + 1);
            m->buckets[i] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    for (size_t i = 0; i < m->nlabels; i++)
        if (!m->labels[i])
            return; /* reported */
    if (mg_ffi_umetric_check(mg_umetric_kind_name(m->kind), m->name,
                             (const char *const *)m->labels, m->nlabels,
                             m->buckets, m->nbuckets, (double)m->max_series, NULL, 0) != 0)
        internal(cv, what, "name", "a declaration metrics_user.c accepts");
}

static void conv_metrics(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    lua_getfield(cv->L, cfg_t, "metrics");
    int absent = lua_isnil(cv->L, -1);
    lua_pop(cv->L, 1);
    int list = absent ? 0 : push_table(cv, cfg_t, "", "metrics");
    if (!list)
        return;
    size_t n = list_len(cv, list, ".metrics");
    cfg->metrics = alloc_list(cv, n, sizeof(mg_umetric_decl_t), &cfg->nmetrics);
    for (size_t i = 0; i < cfg->nmetrics; i++) {
        char what[48];
        int t;
        snprintf(what, sizeof(what), ".metrics[%zu]", i + 1);
        if (!(t = push_item(cv, list, i + 1, ".metrics")))
            continue;
        conv_metric(cv, t, what, &cfg->metrics[i]);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
}

static void conv_trusted_proxies(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    lua_State *L = cv->L;
    lua_getfield(L, cfg_t, "trusted_proxies");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    size_t n = lua_objlen(L, -1);
    if (n > 0 && !(cfg->trusted_proxies = mg_cidr_set_new()))
        cv->errs->oom = 1;
    for (size_t i = 0; i < n && cfg->trusted_proxies; i++) {
        char err[160];
        size_t len;
        lua_rawgeti(L, -1, (int)i + 1);
        const char *v = lua_tolstring(L, -1, &len);
        int rc = v ? mg_cidr_set_add(cfg->trusted_proxies, v, len, err, sizeof(err)) : -1;
        if (rc == -2)
            cv->errs->oom = 1;
        else if (rc < 0)
            internal(cv, ".trusted_proxies", "entry", "a CIDR");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (cfg->trusted_proxies && mg_cidr_set_build(cfg->trusted_proxies) != 0)
        cv->errs->oom = 1;
}

static void conv_tests(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    lua_getfield(cv->L, cfg_t, "tests");
    cfg->ntests = lua_istable(cv->L, -1) ? lua_objlen(cv->L, -1) : 0;
    lua_pop(cv->L, 1);
}

/* listen.tls (already validated in Lua): loads the certificates now, so a
 * missing or broken file refuses the config with the listener's line. */
static void conv_listener_tls(conv_t *cv, int l_t, const char *what, mg_listener_t *l)
{
    tls_opts_t o = {0};
    mg_tls_cert_t certs[MAX_TLS_CERTS];
    char *source = NULL, err[512], twhat[64];
    size_t i, errs_before = cv->errs->len;
    int tls_t, line = 0;

    if (!(tls_t = push_table(cv, l_t, what, "tls")))
        return;
    snprintf(twhat, sizeof(twhat), "%s.tls", what);
    conv_fields(cv, tls_t, twhat, "tls", &o);
    get_str(cv, tls_t, what, "source", 1, &source);
    get_int(cv, tls_t, what, "line", 0, 1 << 30, &line);
    lua_pop(cv->L, 1); /* tls */
    for (i = 0; i < o.ncerts; i++) {
        certs[i].cert = o.certs[i].cert;
        certs[i].key = o.certs[i].key;
    }
    if (cv->errs->len == errs_before && !cv->errs->oom && o.ncerts > 0 &&
        mg_tls_ctx_new(certs, o.ncerts, o.min_version, o.ciphers,
                       &(mg_tls_client_auth_t){ o.client_ca, o.crl,
                                                o.client_auth == MG_TLS_CLIENT_REQUIRE },
                       &l->tls, err, sizeof(err)) != 0)
        errs_add(cv->errs, "%s:%d: listen.tls: %s", source ? source : cv->file, line, err);
    else if (l->tls)
        mg_tls_ctx_offer_h2(l->tls, l->http2);
    for (i = 0; i < o.ncerts; i++) {
        free(o.certs[i].cert);
        free(o.certs[i].key);
    }
    free(o.min_version);
    free(o.ciphers);
    free(o.client_ca);
    free(o.crl);
    free(source);
}

static void conv_listeners(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int list = push_table(cv, cfg_t, "", "listeners");
    size_t i, n;
    char what[48];

    if (!list)
        return;
    n = list_len(cv, list, ".listeners");
    cfg->listeners = alloc_list(cv, n, sizeof(mg_listener_t), &cfg->nlisteners);
    for (i = 0; i < cfg->nlisteners; i++) {
        mg_listener_t *l = &cfg->listeners[i];
        int t;

        snprintf(what, sizeof(what), ".listeners[%zu]", i + 1);
        if (!(t = push_item(cv, list, i + 1, ".listeners")))
            continue;
        get_str(cv, t, what, "source", 1, &l->source);
        get_int(cv, t, what, "line", 0, INT32_MAX, &l->line);
        conv_fields(cv, t, what, "listen", l);
        lua_getfield(cv->L, t, "tls");
        int has_tls = lua_istable(cv->L, -1);
        lua_pop(cv->L, 1);
        if (has_tls)
            conv_listener_tls(cv, t, what, l);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
}

/* "host:port", "[host]:port" for an IPv6 address, "srv://host" for SRV. */
static char *target_name(conv_t *cv, const mg_target_t *t)
{
    int v6 = strchr(t->host, ':') != NULL;
    size_t cap = strlen(t->host) + 16;
    char *s = malloc(cap);

    if (s == NULL) {
        cv->errs->oom = 1;
        return NULL;
    }
    if (t->srv)
        snprintf(s, cap, "srv://%s", t->host);
    else
        snprintf(s, cap, v6 ? "[%s]:%u" : "%s:%u", t->host, t->port);
    return s;
}

/* t.retries (a route's or an upstream's), as config.lua normalised it:
 * its fields, `on` a list of names, `backoff` a table. NULL when absent. */
static mg_retry_policy_t *conv_retries(conv_t *cv, int t, const char *what)
{
    lua_State *L = cv->L;
    mg_retry_policy_t *p = NULL;
    char rwhat[80];

    lua_getfield(L, t, "retries");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    int rt = lua_gettop(L);
    snprintf(rwhat, sizeof(rwhat), "%s.retries", what);
    if (!(p = calloc(1, sizeof(*p)))) {
        cv->errs->oom = 1;
        lua_pop(L, 1);
        return NULL;
    }
    conv_fields(cv, rt, rwhat, "retries", p);
    lua_getfield(L, rt, "backoff");
    if (lua_istable(L, -1))
        conv_fields(cv, lua_gettop(L), rwhat, "backoff", p);
    else
        internal(cv, rwhat, "backoff", "a table");
    lua_pop(L, 1);
    lua_getfield(L, rt, "on");
    if (lua_istable(L, -1)) {
        for (size_t i = 1; i <= lua_objlen(L, -1); i++) {
            lua_rawgeti(L, -1, (int)i);
            const char *name = lua_tostring(L, -1);
            int bit = name ? mg_ffi_retry_on_parse(name) : -1;
            if (bit < 0)
                internal(cv, rwhat, "on", "a list of names");
            else
                p->on |= (unsigned)bit;
            lua_pop(L, 1);
        }
    } else {
        internal(cv, rwhat, "on", "a list");
    }
    lua_pop(L, 2);
    return p;
}

/* A request key (balancer_key.c) as config.lua leaves it, t[key] = { on =
 * "header", name = "x-user" }, into *on (MG_HASH_*) and *name; nothing
 * when absent. upstream.hash, route.split.key. */
static void conv_key(conv_t *cv, int t, const char *what, const char *key, int *on, char **name)
{
    char hwhat[80], *src = NULL;
    lua_getfield(cv->L, t, key);
    if (lua_istable(cv->L, -1)) {
        int h = lua_gettop(cv->L);
        snprintf(hwhat, sizeof(hwhat), "%s.%s", what, key);
        if (get_str(cv, h, hwhat, "on", 0, &src) == 0 && (*on = mg_hash_on_parse(src)) < 0)
            internal(cv, hwhat, "on", "a key source balancer.c knows");
        free(src);
        get_str(cv, h, hwhat, "name", 1, name);
    }
    lua_pop(cv->L, 1);
}

/* upstream.hash as config.lua leaves it: { on = "header", name = "x-user" } */
static void conv_hash(conv_t *cv, int u_t, const char *what, mg_upstream_t *u)
{
    conv_key(cv, u_t, what, "hash", &u->hash_on, &u->hash_name);
}

/* settings.tracing with an https endpoint: its client context is built
 * now, so a CA file that cannot be read refuses the config. */
static void conv_tracing_tls(conv_t *cv, mg_config_t *cfg)
{
    mg_tracing_cfg_t *tc = cfg->tracing;
    char err[512];
    if (!tc || !tc->endpoint || strncmp(tc->endpoint, "https://", 8) != 0 || cv->errs->len)
        return;
    mg_tls_client_opts_t o = { .verify = 1, .ca = tc->ca, .label = "tracing" };
    if (mg_tls_client_new(&o, &tc->tls, err, sizeof(err)) != 0)
        errs_add(cv->errs, "%s:%d: settings.tracing: %s",
                 cfg->settings_source ? cfg->settings_source : cv->file, cfg->settings_line, err);
}

/* A TLS client's options at index t (upstream.tls, route.cache.redis.tls;
 * checked in Lua, where verify = false warns): the configuration is built
 * now, so a missing CA file or a broken client certificate refuses the
 * config at the declaration's line, `who` naming it. h2: ALPN offers h2
 * only (an HTTP/2 upstream). */
static void conv_client_tls(conv_t *cv, int t, const char *what, const char *who,
                            const char *source, int line, const char *label, int h2,
                            mg_tls_client_t **out)
{
    upstream_tls_t conf = { 0 };
    char err[512];

    conv_fields(cv, t, what, "upstream_tls", &conf);
    mg_tls_client_opts_t o = { .verify = conf.verify, .ca = conf.ca, .sni = conf.sni,
                               .cert = conf.cert, .key = conf.key,
                               .min_version = conf.min_version, .ciphers = conf.ciphers,
                               .no_resumption = !conf.session_reuse, .label = label,
                               .h2 = h2 };
    if (cv->errs->len == 0 && mg_tls_client_new(&o, out, err, sizeof(err)) != 0)
        errs_add(cv->errs, "%s:%d: %s: tls: %s", source ? source : cv->file, line, who, err);
    free(conf.ca);
    free(conf.sni);
    free(conf.cert);
    free(conf.key);
    free(conf.min_version);
    free(conf.ciphers);
}

static void conv_upstream_tls(conv_t *cv, int u_t, const char *what, mg_upstream_t *u)
{
    char *source = NULL, twhat[64], who[300];
    int line = 0;
    int t = push_table(cv, u_t, what, "tls");
    if (!t)
        return;
    get_str(cv, u_t, what, "source", 1, &source);
    get_int(cv, u_t, what, "line", 0, INT32_MAX, &line);
    snprintf(twhat, sizeof(twhat), "%s.tls", what);
    snprintf(who, sizeof(who), "upstream %s", u->name ? u->name : "?");
    conv_client_tls(cv, t, twhat, who, source, line, u->name, u->protocol != MG_UP_H1,
                    &u->tls);
    lua_pop(cv->L, 1);
    free(source);
}

/* route.cache.redis.tls (rediss): its own configuration, counted in the
 * metrics as "redis HOST:PORT". */
static void conv_cache_redis_tls(conv_t *cv, int r_t, const char *what, mg_route_t *r)
{
    mg_route_cache_t *rc = r->cache;
    char *source = NULL, twhat[96], label[300];
    int t;

    if (!rc || !rc->redis_host)
        return;
    lua_getfield(cv->L, r_t, "cache");
    lua_getfield(cv->L, -1, "redis");
    lua_getfield(cv->L, -1, "tls");
    t = lua_istable(cv->L, -1) ? lua_gettop(cv->L) : 0;
    if (t) {
        get_str(cv, r_t, what, "source", 1, &source);
        snprintf(twhat, sizeof(twhat), "%s.cache.redis.tls", what);
        snprintf(label, sizeof(label), "redis %s:%d", rc->redis_host, rc->redis_port);
        conv_client_tls(cv, t, twhat, "route.cache.redis", source, r->line, label, 0,
                        &rc->redis_tls);
        free(source);
    }
    lua_pop(cv->L, 3);
}

/* The warnings config.lua made ("file:line: warning: ..."), for `moongate
 * check` and the reload's log. */
static void conv_warnings(conv_t *cv, int cfg_t)
{
    lua_getfield(cv->L, cfg_t, "warnings");
    if (lua_istable(cv->L, -1)) {
        size_t n = list_len(cv, lua_gettop(cv->L), ".warnings");
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(cv->L, -1, (int)i);
            if (lua_type(cv->L, -1) == LUA_TSTRING)
                errs_add(&cv->warnings, "%s", lua_tostring(cv->L, -1));
            lua_pop(cv->L, 1);
        }
    }
    lua_pop(cv->L, 1);
}

static void conv_upstreams(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int list = push_table(cv, cfg_t, "", "upstreams");
    size_t i, n;
    char what[48];

    if (!list)
        return;
    n = list_len(cv, list, ".upstreams");
    cfg->upstreams = alloc_list(cv, n, sizeof(mg_upstream_t), &cfg->nupstreams);
    for (i = 0; i < cfg->nupstreams; i++) {
        mg_upstream_t *u = &cfg->upstreams[i];
        int t;

        snprintf(what, sizeof(what), ".upstreams[%zu]", i + 1);
        if (!(t = push_item(cv, list, i + 1, ".upstreams")))
            continue;
        conv_fields(cv, t, what, "upstream", u); /* name, targets, health, ... */
        for (size_t j = 0; j < u->ntargets; j++)
            if (u->targets[j].host != NULL) {
                u->targets[j].name = target_name(cv, &u->targets[j]);
            }
        conv_hash(cv, t, what, u);
        lua_getfield(cv->L, t, "tls");
        int has_tls = lua_istable(cv->L, -1);
        lua_pop(cv->L, 1);
        if (has_tls)
            conv_upstream_tls(cv, t, what, u);
        u->retries = conv_retries(cv, t, what);
        lua_getfield(cv->L, t, "outlier");
        if (lua_istable(cv->L, -1)) {
            char owhat[64];
            snprintf(owhat, sizeof(owhat), "%s.outlier", what);
            u->outlier = calloc(1, sizeof(*u->outlier));
            if (u->outlier)
                conv_fields(cv, lua_gettop(cv->L), owhat, "outlier", u->outlier);
            else
                cv->errs->oom = 1;
        }
        lua_pop(cv->L, 1);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
}

/* route.cache's dictionary (when it has no Redis): opened now. Dictionaries
 * live in the process: the same name is the same one after a reload, so
 * answers kept survive it. */
static void open_cache_dict(conv_t *cv, int r_t, const char *what, mg_route_cache_t *rc)
{
    char cwhat[80];
    uint64_t size;
    int t;

    if (rc->redis_host || !rc->dict_name || !(t = push_table(cv, r_t, what, "cache")))
        return;
    snprintf(cwhat, sizeof(cwhat), "%s.cache", what);
    if (get_uint(cv, t, cwhat, "dict_size", 1, MAX_DOUBLE_INT, &size) == 0 &&
        !(rc->dict = mg_shdict_open(rc->dict_name, (size_t)size)))
        cv->errs->oom = 1;
    lua_pop(cv->L, 1);
}

/* t.upstream: the 1-based index config.lua resolved the name to, as an
 * index into cfg->upstreams (-1 when malformed: reported). */
static int conv_upstream_ref(conv_t *cv, int t, const char *what, const mg_config_t *cfg)
{
    int up = 0;
    if (get_int(cv, t, what, "upstream", 1, (int)cfg->nupstreams, &up) != 0)
        return -1;
    return up - 1;
}

/* route.split = { { upstream = i, weight = n }, ..., key = nil|{ on, name } }:
 * the entries and the sticky key; the entries' current weights get their
 * place in a worker's array. */
static void conv_split(conv_t *cv, int t, const char *what, mg_config_t *cfg, mg_route_t *r)
{
    lua_State *L = cv->L;
    char swhat[80], iwhat[112];
    int st = push_table(cv, t, what, "split");
    if (!st)
        return;
    snprintf(swhat, sizeof(swhat), "%s.split", what);
    mg_split_t *sp = r->split = calloc(1, sizeof(*sp));
    size_t n = list_len(cv, st, swhat);
    if (sp)
        sp->entries = alloc_list(cv, n, sizeof(*sp->entries), &sp->n);
    if (!sp || (n && !sp->entries)) {
        cv->errs->oom = 1;
        lua_pop(L, 1);
        return;
    }
    long total = 0;
    for (size_t i = 0; i < sp->n; i++) {
        int it = push_item(cv, st, i + 1, swhat);
        if (!it)
            continue;
        snprintf(iwhat, sizeof(iwhat), "%s[%zu]", swhat, i + 1);
        conv_fields(cv, it, iwhat, "split_item", &sp->entries[i]);
        sp->entries[i].upstream = conv_upstream_ref(cv, it, iwhat, cfg);
        total += sp->entries[i].weight;
        lua_pop(L, 1);
    }
    if (sp->n < 2 || sp->n > MG_MAX_SPLIT || total < 1)
        internal(cv, swhat, "entries", "2-64 with some weight");
    /* the weights and the live flags of the rotation (split.c), in one block */
    if (sp->n && !(sp->weights = malloc(sp->n * (sizeof(int) + 1)))) {
        cv->errs->oom = 1;
    } else if (sp->n) {
        for (size_t i = 0; i < sp->n; i++)
            sp->weights[i] = sp->entries[i].weight;
        memset(sp->weights + sp->n, 1, sp->n);
    }
    conv_key(cv, st, swhat, "key", &sp->key_on, &sp->key_name);
    if (sp->key_on == MG_HASH_LUA)
        internal(cv, swhat, "key", "a key the router can read");
    sp->cw_at = cfg->split_weights;
    cfg->split_weights += sp->n;
    if (sp->n > 0)
        r->upstream = sp->entries[0].upstream;
    lua_pop(L, 1);
}

/* t[key], a table (route.canary, route.mirror), into a calloc'd struct of
 * `size` bytes by schema `object`, with its upstream (t[key].upstream, as
 * resolved) in the int at up_off. NULL when absent (or out of memory). */
static void *conv_routed(conv_t *cv, int t, const char *what, const char *key,
                         const char *object, size_t size, size_t up_off, const mg_config_t *cfg)
{
    lua_State *L = cv->L;
    char owhat[80];
    void *p = NULL;
    lua_getfield(L, t, key);
    if (lua_istable(L, -1)) {
        snprintf(owhat, sizeof(owhat), "%s.%s", what, key);
        if ((p = calloc(1, size))) {
            conv_fields(cv, lua_gettop(L), owhat, object, p);
            *(int *)((char *)p + up_off) = conv_upstream_ref(cv, lua_gettop(L), owhat, cfg);
        } else {
            cv->errs->oom = 1;
        }
    }
    lua_pop(L, 1);
    return p;
}

/* route.canary and route.mirror: their fields and upstream. */
static void conv_canary_mirror(conv_t *cv, int t, const char *what, mg_config_t *cfg,
                               mg_route_t *r)
{
    r->canary = conv_routed(cv, t, what, "canary", "canary", sizeof(mg_canary_t),
                            offsetof(mg_canary_t, upstream), cfg);
    if (r->canary && !r->canary->header == !r->canary->cookie)
        internal(cv, what, "canary", "a table with a header or a cookie");
    r->mirror = conv_routed(cv, t, what, "mirror", "mirror", sizeof(mg_mirror_t),
                            offsetof(mg_mirror_t, upstream), cfg);
}

int mg_route_goes_to(const mg_route_t *r, int ui)
{
    if (r->upstream == ui || (r->canary && r->canary->upstream == ui))
        return 1;
    for (size_t i = 0; r->split && i < r->split->n; i++)
        if (r->split->entries[i].upstream == ui)
            return 1;
    return 0;
}

static void conv_route(conv_t *cv, int t, const char *what, mg_config_t *cfg, mg_route_t *r)
{
    lua_State *L = cv->L;
    int up;

    get_int(cv, t, what, "line", 0, INT32_MAX, &r->line);
    conv_fields(cv, t, what, "route", r); /* name, path, host, strip_prefix, ... */
    if (r->name)
        r->metric_id = mg_metrics_route_id(r->name);
    lua_getfield(L, t, "upgrades");
    if (lua_isnil(L, -1)) { /* not said: WebSockets pass (docs/config-dsl.md) */
        r->upgrades[0] = dup_or_oom(cv, "websocket");
        r->nupgrades = r->upgrades[0] != NULL;
    }
    lua_pop(L, 1);
    if (r->cache)
        open_cache_dict(cv, t, what, r->cache);
    conv_cache_redis_tls(cv, t, what, r);
    r->retries = conv_retries(cv, t, what);
    lua_getfield(L, t, "timeouts");
    if (lua_istable(L, -1)) {
        char twhat[64];
        snprintf(twhat, sizeof(twhat), "%s.timeouts", what);
        conv_fields(cv, lua_gettop(L), twhat, "route_timeouts", &r->timeouts);
    }
    lua_pop(L, 1);

    lua_getfield(L, t, "handler");
    r->has_handler = lua_type(L, -1) == LUA_TFUNCTION;
    lua_pop(L, 1);
    r->upstream = -1;
    lua_getfield(L, t, "upstream");
    up = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!up && get_int(cv, t, what, "upstream", 1, (int)cfg->nupstreams, &up) == 0)
        r->upstream = up - 1; /* 1-based in Lua */
    lua_getfield(L, t, "split");
    int split = lua_istable(L, -1);
    lua_pop(L, 1);
    if (split && r->upstream >= 0)
        internal(cv, what, "split", "absent when there is an upstream");
    if (split)
        conv_split(cv, t, what, cfg, r);
    if ((r->upstream >= 0) == (r->has_handler != 0))
        internal(cv, what, "upstream", "set exactly when there is no handler");
    conv_canary_mirror(cv, t, what, cfg, r);
    r->chooses = r->split || r->canary;
    if (r->has_handler && (r->canary || r->mirror))
        internal(cv, what, "canary", "absent on a handler route");

}

static void conv_routes(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int list = push_table(cv, cfg_t, "", "routes");
    size_t i, n;
    char what[48];

    if (!list)
        return;
    n = list_len(cv, list, ".routes");
    cfg->routes = alloc_list(cv, n, sizeof(mg_route_t), &cfg->nroutes);
    for (i = 0; i < cfg->nroutes; i++) {
        mg_route_t *r = &cfg->routes[i];
        int t;

        r->index = (int)i;
        r->upstream = -1;
        snprintf(what, sizeof(what), ".routes[%zu]", i + 1);
        if (!(t = push_item(cv, list, i + 1, ".routes")))
            continue;
        conv_route(cv, t, what, cfg, r);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
}

static void conv_shared_dicts(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int list = push_table(cv, cfg_t, "", "shared_dicts");
    size_t i, n;
    char what[48];

    if (!list)
        return;
    n = list_len(cv, list, ".shared_dicts");
    cfg->shared_dicts = alloc_list(cv, n, sizeof(mg_shared_dict_decl_t), &cfg->nshared_dicts);
    for (i = 0; i < cfg->nshared_dicts; i++) {
        mg_shared_dict_decl_t *sd = &cfg->shared_dicts[i];
        int t;

        snprintf(what, sizeof(what), ".shared_dicts[%zu]", i + 1);
        if (!(t = push_item(cv, list, i + 1, ".shared_dicts")))
            continue;
        conv_fields(cv, t, what, "shared_dict", sd);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
}

int mg_config_load(const char *file, mg_config_t **out, char **errors)
{
    errs_t e = {0};
    lua_State *L;
    int rc;

    *out = NULL;
    *errors = NULL;
    L = mg_lua_open();
    if (L == NULL) {
        errs_add(&e, "%s: out of memory", file);
        *errors = errs_take(&e);
        return -1;
    }
    if (mg_config_run_lua(L, file, errors) != 0) {
        lua_close(L);
        return -1;
    }
    rc = mg_config_convert(L, lua_gettop(L), file, out, errors);
    lua_close(L);
    return rc;
}

int mg_config_convert(lua_State *L, int t, const char *file, mg_config_t **out, char **errors)
{
    errs_t e = {0};
    conv_t cv;
    mg_config_t *cfg;

    *out = NULL;
    *errors = NULL;
    cv.L = L;
    cv.errs = &e;
    cv.warnings = (errs_t){ 0 };
    cv.file = file;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->file = strdup(file)) == NULL) {
        e.oom = 1;
    } else if (lua_checkstack(L, 16)) {
        conv_fields(&cv, t, "", "settings", cfg);
        get_str(&cv, t, "", "settings_source", 1, &cfg->settings_source);
        lua_getfield(L, t, "settings_line");
        cfg->settings_line = (int)lua_tointeger(L, -1); /* nil: 0 */
        lua_pop(L, 1);
        conv_listeners(&cv, t, cfg);
        conv_trusted_proxies(&cv, t, cfg);
        conv_tracing_tls(&cv, cfg);
        conv_log_format(&cv, cfg);
        conv_upstreams(&cv, t, cfg);
        conv_routes(&cv, t, cfg);
        for (size_t i = 0; i < cfg->nroutes; i++) {
            mg_route_t *r = &cfg->routes[i];
            const mg_route_timeouts_t *to = &r->timeouts;
            r->retry_state = r->retries || to->connect || to->first_byte || to->idle || to->total;
            for (size_t u = 0; u < cfg->nupstreams && !r->retry_state; u++)
                r->retry_state = mg_route_goes_to(r, (int)u) &&
                                 (cfg->upstreams[u].retries || cfg->upstreams[u].outlier);
        }
        conv_shared_dicts(&cv, t, cfg);
        conv_metrics(&cv, t, cfg);
        conv_admin(&cv, t, cfg);
        conv_tests(&cv, t, cfg);
        conv_warnings(&cv, t);
    } else {
        e.oom = 1;
    }

    if (e.oom)
        errs_add(&e, "%s: out of memory", file);
    if (e.len > 0 || e.oom) {
        free(cv.warnings.buf);
        mg_config_free(cfg);
        *errors = errs_take(&e);
        return -1;
    }
    cfg->warnings = cv.warnings.len ? cv.warnings.buf : (free(cv.warnings.buf), NULL);
    *out = cfg;
    return 0;
}

static void free_kvs(mg_kv_t *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
    }
    free(kv);
}

void mg_config_free(mg_config_t *cfg)
{
    size_t i, j;

    if (cfg == NULL)
        return;
    free(cfg->file);
    free(cfg->warnings);
    free(cfg->access_log);
    for (i = 0; i < cfg->access_log_nfields; i++)
        free(cfg->access_log_fields[i]);
    free(cfg->access_log_fields);
    mg_logformat_free(cfg->log_format);
    free(cfg->error_log);
    free(cfg->resolver);
    free(cfg->admin_host);
    free(cfg->admin_token);
    for (i = 0; i < cfg->admin_nnames; i++)
        free(cfg->admin_names[i]);
    free(cfg->admin_names);
    free(cfg->settings_source);
    for (i = 0; i < cfg->nlisteners; i++) {
        free(cfg->listeners[i].host);
        free(cfg->listeners[i].source);
        mg_tls_ctx_release(cfg->listeners[i].tls);
    }
    free(cfg->listeners);
    mg_cidr_set_free(cfg->trusted_proxies);
    if (cfg->tracing) {
        mg_tracing_cfg_t *tc = cfg->tracing;
        free(tc->endpoint);
        free(tc->service_name);
        free(tc->ca);
        mg_tls_client_release(tc->tls);
        free_kvs(tc->resource, tc->nresource);
        free_kvs(tc->headers, tc->nheaders);
        free(tc);
    }
    for (i = 0; i < cfg->nupstreams; i++) {
        mg_upstream_t *u = &cfg->upstreams[i];

        free(u->name);
        free(u->health_path);
        free(u->hash_name);
        mg_tls_client_release(u->tls);
        free(u->retries);
        free(u->outlier);
        for (j = 0; j < u->ntargets; j++) {
            free(u->targets[j].host);
            free(u->targets[j].name);
            free(u->targets[j].authority);
        }
        free(u->targets);
    }
    free(cfg->upstreams);
    for (i = 0; i < cfg->nroutes; i++) {
        mg_route_t *r = &cfg->routes[i];

        free(r->name);
        free(r->path);
        free(r->host);
        for (j = 0; j < r->nmethods; j++)
            free(r->methods[j]);
        for (j = 0; j < r->nupgrades; j++)
            free(r->upgrades[j]);
        for (j = 0; j < r->nheaders; j++) {
            free(r->headers[j].name);
            free(r->headers[j].value);
        }
        free(r->strip_prefix);
        free(r->grpc_service);
        free(r->grpc_method);
        free(r->rewrite);
        free(r->retries);
        if (r->split) {
            free(r->split->entries);
            free(r->split->weights);
            free(r->split->key_name);
            free(r->split);
        }
        if (r->canary) {
            free(r->canary->header);
            free(r->canary->cookie);
            free(r->canary->value);
            free(r->canary);
        }
        free(r->mirror);
        if (r->cache) {
            free(r->cache->dict_name);
            free(r->cache->redis_host);
            free(r->cache->redis_password);
            free(r->cache->redis_username);
            mg_tls_client_release(r->cache->redis_tls);
            for (j = 0; j < r->cache->nvary; j++)
                free(r->cache->vary[j]);
            free(r->cache);
        }
    }
    free(cfg->routes);
    for (i = 0; i < cfg->nshared_dicts; i++)
        free(cfg->shared_dicts[i].name);
    free(cfg->shared_dicts);
    for (i = 0; i < cfg->nmetrics; i++) {
        mg_umetric_decl_t *m = &cfg->metrics[i];
        free(m->name);
        free(m->help);
        for (j = 0; j < m->nlabels; j++)
            free(m->labels[j]);
        free(m->labels);
        free(m->buckets);
    }
    free(cfg->metrics);
    free(cfg);
}
