/* h2_conn.c: HTTP/2 from clients (h2_conn.h): an nghttp2 server session
 * per connection, each stream a request of the core that goes through the
 * same pipeline as an HTTP/1.1 one (model: h2o's lib/http2).
 *
 * Input: the connection hands over what it read (mg_h2_input); nghttp2
 * parses it and calls back here, inside nghttp2_session_mem_recv: a
 * stream's header fields become its request's head (h2_headers.c), which
 * goes to the pipeline when the block ends; body bytes go upstream (or wait
 * in the stream until the upstream is ready).
 *
 * Output: nothing the core hands over is written where it is handed over.
 * The protocol calls (the table at the end) only queue: nghttp2_submit_*
 * for heads, the stream's `out` buffer for body bytes. A session with
 * something to send is marked; the worker's prepare handle, which runs
 * once per loop turn before it waits for I/O, then runs nghttp2_session_send
 * for every marked session, and what it produces is gathered into one
 * write per session. So all the answers of a loop turn leave in one
 * syscall, and nghttp2's callbacks (a stream closing ends its request)
 * never run inside a call the core is making: a request ends only at
 * points where nothing above holds it (here, in the read path, in the
 * flush, in the connection's callbacks) or when the core says so (abort).
 *
 * Flow control follows the upstream (no automatic WINDOW_UPDATE): a
 * stream's body bytes are consumed (and so acknowledged to the client)
 * only once the upstream connection took them, or when they are dropped;
 * so a stream runs at most initial_window ahead of its upstream, a
 * connection at most connection_window. The other way, a stream keeps at
 * most OUT_BOUND of response bytes the client's window does not let out
 * yet before the upstream stops being read (pending), and the session
 * stops producing frames while the socket holds more than OUT_HIGH.
 *
 * Protection (docs/http2.md): nghttp2's own bounds (CONTINUATION frames
 * per header block, queued SETTINGS and PING acknowledgements, SETTINGS
 * entries, its reset rate as a backstop), and counters here over a window
 * of settings.http2.rate_window: client resets (Rapid Reset) and refused
 * heads against max_resets; SETTINGS, PING, PRIORITY, WINDOW_UPDATE,
 * empty DATA and unknown frames against max_control_frames. Past a bound,
 * or at a library flood error, the client gets GOAWAY ENHANCE_YOUR_CALM
 * and the connection closes. Header lists are bounded by limits.header_size
 * and header_count (431, per stream), streams by max_concurrent_streams,
 * slow readers and stalled writers by timeouts.send, slow bodies by
 * timeouts.body, an unfinished header block by timeouts.header.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <nghttp2/nghttp2.h>
#include "errlog.h"
#include "h1_writer.h"
#include "h2_conn.h"
#include "h2_headers.h"
#include "http.h"
#include "list.h"
#include "pipeline.h"
#include "upstream.h"

#define OUT_HIGH (64 * 1024)      /* socket bytes beyond which no frame is made */
#define OUT_BOUND (64 * 1024)     /* a stream's unsent body beyond which the upstream waits */
#define OUT_MAX (16u << 20)       /* ... and beyond which something is wrong: reset */
#define GATHER_CAP (96 * 1024)    /* frames gathered for one write */
#define FREE_STREAMS 256          /* stream structs a worker keeps for reuse */
#define HEAD_BUF 1024             /* a request head's first buffer (most fit) */
#define FREE_HEADS 256            /* ... and how many a worker keeps */
#define MEM_STEP 64               /* nghttp2's small allocations: size classes of */
#define MEM_CLASSES 16            /* 64 bytes, up to 1 KiB, */
#define MEM_KEEP 1024             /* each with up to this many free blocks kept */
#define MAX_FIELDS_STACK 64

typedef struct mg_h2_stream_s mg_h2_stream_t;

/* One stream. Owned by its session: linked in h->streams while nghttp2
 * has it open, then on h->dead until the next flush frees it (a pointer
 * to it may still be read by a caller of the core: current()). */
struct mg_h2_stream_s {
    mg_link_t link;
    mg_h2_stream_t *next_dead;
    mg_h2_t *h;
    int32_t id;
    mg_request_t *r;        /* its request, until that ends */
    mg_h2_head_t hb;        /* the head being read */
    mg_buf_t head;          /* the request head's bytes: r->data points here */
    mg_buf_t in;            /* body bytes the upstream is not ready for yet */
    mg_buf_t out;           /* response body bytes not sent yet (parsed: sent) */
    uint64_t unconsumed;    /* body bytes sent upstream, not acknowledged to the client */
    uint64_t body_at;       /* ms: the body last made progress */
    uint64_t sent_at;       /* ms: the response last made progress (or began to wait) */
    nghttp2_nv *trailers;   /* response trailers (in r's arena), sent after the body */
    size_t ntrailers;
    uint8_t trailer_block;  /* the header block being read is the request's trailers */
    uint8_t in_eof;         /* the client's END_STREAM came */
    uint8_t out_eof;        /* the last response body bytes were handed over */
    uint8_t submitted;      /* the response HEADERS were submitted */
    uint8_t no_body;        /* ... with END_STREAM: nothing follows */
    uint8_t deferred;       /* nghttp2 waits for body bytes (resume_data) */
    uint8_t core_done;      /* the core is done with the response (or aborted it) */
    uint8_t closed;         /* nghttp2 closed the stream */
    uint8_t throttled;      /* the upstream does not take the body now */
    uint8_t up_paused;      /* pending() told the upstream to wait */
    uint8_t rst_after;      /* answered before the client's body ended: RST_STREAM
                               NO_ERROR once the answer is out */
};

struct mg_h2_s {
    nghttp2_session *s;
    mg_worker_t *w;
    void *conn;
    const mg_h2_io_t *io;
    const mg_peer_t *peer;
    mg_link_t dirty_link;   /* in the worker's list of sessions to flush */
    mg_link_t streams;
    mg_h2_stream_t *dead;
    uint32_t nstreams;
    mg_http2_t set;         /* the settings it started with */
    mg_timeouts_t to;
    uint8_t dirty;          /* linked in the worker's list to flush */
    uint8_t closed;         /* the connection closed: nghttp2 is not called */
    uint8_t failed;         /* nghttp2 failed (a raw GOAWAY went): only closing is left */
    uint8_t goaway;         /* the last GOAWAY is submitted */
    uint8_t notice;         /* the reload's first GOAWAY is submitted */
    uint8_t preface_seen;   /* the client's SETTINGS came */
    uint8_t hb_open;        /* a header block is being read */
    uint8_t write_failed;
    uint8_t in_recv;
    const char *calm;       /* why a flood bound was passed (static), or NULL */
    uint64_t created_ms, idle_since, hb_since, stall_since;
    /* the flood counters of the current window */
    uint64_t win_start;
    uint64_t resets, control, data_sent, opened;
};

