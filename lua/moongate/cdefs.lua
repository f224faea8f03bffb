-- moongate.cdefs: the FFI declarations of src/mg_ffi.h that the runtime
-- uses (spec/unit/cdefs_spec.lua checks they match the header), and the C
-- namespace that holds them: the running binary (ffi.C, linked with -Wl,-E)
-- or, outside it, the test library.
local ffi = require "ffi"

ffi.cdef [[
typedef struct mg_request_s mg_request_t;
int mg_ffi_req_str(mg_request_t *r, int what, const char **p, size_t *len);
int mg_ffi_req_client_port(mg_request_t *r);
struct mg_cidr_set_s;
int mg_ffi_req_client_in(mg_request_t *r, const struct mg_cidr_set_s *s);
int mg_ffi_req_tls_resumed(mg_request_t *r);
void *mg_ffi_req_client_cert(mg_request_t *r, int *verified);
int mg_ffi_cert_field(const void *x509, int what, int idx, char *buf, size_t cap);
void *mg_ffi_cert_from_pem(const char *pem, size_t len);
void mg_ffi_cert_free(void *x509);
int mg_ffi_req_http_version(mg_request_t *r);
int mg_ffi_grpc_split(const char *ctype, size_t ctype_len, const char *path, size_t path_len,
                      const char **service, size_t *service_len, const char **method,
                      size_t *method_len);
int mg_ffi_req_header(mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len);
int mg_ffi_req_header_count(mg_request_t *r);
int mg_ffi_req_header_at(mg_request_t *r, int i, const char **name, size_t *nlen,
                         const char **value, size_t *vlen);
int mg_ffi_req_param(mg_request_t *r, int i, const char **name, size_t *nlen,
                     const char **value, size_t *vlen);
int mg_ffi_req_edit_header(mg_request_t *r, int op, const char *name, size_t nlen,
                           const char *value, size_t vlen);
int mg_ffi_req_set_str(mg_request_t *r, int what, const char *s, size_t len);
int mg_ffi_req_set_upstream(mg_request_t *r, const char *name, size_t len);
int mg_ffi_req_set_target(mg_request_t *r, const char *name, size_t len);
int mg_ffi_req_set_hash_key(mg_request_t *r, const char *key, size_t len);
typedef struct mg_compress_conf_s mg_compress_conf_t;
mg_compress_conf_t *mg_ffi_compress_conf_new(int gzip_level, int brotli_quality,
                                             int brotli_window, uint64_t min_size,
                                             unsigned max_streams, const char *types,
                                             size_t types_len);
void mg_ffi_compress_conf_free(mg_compress_conf_t *c);
int mg_ffi_req_set_compression(mg_request_t *r, mg_compress_conf_t *c);
int mg_compress_negotiate(const char *v, size_t len, unsigned allowed);
int mg_ffi_req_read_body(mg_request_t *r, const char **p, size_t *len);
int mg_ffi_res_status(mg_request_t *r);
int mg_ffi_res_set_status(mg_request_t *r, int status);
int mg_ffi_res_header(mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len);
int mg_ffi_res_header_count(mg_request_t *r);
int mg_ffi_res_header_at(mg_request_t *r, int i, const char **name, size_t *nlen,
                         const char **value, size_t *vlen);
int mg_ffi_res_edit_header(mg_request_t *r, int op, const char *name, size_t nlen,
                           const char *value, size_t vlen);
int mg_ffi_res_set_body(mg_request_t *r, const char *body, size_t len);
int mg_ffi_req_skip_cache(mg_request_t *r);
int mg_ffi_req_cache_key(mg_request_t *r, const char *part, size_t len);
int mg_ffi_req_cache_state(mg_request_t *r);
double mg_ffi_now(void);
double mg_ffi_monotonic(void);
int mg_ffi_trace_parse(const char *v, size_t n, char *trace_id, char *flags);
int mg_ffi_trace_decide(const char *trace_id, int continued, const char *flags, double sample,
                        int parent_based);
int mg_ffi_balancer_swrr(int *cw, const int *weight, const unsigned char *live, size_t n);
int mg_ffi_header_edit_check(int op, const char *name, size_t nlen, const char *value,
                             size_t vlen);
int mg_ffi_req_str_check(int what, const char *s, size_t len);
int mg_ffi_request_id_check(const char *s, size_t n);
typedef struct mg_kit_config_s mg_kit_config_t;
mg_kit_config_t *mg_ffi_kit_config_load(const char *file, const char *lua_path);
mg_kit_config_t *mg_ffi_kit_config_new(void);
const char *mg_ffi_kit_config_errors(const mg_kit_config_t *kc);
void mg_ffi_kit_config_free(mg_kit_config_t *kc);
int mg_ffi_kit_config_upstream(mg_kit_config_t *kc, const char *name, size_t len);
int mg_ffi_kit_config_target(mg_kit_config_t *kc, int upstream, const char *name, size_t len);
const char *mg_ffi_kit_config_name(const mg_kit_config_t *kc, int upstream, int target);
const char *mg_ffi_kit_known_header(int k);
mg_request_t *mg_ffi_kit_request_new(mg_kit_config_t *kc, const char *buf, size_t len,
                                     const uint32_t *line, const uint32_t *spans, size_t n);
void mg_ffi_kit_request_free(mg_request_t *r);
void mg_ffi_kit_request_state(mg_request_t *r, int phase, int response_started,
                              int route_upstream, int upstream_override, int target_override);
void mg_ffi_kit_request_overrides(const mg_request_t *r, int *upstream, int *target);
void mg_ffi_kit_request_target(const mg_request_t *r, const char **path, size_t *path_len,
                               const char **query, size_t *query_len);
int mg_ffi_kit_request_upstream(mg_request_t *r, int status, const char *buf, size_t len,
                                const uint32_t *spans, size_t n);
typedef struct mg_ffi_kit_head_s {
    const char *method, *new_method, *path, *query, *new_query;
    size_t method_len, new_method_len, path_len, query_len, new_query_len;
    const void *match;
    const uint16_t *known;
    const char *client_ip, *request_id, *target;
    const char *trace_id, *span_id, *trace_flags;
    size_t body_len;
    uint64_t content_length;
    int path_rewritten, tls, trace_continued, head_method, body_buffered, has_body, chunked;
    int forwarded, send_request_id, override_headers;
    int local_port, listener;
    int route_rc, route_index;
    int xff_trusted, xff_drop;
    size_t res_body_len;
    int res_status, res_body_set, http_minor;
} mg_ffi_kit_head_t;
long mg_ffi_kit_upstream_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out);
long mg_ffi_kit_response_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out,
                              int *body);
