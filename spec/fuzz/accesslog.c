/* accesslog.c: fuzz target for the access-log writer (src/accesslog.c,
 * included here to read the lines it buffers; the Makefile links this
 * target without accesslog.o), fed what hooks set: the worker runs
 * spec/fuzz/accesslog.lua, whose on_request and on_route hooks set the
 * path (up to 255 times the fuzzed one), query and method from the input,
 * and a request goes through it. Lines accumulate from one input to the
 * next as in a running gateway, so a long line meets a nearly full buffer.
 *
 * The buffers' writes are taken here instead of libuv's thread pool
 * (uv_fs_write below), so that what was written is known exactly; each
 * completes at the end of the input, as if the file had taken it.
 *
 * Input: see accesslog.lua. Checks: each request adds exactly one line, a
 * strict JSON object (crypto.c's tokeniser: RFC 8259) ending with '\n'
 * of at most LOG_LINE_MAX bytes, all of it UTF-8 (as libc's C.UTF-8
 * locale reads it: mbrtowc), or none (dropped and counted).
 */
#include <locale.h>
#include <wchar.h>
#include <uv.h>

static int fuzz_fs_write(uv_loop_t *loop, uv_fs_t *req, uv_file fd, const uv_buf_t bufs[],
                         unsigned n, int64_t off, uv_fs_cb cb);
#define uv_fs_write fuzz_fs_write
#include "../../src/accesslog.c"
#undef uv_fs_write

#include "harness.h"
#include "mg_ffi.h"

static mg_worker_t *w;
static uv_fs_t *pending; /* the write in flight */
static uv_fs_cb pending_cb;
static mg_fuzz_out_t written; /* what it wrote */

static int fuzz_fs_write(uv_loop_t *loop, uv_fs_t *req, uv_file fd, const uv_buf_t bufs[],
                         unsigned n, int64_t off, uv_fs_cb cb)
{
    written.len = 0;
    for (unsigned i = 0; i < n; i++) {
        char *p = realloc(written.data, written.len + bufs[i].len);
        if (!p)
            abort();
        written.data = p;
        memcpy(written.data + written.len, bufs[i].base, bufs[i].len);
        written.len += bufs[i].len;
    }
    void *data = req->data;
    memset(req, 0, sizeof(*req));
    req->data = data;
    req->type = UV_FS;
    req->fs_type = UV_FS_WRITE;
    req->result = (ssize_t)written.len;
    req->bufs = req->bufsml;
    req->ptr = &req->statbuf;
    pending = req;
    pending_cb = cb;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    w = mg_fuzz_start("accesslog.lua");
    if (!w->log) {
        fprintf(stderr, "accesslog: no access log\n");
        exit(1);
    }
    uv_timer_stop(&w->log->timer); /* the lines stay in the buffer for us */
    if (!setlocale(LC_CTYPE, "C.UTF-8")) {
        fprintf(stderr, "accesslog: no C.UTF-8 locale\n");
        exit(1);
    }
    return 0;
}

/* Is the line well-formed UTF-8? (libc's decoder, not the writer's.) */
static int utf8_ok(const char *s, size_t n)
{
    mbstate_t st = { 0 };
    while (n > 0) {
        wchar_t wc;
        size_t k = mbrtowc(&wc, s, n, &st);
        if (k == (size_t)-1 || k == (size_t)-2)
            return 0;
        if (k == 0)
            k = 1; /* a NUL: the JSON check refuses it */
        s += k;
        n -= k;
    }
    return 1;
}

static void check(int ok, const char *what, const char *line, size_t len)
{
    if (!ok) {
        fprintf(stderr, "accesslog: %s\n%.*s\n", what, (int)(len > 2000 ? 2000 : len), line);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char req[] = "GET /r?orig=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    mg_accesslog_t *l = w->log;
    mg_fuzz_reset();
    mg_fuzz_set_input(data, size);
    while (pending) { /* one that a completion started: done too */
        uv_fs_t *r = pending;
        pending = NULL;
        pending_cb(r);
    }
    size_t mark = l->len[l->active];
    uint64_t dropped = l->dropped;
    mg_conn_t *c = mg_conn_open_memory(w, 18082, mg_fuzz_client_sink);
    if (!c)
        abort();
    mg_fuzz_feed(w, c, (const uint8_t *)req, sizeof(req) - 1, 0);
    mg_fuzz_close_all(w, c);
    mg_fuzz_set_input(NULL, 0);

    /* the new line: after mark in the buffer, or in the buffer that went
     * to be written (then from mark there), or at the start of the next */
    mg_fuzz_out_t line = { 0 };
    const uv_buf_t tail = uv_buf_init(l->buf[l->active] + (pending ? 0 : mark),
                                      (unsigned)(l->len[l->active] - (pending ? 0 : mark)));
    if (pending) {
        check(written.len >= mark, "less written than was buffered", written.data, written.len);
        line.data = malloc(written.len - mark + tail.len + 1);
        if (!line.data)
            abort();
        memcpy(line.data, written.data + mark, written.len - mark);
        line.len = written.len - mark;
    } else {
        line.data = malloc(tail.len + 1);
        if (!line.data)
            abort();
    }
    memcpy(line.data + line.len, tail.base, tail.len);
    line.len += tail.len;
    if (line.len == 0) {
        check(l->dropped == dropped + 1, "no line, and none counted as dropped", "", 0);
    } else {
        check(line.data[line.len - 1] == '\n' &&
                  memchr(line.data, '\n', line.len) == line.data + line.len - 1,
              "not one line", line.data, line.len);
        check(line.len <= LOG_LINE_MAX, "longer than a line's cap", line.data, line.len);
        check(utf8_ok(line.data, line.len), "not UTF-8", line.data, line.len);
        mg_json_tok_t toks[64];
        char *sbuf = malloc(line.len);
        if (!sbuf)
            abort();
        int n = mg_ffi_json_flat_object(line.data, line.len, toks, 64, sbuf, line.len);
        free(sbuf);
        check(n > 0, "not one flat JSON object", line.data, line.len);
    }
    free(line.data);
    if (pending) { /* the file took it all */
        uv_fs_t *r = pending;
        pending = NULL;
        pending_cb(r);
    }
    return 0;
}