/* What a worker's sessions share: the flush, free stream structs, the
 * buffer frames are gathered in and the one response heads are translated
 * in. Made with its first session (its loop's thread only). */
typedef struct mem_block_s mem_block_t;
typedef struct mg_h2_worker_s {
    uv_prepare_t flush;
    int flushing;           /* the prepare handle is started */
    mg_link_t dirty;
    mg_h2_stream_t *free_streams;
    unsigned nfree;
    char **free_heads;      /* HEAD_BUF buffers for request heads */
    unsigned nheads;
    mem_block_t *mem[MEM_CLASSES + 1]; /* nghttp2's free blocks by class */
    unsigned nmem[MEM_CLASSES + 1];
    nghttp2_mem nmem_funcs;
    char *gather;
    size_t glen;
    nghttp2_session_callbacks *cbs;
    char *names;            /* lower-cased field names of one head */
    size_t names_cap;
} mg_h2_worker_t;

static const mg_proto_t h2_proto;
static void flush(mg_h2_t *h);
static void on_flush(uv_prepare_t *p);
static void stream_reset(mg_h2_stream_t *st, uint32_t code);

static uint64_t now_ms(const mg_h2_t *h) { return uv_now(&h->w->loop); }

static mg_h2_worker_t *hw_of(mg_worker_t *w) { return w->h2; }

/* ---- memory: nghttp2's allocations and request heads --------------------------
 * nghttp2 allocates a few small blocks per stream (the stream, each frame
 * queued, the copy of a head's fields) and frees them when it is done:
 * malloc and free were a twentieth of a request's instructions. They come
 * from per-worker free lists by size class instead (a session is only
 * ever used on its worker's thread); a block says its class in a header
 * in front of it. */

struct mem_block_s {
    union {
        struct {
            uint32_t cls;   /* 1..MEM_CLASSES, or 0: a large one of `cap` bytes */
            uint32_t cap;
        } h;
        max_align_t align;
        mem_block_t *next;  /* while free */
    } u;
};

static void *mem_malloc(size_t size, void *ud)
{
    mg_h2_worker_t *hw = ud;
    size_t cls = size ? (size + MEM_STEP - 1) / MEM_STEP : 1;
    mem_block_t *m;
    if (cls <= MEM_CLASSES && hw->mem[cls]) {
        m = hw->mem[cls];
        hw->mem[cls] = m->u.next;
        hw->nmem[cls]--;
    } else if (cls <= MEM_CLASSES) {
        m = malloc(sizeof(*m) + cls * MEM_STEP);
    } else if (size <= UINT32_MAX) {
        m = malloc(sizeof(*m) + size);
        cls = 0;
    } else {
        return NULL;
    }
    if (!m)
        return NULL;
    m->u.h.cls = (uint32_t)cls;
    m->u.h.cap = cls ? (uint32_t)(cls * MEM_STEP) : (uint32_t)size;
    return m + 1;
}

static void mem_free(void *p, void *ud)
{
    mg_h2_worker_t *hw = ud;
    if (!p)
        return;
    mem_block_t *m = (mem_block_t *)p - 1;
    uint32_t cls = m->u.h.cls;
    if (cls && hw->nmem[cls] < MEM_KEEP) {
        m->u.next = hw->mem[cls];
        hw->mem[cls] = m;
        hw->nmem[cls]++;
        return;
    }
    free(m);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t total = n * size;
    if (total > MEM_CLASSES * MEM_STEP && total <= UINT32_MAX) {
        /* calloc's own: pages fresh from the system are not written (an
         * idle session's stream map stays untouched) */
        mem_block_t *m = calloc(1, sizeof(*m) + total);
        if (!m)
            return NULL;
        m->u.h.cls = 0;
        m->u.h.cap = (uint32_t)total;
        return m + 1;
    }
    void *p = mem_malloc(total, ud);
    if (p)
        memset(p, 0, total);
    return p;
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    if (!p)
        return mem_malloc(size, ud);
    mem_block_t *m = (mem_block_t *)p - 1;
    size_t cap = m->u.h.cap;
    if (size <= cap && m->u.h.cls)
        return p;
    void *n = mem_malloc(size, ud);
    if (!n)
        return NULL;
    memcpy(n, p, cap < size ? cap : size);
    mem_free(p, ud);
    return n;
}

/* A request head's first buffer (h2_headers.c grows it by realloc). */
static void head_buf_get(mg_h2_worker_t *hw, mg_buf_t *b)
{
    b->data = hw->nheads ? hw->free_heads[--hw->nheads] : malloc(HEAD_BUF);
    b->cap = b->data ? HEAD_BUF : 0;
    b->len = b->parsed = 0;
}