long mg_ffi_kit_compress_body(mg_request_t *r, const char *in, size_t len, const char **out);
int mg_ffi_kit_lb_key(mg_request_t *r, const mg_ffi_kit_head_t *m, const char *on,
                      const char *name, uint64_t *key);
int mg_ffi_kit_split(mg_request_t *r, const mg_ffi_kit_head_t *m, int route, int *cw, int *how);
typedef struct mg_lb_s mg_lb_t;
mg_lb_t *mg_ffi_lb_new(const char *kind, const char *const *names, const int *weights, size_t n,
                       uint64_t seed);
void mg_ffi_lb_free(mg_lb_t *lb);
int mg_ffi_lb_pick(mg_lb_t *lb, int exclude, int has_key, uint64_t key);
long mg_ffi_kit_respond(mg_request_t *r, const mg_ffi_kit_head_t *m, int status,
                        const char *ctype, const char *body, size_t body_len,
                        const char *const *fields, const size_t *lens, size_t nfields,
                        const char **out, size_t *head_len);
long mg_ffi_kit_step(mg_request_t *r, const mg_ffi_kit_head_t *m, int step, const char **out,
                     size_t *head_len);
int mg_ffi_head_check(mg_kit_config_t *kc, const char *head, size_t len, uint16_t *known,
                      int *flags, uint64_t *content_length, uint32_t *spans, uint32_t max,
                      uint32_t *nheaders, const char **reason);
long mg_ffi_h1_response(char *buf, size_t len, int eof, int no_body, int *status,
                        uint32_t *spans, uint32_t max, uint32_t *nheaders, size_t *body_off,
                        size_t *body_len, const char **err);
