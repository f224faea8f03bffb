/* config.h: the compiled form of a moongate config file.
 *
 * A config is a Lua file; lua/moongate/config.lua runs it, validates it whole
 * and hands back a normalised table, which mg_config_load() turns into these
 * plain C structs. Everything here is immutable once loaded and owned by the
 * mg_config_t (freed with mg_config_free). Times are milliseconds, sizes bytes.
 */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define MG_MAX_ROUTE_HEADERS 8
#define MG_MAX_METHODS 16
#define MG_MAX_UPGRADES 8

/* A target as declared (mg_upstream_t.targets), or as resolved at run
 * time (a slot's, targets.h). */
typedef struct mg_target_s {
    char *host;          /* numeric IPv4/IPv6 address or host name (srv: the
                            SRV name, "_http._tcp.example") */
    uint16_t port;       /* 0 for srv */
    int weight;          /* >= 1 */
    int srv;             /* "srv://NAME": the targets are its SRV records' */
    char *name;          /* "host:port" (or "srv://NAME"), for logs */
    char *authority;     /* the Host header a request without one gets
                            (NULL: name) */
    uint32_t metric_id;  /* metrics.h target id of (upstream, name) */
} mg_target_t;

/* The Host (HTTP/2: :authority) a request without one is sent with, and a
 * health check's: the declared host of a name that resolved to this
 * address or of an SRV record, else the target itself. */
static inline const char *mg_target_authority(const mg_target_t *t)
{
    return t->authority ? t->authority : t->name;
}

/* What a failed try may be retried on (retries.on; names: config.c). */
enum {
    MG_RETRY_ON_CONNECT = 1, /* connect refused, failed or timed out: nothing was sent */
    MG_RETRY_ON_RESET = 2,   /* reset or closed before any byte of an answer */
    MG_RETRY_ON_TIMEOUT = 4, /* no answer within first_byte / per_try_timeout */
    MG_RETRY_ON_502 = 8,     /* the upstream's own 502, 503, 504 */
    MG_RETRY_ON_503 = 16,
    MG_RETRY_ON_504 = 32,
};

/* retries = { ... } of a route or an upstream (src/retry.c applies it). */
typedef struct mg_retry_policy_s {
    int attempts;             /* tries in all, the first included */
    unsigned on;              /* MG_RETRY_ON_* */
    int non_idempotent;       /* POST, PATCH, ...: retried even once sent */
    uint64_t per_try_timeout; /* first byte of each try's answer; 0: none */
    uint64_t backoff_base;    /* wait before retry k: base * 2^(k-1) ... */
    uint64_t backoff_max;     /* ... at most this */
    int backoff_jitter;       /* a random share of it (full jitter) */
    double budget;            /* retries in flight per request in flight */
    int min_retries;          /* retries in flight the budget always allows */
    uint64_t body;            /* request bodies up to this are buffered whole
                                 before going upstream, so a retry can replay
                                 them; larger ones stream and are not retried
                                 once a byte went out */
} mg_retry_policy_t;

/* outlier = { ... } of an upstream (src/outlier.c). */
typedef struct mg_outlier_policy_s {
    int consecutive_5xx;      /* 5xx answers in a row that eject; 0: off */
    int consecutive_gateway;  /* connect/reset/timeout failures in a row; 0: off */
    double latency_factor;    /* ewma latency over this many times the others'
                                 mean ejects; 0: off */
    uint64_t base_ejection;   /* the n-th ejection lasts n times this ... */
    uint64_t max_ejection;    /* ... at most this */
    int max_ejection_percent; /* targets ejected at once, share of all */
} mg_outlier_policy_t;

/* route.timeouts (0: the upstream's own; total 0: no deadline). */
typedef struct mg_route_timeouts_s {
    uint64_t connect;     /* each connect */
    uint64_t first_byte;  /* request sent -> first byte of the answer */
    uint64_t idle;        /* between two reads of the answer */
    uint64_t total;       /* the whole upstream exchange, retries included */
} mg_route_timeouts_t;