static void head_buf_put(mg_h2_worker_t *hw, mg_buf_t *b)
{
    if (b->data && b->cap == HEAD_BUF && hw->nheads < FREE_HEADS)
        hw->free_heads[hw->nheads++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->cap = b->len = b->parsed = 0;
}

/* ---- marking sessions to flush ------------------------------------------------ */

static void mark(mg_h2_t *h)
{
    mg_h2_worker_t *hw = hw_of(h->w);
    if (h->dirty || h->closed || h->failed)
        return;
    h->dirty = 1;
    mg_list_push(&hw->dirty, &h->dirty_link);
    if (!hw->flushing) {
        uv_prepare_start(&hw->flush, on_flush);
        hw->flushing = 1;
    }
}

static void unmark(mg_h2_t *h)
{
    if (h->dirty) {
        mg_list_remove(&h->dirty_link);
        h->dirty = 0;
    }
}

static void on_flush(uv_prepare_t *p)
{
    mg_h2_worker_t *hw = p->data;
    while (!mg_list_empty(&hw->dirty)) {
        mg_h2_t *h = mg_container_of(hw->dirty.next, mg_h2_t, dirty_link);
        unmark(h);
        flush(h);
    }
    uv_prepare_stop(p);
    hw->flushing = 0;
}

/* ---- streams ------------------------------------------------------------------ */

static mg_h2_stream_t *stream_new(mg_h2_t *h, int32_t id)
{
    mg_h2_worker_t *hw = hw_of(h->w);
    mg_h2_stream_t *st = hw->free_streams;
    if (st) {
        hw->free_streams = st->next_dead;
        hw->nfree--;
    } else if (!(st = malloc(sizeof(*st)))) {
        return NULL;
    }
    memset(st, 0, sizeof(*st));
    st->h = h;
    st->id = id;
    mg_list_push(&h->streams, &st->link);
    h->nstreams++;
    return st;
}

/* Gives back the body bytes st still holds against the windows. */
static void release_windows(mg_h2_stream_t *st)
{
    mg_h2_t *h = st->h;
    uint64_t held = st->unconsumed + (st->in.len - st->in.parsed);
    st->unconsumed = 0;
    if (st->in.data) {
        st->in.len = st->in.parsed = 0;
        mg_buf_put(&h->w->bufs, &st->in);
    }
    if (held && !h->closed && !h->failed) {
        if (st->closed)
            nghttp2_session_consume_connection(h->s, held);
        else
            nghttp2_session_consume(h->s, st->id, held);
        mark(h);
    }
}

/* The request ends: logged (when it got as far as an id) and freed. */
static void end_request(mg_h2_stream_t *st)
{
    mg_request_t *r = st->r;
    if (!r)
        return;
    st->r = NULL;
    if (r->request_id_len > 0)
        mg_pipeline_log(r);
    mg_pipeline_free(r);
}

/* nghttp2 is done with st: its request ends (499 when it was never
 * answered), its buffers go back, and the struct waits for the next flush. */
static void stream_closed(mg_h2_stream_t *st)
{
    mg_h2_t *h = st->h;
    if (st->closed)
        return;
    st->closed = 1;
    if (st->r && st->r->status == 0)
        st->r->status = 499; /* the client went away (or was reset) unanswered */
    end_request(st);
    release_windows(st);
    head_buf_put(hw_of(h->w), &st->head);
    mg_buf_put(&h->w->bufs, &st->out);
    mg_list_remove(&st->link);
    h->nstreams--;
    if (h->nstreams == 0)
        h->idle_since = now_ms(h);
    st->next_dead = h->dead;
    h->dead = st;
    mark(h);
}

static void reap(mg_h2_t *h)
{
    mg_h2_worker_t *hw = hw_of(h->w);
    while (h->dead) {
        mg_h2_stream_t *st = h->dead;
        h->dead = st->next_dead;
        if (hw && hw->nfree < FREE_STREAMS) {
            st->next_dead = hw->free_streams;
            hw->free_streams = st;
            hw->nfree++;
        } else {
            free(st);
        }
    }
}

/* ---- flood counters ------------------------------------------------------------ */

static void window_roll(mg_h2_t *h)
{
    uint64_t now = now_ms(h);
    if (now - h->win_start >= h->set.rate_window) {
        h->win_start = now;
        h->resets = h->control = h->data_sent = h->opened = 0;
    }
}

/* A bound was passed: the session ends with GOAWAY ENHANCE_YOUR_CALM (the
 * callback that saw it fails nghttp2_session_mem_recv, see input). */
static int calm(mg_h2_t *h, const char *why)
{
    if (!h->calm)
        h->calm = why;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* ---- output ---------------------------------------------------------------------- */

static int gather_write(mg_h2_t *h)
{
    mg_h2_worker_t *hw = hw_of(h->w);
    if (hw->glen == 0 || h->write_failed)
        return h->write_failed ? -1 : 0;
    uv_buf_t b = uv_buf_init(hw->gather, (unsigned)hw->glen);
    hw->glen = 0;
    if (h->io->write(h->conn, &b, 1) < 0) {
        h->write_failed = 1;
        return -1;
    }
    return 0;
}

/* Makes room for n gathered bytes: writes what is gathered when full.
 * 0, NGHTTP2_ERR_WOULDBLOCK (the socket is full: later) or a failure. */
static int gather_room(mg_h2_t *h, size_t n)
{
    mg_h2_worker_t *hw = hw_of(h->w);
    if (hw->glen + n <= GATHER_CAP)
        return 0;
    if (gather_write(h) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return h->io->pending(h->conn) >= OUT_HIGH ? NGHTTP2_ERR_WOULDBLOCK : 0;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    mg_h2_t *h = ud;
    mg_h2_worker_t *hw = hw_of(h->w);
    int rc = gather_room(h, len);
    if (rc)
        return rc;
    memcpy(hw->gather + hw->glen, data, len); /* len <= a frame: below GATHER_CAP */
    hw->glen += len;
    return (ssize_t)len;
}

/* A DATA frame (NGHTTP2_DATA_FLAG_NO_COPY): its header and the stream's
 * bytes, copied into the gather buffer once (nghttp2's own frame buffer is
 * never filled with body bytes). */
static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *ud)
{
    mg_h2_t *h = ud;
    mg_h2_worker_t *hw = hw_of(h->w);
    mg_h2_stream_t *st = source->ptr;
    int rc = gather_room(h, 9 + length);
    if (rc)
        return rc;
    memcpy(hw->gather + hw->glen, framehd, 9);
    memcpy(hw->gather + hw->glen + 9, st->out.data + st->out.parsed, length);
    hw->glen += 9 + length;
    st->out.parsed += (uint32_t)length;
    if (st->out.parsed == st->out.len) {
        st->out.len = st->out.parsed = 0;
        mg_buf_put(&h->w->bufs, &st->out); /* taken again when more comes */
    }
    st->sent_at = now_ms(h);
    if (st->r)
        st->r->bytes_sent += length;
    window_roll(h);
    h->data_sent++;
    return 0;
}

/* The response body as nghttp2 asks for it: what `out` holds (sent by
 * on_send_data), deferred while it is empty and more is to come. */
static ssize_t body_source(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    mg_h2_stream_t *st = source->ptr;
    size_t avail = st->out.len - st->out.parsed;
    size_t n = avail < length ? avail : length;
    if (avail == 0 && !st->out_eof) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == avail && st->out_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->ntrailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(s, id, st->trailers, st->ntrailers);
        }
    }
    return (ssize_t)n;
}