int mg_ffi_worker_id(void);
int mg_ffi_sleep(double seconds);
void mg_ffi_log(int level, const char *msg, size_t len);
void mg_ffi_hook_error_count(void);
double mg_ffi_hook_clock(void);
double mg_ffi_hook_spent(uint32_t hook_id, double since);
uint32_t mg_ffi_hook_metric_id(const char *phase, const char *policy);
int mg_ffi_budget_over(void);
int mg_ffi_timer_start(int id, double after, double every);
int mg_ffi_http_request(const char *method, size_t mlen, const char *url, size_t ulen,
                        const char *headers, size_t hlen, const char *body, size_t blen,
                        double timeout, double max_body, const char *ca, int verify,
                        const char **err);
typedef struct mg_ffi_pattern_s {
    int nparams;
    int star;
    int prefix;
    size_t literal_len;
    size_t param_off[8];
    size_t param_len[8];
} mg_ffi_pattern_t;
int mg_ffi_route_pattern(const char *pattern, size_t len, mg_ffi_pattern_t *info, char *why,
                         size_t cap);
typedef struct mg_cidr_set_s mg_cidr_set_t;
int mg_ffi_req_proxy_tlv(mg_request_t *r, int type, const char **p, size_t *len);
int mg_ffi_cidr_check(const char *text, size_t n, char *err, size_t errcap);
mg_cidr_set_t *mg_ffi_trusted_new(const char *const *cidrs, const size_t *lens, size_t n);
void mg_ffi_trusted_free(mg_cidr_set_t *s);
int mg_ffi_real_client(mg_request_t *r, const mg_cidr_set_t *trusted, const char *header,
                       const char *peer, size_t peer_len, char *out, size_t cap);
typedef int (*mg_ffi_enum_parse_fn)(const char *name);
typedef const char *(*mg_ffi_enum_name_fn)(int value);
typedef int (*mg_ffi_str_check_fn)(const char *s, size_t len, char *out, size_t cap);
typedef struct mg_ffi_config_field_s {
    const char *name;
    int kind;
    double min, max;
    double def;
    const char *expected;
    size_t offset;
    int ctype;
    mg_ffi_enum_parse_fn parse;
    mg_ffi_enum_name_fn name_of;
    const char *def_str;
    mg_ffi_str_check_fn check;
    const char *object;
    const struct mg_ffi_config_field_s *item;
    size_t count_offset;
    size_t item_size;
    const char *too_many;
    int flags;
} mg_ffi_config_field_t;
const mg_ffi_config_field_t *mg_ffi_config_fields(const char *object, size_t *n);
int mg_ffi_retry_on_parse(const char *name);
int mg_ffi_host_kind(const char *s, size_t len);
typedef struct mg_ffi_target_s {
    char host[256];
    uint16_t port;
    uint8_t scheme;
} mg_ffi_target_t;
int mg_ffi_target_parse(const char *s, size_t len, mg_ffi_target_t *out, const char **why);
]]

local _M = {}

-- The namespace holding the mg_ffi_* symbols, or nil outside the binary
-- when no test library can be loaded.
_M.C = require("moongate.clib").load("mg_ffi_now")