typedef struct mg_upstream_s {
    char *name;
    mg_target_t *targets;       /* as declared; at run time, the slots (targets.h) */
    size_t ntargets;
    int max_targets;            /* slots for targets at run time (targets.h) */
    int keepalive;              /* max idle connections per target per worker */
    uint64_t keepalive_timeout; /* idle pooled connection lifetime */
    uint64_t connect_timeout;
    uint64_t send_timeout;
    uint64_t read_timeout;
    uint64_t fail_timeout;      /* a failing target is skipped this long */
    int max_fails;              /* failures in a row that make it skipped (0: never) */
    int forwarded;              /* send X-Forwarded-For/-Proto/-Host (default 1) */
    int request_id;             /* send X-Request-Id (default 1) */
    int override_headers;       /* pass the client's X-Original-URL & co.
                                   (MG_HNF_OVERRIDE; default 0) */
    /* active health checks (src/health.c); health_path NULL = none */
    char *health_path;
    uint64_t health_interval;   /* between two checks of a target */
    uint64_t health_timeout;    /* connect + answer */
    int health_fall;            /* failed checks in a row that take a target out */
    int health_rise;            /* good checks in a row that bring it back */
    /* the balancer (balancer.h MG_LB_*) and, for `hash`, where its key
     * comes from (MG_HASH_*) and the header, cookie or argument name */
    int balancer;
    int hash_on;
    char *hash_name;            /* NULL unless header, cookie or query */
    struct mg_tls_client_s *tls; /* HTTPS to the targets (tls_client.h); NULL: plain */
    mg_retry_policy_t *retries; /* NULL: one retry of what never went out */
    mg_outlier_policy_t *outlier; /* NULL: no outlier detection */
    int protocol;               /* MG_UP_H1, MG_UP_H2 or MG_UP_GRPC (h2_upstream.h) */
} mg_upstream_t;

/* route.split (src/split.c): the upstreams a route's requests are shared
 * out over, by weight. */
typedef struct mg_split_entry_s {
    int upstream;        /* index into mg_config_t.upstreams */
    int weight;          /* >= 0; the entries' sum is >= 1 */
} mg_split_entry_t;

#define MG_MAX_SPLIT 64

typedef struct mg_split_s {
    mg_split_entry_t *entries;
    size_t n;            /* 2 .. MG_MAX_SPLIT */
    int *weights;        /* n: the entries' weights, and n live flags (all
                            set) after them: the rotation's arguments */
    int key_on;          /* MG_HASH_* (balancer.h) of split.key: the same key
                            always goes to the same upstream; 0: the smooth
                            weighted rotation, per worker */
    char *key_name;      /* the header, cookie or argument name, or NULL */
    size_t cw_at;        /* its current weights' place in a worker's array
                            (mg_config_t.split_weights long) */
} mg_split_t;

/* route.canary: a request with this header or cookie (of this value) goes
 * to `upstream` rather than the route's upstream or split. */
typedef struct mg_canary_s {
    char *header;        /* lower case, or NULL: then `cookie` */
    char *cookie;
    char *value;         /* NULL: any value */
    int upstream;
} mg_canary_t;

/* route.mirror (src/mirror.c): a copy of each request the route sends
 * upstream goes to a shadow upstream too, whose answer is read and dropped. */
typedef struct mg_mirror_s {
    int upstream;
    uint64_t body;       /* bodies up to this are copied (read whole first);
                            a larger or chunked one: no copy */
    int concurrency;     /* copies in flight per worker; beyond: dropped */
    uint64_t timeout;    /* a copy's whole exchange, connect to last byte */
    double percent;      /* share of the requests copied, 0-100 */
} mg_mirror_t;

typedef struct mg_route_header_s {
    char *name;   /* lower case */
    char *value;  /* exact match, case-sensitive */
} mg_route_header_t;

#define MG_MAX_CACHE_STATUSES 16
#define MG_MAX_CACHE_VARY 8

struct mg_shdict_s;

/* route.cache: the route's answers are kept in a shared dictionary
 * (src/cache.c). */
