/* shdict_stress.c: test-only helper for spec/c/shdict_spec.lua, linked into
 * build/libmgtest.so. Checks that incr is atomic across threads. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "mg_ffi.h"
#include "shdict.h"

typedef struct job_s {
    mg_shdict_t *d;
    const char *key;
    int n;
    int failed;
} job_t;

static void *run(void *arg)
{
    job_t *j = arg;
    const char *err;
    double v;
    int i;

    for (i = 0; i < j->n; i++)
        if (mg_ffi_shdict_incr(j->d, j->key, strlen(j->key), 1, 1, 0, 0, &v, &err) != 0)
            j->failed++;
    return NULL;
}

/* Starts NTHREADS threads (at most 64) that each incr KEY by 1 N times,
 * waits for them and returns the final value, or -1 when a thread or an
 * incr failed. */
double mg_test_shdict_incr_threads(mg_shdict_t *d, const char *key, int nthreads, int n);

double mg_test_shdict_incr_threads(mg_shdict_t *d, const char *key, int nthreads, int n)
{
    pthread_t tids[64];
    job_t jobs[64];
    int i, started = 0, failed = 0;
    size_t len = 64;
    char buf[64];
    double v = -1;

    if (nthreads < 1 || nthreads > 64)
        return -1;
    for (i = 0; i < nthreads; i++) {
        jobs[i] = (job_t){d, key, n, 0};
        if (pthread_create(&tids[i], NULL, run, &jobs[i]) != 0)
            break;
        started++;
    }
    for (i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
        failed += jobs[i].failed;
    }
    if (started < nthreads || failed > 0)
        return -1;
    if (mg_ffi_shdict_get(d, key, strlen(key), &v, buf, &len) != MG_SHDICT_NUMBER)
        return -1;
    return v;
}