/* The session's frames, while the socket takes them. */
static void send_frames(mg_h2_t *h)
{
    if (h->closed || h->write_failed || h->io->pending(h->conn) >= OUT_HIGH)
        return;
    int rv = nghttp2_session_send(h->s);
    gather_write(h);
    if (rv < 0 && !h->write_failed) {
        mg_log(MG_LOG_WARN, "worker %d: HTTP/2 client %s: %s\n", h->w->id, h->peer->client_ip,
               nghttp2_strerror(rv));
        h->write_failed = 1;
    }
    if (h->io->pending(h->conn) > 0 && !h->stall_since)
        h->stall_since = now_ms(h);
}

/* The next deadline: the earliest wait on the client that can expire. */
static void rearm(mg_h2_t *h)
{
    uint64_t now = now_ms(h), d = UINT64_MAX;
#define AT(since, ms)                                                                          \
    do {                                                                                       \
        uint64_t t_ = (since) + (ms);                                                          \
        if (t_ < d)                                                                            \
            d = t_;                                                                            \
    } while (0)
    if (h->stall_since)
        AT(h->stall_since, h->to.send);
    if (!h->preface_seen)
        AT(h->created_ms, h->to.header);
    if (h->hb_open)
        AT(h->hb_since, h->to.header);
    if (h->nstreams == 0 && !h->goaway)
        AT(h->idle_since, h->to.keepalive);
    for (mg_link_t *l = h->streams.next; l != &h->streams; l = l->next) {
        mg_h2_stream_t *st = mg_container_of(l, mg_h2_stream_t, link);
        mg_request_t *r = st->r;
        if (r && !st->in_eof && !st->throttled &&
            (r->state == MG_RS_BODY || r->state == MG_RS_BUFFER))
            AT(st->body_at, h->to.body);
        if (st->out.len > st->out.parsed)
            AT(st->sent_at, h->to.send);
    }
#undef AT
    h->io->set_deadline(h->conn, d == UINT64_MAX ? UINT64_MAX : d > now ? d - now : 0);
}

/* After any input or event: send what is queued, hand back-pressure back
 * to the upstreams that waited, close a finished session, free the dead
 * streams, set the next deadline. */
static void flush(mg_h2_t *h)
{
    if (h->closed || h->failed)
        return;
    unmark(h);
    send_frames(h);
    if (h->closed)
        return;
    if (h->write_failed) {
        h->io->close_after_write(h->conn);
        return;
    }
    for (mg_link_t *l = h->streams.next; l != &h->streams; l = l->next) {
        mg_h2_stream_t *st = mg_container_of(l, mg_h2_stream_t, link);
        if (st->up_paused && st->out.len - st->out.parsed <= OUT_BOUND) {
            st->up_paused = 0;
            if (st->r && st->r->up)
                mg_proxy_client_drained(st->r->up);
        }
    }
    if (!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s)) {
        reap(h);
        h->io->close_after_write(h->conn); /* may close (and end) h now */
        return;
    }
    reap(h);
    rearm(h);
}

/* ---- input: nghttp2's callbacks ----------------------------------------------- */

static mg_h2_stream_t *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

/* Every frame header, also of frames nghttp2 ignores: the flood counters. */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    mg_h2_t *h = ud;
    window_roll(h);
    switch (hd->type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
        return 0;
    case NGHTTP2_DATA:
        if (hd->length > 0 || (hd->flags & NGHTTP2_FLAG_END_STREAM))
            return 0;
        break; /* an empty DATA frame that ends nothing */
    case NGHTTP2_RST_STREAM:
        return ++h->resets > h->set.max_resets ? calm(h, "stream resets (Rapid Reset)") : 0;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
        if (hd->flags & NGHTTP2_FLAG_ACK)
            return 0;
        break;
    default: /* PRIORITY, WINDOW_UPDATE, PUSH_PROMISE, GOAWAY, unknown types */
        break;
    }
    /* one PRIORITY per stream and two WINDOW_UPDATEs per DATA frame sent
     * are what clients send along */
    if (++h->control > h->set.max_control_frames + h->opened + 2 * h->data_sent)
        return calm(h, "control frames (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA)");
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    mg_h2_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    h->hb_open = 1;
    h->hb_since = now_ms(h);
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        mg_h2_stream_t *st = stream_of(s, f->hd.stream_id);
        if (st)
            st->trailer_block = 1;
        return 0;
    }
    mg_h2_stream_t *st = stream_new(h, f->hd.stream_id);
    mg_request_t *r = st ? mg_request_new(h->w) : NULL;
    if (!r) {
        if (st) {
            mg_list_remove(&st->link);
            h->nstreams--;
            st->next_dead = h->dead;
            h->dead = st;
            st->closed = 1;
        }
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    }
    h->opened++;
    st->r = r;
    r->proto = &h2_proto;
    r->conn = st;
    r->peer = h->peer;
    head_buf_get(hw_of(h->w), &st->head);
    mg_h2_head_begin(&st->hb, r, &st->head, NULL, &r->g->cfg->limits);
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    mg_h2_stream_t *st = stream_of(s, f->hd.stream_id);
    if (!st || !st->r || st->trailer_block)
        return 0; /* request trailers mean nothing to an HTTP/1.1 upstream */
    mg_h2_head_field(&st->hb, (const char *)name, nl, (const char *)value, vl);
    return 0;
}

static void body_end(mg_h2_stream_t *st);
static void send_up(mg_h2_stream_t *st, const char *p, size_t n);

