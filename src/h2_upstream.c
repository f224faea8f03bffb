/* h2_upstream.c: HTTP/2 to upstreams with nghttp2 (h2_upstream.h).
 *
 * nghttp2 is driven by hand: bytes read from the session's transport go
 * to nghttp2_session_mem_recv, and what it wants to send comes from
 * nghttp2_session_mem_send into the transport (flush()), which copies what
 * the socket does not take. No nghttp2 callback frees a session: a session
 * that must close while nghttp2 runs is closed once it returns (c->busy).
 *
 * Ownership: a session owns its transport and nghttp2 session and is freed
 * in its handles' close callback; a stream's state (mg_h2up_stream_t) is
 * owned by its mg_upconn_t (u->h2s) and freed by mg_h2up_stream_close.
 */
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "errlog.h"
#include "grpc.h"
#include "h2_upstream.h"
#include "header_names.h"
#include "http.h"
#include "tls_client.h"
#include "upstream.h"

/* Streams a session takes before the server's SETTINGS say how many it
 * allows (RFC 9113 6.5.2 recommends at least 100). */
#define ASSUMED_STREAMS 100
/* The connection window given to each upstream: DATA of one connection is
 * given back at once (streams are held by their own windows). */
#define CONN_WINDOW (4 * 1024 * 1024)
/* Bytes queued on the session's socket before flush() stops asking
 * nghttp2 for more (it goes on when the queue drains). */
#define SOCKET_QUEUE (256 * 1024)
/* Trailer fields kept per stream. */
#define MAX_TRAILERS 32

typedef struct h2conn_s h2conn_t;

/* A piece of request body waiting for the upstream's window. */
typedef struct chunk_s {
    struct chunk_s *next;
    size_t len, off;
    char data[];
} chunk_t;

struct mg_h2up_stream_s {
    mg_upconn_t *u;            /* the stream as proxy.c sees it (u->h2s is this) */
    h2conn_t *c;               /* its session; NULL once it left it */
    mg_link_t link;            /* in c->streams (submitted) or c->waiting */
    int32_t id;                /* its stream id once submitted, else 0 */
    uint8_t has_body;          /* DATA frames follow the HEADERS */
    uint8_t body_end;          /* the request body is all in the queue */
    uint8_t deferred;          /* the data source said "not yet" */
    uint8_t throttled;         /* the client connection was told to stop */
    uint8_t head_done;         /* the final response head went to proxy.c */
    uint8_t in_trailers;       /* the header block being read is the trailers */
    uint8_t ended;             /* END_STREAM came (the answer is whole) */
    uint8_t failed;            /* the header block was refused: reset */
    chunk_t *q, *q_tail;       /* request body not yet framed */
    size_t queued;
    size_t unconsumed;         /* DATA given to the client, not yet given back */
    /* while an on_response hook waits: what came meanwhile (held) */
    char *held;
    size_t held_len, held_cap;
    /* the trailers, their bytes after the head's in u->buf */
    mg_hfield_t trailers[MAX_TRAILERS];
    size_t ntrailers;
};
typedef struct mg_h2up_stream_s stream_t;

struct h2conn_s {
    mg_upconn_t t;             /* the transport: tcp, TLS, wq, read buffer, timer */
    nghttp2_session *ng;
    mg_link_t link;            /* in its pool's h2 list */
    mg_link_t streams;         /* streams submitted */
    mg_link_t waiting;         /* streams attached before the session is ready */
    uint32_t nstreams;         /* both */
    uint8_t ready;             /* connected, and the server's SETTINGS came */
    uint8_t goaway;            /* no new streams (GOAWAY either way, or draining) */
    uint8_t closing;
    uint8_t busy;              /* inside nghttp2: close later */
    uint8_t close_later;
    uint8_t handles;
    uint8_t in_pool;
    uint8_t retired;           /* its pool's target left, drains, or this session
                                  serves one stream of an older generation's
                                  request: takes no new stream, closes once it
                                  has none (h2_upstream.h) */
    uint32_t served;           /* streams that got an answer on it */
};

static void conn_close(h2conn_t *c, int kind, int err, const char *detail);
static void on_timer(uv_timer_t *tm);

/* c is to close, but not under whoever called (nghttp2, or a request in
 * the middle of handing over its body): its timer closes it from the loop. */
static void close_soon(h2conn_t *c)
{
    c->close_later = 1;
    uv_timer_start(&c->t.timer, on_timer, 0, 0);
}
static void flush(h2conn_t *c);
static void dispatch_waiting(h2conn_t *c);

static h2conn_t *conn_of(mg_upconn_t *t) { return mg_container_of(t, h2conn_t, t); }

/* The streams c takes: what the server's SETTINGS said, or before they
 * came what the target's last ones said (the pool learned it), else
 * ASSUMED_STREAMS. */