-- Constants shared with src/mg_ffi.h.
_M.PHASE_REQUEST, _M.PHASE_ROUTE, _M.PHASE_ACCESS = 1, 2, 3
_M.PHASE_RESPONSE, _M.PHASE_LOG, _M.PHASE_TIMER = 4, 5, 6
_M.METHOD, _M.PATH, _M.RAW_PATH, _M.QUERY, _M.ID = 1, 2, 3, 4, 5
_M.CLIENT, _M.ROUTE, _M.UPSTREAM, _M.TARGET, _M.SCHEME = 6, 7, 8, 9, 10
_M.TLS_VERSION, _M.TLS_CIPHER, _M.TLS_SNI, _M.TLS_ALPN = 11, 12, 13, 14
_M.TRACE_ID, _M.SPAN_ID, _M.PEER = 15, 16, 17
_M.HEAD_CHUNKED, _M.HEAD_TRACE_BAD, _M.HEAD_HEAD = 1, 2, 4
_M.AGAIN = -11
_M.KIT_CHECKS, _M.KIT_ROUTED = 1, 2
_M.EDIT_SET, _M.EDIT_ADD, _M.EDIT_REMOVE = 1, 2, 3
_M.FIELD_SIZE, _M.FIELD_TIME, _M.FIELD_INT, _M.FIELD_BOOL = 1, 2, 3, 4
_M.FIELD_OTHER, _M.FIELD_SECONDS, _M.FIELD_ENUM, _M.FIELD_STRING = 5, 6, 7, 8
_M.FIELD_OBJECT, _M.FIELD_LIST, _M.FIELD_NUMBER = 9, 10, 11
_M.FIELD_REQUIRED, _M.FIELD_UNIQUE, _M.FIELD_ALLOC, _M.FIELD_INTERNAL = 1, 2, 4, 8
_M.STR_BAD, _M.STR_VALUE, _M.STR_FILE = -1, 0, 1
_M.HOST_BAD, _M.HOST_IPV4, _M.HOST_IPV6, _M.HOST_NAME = 0, 1, 2, 3
_M.TARGET_PLAIN, _M.TARGET_HTTP, _M.TARGET_HTTPS, _M.TARGET_SRV = 0, 1, 2, 3

local function cstr(p)
    return p ~= nil and ffi.string(p) or nil
end

-- One mg_ffi_config_field_t as a table (see config_fields).
local function field_of(fi)
    local def = fi.def
    if def ~= def then
        def = nil                       -- NaN: no default
    elseif fi.kind == _M.FIELD_BOOL then
        def = def ~= 0
    end
    local parse, check, item
    if fi.kind == _M.FIELD_ENUM then
        local p, name_of = fi.parse, fi.name_of
        parse = function(s)
            local v = p(s)
            return v >= 0 and ffi.string(name_of(v)) or nil
        end
        def = def and ffi.string(name_of(def))
    elseif fi.kind == _M.FIELD_STRING then
        def = cstr(fi.def_str)
        if fi.check ~= nil then
            local fn = fi.check
            -- the module's check: the normalised value and whether it is
            -- a file path, or nil
            check = function(s)
                local cap = #s + 3      -- mg_ffi_str_check_fn's room
                local out = ffi.new("char[?]", cap)
                local rc = fn(s, #s, out, cap)
                if rc < 0 then
                    return nil
                end
                return ffi.string(out), rc == _M.STR_FILE
            end
        end
    elseif fi.kind == _M.FIELD_LIST then
        item = field_of(fi.item)
    end
    return { name = ffi.string(fi.name), kind = fi.kind, min = fi.min, max = fi.max,
             def = def, parse = parse, check = check, object = cstr(fi.object),
             item = item, too_many = cstr(fi.too_many), flags = fi.flags,
             expected = cstr(fi.expected) }
end

--- The fields of config object `object` as src/config.c declares them
-- (mg_ffi_config_fields), in key order: a list of { name =, kind =, min =,
-- max =, def = (nil: none), expected = (nil: the kind's own words),
-- parse = (ENUM: name -> its canonical name, or nil), check = (STRING with
-- a check: s -> normalised, is_file; or nil), object = (OBJECT: the nested
-- schema's name), item = (LIST: a field like these), too_many = (LIST),
-- flags = FIELD_REQUIRED | ... }; an ENUM's def is its canonical name, a
-- STRING's the string.
function _M.config_fields(object)
    local n = ffi.new("size_t[1]")
    local f = _M.C.mg_ffi_config_fields(object, n)
    if f == nil then
        error("no config schema for " .. object, 2)
    end
    local out = {}
    for i = 0, tonumber(n[0]) - 1 do
        out[i + 1] = field_of(f[i])
    end
    return out
end
--- Field `name` of config object `object` (as config_fields gives it).
function _M.config_field(object, name)
    for _, f in ipairs(_M.config_fields(object)) do
        if f.name == name then
            return f
        end
    end
    error("no field " .. name .. " in the config schema of " .. object, 2)
end
_M.EINVAL, _M.EPHASE, _M.ELIMIT, _M.ENOMEM, _M.ENOTFOUND = -1, -2, -3, -4, -5

return _M