typedef struct mg_route_cache_s mg_route_cache_t;
struct mg_route_cache_s {
    struct mg_shdict_s *dict;  /* opened when the config is converted */
    char *dict_name;
    uint64_t ttl;              /* freshness when the upstream gives none */
    uint64_t stale;            /* an expired answer kept this long for when
                                  the upstream fails */
    uint64_t max_body;         /* bigger answers are passed on, not kept */
    uint16_t statuses[MG_MAX_CACHE_STATUSES];
    size_t nstatuses;
    char *vary[MG_MAX_CACHE_VARY]; /* request headers in the key, lower case */
    size_t nvary;
    int authorized;            /* requests with Authorization or Cookie use it too */
    uint64_t lock;             /* a miss waits this long for another request
                                  fetching the same answer (0: never) */
    /* answers kept in Redis instead (shared by gateway instances) when
     * redis_host is set; then `dict` and `lock` are not used */
    char *redis_host;
    char *redis_password;      /* NULL: no AUTH */
    char *redis_username;      /* NULL: the default user */
    int redis_port, redis_db, redis_pool;
    double redis_timeout, redis_connect_timeout; /* seconds */
    struct mg_tls_client_s *redis_tls; /* rediss (tls_client.h; one reference); NULL: plain */
};

typedef struct mg_route_s {
    char *name;
    char *path;            /* pattern: "/a/b" exact, "/a/" prefix, ":p" params, "**" rest */
    char *host;            /* NULL = any; "*.example.com" allowed */
    char *methods[MG_MAX_METHODS]; /* upper case; nmethods == 0 means any */
    size_t nmethods;
    char *upgrades[MG_MAX_UPGRADES]; /* Upgrade protocols tunnelled (lower case);
                                        default { "websocket" }, none when 0 */
    size_t nupgrades;
    mg_route_header_t headers[MG_MAX_ROUTE_HEADERS];
    size_t nheaders;
    int upstream;          /* index into mg_config_t.upstreams, -1 when handled in Lua;
                              a split route's first entry's (split.c chooses) */
    int has_handler;       /* route answered by a Lua function (route index in Lua) */
    char *strip_prefix;    /* literal prefix removed before proxying, or NULL */
    char *rewrite;         /* path template (":name", "**"), or NULL */
    uint64_t max_body;
    mg_route_cache_t *cache;   /* NULL: not cached */
    uint16_t listen_port;  /* only requests arriving on this port; 0 = any */
    uint32_t metric_id;    /* metrics.h route id */
    int index;             /* position in the config, 0-based */
    int line;              /* where it was declared */
    int escaped_slashes;   /* mg_slashes_t (uri.h); 0: the listener's */
    mg_retry_policy_t *retries;   /* NULL: the upstream's */
    mg_route_timeouts_t timeouts; /* zeros: the upstream's */
    int retry_state;       /* its requests keep a retry state (retry.h): it or
                              one of its upstreams has retries, timeouts or
                              outlier */
    char *grpc_service;    /* route.grpc: gRPC requests only (grpc.h), for this
                              service (its path is "/service/" ...) */
    char *grpc_method;     /* ... or this method ("/service/method"); NULL: any */
    int chooses;           /* it has a split or a canary (one test on the
                              request path) */
    mg_split_t *split;     /* NULL: `upstream` (or the canary's) */
    mg_canary_t *canary;   /* NULL: none */
    mg_mirror_t *mirror;   /* NULL: no copies */
} mg_route_t;

/* Can route r send a request to upstream ui (its upstream, a split entry,
 * the canary's)? */
int mg_route_goes_to(const mg_route_t *r, int ui);

struct mg_tls_ctx_s;

typedef struct mg_listener_s {
    char *host;
    uint16_t port;
    char *source;             /* where gw.listen is: file (or module) and line */
    int line;
    struct mg_tls_ctx_s *tls; /* NULL: plain HTTP; else one reference (tls.h) */
    int escaped_slashes;      /* mg_slashes_t (uri.h), never INHERIT */
    int proxy_protocol;       /* a PROXY header (v1 or v2) starts each connection */
    int http2;                /* HTTP/2: offered by ALPN (TLS; the default there) or
                                 taken with prior knowledge (h2c, plain listeners) */
} mg_listener_t;

