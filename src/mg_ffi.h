/* mg_ffi.h: every C function Lua may call through LuaJIT's FFI.
 *
 * Rules (STYLE.md, C 9): each function is mg_ffi_*, takes its subject
 * first, fills caller-provided buffers, never longjmps, never keeps a
 * pointer it was given past the call unless it says so. The Lua side
 * declares the same prototypes in lua/moongate/cdefs.lua; a spec checks the
 * two agree. Types Lua sees are opaque pointers.
 */
#ifndef MG_FFI_H
#define MG_FFI_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_request_s mg_request_t;

/* Hook phases, in the order they run (also lua/moongate/runtime.lua). */
enum {
    MG_PHASE_REQUEST = 1,   /* global on_request: before routing */
    MG_PHASE_ROUTE = 2,     /* global on_route: after the router */
    MG_PHASE_ACCESS = 3,    /* the route's policies: on_request */
    MG_PHASE_RESPONSE = 4,  /* route policies then global: on_response */
    MG_PHASE_LOG = 5,       /* route policies then global: on_log */
};

/* What mg_ffi_req_str / mg_ffi_req_set_str address. */
enum {
    MG_FFI_METHOD = 1, MG_FFI_PATH = 2, MG_FFI_RAW_PATH = 3, MG_FFI_QUERY = 4,
    MG_FFI_ID = 5, MG_FFI_CLIENT = 6, MG_FFI_ROUTE = 7, MG_FFI_UPSTREAM = 8,
    MG_FFI_TARGET = 9, MG_FFI_SCHEME = 10,
};

/* Errors (negative); 0 is success. */
enum {
    MG_FFI_EINVAL = -1,     /* bad name or value */
    MG_FFI_EPHASE = -2,     /* not possible in this phase */
    MG_FFI_ELIMIT = -3,     /* too many edits */
    MG_FFI_ENOMEM = -4,
    MG_FFI_ENOTFOUND = -5,  /* no such upstream / target */
};

/* ==== request and response (ffi_request.c) ==== */
int mg_ffi_req_str(mg_request_t *r, int what, const char **p, size_t *len);
int mg_ffi_req_client_port(mg_request_t *r);
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
double mg_ffi_now(void);
double mg_ffi_monotonic(void);

/* ==== hooks: waiting, logging (hooks.c) ==== */
int mg_ffi_worker_id(void);
/* Starts the wait of the running coroutine: Lua yields right after. */
int mg_ffi_sleep(double seconds);
void mg_ffi_log(int level, const char *msg, size_t len);
void mg_ffi_hook_error_count(void);

/* ==== shared dictionaries (shdict.c) ==== */
/* (section owned by shdict.c)
 *
 * D is a dictionary from mg_ffi_shdict_find(); it stays valid until the
 * process exits. Keys are 1-65535 bytes, any bytes. Value types are
 * MG_SHDICT_* of shdict.h: 0 nil, 1 boolean (as 0 or 1 in a double),
 * 3 number, 4 string. Times to live are milliseconds, 0 = forever. Failures
 * return a negative errno code and, where there is ERR, a static reason:
 * -EINVAL "empty key", "key too long", "bad value type", "not a number";
 * -ENOMEM "no memory" (the value is bigger than a stripe of the
 * dictionary); -EEXIST "exists"; -ENOENT "not found". Any thread may call
 * these at any time. */
typedef struct mg_shdict_s mg_shdict_t;

/* The dictionary called NAME, or NULL when none was declared. */
mg_shdict_t *mg_ffi_shdict_find(const char *name, size_t name_len);

/* Looks KEY up. Returns its type (0 when absent or expired); a number or
 * boolean goes to *NUM, a string is copied to BUF, whose size is *LEN on
 * entry, and its length is put in *LEN. When BUF is too small: returns
 * -ENOBUFS with the length needed in *LEN, and the caller retries. */
int mg_ffi_shdict_get(mg_shdict_t *d, const char *key, size_t key_len,
                      double *num, char *buf, size_t *len);

/* Stores a value of TYPE (NUM, or STR of STR_LEN bytes for a string) under
 * KEY for TTL_MS; type 0 deletes. MODE is 0 set, 1 add (-EEXIST when KEY
 * is live), 2 replace (-ENOENT when it is not). May evict least recently
 * used entries. Returns 0, or a negative code with *ERR set (the old value
 * is kept when the new one is refused). */
int mg_ffi_shdict_set(mg_shdict_t *d, const char *key, size_t key_len,
                      int type, double num, const char *str, size_t str_len,
                      uint64_t ttl_ms, int mode, const char **err);

/* Atomically adds BY to the number under KEY and puts the sum in *OUT;
 * the time to live is kept. When KEY is absent or expired: with HAS_INIT
 * stores INIT + BY for INIT_TTL_MS, else -ENOENT. -EINVAL "not a number"
 * when the value is not a number. Returns 0 or a negative code. */
int mg_ffi_shdict_incr(mg_shdict_t *d, const char *key, size_t key_len,
                       double by, int has_init, double init,
                       uint64_t init_ttl_ms, double *out, const char **err);

/* Removes KEY if present. Returns 0. */
int mg_ffi_shdict_delete(mg_shdict_t *d, const char *key, size_t key_len);

/* Lists up to MAX live keys (0 = all) into BUF (*LEN bytes on entry), each
 * as a 2-byte big-endian length and the key's bytes; not a snapshot (the
 * stripes are visited in turn). Returns the number of keys with the bytes
 * used in *LEN, or -ENOBUFS with the bytes needed in *LEN. */
int mg_ffi_shdict_keys(mg_shdict_t *d, int max, char *buf, size_t *len);

/* Removes every entry. */
void mg_ffi_shdict_flush_all(mg_shdict_t *d);

/* The cap the dictionary was created with, in bytes. */
size_t mg_ffi_shdict_capacity(mg_shdict_t *d);

/* Bytes not used by entries (expired ones not yet reclaimed count as used). */
size_t mg_ffi_shdict_free_space(mg_shdict_t *d);

/* ==== end ==== */

#endif