static uint32_t stream_limit(h2conn_t *c)
{
    if (!c->ready)
        return c->t.pool->h2_limit ? c->t.pool->h2_limit : ASSUMED_STREAMS;
    return nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

/* ---- streams leaving a session ------------------------------------------ */

static void stream_detach(stream_t *s)
{
    h2conn_t *c = s->c;
    if (!c)
        return;
    mg_list_remove(&s->link);
    if (s->id > 0 && c->ng)
        nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
    s->c = NULL;
    c->nstreams--;
    if (c->nstreams == 0 && !c->closing) {
        if (c->retired) {
            close_soon(c); /* maybe under nghttp2 or a loop over its streams */
            return;
        }
        /* idle: kept for keepalive_timeout */
        mg_upconn_t *t = &c->t;
        t->deadline = uv_now(&t->w->loop) + t->pool->u->keepalive_timeout;
    }
}

static void queue_free(stream_t *s)
{
    while (s->q) {
        chunk_t *k = s->q;
        s->q = k->next;
        free(k);
    }
    s->q_tail = NULL;
    s->queued = 0;
}

void mg_h2up_stream_close(mg_upconn_t *u)
{
    stream_t *s = u->h2s;
    if (!s)
        return;
    h2conn_t *c = s->c;
    if (c && s->id > 0 && !s->ended && !c->closing) {
        /* the request gave up on it (client gone, timeout, retry) */
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    }
    if (c && s->id > 0 && s->unconsumed && !c->closing)
        nghttp2_session_consume_stream(c->ng, s->id, s->unconsumed);
    stream_detach(s);
    if (c && !c->busy)
        flush(c);
    queue_free(s);
    free(s->held);
    free(s);
    u->h2s = NULL;
}

/* ---- the request ---------------------------------------------------------- */

/* DATA for a stream: the queued body, END_STREAM once it is all out. */
static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* its request is gone: reset */
    size_t n = 0;
    while (s->q && n < length) {
        chunk_t *k = s->q;
        size_t take = k->len - k->off < length - n ? k->len - k->off : length - n;
        memcpy(buf + n, k->data + k->off, take);
        n += take;
        k->off += take;
        if (k->off == k->len) {
            s->q = k->next;
            if (!s->q)
                s->q_tail = NULL;
            free(k);
        }
    }
    s->queued -= n;
    if (!s->q && s->body_end)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (n == 0) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* Names nghttp2 must not get (RFC 9113 8.2.2) or gets as pseudo-headers. */
static int connection_specific(int tok)
{
    return tok == MG_HN_CONNECTION || tok == MG_HN_KEEP_ALIVE || tok == MG_HN_PROXY_CONNECTION ||
           tok == MG_HN_TRANSFER_ENCODING || tok == MG_HN_UPGRADE || tok == MG_HN_TE ||
           tok == MG_HN_HOST || tok == MG_HN_HTTP2_SETTINGS;
}

#define MAX_NV 512
static _Thread_local nghttp2_nv nva[MAX_NV];

static nghttp2_nv nv(const char *n, size_t nl, const char *v, size_t vl)
{
    nghttp2_nv x = { (uint8_t *)n, (uint8_t *)v, nl, vl, NGHTTP2_NV_FLAG_NONE };
    return x;
}

/* Does the client's TE ask for trailers (or is the request gRPC, which
 * needs them)? Then the upstream gets "te: trailers", the one TE value
 * HTTP/2 allows. */
static int wants_trailers(const mg_request_t *r)
{
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const mg_header_t *h = &r->headers[i];
        if (r->htok[i] == MG_HN_TE &&
            mg_token_listed(mg_request_data(r, h->value), h->value.len, "trailers", 8))
            return 1;
        if (r->htok[i] == MG_HN_CONTENT_TYPE &&
            mg_grpc_content_type(mg_request_data(r, h->value), h->value.len))
            return 1;
    }
    return 0;
}