typedef struct mg_limits_s {
    uint64_t request_line;  /* 414 beyond */
    uint64_t header_size;   /* 431 beyond */
    uint64_t header_count;  /* 431 beyond */
    uint64_t body;          /* default per-route max body, 413 beyond */
    uint64_t min_body_rate; /* bytes/s a request body must keep up, else 408; 0 off */
    uint64_t lua_memory;    /* heap of each worker's Lua state, bytes */
} mg_limits_t;

typedef struct mg_timeouts_s {
    uint64_t header;     /* head must complete within, else 408 */
    uint64_t keepalive;  /* idle client connection */
    uint64_t body;       /* between two reads of a request body, else 408 */
    uint64_t body_grace; /* min_body_rate is not checked this long into a body */
    uint64_t body_rate_window; /* min_body_rate is averaged over this long */
    uint64_t send;       /* client not reading our response */
    uint64_t shutdown;   /* graceful shutdown deadline */
    uint64_t hook;       /* a hook running longer without waiting is stopped */
} mg_timeouts_t;

/* settings.http2: the HTTP/2 sessions' bounds (h2_conn.c, docs/http2.md).
 * Each flood counter counts over a fixed window of rate_window; past its
 * bound the connection gets GOAWAY ENHANCE_YOUR_CALM. */
typedef struct mg_http2_s {
    uint64_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint64_t initial_window;     /* bytes a stream's body may run ahead of the upstream */
    uint64_t connection_window;  /* ... and all of a connection's streams together */
    uint64_t max_resets;         /* streams the client resets (Rapid Reset), or whose
                                    head is refused, per rate_window */
    uint64_t max_control_frames; /* SETTINGS, PING, PRIORITY, WINDOW_UPDATE and empty
                                    DATA frames per rate_window (beyond one PRIORITY per
                                    stream and two WINDOW_UPDATEs per DATA frame sent) */
    uint64_t rate_window;        /* ms */
} mg_http2_t;
/* settings.dns: how target host names are looked up (discovery.h). */
typedef struct mg_dns_settings_s {
    uint64_t min_ttl;    /* a record is asked again no sooner than this ... */
    uint64_t max_ttl;    /* ... and no later */
    uint64_t timeout;    /* one try's wait for an answer */
    int attempts;        /* tries per lookup */
    uint64_t retry;      /* after a failed lookup, the next one */
} mg_dns_settings_t;

/* gw.shared_dict: the process creates the dictionary (src/shdict.h) before
 * the workers start; one that already exists keeps its size. */
typedef struct mg_shared_dict_decl_s {
    char *name;
    uint64_t size;       /* cap in bytes, >= 8192 */
} mg_shared_dict_decl_t;

/* A name and a value (settings.tracing's resource attributes and export
 * headers). */
typedef struct mg_kv_s {
    char *name;
    char *value;
} mg_kv_t;

/* settings.tracing: spans recorded on the request path (src/tracing.c)
 * and sent to an OpenTelemetry collector over OTLP/HTTP (src/otlp.c). */
typedef struct mg_tracing_cfg_s {
    char *endpoint;          /* "http[s]://host[:port][/prefix]", no trailing '/':
                                spans are POSTed to <endpoint>/v1/traces */
    double sample;           /* share of new traces recorded, by trace id (0-1) */
    int parent_based;        /* a client's valid traceparent decides by its
                                sampled flag (else the ratio does) */
    char *service_name;      /* resource service.name */
    mg_kv_t *resource;       /* more resource attributes (malloc'd) */
    size_t nresource;
    mg_kv_t *headers;        /* sent with every export, names in lower case */
    size_t nheaders;
    int batch_size;          /* spans per POST at most */
    uint64_t batch_interval; /* queued spans leave at least this often */
    int queue;               /* span records per worker; more are dropped */
    uint64_t timeout;        /* one export (connect + answer) */
    int policy_spans;        /* a span per policy hook too */
    char *ca;                /* https endpoint: CA bundle; NULL: the system's */
    struct mg_tls_client_s *tls; /* https endpoint (one reference); NULL: http */
} mg_tracing_cfg_t;

