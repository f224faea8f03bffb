/* errlog.h: the gateway's error log.
 *
 * One line per event, `2026-12-01T21:30:00.123Z [warn] moongate: ...`, each
 * written with a single write(2) so that lines from different threads never
 * interleave. Lines below the configured level are dropped before they are
 * formatted. The log is file descriptor 2 itself: an `error_log` file is
 * dup2'd onto it, so what libraries and sanitizers write to stderr lands in
 * the same file, and reopening it after a rotation is one dup2. */
#ifndef MG_ERRLOG_H
#define MG_ERRLOG_H

#include <stddef.h>

enum { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_NOTICE, MG_LOG_WARN, MG_LOG_ERROR, MG_LOG_CRIT };

/* Writes one line at `level` (MG_LOG_*), if the level is enabled. */
void mg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether a line at `level` would be written (to skip building it). */
int mg_log_enabled(int level);
/* "debug" .. "crit" (also nginx's "err", "warning", "alert", "emerg") to
 * MG_LOG_*, or -1. */
int mg_log_level_parse(const char *name);
/* The config's checks of settings.error_log and settings.access_log (each a
 * mg_ffi_str_check_fn, mg_ffi.h): error_log is "stderr" or a file path;
 * access_log (accesslog.c) "off", "stdout", "stderr" or a file path. No
 * NULs; not empty. A path is reported as one (MG_STR_FILE). */
int mg_log_error_target_check(const char *s, size_t len, char *out, size_t cap);
int mg_log_access_target_check(const char *s, size_t len, char *out, size_t cap);
/* The name of an MG_LOG_* level. */
const char *mg_log_level_name(int level);
/* Lines below `level` are dropped from now on (any thread). */
void mg_log_set_level(int level);

/* A malloc'd message formatted like printf, or NULL when memory is short
 * (unlike asprintf, whose pointer is undefined then). */
char *mg_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sends the error log to `path` ("stderr" or NULL: leave fd 2 as it is).
 * Returns 0, or -errno with fd 2 unchanged. Called at start; the path is
 * kept for mg_errlog_reopen. */
int mg_errlog_open(const char *path);
/* Opens the error log's file again (after logrotate moved it). Returns 0
 * (also when the log is stderr) or -errno, the old file kept. */
int mg_errlog_reopen(void);

#endif