const char *mg_h2up_submit(mg_upconn_t *u, char *head, size_t len, int has_body)
{
    stream_t *s = u->h2s;
    h2conn_t *c = s->c;
    mg_request_t *r = u->r;
    if (!c || c->closing)
        return "upstream connection lost";
    if (r->is_upgrade)
        return "an upgrade cannot go to an HTTP/2 upstream";
    /* "METHOD target HTTP/1.1\r\n" */
    char *end = head + len;
    char *sp1 = memchr(head, ' ', len);
    char *eol = sp1 ? memchr(sp1, '\n', (size_t)(end - sp1)) : NULL;
    char *sp2 = eol ? memrchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2)
        return "request head unfit for HTTP/2";
    size_t n = 4;
    const char *authority = NULL;
    size_t authority_len = 0;
    const mg_upstream_t *up = u->pool->u;
    for (char *line = eol + 1; line < end && *line != '\r';) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *colon = nl ? memchr(line, ':', (size_t)(nl - line)) : NULL;
        if (!colon)
            return "request head unfit for HTTP/2";
        size_t name_len = (size_t)(colon - line);
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = nl - 1; /* the CR */
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (size_t i = 0; i < name_len; i++) /* HTTP/2 names are lower case */
            if (line[i] >= 'A' && line[i] <= 'Z')
                line[i] = (char)(line[i] + 32);
        int tok = mg_hname_lookup(line, name_len);
        if (tok == MG_HN_HOST && !authority) {
            authority = v;
            authority_len = (size_t)(ve - v);
        } else if (!connection_specific(tok)) {
            if (n >= MAX_NV - 1)
                return "request head has too many fields for HTTP/2";
            nva[n++] = nv(line, name_len, v, (size_t)(ve - v));
        }
        line = nl + 1;
    }
    if (!authority) {
        authority = mg_target_authority(u->pool->t);
        authority_len = strlen(authority);
    }
    if (wants_trailers(r))
        nva[n++] = nv("te", 2, "trailers", 8);
    nva[0] = nv(":method", 7, head, (size_t)(sp1 - head));
    nva[1] = nv(":scheme", 7, up->tls ? "https" : "http", up->tls ? 5 : 4);
    nva[2] = nv(":authority", 10, authority, authority_len);
    nva[3] = nv(":path", 5, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_body };
    s->has_body = (uint8_t)has_body;
    int32_t id = nghttp2_submit_request(c->ng, NULL, nva, n, has_body ? &prd : NULL, s);
    if (id < 0)
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? "upstream connection out of stream ids"
                                                          : "HTTP/2 request refused by nghttp2";
    s->id = id;
    mg_list_remove(&s->link);
    mg_list_push(&c->streams, &s->link);
    flush(c);
    return NULL;
}

int mg_h2up_send_body(mg_upconn_t *u, const uv_buf_t *bufs, unsigned n)
{
    stream_t *s = u->h2s;
    h2conn_t *c = s ? s->c : NULL;
    if (!c || c->closing || s->id <= 0)
        return -1;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    chunk_t *k = malloc(sizeof(*k) + total);
    if (!k)
        return -1;
    k->next = NULL;
    k->len = total;
    k->off = 0;
    for (unsigned i = 0, at = 0; i < n; at += bufs[i].len, i++)
        memcpy(k->data + at, bufs[i].base, bufs[i].len);
    if (s->q_tail)
        s->q_tail->next = k;
    else
        s->q = k;
    s->q_tail = k;
    s->queued += total;
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(c->ng, s->id);
    }
    flush(c);
    if (u->h2s && s->queued > MG_H2UP_BODY_QUEUE && !s->throttled && u->r) {
        s->throttled = 1; /* the upstream's window is shut: so is the client's read */
        u->r->proto->throttle(u->r, 1);
    }
    return 0;
}

int mg_h2up_body_end(mg_upconn_t *u)
{
    stream_t *s = u->h2s;
    h2conn_t *c = s ? s->c : NULL;
    if (!c || c->closing)
        return -1;
    if (!s->has_body || s->body_end)
        return 0;
    s->body_end = 1;
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(c->ng, s->id);
    }
    flush(c);
    return 0;
}

void mg_h2up_client_drained(mg_upconn_t *u)
{
    stream_t *s = u->h2s;
    if (!s || !s->c || !s->unconsumed || s->c->closing)
        return;
    nghttp2_session_consume_stream(s->c->ng, s->id, s->unconsumed);
    s->unconsumed = 0;
    flush(s->c);
}

/* ---- writing ---------------------------------------------------------------- */

/* Streams whose request body drained below half the queue bound let their
 * client read again. */
static void unthrottle(h2conn_t *c)
{
    for (mg_link_t *l = c->streams.next; l != &c->streams;) {
        stream_t *s = mg_container_of(l, stream_t, link);
        l = l->next;
        if (s->throttled && s->queued < MG_H2UP_BODY_QUEUE / 2 && s->u->r) {
            s->throttled = 0;
            s->u->r->proto->throttle(s->u->r, 0);
        }
    }
}

static _Thread_local char out[65536];

/* Writes what nghttp2 has to send, in pieces of up to sizeof(out). */
static void flush(h2conn_t *c)
{
    if (c->closing || c->busy || c->close_later || !c->t.connected)
        return;
    size_t have = 0;
    int throttled = 0;
    c->busy = 1;
    while (c->t.wq.pending < SOCKET_QUEUE) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->ng, &p);
        if (n < 0) {
            c->close_later = 1; /* closed from the loop, not under the caller */
            break;
        }
        if (n > 0 && have + (size_t)n <= sizeof(out)) {
            memcpy(out + have, p, (size_t)n);
            have += (size_t)n;
            continue;
        }
        if (have) {
            uv_buf_t b = uv_buf_init(out, (unsigned)have);
            have = 0;
            if (mg_upconn_write(&c->t, &b, 1) < 0) {
                c->close_later = 1; /* frames nghttp2 counts as sent are lost */
                break;
            }
        }
        if (n == 0)
            break;
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n); /* larger than out */
        if (mg_upconn_write(&c->t, &b, 1) < 0) {
            c->close_later = 1;
            break;
        }
    }
    if (have) {
        uv_buf_t b = uv_buf_init(out, (unsigned)have);
        if (mg_upconn_write(&c->t, &b, 1) < 0)
            c->close_later = 1;
    }
    c->busy = 0;
    if (c->close_later) {
        close_soon(c);
        return;
    }
    for (mg_link_t *l = c->streams.next; l != &c->streams && !throttled; l = l->next)
        throttled = mg_container_of(l, stream_t, link)->throttled;
    if (throttled)
        unthrottle(c);
    if (c->goaway && c->nstreams == 0 && !nghttp2_session_want_write(c->ng))
        conn_close(c, MG_STREAM_LOST, 0, NULL); /* drained after a GOAWAY */
}