/* The request's head is complete: to the pipeline, or refused. */
static void head_done(mg_h2_stream_t *st, int end_stream)
{
    mg_h2_t *h = st->h;
    mg_request_t *r = st->r;
    int rc = mg_h2_head_end(&st->hb, end_stream);
    st->in_eof = end_stream ? 1 : 0;
    st->body_at = now_ms(h);
    if (rc) {
        /* a refused head counts with the resets: a client that makes the
         * gateway answer 4xx by the thousand is as busy as one resetting */
        ++h->resets;
        r->state = MG_RS_LOCAL;
        r->response_close = 1;
        mg_request_respond_error(r, rc, st->hb.reason);
        return;
    }
    mg_pipeline_head(r);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    mg_h2_t *h = ud;
    mg_h2_stream_t *st;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        h->hb_open = 0;
        if (!(st = stream_of(s, f->hd.stream_id)))
            break;
        if (st->trailer_block) {
            st->trailer_block = 0;
            if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
                body_end(st);
        } else if (f->headers.cat == NGHTTP2_HCAT_REQUEST && st->r) {
            head_done(st, (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
            if (h->resets > h->set.max_resets)
                return calm(h, "refused requests");
        }
        break;
    case NGHTTP2_DATA:
        if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(s, f->hd.stream_id)))
            body_end(st);
        break;
    case NGHTTP2_SETTINGS:
        h->preface_seen = 1;
        break;
    case NGHTTP2_PING:
        if ((f->hd.flags & NGHTTP2_FLAG_ACK) && h->notice && !h->goaway) {
            /* a round trip after the notice: streams the client opened
             * before it saw the notice are in; no more */
            nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            h->goaway = 1;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Body bytes of a stream. */
static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *ud)
{
    mg_h2_t *h = ud;
    mg_h2_stream_t *st = stream_of(s, id);
    mg_request_t *r = st ? st->r : NULL;
    if (!r || st->core_done || r->state == MG_RS_LOCAL || r->state == MG_RS_DONE) {
        nghttp2_session_consume(s, id, len); /* dropped */
        return 0;
    }
    st->body_at = now_ms(h);
    r->body_received += len;
    uint64_t max = r->route ? r->route->max_body : r->g->cfg->limits.body;
    if (r->body_received > max) {
        nghttp2_session_consume(s, id, len);
        if (r->response_started) {
            r->proto->abort(r);
            return 0;
        }
        if (r->up) {
            mg_proxy_detach(r->up, 0); /* a body cut short: never reused */
            r->up = NULL;
        }
        r->state = MG_RS_LOCAL;
        mg_request_respond_error(r, 413, "request body too large");
        return 0;
    }
    if (r->state == MG_RS_BUFFER) {
        /* req:body(): kept whole (bounded by max above) */
        nghttp2_session_consume(s, id, len);
        if (mg_request_body_append(r, (const char *)data, len) < 0) {
            r->state = MG_RS_LOCAL;
            mg_request_respond_error(r, 503, "out of memory");
        }
        return 0;
    }
    if (r->state == MG_RS_BODY && r->up) {
        send_up(st, (const char *)data, len);
        return 0;
    }
    /* the upstream is not there yet: kept, not acknowledged (so at most a
     * window of it) */
    mg_buf_t *b = &st->in;
    if (!b->data)
        mg_buf_get(&h->w->bufs, b);
    if (b->data && b->len + len > b->cap)
        mg_buf_grow(&h->w->bufs, b, b->len + len > 2 * b->cap ? b->len + len : 2 * b->cap);
    if (!b->data || b->len + len > b->cap) {
        nghttp2_session_consume(s, id, len);
        r->state = MG_RS_LOCAL;
        mg_request_respond_error(r, 503, "out of memory");
        return 0;
    }
    memcpy(b->data + b->len, data, len);
    b->len += (uint32_t)len;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    mg_h2_stream_t *st = stream_of(s, id);
    if (st)
        stream_closed(st);
    return 0;
}

/* Our END_STREAM went out before the client's body ended: stop it. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        mg_h2_stream_t *st = stream_of(s, f->hd.stream_id);
        if (st && st->rst_after && !st->in_eof)
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* ---- the request body upstream ---------------------------------------------------- */

/* Body bytes to the upstream (framed there: chunked to an HTTP/1.1 one
 * when the client gave no length, proxy.c); acknowledged to the client
 * unless the upstream pushes back. */
static void send_up(mg_h2_stream_t *st, const char *p, size_t n)
{
    mg_h2_t *h = st->h;
    mg_request_t *r = st->r;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    r->body_started = 1;
    if (mg_proxy_send_body(r->up, &b, 1) < 0) {
        nghttp2_session_consume(h->s, st->id, n);
        mg_pipeline_upstream_failed(r, 502, "upstream write failed");
        return;
    }
    if (st->throttled) {
        st->unconsumed += n;
    } else {
        nghttp2_session_consume(h->s, st->id, n);
        mark(h);
    }
}

/* The whole body went upstream: the wait for the answer begins. */
static void body_sent(mg_h2_stream_t *st)
{
    mg_request_t *r = st->r;
    r->state = MG_RS_WAIT;
    mg_proxy_request_sent(r->up); /* (ends a chunked body, proxy.c) */
}

/* The client's END_STREAM. */
static void body_end(mg_h2_stream_t *st)
{
    mg_request_t *r = st->r;
    st->in_eof = 1;
    if (!r || st->core_done)
        return;
    if (r->state == MG_RS_BODY && r->up) {
        body_sent(st);
    } else if (r->state == MG_RS_BUFFER) {
        r->body_buffered = 1;
        r->state = MG_RS_UPSTREAM;
        mg_pipeline_body_read(r);
    } else if (r->state == MG_RS_LOCAL) {
        r->state = MG_RS_DONE;
    }
    /* MG_RS_UPSTREAM: resume_body finds it ended */
}

/* ---- the protocol table the core calls (request.h) -------------------------------- */

static mg_h2_stream_t *st_of(const mg_request_t *r) { return r->conn; }

/* The fields of a head as nghttp2 takes them (copied on submit), in the
 * worker's buffers: names lower-cased. */
static nghttp2_nv *to_nv(mg_h2_t *h, const mg_h2_field_t *f, size_t n, nghttp2_nv *nv)
{
    for (size_t i = 0; i < n; i++)
        nv[i] = (nghttp2_nv){ (uint8_t *)f[i].name, (uint8_t *)f[i].value, f[i].name_len,
                              f[i].value_len, NGHTTP2_NV_FLAG_NONE };
    return nv;
}

/* Room for the lower-cased names of n fields. */
static char *names_room(mg_h2_t *h, const mg_hfield_t *t, size_t n)
{
    mg_h2_worker_t *hw = hw_of(h->w);
    size_t need = 1;
    for (size_t i = 0; i < n; i++)
        need += t[i].name_len;
    if (need > hw->names_cap) {
        char *p = realloc(hw->names, need);
        if (!p)
            return NULL;
        hw->names = p;
        hw->names_cap = need;
    }
    return hw->names;
}

static int start_response(mg_request_t *r, const mg_resp_t *res)
{
    mg_h2_stream_t *st = st_of(r);
    mg_h2_t *h = st->h;
    if (st->submitted || st->closed || h->closed || res->status < 200)
        return -1; /* no 1xx through here (a 101 cannot happen: no upgrades) */
    mg_h2_field_t stack[MAX_FIELDS_STACK], *f = stack;
    nghttp2_nv nstack[MAX_FIELDS_STACK], *nv = nstack;
    size_t cap = res->nheaders + 2;
    char num[24];
    char *lower = names_room(h, res->headers, res->nheaders);
    if (cap > MAX_FIELDS_STACK) {
        f = mg_request_alloc(r, cap * sizeof(*f));
        nv = mg_request_alloc(r, cap * sizeof(*nv));
    }
    if (!lower || !f || !nv)
        return -1;
    size_t n = mg_h2_response_fields(res, f, lower, num);
    int no_body = r->head_method || !mg_status_has_body(res->status) || res->body_len == 0;
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = body_source };
    if (nghttp2_submit_response(h->s, st->id, to_nv(h, f, n, nv), n, no_body ? NULL : &prd) != 0)
        return -1;
    st->submitted = 1;
    st->no_body = (uint8_t)no_body;
    st->out_eof = (uint8_t)no_body;
    st->sent_at = now_ms(h);
    r->status = res->status;
    r->response_started = 1;
    mark(h);
    return 0;
}

