/* metrics_stress.c: test-only helper for spec/c/metrics_spec.lua, linked
 * into build/libmgtest.so. Workers count requests from their own threads
 * while another thread renders, as the gateway does. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "metrics.h"

typedef struct job_s {
    int w, n;
    uint32_t route;
} job_t;

static void *run(void *arg)
{
    job_t *j = arg;
    for (int i = 0; i < j->n; i++) {
        mg_metrics_connections(j->w, 1);
        mg_metrics_request(j->w, j->route, i % 2 ? 200 : 404, 1000, i % 2 ? 2000 : 0);
        mg_metrics_connections(j->w, -1);
    }
    return NULL;
}

/* Runs NTHREADS (at most 16) threads, thread i acting as worker i, each
 * counting N requests on ROUTE (odd ones 200 with 2 ms upstream time, even
 * ones 404 without), while this thread renders in a loop. Returns how many
 * renders ran, or -1 when a thread or a render failed. */
int mg_test_metrics_threads(int nthreads, int n, uint32_t route);

int mg_test_metrics_threads(int nthreads, int n, uint32_t route)
{
    pthread_t tids[16];
    job_t jobs[16];
    int started = 0, renders = 0, failed = 0;
    if (nthreads < 1 || nthreads > 16)
        return -1;
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = (job_t){ i, n, route };
        if (pthread_create(&tids[i], NULL, run, &jobs[i]) != 0)
            break;
        started++;
    }
    for (int i = 0; i < 20; i++) {
        size_t len;
        char *s = mg_metrics_render(NULL, &len);
        if (!s)
            failed = 1;
        free(s);
        renders++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return started < nthreads || failed ? -1 : renders;
}
