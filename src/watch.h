/* watch.h: noticing that any file a config read has changed (control
 * thread only).
 *
 * Editors replace a file by writing a new one and renaming it over the old,
 * so the directories are watched, not the files: one inotify watch (libuv
 * fs_event) per directory holding a watched file.
 */
#ifndef MG_WATCH_H
#define MG_WATCH_H

#include <stddef.h>
#include <uv.h>

typedef struct mg_watch_s mg_watch_t;

/* Called (on the loop) when an entry of a watched directory changed whose
 * name is one of the watched files or ends in ".lua" (a module the config
 * may require next). Several calls may come for one save. */
typedef void (*mg_watch_cb)(void *data);

/* A watcher with nothing watched yet. NULL when out of memory. */
mg_watch_t *mg_watch_new(uv_loop_t *loop, mg_watch_cb cb, void *data);
/* Watches the directories of files[0..n) instead of what was watched
 * before (directories kept are not restarted, so no change is missed).
 * A directory that cannot be watched is logged once. Returns the number of
 * files left out for lack of memory (0 normally). Copies what it keeps. */
int mg_watch_set(mg_watch_t *w, const char *const *files, size_t n);
/* Stops watching; the watcher frees itself once libuv has closed its
 * handles (run the loop). NULL is fine. */
void mg_watch_close(mg_watch_t *w);

#endif