static int send_body(mg_request_t *r, const uv_buf_t *bufs, unsigned n, int last)
{
    mg_h2_stream_t *st = st_of(r);
    mg_h2_t *h = st->h;
    if (!st->no_body) {
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += bufs[i].len;
        mg_buf_t *b = &st->out;
        if (total) {
            if (b->data && b->parsed > 0 && b->len + total > b->cap) {
                memmove(b->data, b->data + b->parsed, b->len - b->parsed);
                b->len -= b->parsed;
                b->parsed = 0;
            }
            if (!b->data)
                mg_buf_get(&h->w->bufs, b);
            if (b->data && b->len + total > b->cap && b->len + total <= OUT_MAX) {
                size_t cap = b->cap;
                while (cap < b->len + total)
                    cap *= 2;
                mg_buf_grow(&h->w->bufs, b, cap);
            }
            if (!b->data || b->len + total > b->cap) {
                r->proto->abort(r); /* out of memory, or an upstream past every bound */
                return -1;
            }
            if (b->len == b->parsed)
                st->sent_at = now_ms(h); /* the wait for the client's window begins */
            for (unsigned i = 0; i < n; i++) {
                memcpy(b->data + b->len, bufs[i].base, bufs[i].len);
                b->len += (uint32_t)bufs[i].len;
            }
        }
    }
    if (last)
        st->out_eof = 1;
    if (st->deferred && (last || st->out.len > st->out.parsed)) {
        st->deferred = 0;
        nghttp2_session_resume_data(h->s, st->id);
    }
    mark(h);
    return 0;
}

static int send_trailers(mg_request_t *r, const mg_hfield_t *t, size_t n)
{
    mg_h2_stream_t *st = st_of(r);
    if (!st->no_body && n) {
        /* kept (copied: t is the caller's) until the body's end is sent */
        mg_h2_field_t stack[MAX_FIELDS_STACK];
        char *lower = names_room(st->h, t, n);
        nghttp2_nv *nv = mg_request_alloc(r, n * sizeof(*nv));
        size_t k = 0;
        if (lower && nv && n <= MAX_FIELDS_STACK) {
            k = mg_h2_trailer_fields(t, n, stack, lower);
            for (size_t i = 0; i < k; i++) {
                char *p = mg_request_alloc(r, stack[i].name_len + stack[i].value_len + 1);
                if (!p) {
                    k = 0;
                    break;
                }
                memcpy(p, stack[i].name, stack[i].name_len);
                memcpy(p + stack[i].name_len, stack[i].value, stack[i].value_len);
                nv[i] = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)p + stack[i].name_len,
                                      stack[i].name_len, stack[i].value_len,
                                      NGHTTP2_NV_FLAG_NONE };
            }
        }
        st->trailers = k ? nv : NULL;
        st->ntrailers = k;
    }
    return send_body(r, NULL, 0, 1);
}

static size_t pending(const mg_request_t *r)
{
    mg_h2_stream_t *st = st_of(r);
    size_t q = st->out.len - st->out.parsed;
    if (q <= OUT_BOUND)
        return 0;
    st->up_paused = 1;
    return q;
}

static void throttle(mg_request_t *r, int on)
{
    mg_h2_stream_t *st = st_of(r);
    mg_h2_t *h = st->h;
    int was = st->throttled;
    st->throttled = on ? 1 : 0;
    if (!on && was) {
        st->body_at = now_ms(h); /* the wait was the upstream's, not the client's */
        if (st->unconsumed && !h->closed) {
            nghttp2_session_consume(h->s, st->id, st->unconsumed);
            st->unconsumed = 0;
            mark(h);
        }
    }
}

/* Ends r now and resets its stream. */
static void abort_stream(mg_request_t *r)
{
    mg_h2_stream_t *st = st_of(r);
    st->core_done = 1;
    end_request(st);
    stream_reset(st, NGHTTP2_INTERNAL_ERROR);
}

static void stream_reset(mg_h2_stream_t *st, uint32_t code)
{
    mg_h2_t *h = st->h;
    if (st->closed || h->closed)
        return;
    nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, code);
    mark(h);
}

/* The core is done with the answer: the rest of the client's body, if
 * any, is not wanted. */
static void core_done(mg_h2_stream_t *st)
{
    mg_request_t *r = st->r;
    st->core_done = 1;
    if (r->has_body && !st->in_eof) {
        st->rst_after = 1;
        release_windows(st);
    }
    r->state = MG_RS_DONE;
}

static void answered(mg_request_t *r) { core_done(st_of(r)); }

static void response_done(mg_request_t *r) { core_done(st_of(r)); }

/* The upstream connection is ready for the body. */
static void resume_body(mg_request_t *r)
{
    mg_h2_stream_t *st = st_of(r);
    mg_h2_t *h = st->h;
    if (r->body_buffered) {
        /* read whole by a hook, or for a retry: one piece */
        if (r->body_len > 0) {
            uv_buf_t b = uv_buf_init(r->body_buf, (unsigned)r->body_len);
            r->body_started = 1;
            if (mg_proxy_send_body(r->up, &b, 1) < 0) {
                mg_pipeline_upstream_failed(r, 502, "upstream write failed");
                return;
            }
        }
        r->state = MG_RS_WAIT;
        mg_proxy_request_sent(r->up);
        return;
    }
    r->state = MG_RS_BODY;
    if (r->expect_continue && !r->response_started && !st->in_eof) {
        nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE };
        nghttp2_submit_headers(h->s, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
        mark(h);
    }
    st->body_at = now_ms(h);
    mg_buf_t *b = &st->in;
    if (b->len > b->parsed) {
        /* what came before the upstream was ready */
        size_t n = b->len - b->parsed;
        b->parsed = b->len;
        send_up(st, b->data, n);
        if (st->r != r || r->state != MG_RS_BODY)
            return; /* the upstream failed */
    }
    if (b->data) {
        b->len = b->parsed = 0;
        mg_buf_put(&h->w->bufs, b);
    }
    if (st->in_eof)
        body_sent(st);
}

