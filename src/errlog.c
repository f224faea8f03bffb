/* errlog.c: see errlog.h. */
#include "errlog.h"
#include "mg_ffi.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192

static atomic_int min_level = MG_LOG_INFO;
static pthread_mutex_t path_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_path; /* NULL: stderr as the process got it */

static const char *const names[] = { "debug", "info", "notice", "warn", "error", "crit" };

int mg_log_enabled(int level)
{
    return level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

void mg_log_set_level(int level)
{
    if (level >= MG_LOG_DEBUG && level <= MG_LOG_CRIT)
        atomic_store(&min_level, level);
}

const char *mg_log_level_name(int level)
{
    return level >= MG_LOG_DEBUG && level <= MG_LOG_CRIT ? names[level] : "info";
}

int mg_log_level_parse(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } aliases[] = { { "err", MG_LOG_ERROR }, { "warning", MG_LOG_WARN },
                    { "alert", MG_LOG_CRIT }, { "emerg", MG_LOG_CRIT } };
    for (int i = 0; i <= MG_LOG_CRIT; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (strcmp(name, aliases[i].name) == 0)
            return aliases[i].level;
    return -1;
}

void mg_log(int level, const char *fmt, ...)
{
    if (!mg_log_enabled(level))
        return;
    char line[LINE_MAX_BYTES];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, 64, ".%03dZ [%s] ", (int)(ts.tv_nsec / 1000000),
                          mg_log_level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    if ((size_t)m >= sizeof(line) - n - 1) { /* cut: say so, keep one line */
        n = sizeof(line) - 5;
        memcpy(line + n, "...", 3);
        n += 3;
    } else {
        n += (size_t)m;
    }
    while (n > 0 && line[n - 1] == '\n')
        n--;
    line[n++] = '\n';
    ssize_t rc = write(2, line, n);
    (void)rc; /* nowhere left to report a failing error log */
}

char *mg_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

/* Opens path for appending and puts it on fd 2. */
static int attach(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    int rc = dup2(fd, 2) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int mg_errlog_open(const char *path)
{
    if (!path || strcmp(path, "stderr") == 0)
        return 0;
    if (strcmp(path, "stdout") == 0) /* a name, not a file in the working directory */
        return dup2(1, 2) < 0 ? -errno : 0;
    int rc = attach(path);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&path_lock);
    free(log_path);
    log_path = strdup(path);
    pthread_mutex_unlock(&path_lock);
    return 0;
}

int mg_errlog_reopen(void)
{
    pthread_mutex_lock(&path_lock);
    int rc = log_path ? attach(log_path) : 0;
    pthread_mutex_unlock(&path_lock);
    return rc;
}

/* s as a log target: one of the names (kept as is) or a file path. */
static int log_target(const char *s, size_t len, char *out, size_t cap,
                      const char *const *kept)
{
    int rc = MG_STR_FILE;

    if (len == 0 || len >= cap || memchr(s, '\0', len))
        return MG_STR_BAD;
    for (; *kept; kept++)
        if (strlen(*kept) == len && memcmp(*kept, s, len) == 0)
            rc = MG_STR_VALUE;
    memcpy(out, s, len);
    out[len] = '\0';
    return rc;
}

int mg_log_error_target_check(const char *s, size_t len, char *out, size_t cap)
{
    /* "off" is refused: there is always an error log; "stdout" has always
     * been kept as written (mg_errlog_open opens it as a file) */
    static const char *const kept[] = { "stderr", "stdout", NULL };

    if (len == 3 && memcmp(s, "off", 3) == 0)
        return MG_STR_BAD;
    return log_target(s, len, out, cap, kept);
}

int mg_log_access_target_check(const char *s, size_t len, char *out, size_t cap)
{
    static const char *const kept[] = { "off", "stdout", "stderr", NULL };

    return log_target(s, len, out, cap, kept);
}
