/* shdict.h: shared dictionaries, named key/value stores shared by every
 * worker thread of the process.
 *
 * A dictionary is declared in the config (gw.shared_dict) with a memory cap,
 * created once by the control thread (mg_shdict_open) and then lives in a
 * process-wide registry until mg_shdict_close_all() at exit: it outlives
 * config reloads, and a pointer to it stays valid until then. Lua reaches the
 * values through the mg_ffi_shdict_* functions of mg_ffi.h
 * (lua/moongate/shared.lua); C code may call those too.
 *
 * Values are numbers (double), strings (bytes) or booleans, each with an
 * optional time to live. The cap is split evenly between lock stripes (the
 * key's hash picks one); a stripe that would grow past its share evicts its
 * least recently used entries, and a value too big for one stripe is refused
 * ("no memory"); mg_shdict_max_entry() tells how big an entry can be.
 */
#ifndef MG_SHDICT_H
#define MG_SHDICT_H

#include <stddef.h>

typedef struct mg_shdict_s mg_shdict_t;

/* Value types, numbered like Lua's (LUA_TNIL, LUA_TBOOLEAN, ...). */
enum {
    MG_SHDICT_NIL = 0,
    MG_SHDICT_BOOLEAN = 1,
    MG_SHDICT_NUMBER = 3,
    MG_SHDICT_STRING = 4,
};

/* Modes of mg_ffi_shdict_set(). */
enum {
    MG_SHDICT_SET = 0,     /* store, replacing any value */
    MG_SHDICT_ADD = 1,     /* store only if absent or expired, else -EEXIST */
    MG_SHDICT_REPLACE = 2, /* store only if present, else -ENOENT */
};

#define MG_SHDICT_MAX_KEY 65535 /* bytes */

/* Returns the dictionary called NAME, creating it with CAP bytes (>= 1) if
 * there is none. An existing one is returned as it is, whatever its cap: a
 * dictionary keeps the size it was created with until the process exits
 * (compare mg_shdict_capacity() to tell the user). Thread-safe; NULL only
 * when out of memory. The registry owns the dictionary. */
mg_shdict_t *mg_shdict_open(const char *name, size_t cap);
/* The config's check of a dictionary name (a mg_ffi_str_check_fn, mg_ffi.h):
 * 1-64 letters, digits, '_', '-' or '.' (names end up in C strings, logs
 * and metrics as they are). */
int mg_shdict_name_check(const char *s, size_t len, char *out, size_t cap);

/* The dictionary called NAME, or NULL. Thread-safe. */
mg_shdict_t *mg_shdict_find(const char *name);

/* The cap the dictionary was created with, in bytes. */
size_t mg_shdict_capacity(const mg_shdict_t *d);

/* The size of the biggest entry (key plus value plus ~64 bytes of overhead)
 * one stripe can hold: larger values are refused. */
size_t mg_shdict_max_entry(const mg_shdict_t *d);

/* Frees every dictionary. Only at exit, once no thread uses them. */
void mg_shdict_close_all(void);

#endif