static void on_drained(mg_wq_t *q)
{
    h2conn_t *c = conn_of(mg_container_of(q, mg_upconn_t, wq));
    flush(c);
}

static void on_write_error(mg_wq_t *q, int status)
{
    h2conn_t *c = conn_of(mg_container_of(q, mg_upconn_t, wq));
    conn_close(c, MG_STREAM_LOST, status, "upstream write failed");
}

/* ---- nghttp2's callbacks ------------------------------------------------------ */

static stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    stream_t *s = stream_of(ng, f->hd.stream_id);
    if (!s || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    mg_upconn_t *u = s->u;
    if (s->head_done) {
        s->in_trailers = 1;
        s->ntrailers = 0;
        return 0;
    }
    /* a response head (again after a 1xx): the block starts afresh */
    mg_h1r_init(&u->h1);
    u->nheaders = 0;
    u->status_text = (mg_span_t){ 0, 0 };
    if (!u->buf.data)
        mg_buf_get(&u->w->bufs, &u->buf);
    u->buf.len = u->buf.parsed = 0;
    return u->buf.data ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* Appends "name: value\r\n" to u->buf (the form the HTTP/1 writer copies
 * whole); returns its offset, or -1 when it does not fit. */
static long put_line(mg_upconn_t *u, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
    if (!u->buf.data || u->buf.len + nl + vl + 4 > u->buf.cap)
        return -1;
    long at = u->buf.len;
    char *o = mg_put_header(u->buf.data + at, (const char *)n, nl, (const char *)v, vl);
    u->buf.len = (uint32_t)(o - u->buf.data);
    return at;
}

static int refuse_block(stream_t *s, const char *why)
{
    s->failed = 1;
    s->u->h1.err = why;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream */
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    stream_t *s = stream_of(ng, f->hd.stream_id);
    if (!s || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    mg_upconn_t *u = s->u;
    if (namelen && name[0] == ':') {
        /* nghttp2 checked the pseudo-headers: :status alone, 3 digits */
        if (!s->in_trailers && namelen == 7 && memcmp(name, ":status", 7) == 0)
            u->h1.status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        return 0;
    }
    long at = put_line(u, name, namelen, value, valuelen);
    if (at < 0)
        return refuse_block(s, "response head too large");
    if (s->in_trailers) {
        if (s->ntrailers == MAX_TRAILERS)
            return refuse_block(s, "too many trailer fields");
        const char *b = u->buf.data + at;
        s->trailers[s->ntrailers++] =
            mg_hfield(b, namelen, b + namelen + 2, valuelen, mg_hname_lookup(b, namelen));
        return 0;
    }
    if (u->nheaders == MG_UP_MAX_HEADERS)
        return refuse_block(s, "too many response header fields");
    uint32_t i = u->nheaders++;
    u->h1.nheaders = u->nheaders; /* on_head takes it from there */
    u->headers[i].name = (mg_span_t){ (uint32_t)at, (uint32_t)namelen };
    u->headers[i].value = (mg_span_t){ (uint32_t)(at + (long)namelen + 2), (uint32_t)valuelen };
    int tok = mg_hname_lookup((const char *)name, namelen);
    u->htok[i] = (uint8_t)tok;
    if (tok == MG_HN_CONTENT_LENGTH) {
        uint64_t cl = 0;
        for (size_t k = 0; k < valuelen; k++)
            cl = cl * 10 + (uint64_t)(value[k] - '0'); /* nghttp2 checked the digits */
        u->h1.has_length = 1;
        u->h1.content_length = cl;
    }
    return 0;
}

/* The stream's answer is whole: to proxy.c (unless a hook waits). */
static void stream_ended(stream_t *s)
{
    s->ended = 1;
    if (s->u->hook_paused)
        return; /* mg_h2up_hook_resumed ends it */
    mg_proxy_stream_end(s->u, s->ntrailers ? s->trailers : NULL, s->ntrailers);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->ready) {
        c->ready = 1;
        dispatch_waiting(c);
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        /* no new streams here; those above last_stream_id are closed by
         * nghttp2 as refused (on_stream_close), and tried again elsewhere */
        c->goaway = 1;
        return 0;
    }
    stream_t *s = f->hd.stream_id ? stream_of(ng, f->hd.stream_id) : NULL;
    if (!s)
        return 0;
    mg_upconn_t *u = s->u;
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS && !s->in_trailers) {
        if (!u->got_response_bytes)
            mg_proxy_answer_began(u);
        if (end && !u->h1.has_length) {
            /* a head that ends the stream has no body: a gRPC
             * "trailers-only" answer stays one (its grpc-status in the
             * head an HTTP/2 client reads as the trailers) */
            u->h1.has_length = 1;
            u->h1.content_length = 0;
        }
        int rc = mg_proxy_stream_head(u);
        if (rc < 0)
            return 0; /* u ended (and left this session) */
        if (rc == 1) {
            if (end) /* a 1xx cannot end the stream */
                mg_proxy_stream_failed(u, MG_STREAM_BAD, 0, "a 1xx answer ended its stream");
            return 0;
        }
        s->head_done = 1;
        if (end)
            stream_ended(s);
    } else if (f->hd.type == NGHTTP2_HEADERS) {
        if (!end) {
            mg_proxy_stream_failed(u, MG_STREAM_BAD, 0, "trailers without END_STREAM");
            return 0;
        }
        stream_ended(s);
    } else if (f->hd.type == NGHTTP2_DATA && end && s->head_done) {
        stream_ended(s);
    }
    return 0;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *ud)
{
    h2conn_t *c = ud;
    nghttp2_session_consume_connection(ng, len); /* streams hold by their own windows */
    stream_t *s = stream_of(ng, id);
    if (!s || !s->head_done) {
        if (!s)
            nghttp2_session_consume_stream(ng, id, len); /* gone: dropped */
        return 0;
    }
    mg_upconn_t *u = s->u;
    if (u->hook_paused) {
        /* held until the hook is done: at most the stream's window */
        if (s->held_len + len > s->held_cap) {
            size_t cap = s->held_cap ? s->held_cap * 2 : 16384;
            while (cap < s->held_len + len)
                cap *= 2;
            char *p = realloc(s->held, cap);
            if (!p) {
                mg_proxy_stream_failed(u, MG_STREAM_BAD, 0, "out of memory");
                return 0;
            }
            s->held = p;
            s->held_cap = cap;
        }
        memcpy(s->held + s->held_len, data, len);
        s->held_len += len;
        s->unconsumed += len;
        return 0;
    }
    int rc = mg_proxy_stream_data(u, (const char *)data, len);
    if (rc < 0)
        return 0;
    s = u->h2s;
    if (!s || !s->c)
        return 0;
    if (rc == 1 && !s->unconsumed)
        nghttp2_session_consume_stream(ng, id, len); /* the client keeps up */
    else
        s->unconsumed += len; /* given back when the client drains */
    (void)c;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    stream_t *s = stream_of(ng, id);
    if (!s)
        return 0;
    stream_detach(s);
    if (s->ended)
        return 0; /* the answer went on (or waits for its hook) */
    mg_upconn_t *u = s->u;
    if (error_code == NGHTTP2_REFUSED_STREAM && !s->head_done)
        mg_proxy_stream_failed(u, MG_STREAM_REFUSED, 0, NULL);
    else if (s->failed)
        mg_proxy_stream_failed(u, MG_STREAM_BAD, 0, u->h1.err);
    else
        mg_proxy_stream_failed(u, MG_STREAM_RESET, 0, nghttp2_http2_strerror(error_code));
    return 0;
}