/* req:body(): the whole body into r->body_buf (r->state is MG_RS_BUFFER). */
static int read_body(mg_request_t *r)
{
    mg_h2_stream_t *st = st_of(r);
    mg_h2_t *h = st->h;
    if (r->known[MG_H_EXPECT] && !st->in_eof) {
        mg_span_t v = r->headers[r->known[MG_H_EXPECT] - 1].value;
        if (v.len == 12 && strncasecmp(mg_request_data(r, v), "100-continue", 12) == 0) {
            nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE };
            nghttp2_submit_headers(h->s, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
        }
    }
    mg_buf_t *b = &st->in;
    size_t n = b->len - b->parsed;
    if (n) {
        if (mg_request_body_append(r, b->data + b->parsed, n) < 0)
            return -1;
        nghttp2_session_consume(h->s, st->id, n);
    }
    if (b->data) {
        b->len = b->parsed = 0;
        mg_buf_put(&h->w->bufs, b);
    }
    st->body_at = now_ms(h);
    mark(h);
    if (st->in_eof) {
        r->body_buffered = 1;
        r->state = MG_RS_UPSTREAM;
        mg_pipeline_body_read(r); /* wakes the hook later */
    }
    return 0;
}

/* Expect: 100-continue is answered once the upstream is ready. */
static int prepare_body(mg_request_t *r)
{
    if (r->known[MG_H_EXPECT] && r->has_body) {
        mg_span_t v = r->headers[r->known[MG_H_EXPECT] - 1].value;
        if (v.len == 12 && strncasecmp(mg_request_data(r, v), "100-continue", 12) == 0)
            r->expect_continue = 1;
    }
    return 1;
}

static void proceed(void *conn, const mg_request_t *r)
{
    mg_h2_stream_t *st = conn;
    if (st->r == r)
        mark(st->h);
}

static const mg_request_t *current(void *conn)
{
    const mg_h2_stream_t *st = conn;
    return st->closed || st->h->closed ? NULL : st->r;
}

static void no_upgrade(mg_request_t *r) {}

static void start_tunnel(mg_request_t *r) { abort_stream(r); }

static struct mg_tls_conn_s *stream_tls(const mg_request_t *r)
{
    const mg_h2_t *h = st_of(r)->h;
    return h->io->tls(h->conn);
}

static const mg_proto_t h2_proto = {
    .start_response = start_response,
    .send_body = send_body,
    .send_trailers = send_trailers,
    .pending = pending,
    .throttle = throttle,
    .abort = abort_stream,
    .answered = answered,
    .response_done = response_done,
    .resume_body = resume_body,
    .start_tunnel = start_tunnel,
    .read_body = read_body,
    .prepare_body = prepare_body,
    .proceed = proceed,
    .current = current,
    .no_upgrade = no_upgrade,
    .tls = stream_tls,
};

/* ---- the session ------------------------------------------------------------------ */

static mg_h2_worker_t *worker_state(mg_worker_t *w)
{
    if (w->h2)
        return w->h2;
    mg_h2_worker_t *hw = calloc(1, sizeof(*hw));
    if (!hw || !(hw->gather = malloc(GATHER_CAP)) ||
        !(hw->free_heads = malloc(FREE_HEADS * sizeof(char *))) ||
        nghttp2_session_callbacks_new(&hw->cbs) != 0) {
        if (hw) {
            free(hw->gather);
            free(hw->free_heads);
        }
        free(hw);
        return NULL;
    }
    hw->nmem_funcs = (nghttp2_mem){ hw, mem_malloc, mem_free, mem_calloc, mem_realloc };
    nghttp2_session_callbacks *cb = hw->cbs;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    mg_list_init(&hw->dirty);
    uv_prepare_init(&w->loop, &hw->flush);
    hw->flush.data = hw;
    w->h2 = hw;
    return hw;
}

void mg_h2_worker_free(mg_worker_t *w)
{
    mg_h2_worker_t *hw = w->h2;
    if (!hw)
        return;
    while (hw->free_streams) {
        mg_h2_stream_t *st = hw->free_streams;
        hw->free_streams = st->next_dead;
        free(st);
    }
    while (hw->nheads)
        free(hw->free_heads[--hw->nheads]);
    free(hw->free_heads);
    for (int c = 1; c <= MEM_CLASSES; c++)
        while (hw->mem[c]) {
            mem_block_t *m = hw->mem[c];
            hw->mem[c] = m->u.next;
            free(m);
        }
    nghttp2_session_callbacks_del(hw->cbs);
    free(hw->gather);
    free(hw->names);
    free(hw);
    w->h2 = NULL;
}

mg_h2_t *mg_h2_new(mg_worker_t *w, void *conn, const mg_h2_io_t *io, const mg_peer_t *peer)
{
    mg_h2_worker_t *hw = worker_state(w);
    mg_h2_t *h = hw ? calloc(1, sizeof(*h)) : NULL;
    nghttp2_option *opt = NULL;
    if (!h || nghttp2_option_new(&opt) != 0) {
        free(h);
        return NULL;
    }
    const mg_config_t *cfg = w->g->cfg;
    h->w = w;
    h->conn = conn;
    h->io = io;
    h->peer = peer;
    h->set = cfg->http2;
    h->to = cfg->timeouts;
    mg_list_init(&h->streams);
    h->created_ms = h->idle_since = h->win_start = now_ms(h);
    /* the body follows the upstream (consume); closed streams are not kept
     * for a priority tree nobody uses; nghttp2's reset limiter is a
     * backstop behind max_resets */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* responses go without the HPACK dynamic table (as nginx sends them):
     * no search of it per field, no entries kept per connection */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_option_set_stream_reset_rate_limit(
        opt, 2 * h->set.max_resets + 100,
        2 * h->set.max_resets * 1000 / (h->set.rate_window ? h->set.rate_window : 1) + 33);
    int rv = nghttp2_session_server_new3(&h->s, hw->cbs, h, opt, &hw->nmem_funcs);
    nghttp2_option_del(opt);
    if (rv != 0) {
        free(h);
        return NULL;
    }
    const mg_limits_t *l = &cfg->limits;
    uint64_t list = l->header_size + l->request_line + 32 * (l->header_count + 4);
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)h->set.max_concurrent_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)h->set.initial_window },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, list > UINT32_MAX ? UINT32_MAX : (uint32_t)list },
        { NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
    };
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)h->set.connection_window) != 0) {
        nghttp2_session_del(h->s);
        free(h);
        return NULL;
    }
    mark(h);
    return h;
}