/* gw.metrics.counter / gauge / histogram (metrics_user.h): each generation
 * acquires the metric of each declaration when it is made. */
typedef struct mg_umetric_decl_s {
    char *name, *help;
    int kind;                /* MG_UMETRIC_* */
    char **labels;
    size_t nlabels;
    double *buckets;         /* a histogram's upper bounds, increasing (+Inf implied) */
    size_t nbuckets;
    uint32_t max_series;     /* label sets before the overflow series */
} mg_umetric_decl_t;

typedef struct mg_config_s {
    char *file;
    char *warnings;         /* lines `moongate check` prints (NULL: none) */
    int workers;            /* 0 = one per CPU */
    char *access_log;       /* "off", "stdout", "stderr" or a file path */
    char **access_log_fields; /* settings.access_log.fields as given; NULL: */
    size_t access_log_nfields; /* the default line */
    struct mg_logformat_s *log_format; /* the line's fields, compiled
                               (logfields.h); set in every converted config */
    char *error_log;        /* "stderr" or a file path (errlog.h) */
    int log_level;          /* MG_LOG_*: lines below it are dropped */
    int admin_enabled;      /* settings.admin ~= false */
    char *admin_host;
    uint16_t admin_port;
    char *admin_token;      /* NULL: none (then only loopback addresses) */
    char **admin_names;     /* more names for the Host header (admin.h) */
    size_t admin_nnames;
    char *settings_source;  /* where gw.settings is (NULL, 0: not called) */
    int settings_line;
    size_t ntests;          /* gw.test declarations (run in Lua) */
    mg_limits_t limits;
    mg_timeouts_t timeouts;
    mg_http2_t http2;
    mg_listener_t *listeners;
    size_t nlisteners;
    mg_upstream_t *upstreams;
    size_t nupstreams;
    mg_route_t *routes;
    size_t nroutes;
    mg_shared_dict_decl_t *shared_dicts;
    size_t nshared_dicts;
    mg_umetric_decl_t *metrics;
    size_t nmetrics;
    /* settings.trusted_proxies, built (cidr.h); NULL: none, the default,
     * and then no request header or PROXY header is believed */
    struct mg_cidr_set_s *trusted_proxies;
    int real_ip_header;     /* MG_REAL_IP_* (real_ip.h) */
    size_t split_weights;   /* the routes' split entries in all: the current
                               weights each worker keeps (split.c) */
    mg_tracing_cfg_t *tracing; /* settings.tracing; NULL: no spans */
    char *resolver;         /* settings.resolver "ADDR[:PORT]"; NULL: resolv.conf's */
    mg_dns_settings_t dns;
} mg_config_t;

struct lua_State;
/* Converts the normalised config table at index t of L (as
 * moongate.config's load returns it) into C structs; like mg_config_load
 * otherwise (L is left as it was). */
int mg_config_convert(struct lua_State *L, int t, const char *file, mg_config_t **out,
                      char **errors);

/* Loads and validates FILE. On success returns 0 and *out (owned by caller).
 * On failure returns -1 and *errors is a malloc'd string of one
 * "file:line: reason" line per mistake (owned by caller). */
int mg_config_load(const char *file, mg_config_t **out, char **errors);
void mg_config_free(mg_config_t *cfg);

/* For workers, which keep the config's Lua functions (route handlers, hooks):
 * runs require("moongate.config").load(file) in L (made by mg_lua_open()).
 * On success returns 0 with the normalised cfg table (docs/config-dsl.md)
 * pushed on L's stack; on failure returns -1 with the stack unchanged and
 * *errors set as by mg_config_load(). */
struct lua_State;
int mg_config_run_lua(struct lua_State *L, const char *file, char **errors);

#endif