/* A request nghttp2 could not send (GOAWAY came first): not processed. */
static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int lib_error,
                             void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    stream_t *s = stream_of(ng, f->hd.stream_id);
    if (!s)
        return 0;
    stream_detach(s);
    mg_proxy_stream_failed(s->u, MG_STREAM_REFUSED, 0, NULL);
    return 0;
}

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;
static uv_once_t callbacks_once = UV_ONCE_INIT;

static void make_callbacks(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, on_frame_not_send);
    nghttp2_option_new(&options);
    nghttp2_option_set_no_auto_window_update(options, 1); /* the client's pace decides */
}

/* ---- the session's life ------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    h2conn_t *c = conn_of(h->data);
    if (--c->handles > 0)
        return;
    if (c->t.buf.data)
        mg_buf_put(&c->t.w->bufs, &c->t.buf);
    if (c->ng)
        nghttp2_session_del(c->ng);
    free(c);
}

/* Fails every stream still on c (kind: how) and closes it. */
static void conn_close(h2conn_t *c, int kind, int err, const char *detail)
{
    if (c->closing)
        return;
    if (c->busy) {
        close_soon(c);
        return;
    }
    c->closing = 1;
    if (c->in_pool) {
        mg_list_remove(&c->link);
        c->in_pool = 0;
    }
    mg_pool_closing(&c->t);
    mg_link_t *lists[2] = { &c->waiting, &c->streams };
    for (int i = 0; i < 2; i++)
        while (!mg_list_empty(lists[i])) {
            stream_t *s = mg_container_of(lists[i]->next, stream_t, link);
            stream_detach(s);
            /* a stream that got nothing on a session that answered
             * others was not processed when the session went */
            int k = kind;
            if (kind == MG_STREAM_LOST && !s->u->got_response_bytes && s->id == 0)
                k = MG_STREAM_REFUSED;
            if (!s->ended)
                mg_proxy_stream_failed(s->u, k, err, detail);
        }
    mg_upconn_io_close(&c->t);
    c->t.wq.closed = 1;
    uv_close((uv_handle_t *)&c->t.timer, on_closed);
    uv_close((uv_handle_t *)&c->t.tcp, on_closed);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    h2conn_t *c = conn_of(st->data);
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        conn_close(c, MG_STREAM_LOST, nread == UV_EOF ? 0 : (int)nread,
                   nread == UV_EPROTO ? mg_upconn_tls_error(&c->t)
                   : nread == UV_EOF  ? "upstream closed the connection"
                                      : "upstream connection failed");
        return;
    }
    c->busy = 1;
    ssize_t rc = nghttp2_session_mem_recv(c->ng, (const uint8_t *)c->t.buf.data, (size_t)nread);
    c->busy = 0;
    c->t.buf.len = 0;
    if (rc < 0) {
        conn_close(c, MG_STREAM_BAD, 0, nghttp2_strerror((int)rc));
        return;
    }
    flush(c);
    if (c->close_later) /* asked for by a callback: a loop callback may close */
        conn_close(c, MG_STREAM_LOST, 0, NULL);
}