/* A frame nghttp2 cannot send any more (its session failed): GOAWAY
 * written by hand, then the connection closes. */
static void raw_goaway(mg_h2_t *h, uint32_t code)
{
    uint32_t last = (uint32_t)nghttp2_session_get_last_proc_stream_id(h->s) & 0x7fffffffu;
    uint8_t f[17] = { 0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0 };
    f[9] = (uint8_t)(last >> 24), f[10] = (uint8_t)(last >> 16);
    f[11] = (uint8_t)(last >> 8), f[12] = (uint8_t)last;
    f[13] = (uint8_t)(code >> 24), f[14] = (uint8_t)(code >> 16);
    f[15] = (uint8_t)(code >> 8), f[16] = (uint8_t)code;
    uv_buf_t b = uv_buf_init((char *)f, sizeof(f));
    h->io->write(h->conn, &b, 1);
}

void mg_h2_input(mg_h2_t *h, const char *data, size_t n)
{
    if (h->closed || h->failed)
        return;
    h->in_recv = 1;
    ssize_t rv = nghttp2_session_mem_recv(h->s, (const uint8_t *)data, n);
    h->in_recv = 0;
    if (h->closed)
        return;
    if (rv >= 0) {
        flush(h);
        return;
    }
    /* the session is over: nghttp2 may not be asked to send any more */
    uint32_t code = NGHTTP2_PROTOCOL_ERROR;
    const char *why = nghttp2_strerror((int)rv);
    if (h->calm || rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
        code = NGHTTP2_ENHANCE_YOUR_CALM;
        why = h->calm ? h->calm
                      : rv == NGHTTP2_ERR_FLOODED ? "SETTINGS or PING flood (acknowledgements queued)"
                                                  : "CONTINUATION flood";
    } else if (rv == NGHTTP2_ERR_NOMEM) {
        code = NGHTTP2_INTERNAL_ERROR;
    }
    mg_log(code == NGHTTP2_ENHANCE_YOUR_CALM ? MG_LOG_WARN : MG_LOG_INFO,
           "worker %d: HTTP/2 client %s: %s: GOAWAY %s\n", h->w->id, h->peer->client_ip, why,
           nghttp2_http2_strerror(code));
    h->failed = 1;
    unmark(h);
    raw_goaway(h, code);
    h->io->close_after_write(h->conn);
}

void mg_h2_drained(mg_h2_t *h)
{
    h->stall_since = 0;
    if (!h->closed && !h->failed)
        flush(h);
}

void mg_h2_timeout(mg_h2_t *h)
{
    if (h->closed || h->failed)
        return;
    uint64_t now = now_ms(h);
    if (h->stall_since && now - h->stall_since >= h->to.send) {
        h->io->close(h->conn); /* the client does not read at all */
        return;
    }
    if ((!h->preface_seen && now - h->created_ms >= h->to.header) ||
        (h->hb_open && now - h->hb_since >= h->to.header)) {
        /* no preface, or a header block left open (CONTINUATION dribbled) */
        nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
        h->goaway = 1;
        flush(h);
        return;
    }
    if (h->nstreams == 0 && !h->goaway && now - h->idle_since >= h->to.keepalive) {
        nghttp2_session_terminate_session(h->s, NGHTTP2_NO_ERROR);
        h->goaway = 1;
        flush(h);
        return;
    }
    mg_link_t *l = h->streams.next;
    while (l != &h->streams) {
        mg_h2_stream_t *st = mg_container_of(l, mg_h2_stream_t, link);
        l = l->next;
        mg_request_t *r = st->r;
        if (r && !st->in_eof && !st->throttled &&
            (r->state == MG_RS_BODY || r->state == MG_RS_BUFFER) &&
            now - st->body_at >= h->to.body) {
            if (r->response_started) {
                abort_stream(r);
                continue;
            }
            if (r->up) {
                mg_proxy_detach(r->up, 0); /* a body cut short: never reused */
                r->up = NULL;
            }
            r->state = MG_RS_LOCAL;
            mg_request_respond_error(r, 408, "request timeout");
            continue;
        }
        if (st->out.len > st->out.parsed && now - st->sent_at >= h->to.send) {
            /* the client's window stays shut (a zero-window reader) */
            if (st->r && !st->core_done) {
                st->core_done = 1;
                end_request(st);
            }
            stream_reset(st, NGHTTP2_CANCEL);
        }
    }
    flush(h);
}

void mg_h2_shutdown(mg_h2_t *h)
{
    if (h->closed || h->failed)
        return;
    if (!h->goaway) {
        nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                              NGHTTP2_NO_ERROR, NULL, 0);
        h->goaway = 1;
    }
    flush(h);
}

void mg_h2_reload(mg_h2_t *h)
{
    if (h->closed || h->failed || h->goaway || h->notice)
        return;
    /* RFC 9113 6.8: a GOAWAY with the highest id, then a PING; the final
     * GOAWAY once its ACK is back (on_frame_recv) */
    nghttp2_submit_shutdown_notice(h->s);
    nghttp2_submit_ping(h->s, NGHTTP2_FLAG_NONE, NULL);
    h->notice = 1;
    flush(h);
}

void mg_h2_close(mg_h2_t *h)
{
    if (h->closed)
        return;
    unmark(h);
    h->closed = 1; /* nghttp2 is not called any more */
    /* every request ends; the streams' memory goes with the session */
    while (!mg_list_empty(&h->streams)) {
        mg_h2_stream_t *st = mg_container_of(h->streams.next, mg_h2_stream_t, link);
        stream_closed(st);
    }
}

void mg_h2_free(mg_h2_t *h)
{
    if (!h)
        return;
    mg_h2_close(h);
    reap(h);
    nghttp2_session_del(h->s);
    free(h);
}

int mg_h2_preface(const char *p, size_t n)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t k = n < sizeof(preface) - 1 ? n : sizeof(preface) - 1;
    if (memcmp(p, preface, k) != 0)
        return -1;
    return k == sizeof(preface) - 1 ? 1 : 0;
}
