/* watch.c: see watch.h. */
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include "errlog.h"
#include "watch.h"

/* One watched directory; names are the basenames of its watched files.
 * Owned by the watcher's list; freed in the close callback of h. */
typedef struct wdir_s {
    uv_fs_event_t h;
    mg_watch_t *w;
    char *dir;
    char **names;
    size_t nnames;
    int keep; /* scratch for mg_watch_set */
    struct wdir_s *next;
} wdir_t;

struct mg_watch_s {
    uv_loop_t *loop;
    mg_watch_cb cb;
    void *data;
    wdir_t *dirs;
    int closing;
    int open; /* handles not closed yet (closing: frees at 0) */
};

mg_watch_t *mg_watch_new(uv_loop_t *loop, mg_watch_cb cb, void *data)
{
    mg_watch_t *w = calloc(1, sizeof(*w));
    if (w) {
        w->loop = loop;
        w->cb = cb;
        w->data = data;
    }
    return w;
}

static void free_names(wdir_t *d)
{
    for (size_t i = 0; i < d->nnames; i++)
        free(d->names[i]);
    free(d->names);
    d->names = NULL;
    d->nnames = 0;
}

static void on_dir_closed(uv_handle_t *h)
{
    wdir_t *d = h->data;
    mg_watch_t *w = d->w;
    free_names(d);
    free(d->dir);
    free(d);
    if (--w->open == 0 && w->closing)
        free(w);
}

static void on_event(uv_fs_event_t *h, const char *name, int events, int status)
{
    wdir_t *d = h->data;
    if (status < 0 || !name || d->w->closing)
        return;
    size_t n = strlen(name);
    int hit = n >= 4 && strcmp(name + n - 4, ".lua") == 0;
    for (size_t i = 0; i < d->nnames && !hit; i++)
        hit = strcmp(d->names[i], name) == 0;
    if (hit)
        d->w->cb(d->w->data);
}

static wdir_t *find_dir(mg_watch_t *w, const char *dir)
{
    for (wdir_t *d = w->dirs; d; d = d->next)
        if (strcmp(d->dir, dir) == 0)
            return d;
    return NULL;
}

static int add_name(wdir_t *d, const char *name)
{
    for (size_t i = 0; i < d->nnames; i++)
        if (strcmp(d->names[i], name) == 0)
            return 0;
    char **p = realloc(d->names, (d->nnames + 1) * sizeof(*p));
    if (!p)
        return -1;
    d->names = p;
    if (!(d->names[d->nnames] = strdup(name)))
        return -1;
    d->nnames++;
    return 0;
}

/* The directory of watched file f, started if new. NULL on failure. */
static wdir_t *dir_for(mg_watch_t *w, const char *f, char *name, size_t cap)
{
    char *a = strdup(f), *b = strdup(f);
    wdir_t *d = NULL;
    if (!a || !b)
        goto out;
    snprintf(name, cap, "%s", basename(a));
    const char *dir = dirname(b);
    d = find_dir(w, dir);
    if (d)
        goto out;
    d = calloc(1, sizeof(*d));
    if (!d || !(d->dir = strdup(dir))) {
        free(d);
        d = NULL;
        goto out;
    }
    d->w = w;
    uv_fs_event_init(w->loop, &d->h);
    d->h.data = d;
    w->open++;
    d->next = w->dirs;
    w->dirs = d;
    if (uv_fs_event_start(&d->h, on_event, d->dir, 0) != 0)
        mg_log(MG_LOG_WARN, "cannot watch %s for changes (reload with SIGHUP or "
                            "POST /reload)\n", d->dir);
out:
    free(a);
    free(b);
    return d;
}

int mg_watch_set(mg_watch_t *w, const char *const *files, size_t n)
{
    int failed = 0;
    for (wdir_t *d = w->dirs; d; d = d->next) {
        d->keep = 0;
        free_names(d);
    }
    for (size_t i = 0; i < n; i++) {
        char name[1024];
        wdir_t *d = dir_for(w, files[i], name, sizeof(name));
        if (!d || add_name(d, name) != 0) {
            failed++;
            continue;
        }
        d->keep = 1;
    }
    /* directories no file of this config is in any more */
    for (wdir_t **pp = &w->dirs; *pp;) {
        wdir_t *d = *pp;
        if (d->keep) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        uv_close((uv_handle_t *)&d->h, on_dir_closed);
    }
    return failed;
}

void mg_watch_close(mg_watch_t *w)
{
    if (!w)
        return;
    w->closing = 1;
    while (w->dirs) {
        wdir_t *d = w->dirs;
        w->dirs = d->next;
        uv_close((uv_handle_t *)&d->h, on_dir_closed);
    }
    if (w->open == 0)
        free(w);
}