/* The timer: the connect's limit, then the idle limit. */
static void on_timer(uv_timer_t *tm)
{
    h2conn_t *c = conn_of(tm->data);
    uint64_t now = uv_now(&c->t.w->loop);
    if (c->closing)
        return;
    if (c->close_later) {
        conn_close(c, MG_STREAM_LOST, 0, NULL);
        return;
    }
    if (!c->ready) {
        conn_close(c, MG_STREAM_TIMEOUT, 0, NULL);
        return;
    }
    if (c->nstreams == 0 && now >= c->t.deadline) {
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        c->goaway = 1;
        flush(c);
        conn_close(c, MG_STREAM_LOST, 0, NULL);
        return;
    }
    uint64_t next = c->nstreams == 0 && c->t.deadline > now ? c->t.deadline - now
                                                            : c->t.pool->u->keepalive_timeout;
    uv_timer_start(&c->t.timer, on_timer, next, 0);
}

static void session_start(h2conn_t *c)
{
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, MG_H2UP_WINDOW },
    };
    c->t.connected = 1;
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    /* (a session without a socket, spec/fuzz, is fed by mg_h2up_feed) */
    if (!c->t.wq.sink && mg_upconn_read_start(&c->t, mg_upconn_alloc, on_read) < 0) {
        conn_close(c, MG_STREAM_CONNECT, 0, "cannot read the upstream connection");
        return;
    }
    flush(c); /* the preface and SETTINGS; streams wait for the server's */
}

static void on_tls(mg_upconn_t *t, const char *err)
{
    h2conn_t *c = conn_of(t);
    if (c->closing)
        return;
    size_t n = 0;
    const char *alpn = err ? NULL : mg_tls_link_alpn(t->tls, &n);
    if (!err && !(n == 2 && memcmp(alpn, "h2", 2) == 0))
        err = "the upstream did not agree to HTTP/2 by ALPN (it selected no \"h2\")";
    if (err) {
        conn_close(c, MG_STREAM_TLS, 0, err);
        return;
    }
    session_start(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    h2conn_t *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, MG_STREAM_CONNECT, status, NULL);
        return;
    }
    uv_tcp_nodelay(&c->t.tcp, 1);
    int tls = mg_upconn_tls_start(&c->t, on_tls);
    if (tls < 0)
        conn_close(c, MG_STREAM_TLS, tls, "upstream TLS setup failed");
    else if (tls == 0)
        session_start(c);
}

/* A session of pool p, in its list, its handles open, not connected
 * (NULL: out of memory). */
static h2conn_t *conn_alloc(mg_pool_t *p)
{
    uv_once(&callbacks_once, make_callbacks);
    h2conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    mg_upconn_t *t = &c->t;
    t->w = p->w;
    mg_pool_move(t, p); /* counted in p while open (h2_upstream.h) */
    mg_list_init(&t->link);
    mg_list_init(&c->streams);
    mg_list_init(&c->waiting);
    if (nghttp2_session_client_new2(&c->ng, callbacks, c, options) != 0) {
        mg_pool_closing(t);
        free(c);
        return NULL;
    }
    uv_tcp_init(&p->w->loop, &t->tcp);
    uv_timer_init(&p->w->loop, &t->timer);
    t->tcp.data = t;
    t->timer.data = t;
    c->handles = 2;
    mg_wq_init(&t->wq, (uv_stream_t *)&t->tcp, on_drained, on_write_error);
    mg_list_push(&p->h2, &c->link);
    c->in_pool = 1;
    return c;
}

