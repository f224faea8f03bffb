-- moongate.cdefs: the FFI declarations of src/mg_ffi.h that the runtime
-- uses (spec/unit/cdefs_spec.lua checks they match the header), and the C
-- namespace that holds them: the running binary (ffi.C, linked with -Wl,-E)
-- or, outside it, the test library.
local ffi = require "ffi"

ffi.cdef [[
typedef struct mg_request_s mg_request_t;
int mg_ffi_req_str(mg_request_t *r, int what, const char **p, size_t *len);
int mg_ffi_req_client_port(mg_request_t *r);
int mg_ffi_req_tls_resumed(mg_request_t *r);
int mg_ffi_req_http_version(mg_request_t *r);
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
int mg_ffi_balancer_swrr(int *cw, const int *weight, const unsigned char *live, size_t n);
int mg_ffi_header_edit_check(int op, const char *name, size_t nlen, const char *value,
                             size_t vlen);
int mg_ffi_req_str_check(int what, const char *s, size_t len);
int mg_ffi_request_id_check(const char *s, size_t n);
mg_request_t *mg_ffi_kit_request_new(const char *buf, size_t len, const uint32_t *spans, size_t n);
void mg_ffi_kit_request_free(mg_request_t *r);
void mg_ffi_kit_request_state(mg_request_t *r, int phase, int response_started);
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
    size_t res_body_len;
    int res_status, res_body_set, http_minor;
} mg_ffi_kit_head_t;
long mg_ffi_kit_upstream_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out);
long mg_ffi_kit_answer_head(mg_request_t *r, int status, const char *ctype, size_t body_len,
                            const char *const *kv, const size_t *kv_len, size_t n,
                            const char *request_id, int http_minor, int head_method,
                            const char **out);
long mg_ffi_kit_response_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out,
                              int *body);
int mg_ffi_head_check(const char *head, size_t len, uint16_t *known, int *flags,
                      uint64_t *content_length, const char **reason);
int mg_ffi_worker_id(void);
int mg_ffi_sleep(double seconds);
void mg_ffi_log(int level, const char *msg, size_t len);
void mg_ffi_hook_error_count(void);
int mg_ffi_budget_over(void);
int mg_ffi_timer_start(int id, double after, double every);
int mg_ffi_http_request(const char *method, size_t mlen, const char *url, size_t ulen,
                        const char *headers, size_t hlen, const char *body, size_t blen,
                        double timeout, double max_body, const char **err);
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
typedef int (*mg_ffi_enum_parse_fn)(const char *name);
typedef const char *(*mg_ffi_enum_name_fn)(int value);
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
} mg_ffi_config_field_t;
const mg_ffi_config_field_t *mg_ffi_config_fields(const char *object, size_t *n);
int mg_ffi_retry_on_parse(const char *name);
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
_M.TRACE_ID, _M.SPAN_ID = 15, 16
_M.HEAD_CHUNKED, _M.HEAD_TRACE_BAD = 1, 2
_M.EDIT_SET, _M.EDIT_ADD, _M.EDIT_REMOVE = 1, 2, 3
_M.FIELD_SIZE, _M.FIELD_TIME, _M.FIELD_INT, _M.FIELD_BOOL = 1, 2, 3, 4
_M.FIELD_OTHER, _M.FIELD_SECONDS, _M.FIELD_ENUM, _M.FIELD_STRING = 5, 6, 7, 8
_M.FIELD_NUMBER = 9

--- The fields of config object `object` as src/config.c declares them
-- (mg_ffi_config_fields), in key order: a list of { name =, kind =, min =,
-- max =, def = (nil: none), expected = (nil: the kind's own words),
-- parse = (ENUM: name -> its canonical name, or nil) }; an ENUM's def is
-- its canonical name, a STRING's the string.
function _M.config_fields(object)
    local n = ffi.new("size_t[1]")
    local f = _M.C.mg_ffi_config_fields(object, n)
    if f == nil then
        error("no config schema for " .. object, 2)
    end
    local out = {}
    for i = 0, tonumber(n[0]) - 1 do
        local fi = f[i]
        local def = fi.def
        if def ~= def then
            def = nil                   -- NaN: no default
        elseif fi.kind == _M.FIELD_BOOL then
            def = def ~= 0
        end
        local parse
        if fi.kind == _M.FIELD_ENUM then
            local p, name_of = fi.parse, fi.name_of
            parse = function(s)
                local v = p(s)
                return v >= 0 and ffi.string(name_of(v)) or nil
            end
            def = def and ffi.string(name_of(def))
        elseif fi.kind == _M.FIELD_STRING then
            def = fi.def_str ~= nil and ffi.string(fi.def_str) or nil
        end
        out[i + 1] = { name = ffi.string(fi.name), kind = fi.kind, min = fi.min,
                       max = fi.max, def = def, parse = parse,
                       expected = fi.expected ~= nil and ffi.string(fi.expected)
                           or nil }
    end
    return out
end
_M.EINVAL, _M.EPHASE, _M.ELIMIT, _M.ENOMEM, _M.ENOTFOUND = -1, -2, -3, -4, -5

return _M
