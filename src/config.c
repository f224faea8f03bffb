/* config.c: loads a config file (see config.h and docs/config-dsl.md).
 *
 * The Lua side, lua/moongate/config.lua, runs the file, validates it whole
 * and returns a normalised table. mg_config_load() copies that table into
 * the plain structs of config.h and closes the Lua state: the mg_config_t
 * owns a copy of every string and refers to nothing in Lua. Workers that
 * need the config's Lua functions (handlers, hooks) run the same loader in
 * their own state through mg_config_run_lua().
 *
 * One schema: the scalar fields of each object (settings, limits, timeouts,
 * admin, listen, upstream, target, health, shared_dict, cache, redis, route) are
 * declared once, in the tables below (key, kind, range, default, offsetof;
 * for a named mode, the owning module's parser; for a string, its minimum
 * length). config.lua and redis.lua build their key lists, defaults and
 * checks from them (mg_ffi_config_fields) and conv_fields() copies them with
 * the same tables. Route patterns are
 * checked in config.lua by the router's own parser (mg_ffi_route_pattern).
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
#include "errlog.h"
#include "admin.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "tls.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_state.h"
#include "shdict.h"
#include "uri.h"

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

/* Reads t[key] (t an absolute index) as an integer in [lo, hi] (hi <= 2^53). */
static int get_uint(conv_t *cv, int t, const char *what, const char *key, double lo, double hi,
                    uint64_t *out)
{
    lua_State *L = cv->L;
    double d;
    int ok;

    lua_getfield(L, t, key);
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

static int get_int(conv_t *cv, int t, const char *what, const char *key, int lo, int hi, int *out)
{
    uint64_t v;

    if (get_uint(cv, t, what, key, lo, hi, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* Reads t[key] as a string without NULs, copied into *out (owned by the
 * config). A nil field gives *out = NULL when optional. */
static int get_str(conv_t *cv, int t, const char *what, const char *key, int optional, char **out)
{
    lua_State *L = cv->L;
    const char *s;
    size_t len;

    *out = NULL;
    lua_getfield(L, t, key);
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

/* ---- the schema: each object's scalar fields, declared once ---- */

enum { CT_NONE, CT_U64, CT_INT, CT_U16, CT_BOOL, CT_DOUBLE, CT_ENUM, CT_STR }; /* how stored */

#define ANY MAX_DOUBLE_INT
#define NONE NAN
/* a field stored in struct ST's member M, or one config.c does not copy */
#define F(key, kind, lo, hi, def, exp, st, m, ct)                                           \
    { key, kind, lo, hi, def, exp, offsetof(st, m), ct, NULL, NULL, NULL }
#define LUA(key, kind, lo, hi, def) { key, kind, lo, hi, def, NULL, 0, CT_NONE, NULL, NULL, NULL }
/* a string of at least `lo` bytes, copied into the char * member M (owned by the config) */
#define STRING(key, lo, def, exp, st, m)                                                     \
    { key, MG_FIELD_STRING, lo, 0, NONE, exp, offsetof(st, m), CT_STR, NULL, NULL, def }
/* a name read by its module's parser, stored as an int (def: a value or NONE) */
#define ENUM(key, parse, name_of, def, exp, st, m)                                          \
    { key, MG_FIELD_ENUM, 0, 0, def, exp, offsetof(st, m), CT_ENUM, parse, name_of, NULL }
#define SLASHES(def, st, m)                                                                  \
    ENUM("escaped_slashes", mg_uri_slashes_mode, mg_uri_slashes_name, def,                  \
         "must be \"reject\", \"decode\", \"redirect\" or \"keep\"", st, m)
#define SIZE(key, lo, def, st, m) F(key, MG_FIELD_SIZE, lo, ANY, def, NULL, st, m, CT_U64)
#define TIME(key, def, st, m) F(key, MG_FIELD_TIME, 1, ANY, def, NULL, st, m, CT_U64)
#define OTHER(key) LUA(key, MG_FIELD_OTHER, 0, 0, NONE)

static const mg_ffi_config_field_t settings_fields[] = {
    F("workers", MG_FIELD_INT, 0, 1024, 0, "must be an integer 0-1024 (0 = one per CPU)",
      mg_config_t, workers, CT_INT),
    OTHER("access_log"), OTHER("error_log"),
    ENUM("log_level", mg_log_level_parse, mg_log_level_name, MG_LOG_INFO,
         "must be one of debug, info, notice, warn, error, crit", mg_config_t, log_level),
    OTHER("limits"),
    OTHER("timeouts"), OTHER("admin"),
};

#define PORT_EXPECTED "must be an integer 1-65535"

static const mg_ffi_config_field_t admin_fields[] = {
    STRING("host", 1, "127.0.0.1", "must be an address string", mg_config_t, admin_host),
    F("port", MG_FIELD_INT, 1, 65535, 9901, PORT_EXPECTED, mg_config_t, admin_port, CT_U16),
    STRING("token", 16, NULL, "must be a string of at least 16 characters", mg_config_t,
           admin_token),
    OTHER("names"),
};

/* the port is required */
static const mg_ffi_config_field_t listen_fields[] = {
    F("port", MG_FIELD_INT, 1, 65535, NONE, PORT_EXPECTED, mg_listener_t, port, CT_U16),
    OTHER("host"), OTHER("tls"), SLASHES(MG_SLASHES_REJECT, mg_listener_t, escaped_slashes),
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

static const mg_ffi_config_field_t upstream_fields[] = {
    F("keepalive", MG_FIELD_INT, 0, INT32_MAX, 64, "must be an integer >= 0", mg_upstream_t,
      keepalive, CT_INT),
    TIME("keepalive_timeout", 60000, mg_upstream_t, keepalive_timeout),
    TIME("connect_timeout", 5000, mg_upstream_t, connect_timeout),
    TIME("send_timeout", 60000, mg_upstream_t, send_timeout),
    TIME("read_timeout", 60000, mg_upstream_t, read_timeout),
    TIME("fail_timeout", 10000, mg_upstream_t, fail_timeout),
    F("forwarded", MG_FIELD_BOOL, 0, 1, 1, NULL, mg_upstream_t, forwarded, CT_BOOL),
    F("request_id", MG_FIELD_BOOL, 0, 1, 1, NULL, mg_upstream_t, request_id, CT_BOOL),
    F("override_headers", MG_FIELD_BOOL, 0, 1, 0, NULL, mg_upstream_t, override_headers,
      CT_BOOL),
    OTHER("health"),
    F("max_fails", MG_FIELD_INT, 0, 1000, 1, "must be an integer 0-1000 (0: never skip a target)",
      mg_upstream_t, max_fails, CT_INT),
    OTHER("retries"), OTHER("outlier"),
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

static const mg_ffi_config_field_t target_fields[] = {
    F("weight", MG_FIELD_INT, 1, INT32_MAX, 1, "must be an integer >= 1", mg_target_t, weight,
      CT_INT),
};

static const mg_ffi_config_field_t health_fields[] = {
    OTHER("path"),
    TIME("interval", 5000, mg_upstream_t, health_interval),
    TIME("timeout", 2000, mg_upstream_t, health_timeout),
    F("fall", MG_FIELD_INT, 1, 100, 3, "must be an integer 1-100", mg_upstream_t, health_fall,
      CT_INT),
    F("rise", MG_FIELD_INT, 1, 100, 2, "must be an integer 1-100", mg_upstream_t, health_rise,
      CT_INT),
};

/* `cache = true` gets the defaults (statuses, vary and dict are Lua's) */
static const mg_ffi_config_field_t cache_fields[] = {
    TIME("ttl", 60000, mg_route_cache_t, ttl),
    F("stale", MG_FIELD_TIME, 0, ANY, 0, NULL, mg_route_cache_t, stale, CT_U64),
    SIZE("max_body", 0, 1024 * 1024, mg_route_cache_t, max_body),
    OTHER("statuses"), OTHER("vary"),
    F("authorized", MG_FIELD_BOOL, 0, 1, 0, "must be a boolean", mg_route_cache_t, authorized,
      CT_BOOL),
    OTHER("dict"),
    F("lock", MG_FIELD_TIME, 0, ANY, 5000, NULL, mg_route_cache_t, lock, CT_U64),
    OTHER("redis"),
};

/* route.cache.redis, and every moongate.redis client (lua/moongate/redis.lua
 * checks a client's options with it) */
static const mg_ffi_config_field_t redis_fields[] = {
    OTHER("host"),
    F("port", MG_FIELD_INT, 1, 65535, 6379, PORT_EXPECTED, mg_route_cache_t, redis_port, CT_INT),
    OTHER("password"),
    F("db", MG_FIELD_INT, 0, INT32_MAX, 0, "must be an integer 0-2147483647", mg_route_cache_t,
      redis_db, CT_INT),
    F("pool", MG_FIELD_INT, 1, 64, 2, "must be an integer 1-64", mg_route_cache_t, redis_pool,
      CT_INT), /* connections per worker */
    F("timeout", MG_FIELD_SECONDS, 0, HUGE_VAL, 0.2, NULL, mg_route_cache_t, redis_timeout,
      CT_DOUBLE), /* per command */
    F("connect_timeout", MG_FIELD_SECONDS, 0, HUGE_VAL, 1, NULL, mg_route_cache_t,
      redis_connect_timeout, CT_DOUBLE),
};

/* gw.route. listen's default 0 is C's "any port", outside the 1-65535 a
 * config may write: conv_fields admits a field's default besides its range.
 * max_body has no default here: config.lua fills in limits.body. */
static const mg_ffi_config_field_t route_fields[] = {
    OTHER("name"), OTHER("path"), OTHER("upstream"), OTHER("handler"), OTHER("methods"),
    OTHER("host"), OTHER("headers"),
    F("listen", MG_FIELD_INT, 1, 65535, 0, PORT_EXPECTED, mg_route_t, listen_port, CT_U16),
    OTHER("strip_prefix"), OTHER("rewrite"),
    SIZE("max_body", 0, NONE, mg_route_t, max_body),
    OTHER("policies"), OTHER("cache"), OTHER("upgrades"),
    SLASHES(NONE, mg_route_t, escaped_slashes), /* absent: the listener's (INHERIT) */
    OTHER("retries"), OTHER("timeouts"),
};

/* smaller dictionaries hold next to nothing; the size is required */
static const mg_ffi_config_field_t shared_dict_fields[] = {
    SIZE("size", 8192, NONE, mg_shared_dict_decl_t, size),
};

#define OBJECT(name, fields) { name, fields, sizeof(fields) / sizeof(fields[0]) }
static const struct {
    const char *name;
    const mg_ffi_config_field_t *fields;
    size_t n;
} objects[] = {
    OBJECT("settings", settings_fields), OBJECT("limits", limits_fields),
    OBJECT("timeouts", timeouts_fields), OBJECT("upstream", upstream_fields),
    OBJECT("target", target_fields),     OBJECT("health", health_fields),
    OBJECT("shared_dict", shared_dict_fields), OBJECT("cache", cache_fields),
    OBJECT("admin", admin_fields),       OBJECT("listen", listen_fields),
    OBJECT("redis", redis_fields),       OBJECT("route", route_fields),
    OBJECT("retries", retries_fields),   OBJECT("backoff", backoff_fields),
    OBJECT("outlier", outlier_fields),   OBJECT("route_timeouts", route_timeouts_fields),
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

/* Whether t[f->name] is exactly f's default. */
static int is_default(conv_t *cv, int t, const mg_ffi_config_field_t *f)
{
    lua_getfield(cv->L, t, f->name);
    int yes = lua_type(cv->L, -1) == LUA_TNUMBER && lua_tonumber(cv->L, -1) == f->def;
    lua_pop(cv->L, 1);
    return yes;
}

/* Copies every stored field of `object` from the table at t into the
 * struct at base, range-checked by the same declaration config.lua used. */
static void conv_fields(conv_t *cv, int t, const char *what, const char *object, void *base)
{
    size_t n;
    const mg_ffi_config_field_t *f = mg_ffi_config_fields(object, &n);

    for (size_t i = 0; i < n; i++, f++) {
        void *at = (char *)base + f->offset;
        /* a default below the range is a sentinel config.lua fills in */
        double lo = f->def < f->min && is_default(cv, t, f) ? f->def : f->min;

        if (f->ctype == CT_U64) {
            get_uint(cv, t, what, f->name, lo, f->max, at);
        } else if (f->ctype == CT_INT) {
            get_int(cv, t, what, f->name, (int)lo, (int)f->max, at);
        } else if (f->ctype == CT_U16) {
            uint64_t v;
            if (get_uint(cv, t, what, f->name, lo, f->max, &v) == 0)
                *(uint16_t *)at = (uint16_t)v;
        } else if (f->ctype == CT_DOUBLE) {
            lua_getfield(cv->L, t, f->name);
            double d = lua_tonumber(cv->L, -1);
            /* a NUMBER's range is inclusive, a SECONDS' exclusive */
            int in = f->kind == MG_FIELD_NUMBER ? d >= f->min && d <= f->max
                                                : d > f->min && d < f->max;
            if (lua_type(cv->L, -1) == LUA_TNUMBER && in)
                *(double *)at = d;
            else
                internal(cv, what, f->name, "a number in range");
            lua_pop(cv->L, 1);
        } else if (f->ctype == CT_ENUM) {
            char *name = NULL;
            if (get_str(cv, t, what, f->name, isnan(f->def), &name) == 0 && name) {
                int v = f->parse(name);
                if (v < 0)
                    internal(cv, what, f->name, "a name its parser knows");
                else
                    *(int *)at = v;
            }
            free(name);
        } else if (f->ctype == CT_STR) {
            /* one with a default is always there; a short one is Lua's bug */
            if (get_str(cv, t, what, f->name, f->def_str == NULL, at) == 0 && *(char **)at &&
                strlen(*(char **)at) < f->min)
                internal(cv, what, f->name, "a long enough string");
        } else if (f->ctype == CT_BOOL) {
            lua_getfield(cv->L, t, f->name);
            *(int *)at = lua_isnil(cv->L, -1) ? f->def != 0 : lua_toboolean(cv->L, -1);
            lua_pop(cv->L, 1);
        }
    }
}

static void conv_limits(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int t = push_table(cv, cfg_t, "", "limits");

    if (!t)
        return;
    conv_fields(cv, t, ".limits", "limits", &cfg->limits);
    lua_pop(cv->L, 1);
}

static void conv_timeouts(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int t = push_table(cv, cfg_t, "", "timeouts");

    if (!t)
        return;
    conv_fields(cv, t, ".timeouts", "timeouts", &cfg->timeouts);
    lua_pop(cv->L, 1);
}

static void conv_admin(conv_t *cv, int cfg_t, mg_config_t *cfg)
{
    int t = push_table(cv, cfg_t, "", "admin");

    if (!t)
        return;
    lua_getfield(cv->L, t, "enabled");
    cfg->admin_enabled = lua_toboolean(cv->L, -1);
    lua_pop(cv->L, 1);
    conv_fields(cv, t, ".admin", "admin", cfg);
    lua_getfield(cv->L, t, "names");
    int names = lua_istable(cv->L, -1) ? lua_gettop(cv->L) : 0;
    if (!names)
        lua_pop(cv->L, 1);
    if (names) {
        size_t n = list_len(cv, names, ".admin.names");
        cfg->admin_names = alloc_list(cv, n, sizeof(char *), &cfg->admin_nnames);
        for (size_t i = 0; i < cfg->admin_nnames; i++) {
            lua_rawgeti(cv->L, names, (int)i + 1);
            const char *v = lua_tostring(cv->L, -1);
            if (v && !(cfg->admin_names[i] = strdup(v)))
                cv->errs->oom = 1;
            lua_pop(cv->L, 1);
        }
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
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
    lua_State *L = cv->L;
    mg_tls_cert_t certs[32];
    char *strs[64];
    char *min_version = NULL, *ciphers = NULL, *source = NULL;
    char err[512], cwhat[64];
    size_t n = 0, nstrs = 0;
    int tls_t, list, line = 0;

    if (!(tls_t = push_table(cv, l_t, what, "tls")))
        return;
    if (!(list = push_table(cv, tls_t, what, "certs")))
        goto out;
    size_t count = list_len(cv, list, ".tls.certs");
    for (size_t i = 0; i < count && n < 32; i++) {
        int c_t = push_item(cv, list, i + 1, ".tls.certs");
        if (!c_t)
            continue;
        snprintf(cwhat, sizeof(cwhat), "%s.tls.certs[%zu]", what, i + 1);
        char *cert = NULL, *key = NULL;
        get_str(cv, c_t, cwhat, "cert", 0, &cert);
        get_str(cv, c_t, cwhat, "key", 0, &key);
        if (cert)
            strs[nstrs++] = cert;
        if (key)
            strs[nstrs++] = key;
        if (cert && key) {
            certs[n].cert = cert;
            certs[n].key = key;
            n++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* certs */
    get_str(cv, tls_t, what, "min_version", 1, &min_version);
    get_str(cv, tls_t, what, "ciphers", 1, &ciphers);
    get_str(cv, tls_t, what, "source", 1, &source);
    get_int(cv, tls_t, what, "line", 0, 1 << 30, &line);
    if (n == count && n > 0 && mg_tls_ctx_new(certs, n, min_version, ciphers, &l->tls, err,
                                               sizeof(err)) != 0)
        errs_add(cv->errs, "%s:%d: listen.tls: %s", source ? source : cv->file, line, err);
out:
    lua_pop(L, 1); /* tls */
    for (size_t i = 0; i < nstrs; i++)
        free(strs[i]);
    free(min_version);
    free(ciphers);
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
        get_str(cv, t, what, "host", 0, &l->host);
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

/* "host:port", or "[host]:port" for an IPv6 address. */
static char *target_name(conv_t *cv, const char *host, unsigned port)
{
    int v6 = strchr(host, ':') != NULL;
    size_t cap = strlen(host) + 16;
    char *s = malloc(cap);

    if (s == NULL) {
        cv->errs->oom = 1;
        return NULL;
    }
    snprintf(s, cap, v6 ? "[%s]:%u" : "%s:%u", host, port);
    return s;
}

static void conv_targets(conv_t *cv, int u_t, const char *uwhat, mg_upstream_t *u)
{
    int list = push_table(cv, u_t, uwhat, "targets");
    size_t i, n;
    char what[96], lwhat[64];

    if (!list)
        return;
    snprintf(lwhat, sizeof(lwhat), "%s.targets", uwhat);
    n = list_len(cv, list, uwhat);
    if (n == 0)
        internal(cv, uwhat, "targets", "a non-empty list");
    u->targets = alloc_list(cv, n, sizeof(mg_target_t), &u->ntargets);
    for (i = 0; i < u->ntargets; i++) {
        mg_target_t *tg = &u->targets[i];
        uint64_t port;
        int t;

        snprintf(what, sizeof(what), "%s.targets[%zu]", uwhat, i + 1);
        if (!(t = push_item(cv, list, i + 1, lwhat)))
            continue;
        get_str(cv, t, what, "host", 0, &tg->host);
        if (get_uint(cv, t, what, "port", 1, 65535, &port) == 0)
            tg->port = (uint16_t)port;
        conv_fields(cv, t, what, "target", tg);
        if (tg->host != NULL)
            tg->name = target_name(cv, tg->host, tg->port);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
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
        get_str(cv, t, what, "name", 0, &u->name);
        conv_targets(cv, t, what, u);
        conv_fields(cv, t, what, "upstream", u);
        lua_getfield(cv->L, t, "health");
        if (lua_istable(cv->L, -1)) {
            int h = lua_gettop(cv->L);
            char hwhat[64];
            snprintf(hwhat, sizeof(hwhat), "%s.health", what);
            get_str(cv, h, hwhat, "path", 0, &u->health_path);
            conv_fields(cv, h, hwhat, "health", u);
        }
        lua_pop(cv->L, 1);
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

static void conv_methods(conv_t *cv, int r_t, const char *what, mg_route_t *r)
{
    lua_State *L = cv->L;
    size_t i, n;
    int list;

    lua_getfield(L, r_t, "methods");
    if (lua_isnil(L, -1)) { /* any method */
        lua_pop(L, 1);
        return;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        internal(cv, what, "methods", "nil or a list");
        return;
    }
    list = lua_gettop(L);
    n = lua_objlen(L, list);
    if (n > MG_MAX_METHODS) {
        internal(cv, what, "methods", "a list of at most MG_MAX_METHODS");
        n = 0;
    }
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, list, (int)i + 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            r->methods[r->nmethods] = dup_or_oom(cv, lua_tostring(L, -1));
            if (r->methods[r->nmethods] != NULL)
                r->nmethods++;
        } else {
            internal(cv, what, "methods[]", "a string");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* route.upgrades, checked by config.lua; absent means { "websocket" }. */
static void conv_upgrades(conv_t *cv, int r_t, const char *what, mg_route_t *r)
{
    lua_State *L = cv->L;
    size_t i, n;
    int list;

    lua_getfield(L, r_t, "upgrades");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        r->upgrades[0] = dup_or_oom(cv, "websocket");
        r->nupgrades = r->upgrades[0] != NULL;
        return;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        internal(cv, what, "upgrades", "nil or a list");
        return;
    }
    list = lua_gettop(L);
    n = lua_objlen(L, list);
    if (n > MG_MAX_UPGRADES) {
        internal(cv, what, "upgrades", "a list of at most MG_MAX_UPGRADES");
        n = 0;
    }
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, list, (int)i + 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            r->upgrades[r->nupgrades] = dup_or_oom(cv, lua_tostring(L, -1));
            if (r->upgrades[r->nupgrades] != NULL)
                r->nupgrades++;
        } else {
            internal(cv, what, "upgrades[]", "a string");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void conv_headers(conv_t *cv, int r_t, const char *what, mg_route_t *r)
{
    int list = push_table(cv, r_t, what, "headers");
    size_t i, n;
    char hwhat[96], lwhat[64];

    if (!list)
        return;
    snprintf(lwhat, sizeof(lwhat), "%s.headers", what);
    n = lua_objlen(cv->L, list);
    if (n > MG_MAX_ROUTE_HEADERS) {
        internal(cv, what, "headers", "a list of at most MG_MAX_ROUTE_HEADERS");
        n = 0;
    }
    for (i = 0; i < n; i++) {
        mg_route_header_t *h = &r->headers[i];
        int t;

        snprintf(hwhat, sizeof(hwhat), "%s.headers[%zu]", what, i + 1);
        if (!(t = push_item(cv, list, i + 1, lwhat)))
            continue;
        r->nheaders = i + 1; /* before the copies: mg_config_free() sees them */
        get_str(cv, t, hwhat, "name", 0, &h->name);
        get_str(cv, t, hwhat, "value", 0, &h->value);
        lua_pop(cv->L, 1);
    }
    lua_pop(cv->L, 1);
}

static void conv_cache(conv_t *cv, int r_t, const char *what, mg_route_t *r)
{
    lua_State *L = cv->L;
    char cwhat[80];
    uint64_t v;
    size_t i, n;
    int t, list;

    lua_getfield(L, r_t, "cache");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    if (!(t = push_table(cv, r_t, what, "cache")))
        return;
    snprintf(cwhat, sizeof(cwhat), "%s.cache", what);
    mg_route_cache_t *rc = calloc(1, sizeof(*rc));
    if (!rc) {
        cv->errs->oom = 1;
        lua_pop(L, 1);
        return;
    }
    r->cache = rc;
    conv_fields(cv, t, cwhat, "cache", rc);
    if ((list = push_table(cv, t, cwhat, "statuses"))) {
        n = lua_objlen(L, list);
        if (n > MG_MAX_CACHE_STATUSES) {
            internal(cv, cwhat, "statuses", "a list of at most MG_MAX_CACHE_STATUSES");
            n = 0;
        }
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, list, (int)i + 1);
            lua_Number st = lua_tonumber(L, -1);
            if (lua_type(L, -1) == LUA_TNUMBER && st >= 200 && st <= 599 && st == (int)st)
                rc->statuses[rc->nstatuses++] = (uint16_t)st;
            else
                internal(cv, cwhat, "statuses[]", "a status 200-599");
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if ((list = push_table(cv, t, cwhat, "vary"))) {
        n = lua_objlen(L, list);
        if (n > MG_MAX_CACHE_VARY) {
            internal(cv, cwhat, "vary", "a list of at most MG_MAX_CACHE_VARY");
            n = 0;
        }
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, list, (int)i + 1);
            if (lua_type(L, -1) == LUA_TSTRING) {
                rc->vary[rc->nvary] = dup_or_oom(cv, lua_tostring(L, -1));
                if (rc->vary[rc->nvary])
                    rc->nvary++;
            } else {
                internal(cv, cwhat, "vary[]", "a string");
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, t, "redis");
    int has_redis = lua_istable(L, -1);
    lua_pop(L, 1);
    if (has_redis) {
        char rwhat[96];
        int rt = push_table(cv, t, cwhat, "redis");
        snprintf(rwhat, sizeof(rwhat), "%s.redis", cwhat);
        get_str(cv, rt, rwhat, "host", 0, &rc->redis_host);
        get_str(cv, rt, rwhat, "password", 1, &rc->redis_password);
        conv_fields(cv, rt, rwhat, "redis", rc);
        lua_pop(L, 1); /* the redis table */
        lua_pop(L, 1); /* the cache table */
        return;
    }
    if (get_str(cv, t, cwhat, "dict", 0, &rc->dict_name) == 0 &&
        get_uint(cv, t, cwhat, "dict_size", 1, MAX_DOUBLE_INT, &v) == 0) {
        /* dictionaries live in the process: the same name is the same one
         * after a reload, so answers kept survive it */
        rc->dict = mg_shdict_open(rc->dict_name, (size_t)v);
        if (!rc->dict)
            cv->errs->oom = 1;
    }
    lua_pop(L, 1);
}

static void conv_route(conv_t *cv, int t, const char *what, mg_config_t *cfg, mg_route_t *r)
{
    lua_State *L = cv->L;
    int up;

    get_int(cv, t, what, "line", 0, INT32_MAX, &r->line);
    get_str(cv, t, what, "name", 0, &r->name);
    if (r->name)
        r->metric_id = mg_metrics_route_id(r->name);
    get_str(cv, t, what, "path", 0, &r->path);
    get_str(cv, t, what, "host", 1, &r->host);
    get_str(cv, t, what, "strip_prefix", 1, &r->strip_prefix);
    get_str(cv, t, what, "rewrite", 1, &r->rewrite);
    conv_methods(cv, t, what, r);
    conv_upgrades(cv, t, what, r);
    conv_headers(cv, t, what, r);
    conv_fields(cv, t, what, "route", r);
    conv_cache(cv, t, what, r);
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
    if ((r->upstream >= 0) == (r->has_handler != 0))
        internal(cv, what, "upstream", "set exactly when there is no handler");

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
        get_str(cv, t, what, "name", 0, &sd->name);
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
        get_str(&cv, t, "", "access_log", 0, &cfg->access_log);
        get_str(&cv, t, "", "error_log", 0, &cfg->error_log);
        conv_limits(&cv, t, cfg);
        conv_timeouts(&cv, t, cfg);
        conv_listeners(&cv, t, cfg);
        conv_upstreams(&cv, t, cfg);
        conv_routes(&cv, t, cfg);
        for (size_t i = 0; i < cfg->nroutes; i++) {
            mg_route_t *r = &cfg->routes[i];
            const mg_upstream_t *u = r->upstream >= 0 ? &cfg->upstreams[r->upstream] : NULL;
            const mg_route_timeouts_t *to = &r->timeouts;
            r->retry_state = r->retries || to->connect || to->first_byte || to->idle ||
                             to->total || (u && (u->retries || u->outlier));
        }
        conv_shared_dicts(&cv, t, cfg);
        conv_admin(&cv, t, cfg);
        conv_tests(&cv, t, cfg);
    } else {
        e.oom = 1;
    }

    if (e.oom)
        errs_add(&e, "%s: out of memory", file);
    if (e.len > 0 || e.oom) {
        mg_config_free(cfg);
        *errors = errs_take(&e);
        return -1;
    }
    *out = cfg;
    return 0;
}

void mg_config_free(mg_config_t *cfg)
{
    size_t i, j;

    if (cfg == NULL)
        return;
    free(cfg->file);
    free(cfg->access_log);
    free(cfg->error_log);
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
    for (i = 0; i < cfg->nupstreams; i++) {
        mg_upstream_t *u = &cfg->upstreams[i];

        free(u->name);
        free(u->health_path);
        free(u->retries);
        free(u->outlier);
        for (j = 0; j < u->ntargets; j++) {
            free(u->targets[j].host);
            free(u->targets[j].name);
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
        free(r->rewrite);
        free(r->retries);
        if (r->cache) {
            free(r->cache->dict_name);
            free(r->cache->redis_host);
            free(r->cache->redis_password);
            for (j = 0; j < r->cache->nvary; j++)
                free(r->cache->vary[j]);
            free(r->cache);
        }
    }
    free(cfg->routes);
    for (i = 0; i < cfg->nshared_dicts; i++)
        free(cfg->shared_dicts[i].name);
    free(cfg->shared_dicts);
    free(cfg);
}