static h2conn_t *conn_new(mg_pool_t *p, int *err)
{
    h2conn_t *c = conn_alloc(p);
    if (!c) {
        *err = UV_ENOMEM;
        return NULL;
    }
    mg_upconn_t *t = &c->t;
    t->connect_req.data = c;
    int rc = uv_tcp_connect(&t->connect_req, &t->tcp, (struct sockaddr *)&p->addr, on_connect);
    if (rc < 0) {
        *err = rc;
        c->closing = 1; /* nothing on it yet: close quietly */
        mg_list_remove(&c->link);
        c->in_pool = 0;
        mg_pool_closing(t);
        uv_close((uv_handle_t *)&t->timer, on_closed);
        uv_close((uv_handle_t *)&t->tcp, on_closed);
        return NULL;
    }
    uv_timer_start(&t->timer, on_timer, p->u->connect_timeout, 0);
    return c;
}

void *mg_h2up_session_memory(mg_pool_t *p, mg_wq_sink_fn sink)
{
    h2conn_t *c = conn_alloc(p);
    if (!c)
        return NULL;
    c->t.wq.sink = sink;
    session_start(c); /* the preface and SETTINGS go to the sink */
    return c;
}

int mg_h2up_feed(void *session, const char *data, size_t n)
{
    h2conn_t *c = session;
    uv_buf_t b = uv_buf_init(NULL, 0);
    if (!data) {
        on_read((uv_stream_t *)&c->t.tcp, UV_EOF, &b);
        return -1;
    }
    for (size_t done = 0; done < n && !c->closing;) {
        mg_upconn_alloc((uv_handle_t *)&c->t.tcp, n - done, &b);
        if (b.len == 0)
            return -1;
        size_t k = n - done < b.len ? n - done : b.len;
        memcpy(b.base, data + done, k);
        done += k;
        on_read((uv_stream_t *)&c->t.tcp, (ssize_t)k, &b);
    }
    return c->closing ? -1 : 0;
}

/* ---- streams joining a session ---------------------------------------------- */

static void stream_join(h2conn_t *c, stream_t *s)
{
    s->c = c;
    c->nstreams++;
    mg_list_push(&c->waiting, &s->link);
}

/* The session became ready: its waiting streams go, as many as it takes;
 * the others look for another session. */
static void dispatch_waiting(h2conn_t *c)
{
    uint32_t limit = stream_limit(c);
    uint32_t submitted = 0;
    c->t.pool->h2_limit = limit ? limit : 1; /* new sessions of the target assume it */
    for (mg_link_t *l = c->streams.next; l != &c->streams; l = l->next)
        submitted++;
    /* oldest first: the list is pushed at its head */
    while (!mg_list_empty(&c->waiting) && !c->closing) {
        stream_t *s = mg_container_of(c->waiting.prev, stream_t, link);
        mg_upconn_t *u = s->u;
        if (limit == 0) {
            /* a server taking no streams refuses them all: tried again
             * elsewhere a bounded number of times (proxy.c) */
            stream_detach(s);
            mg_proxy_stream_failed(u, MG_STREAM_REFUSED, 0, NULL);
            continue;
        }
        if (submitted >= limit || c->goaway) {
            stream_detach(s); /* another session, now that the limit is known */
            if (mg_h2up_attach(u) < 0)
                mg_proxy_stream_failed(u, MG_STREAM_CONNECT, UV_ENOMEM, NULL);
            continue;
        }
        submitted++;
        mg_proxy_stream_go(u); /* submits it (or fails it: it leaves either way) */
        if (u->h2s && u->h2s->c == c && u->h2s->id == 0) {
            /* the head went nowhere: do not loop on it */
            stream_detach(u->h2s);
            mg_proxy_stream_failed(u, MG_STREAM_BAD, 0, "request not submitted");
        }
    }
}

int mg_h2up_attach(mg_upconn_t *u)
{
    mg_pool_t *p = u->pool;
    stream_t *s = u->h2s;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return UV_ENOMEM;
        s->u = u;
        mg_list_init(&s->link);
        u->h2s = s;
    }
    /* a request from before a reload: its target's pool in the running
     * generation, unless the slot serves another target since (targets.h) */
    while (p->successor && p->successor->serial == p->successor_serial)
        p = p->successor;
    h2conn_t *c = NULL;
    for (mg_link_t *l = p->h2.next; l != &p->h2; l = l->next) {
        h2conn_t *x = mg_container_of(l, h2conn_t, link);
        if (!x->goaway && !x->closing && !x->close_later && !x->retired &&
            x->nstreams < stream_limit(x)) {
            c = x;
            break;
        }
    }
    int err = 0;
    if (!c) {
        if (!(c = conn_new(p, &err)))
            return err;
        /* a stream for a target that drains or left (a request that chose
         * it before), or of an older generation's pool: a session of its
         * own, closed after it */
        c->retired = p->state != MG_POOL_LIVE || p->successor;
    }
    stream_join(c, s);
    if (c->ready) {
        mg_proxy_stream_go(u);
        if (u->h2s && u->h2s->c == c && u->h2s->id == 0) {
            stream_detach(u->h2s);
            return UV_EPROTO;
        }
    }
    return 0;
}

void mg_h2up_hook_resumed(mg_upconn_t *u)
{
    stream_t *s = u->h2s;
    if (!s)
        return;
    s->head_done = 1;
    if (s->held_len) {
        size_t n = s->held_len;
        s->held_len = 0;
        int rc = mg_proxy_stream_data(u, s->held, n);
        if (rc < 0 || !u->h2s)
            return;
        if (rc == 1)
            mg_h2up_client_drained(u);
    }
    if (s->ended)
        mg_proxy_stream_end(u, s->ntrailers ? s->trailers : NULL, s->ntrailers);
}

/* ---- pools -------------------------------------------------------------------- */

void mg_h2up_pool_retire(mg_pool_t *p)
{
    for (mg_link_t *l = p->h2.next; l != &p->h2;) {
        h2conn_t *c = mg_container_of(l, h2conn_t, link);
        l = l->next; /* closing takes c off the list */
        c->retired = 1;
        if (c->nstreams == 0)
            conn_close(c, MG_STREAM_LOST, 0, NULL);
    }
}

void mg_h2up_pool_adopt(mg_pool_t *old, mg_pool_t *p)
{
    if (!p) { /* the target is gone: its streams finish, no new ones come */
        mg_h2up_pool_retire(old);
        return;
    }
    while (!mg_list_empty(&old->h2)) {
        h2conn_t *c = mg_container_of(old->h2.next, h2conn_t, link);
        mg_list_remove(&c->link);
        mg_pool_move(&c->t, p); /* same target, same TLS (pool.c same_target) */
        mg_list_push(&p->h2, &c->link);
    }
    if (p->state != MG_POOL_LIVE) /* it drains in the new generation */
        mg_h2up_pool_retire(p);
}

void mg_h2up_pool_close(mg_pool_t *p)
{
    while (!mg_list_empty(&p->h2))
        conn_close(mg_container_of(p->h2.next, h2conn_t, link), MG_STREAM_LOST, 0,
                   "the gateway is closing");
}

/* ---- health checks ------------------------------------------------------------ */

struct mg_h2up_probe_s {
    nghttp2_session *ng;
    int status;       /* the answer's :status, once its HEADERS came */
    int seen;
};

static int probe_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    mg_h2up_probe_t *p = ud;
    if (f->hd.type == NGHTTP2_HEADERS && namelen == 7 && memcmp(name, ":status", 7) == 0)
        p->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    return 0;
}

static int probe_frame(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    mg_h2up_probe_t *p = ud;
    if (f->hd.type == NGHTTP2_HEADERS && p->status >= 200)
        p->seen = 1; /* a final head (1xx ones are skipped) */
    return 0;
}

static nghttp2_session_callbacks *probe_callbacks;
static uv_once_t probe_once = UV_ONCE_INIT;

static void make_probe_callbacks(void)
{
    nghttp2_session_callbacks_new(&probe_callbacks);
    nghttp2_session_callbacks_set_on_header_callback(probe_callbacks, probe_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(probe_callbacks, probe_frame);
}

mg_h2up_probe_t *mg_h2up_probe_new(const char *host, const char *path, int tls)
{
    uv_once(&probe_once, make_probe_callbacks);
    mg_h2up_probe_t *p = calloc(1, sizeof(*p));
    if (!p || nghttp2_session_client_new(&p->ng, probe_callbacks, p) != 0) {
        free(p);
        return NULL;
    }
    nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };
    nghttp2_submit_settings(p->ng, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_nv hs[] = {
        nv(":method", 7, "GET", 3),
        nv(":scheme", 7, tls ? "https" : "http", tls ? 5 : 4),
        nv(":authority", 10, host, strlen(host)),
        nv(":path", 5, path, strlen(path)),
        nv("user-agent", 10, "moongate-health-check", 21),
    };
    if (nghttp2_submit_request(p->ng, NULL, hs, sizeof(hs) / sizeof(hs[0]), NULL, NULL) < 0) {
        mg_h2up_probe_free(p);
        return NULL;
    }
    return p;
}

long mg_h2up_probe_request(mg_h2up_probe_t *p, char *o, size_t cap)
{
    size_t n = 0;
    const uint8_t *d;
    ssize_t k;
    while ((k = nghttp2_session_mem_send(p->ng, &d)) > 0) {
        if (n + (size_t)k > cap)
            return -1;
        memcpy(o + n, d, (size_t)k);
        n += (size_t)k;
    }
    return k < 0 ? -1 : (long)n;
}

int mg_h2up_probe_status(mg_h2up_probe_t *p, const char *data, size_t len)
{
    if (nghttp2_session_mem_recv(p->ng, (const uint8_t *)data, len) < 0)
        return -1;
    return p->seen ? p->status : 0;
}

void mg_h2up_probe_free(mg_h2up_probe_t *p)
{
    if (!p)
        return;
    nghttp2_session_del(p->ng);
    free(p);
}
