/* dns.c: the DNS stub resolver (contract in dns.h): queries and answers in
 * the wire format of RFC 1035, and a client on libuv UDP. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dns.h"
#include "mg_ffi.h"

#define HEADER_LEN 12
#define CLASS_IN 1
#define EDNS_PAYLOAD 1232 /* the DNS flag day 2020 size: no IP fragmentation */
#define MAX_CNAME_HOPS 8

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* ---- queries ------------------------------------------------------------- */

int mg_dns_query_build(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype)
{
    size_t nl = strlen(name);
    if (nl && name[nl - 1] == '.')
        nl--;
    /* labels + their length bytes + the root: at most 255 (RFC 1035 3.1) */
    if (nl == 0 || nl > 253 || cap < HEADER_LEN + nl + 2 + 4 + 11)
        return MG_DNS_ENAME;
    memset(buf, 0, HEADER_LEN);
    put16(buf, id);
    buf[2] = 0x01; /* RD: the server recurses for us */
    put16(buf + 4, 1); /* one question */
    put16(buf + 10, 1); /* one additional record: EDNS's OPT */
    size_t o = HEADER_LEN, start = 0;
    for (size_t i = 0; i <= nl; i++) {
        if (i < nl && name[i] != '.')
            continue;
        size_t ll = i - start;
        if (ll == 0 || ll > 63)
            return MG_DNS_ENAME;
        buf[o++] = (uint8_t)ll;
        for (size_t k = start; k < i; k++) {
            unsigned char ch = (unsigned char)name[k];
            /* letters, digits, '-' and '_' (service labels); nothing that
             * would need escaping in a name as text */
            if (!(isalnum(ch) || ch == '-' || ch == '_'))
                return MG_DNS_ENAME;
            buf[o++] = ch;
        }
        start = i + 1;
    }
    buf[o++] = 0;
    put16(buf + o, qtype);
    put16(buf + o + 2, CLASS_IN);
    o += 4;
    /* OPT: root name, type 41, class = our UDP payload size, TTL 0, no data */
    buf[o++] = 0;
    put16(buf + o, MG_DNS_OPT);
    put16(buf + o + 2, EDNS_PAYLOAD);
    memset(buf + o + 4, 0, 6);
    o += 10;
    return (int)o;
}

/* ---- answers --------------------------------------------------------------- */

/* The name at msg[*at] as lower-case dotted text into out (MG_DNS_NAME_MAX,
 * "" for the root); *at moves past it in the message (past the first
 * pointer, if any). Each pointer must point before the name being read
 * (the start of the labels it continues), so every jump goes back and the
 * walk ends. Returns 0 or -1. */
static int read_name(const uint8_t *msg, size_t len, size_t *at, char *out)
{
    size_t p = *at, o = 0, floor = *at;
    int jumped = 0;
    for (;;) {
        if (p >= len)
            return -1;
        uint8_t l = msg[p];
        if ((l & 0xc0) == 0xc0) {
            if (p + 1 >= len)
                return -1;
            size_t to = (size_t)(l & 0x3f) << 8 | msg[p + 1];
            if (to >= floor)
                return -1; /* forward or to itself: a loop or garbage */
            if (!jumped)
                *at = p + 2;
            jumped = 1;
            floor = to;
            p = to;
            continue;
        }
        if (l & 0xc0)
            return -1; /* the reserved label types (RFC 6891 dropped 0x40) */
        if (l == 0) {
            if (!jumped)
                *at = p + 1;
            out[o] = '\0';
            return 0;
        }
        if (p + 1 + l > len || o + l + 2 > MG_DNS_NAME_MAX)
            return -1;
        if (o)
            out[o++] = '.';
        for (size_t k = 0; k < l; k++) {
            unsigned char ch = msg[p + 1 + k];
            /* a dot or a NUL inside a label could not be told apart in
             * text: refuse the name */
            if (ch == '.' || ch == 0)
                return -1;
            out[o++] = (char)tolower(ch);
        }
        p += 1 + l;
    }
}

/* Does dotted `a` (as read_name gives it) equal `b`, ignoring case and a
 * trailing dot of b? */
static int same_name(const char *a, const char *b)
{
    size_t al = strlen(a), bl = strlen(b);
    if (bl && b[bl - 1] == '.')
        bl--;
    return al == bl && strncasecmp(a, b, al) == 0;
}

typedef struct {
    size_t name_at;   /* where its owner name starts */
    uint16_t type, class_;
    uint32_t ttl;
    size_t rdata, rdlen;
} raw_rr_t;

/* The resource record at *at: its fixed fields; *at moves past it. */
static int read_rr(const uint8_t *msg, size_t len, size_t *at, raw_rr_t *rr, char *owner)
{
    rr->name_at = *at;
    if (read_name(msg, len, at, owner) < 0 || *at + 10 > len)
        return -1;
    const uint8_t *p = msg + *at;
    rr->type = get16(p);
    rr->class_ = get16(p + 2);
    rr->ttl = get32(p + 4);
    if (rr->ttl > 0x7fffffff)
        rr->ttl = 0; /* RFC 2181 8: a TTL with the top bit set is zero */
    rr->rdlen = get16(p + 8);
    rr->rdata = *at + 10;
    if (rr->rdata + rr->rdlen > len)
        return -1;
    *at = rr->rdata + rr->rdlen;
    return 0;
}

static int rcode_status(int rcode)
{
    switch (rcode) {
    case 0: return MG_DNS_OK;
    case 1: return MG_DNS_EFORMAT;
    case 2: return MG_DNS_SERVFAIL;
    case 3: return MG_DNS_NXDOMAIN;
    case 5: return MG_DNS_REFUSED;
    default: return MG_DNS_RCODE;
    }
}

int mg_dns_parse(const uint8_t *msg, size_t len, uint16_t id, const char *name, uint16_t qtype,
                 mg_dns_answer_t *out)
{
    char owner[MG_DNS_NAME_MAX], qn[MG_DNS_NAME_MAX];
    out->status = MG_DNS_EFORMAT;
    out->truncated = 0;
    out->ttl = 0;
    out->n = out->nextra = 0;
    if (len < HEADER_LEN || get16(msg) != id || !(msg[2] & 0x80) || (msg[2] & 0x78) != 0)
        return MG_DNS_EMISMATCH; /* not an answer to a standard query of ours */
    uint16_t qd = get16(msg + 4), an = get16(msg + 6), ns = get16(msg + 8),
             ar = get16(msg + 10);
    if (qd != 1)
        return MG_DNS_EMISMATCH;
    size_t at = HEADER_LEN;
    if (read_name(msg, len, &at, qn) < 0 || at + 4 > len)
        return MG_DNS_EMISMATCH;
    if (!same_name(qn, name) || get16(msg + at) != qtype || get16(msg + at + 2) != CLASS_IN)
        return MG_DNS_EMISMATCH;
    at += 4;
    /* from here on it is the answer to our question */
    out->truncated = (msg[2] & 0x02) != 0;
    int status = rcode_status(msg[3] & 0x0f);

    /* the answer section, twice: first the CNAME chain from the question's
     * name (in any order the server put it), then the records of the name
     * it ends at */
    char cur[MG_DNS_NAME_MAX];
    snprintf(cur, sizeof(cur), "%s", qn);
    uint32_t chain_ttl = UINT32_MAX;
    size_t answers = at;
    raw_rr_t rr;
    for (int hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
        int moved = 0;
        size_t p = answers;
        for (uint16_t i = 0; i < an; i++) {
            if (read_rr(msg, len, &p, &rr, owner) < 0)
                goto malformed;
            if (rr.type != MG_DNS_CNAME || rr.class_ != CLASS_IN || !same_name(owner, cur))
                continue;
            size_t r = rr.rdata;
            char target[MG_DNS_NAME_MAX];
            if (read_name(msg, rr.rdata + rr.rdlen, &r, target) < 0 || r != rr.rdata + rr.rdlen)
                goto malformed;
            snprintf(cur, sizeof(cur), "%s", target);
            if (rr.ttl < chain_ttl)
                chain_ttl = rr.ttl;
            moved = 1;
            break;
        }
        if (!moved)
            break;
        if (hop == MAX_CNAME_HOPS)
            goto malformed; /* a longer chain (or a loop) */
    }
    size_t p = answers;
    for (uint16_t i = 0; i < an; i++) {
        if (read_rr(msg, len, &p, &rr, owner) < 0)
            goto malformed;
        if (rr.type != qtype || rr.class_ != CLASS_IN || !same_name(owner, cur))
            continue;
        if (out->n == MG_DNS_MAX_RECORDS)
            continue;
        mg_dns_rr_t *o = &out->rr[out->n];
        memset(o, 0, sizeof(*o));
        o->type = rr.type;
        o->ttl = rr.ttl < chain_ttl ? rr.ttl : chain_ttl;
        if (qtype == MG_DNS_A || qtype == MG_DNS_AAAA) {
            size_t want = qtype == MG_DNS_A ? 4 : 16;
            if (rr.rdlen != want)
                goto malformed;
            memcpy(o->addr, msg + rr.rdata, want);
        } else if (qtype == MG_DNS_SRV) {
            if (rr.rdlen < 7)
                goto malformed;
            o->priority = get16(msg + rr.rdata);
            o->weight = get16(msg + rr.rdata + 2);
            o->port = get16(msg + rr.rdata + 4);
            size_t r = rr.rdata + 6;
            if (read_name(msg, rr.rdata + rr.rdlen, &r, o->target) < 0 ||
                r != rr.rdata + rr.rdlen)
                goto malformed;
            if (o->target[0] == '\0')
                continue; /* "." : the service is decidedly not offered */
        } else {
            continue;
        }
        out->n++;
    }
    /* the authority section: an SOA's minimum is the negative TTL
     * (RFC 2308 5) */
    for (uint16_t i = 0; i < ns; i++) {
        if (read_rr(msg, len, &p, &rr, owner) < 0)
            goto malformed;
        if (rr.type == 6 && rr.rdlen >= 22) {
            uint32_t min = get32(msg + rr.rdata + rr.rdlen - 4);
            out->ttl = min < rr.ttl ? min : rr.ttl;
        }
    }
    /* the additional section: SRV targets' addresses */
    for (uint16_t i = 0; i < ar; i++) {
        if (read_rr(msg, len, &p, &rr, owner) < 0)
            goto malformed;
        if (qtype != MG_DNS_SRV || rr.class_ != CLASS_IN || out->nextra == MG_DNS_MAX_RECORDS)
            continue;
        if (!((rr.type == MG_DNS_A && rr.rdlen == 4) || (rr.type == MG_DNS_AAAA && rr.rdlen == 16)))
            continue;
        mg_dns_extra_t *e = &out->extra[out->nextra++];
        snprintf(e->name, sizeof(e->name), "%s", owner);
        e->type = rr.type;
        e->ttl = rr.ttl;
        memcpy(e->addr, msg + rr.rdata, rr.rdlen);
    }
    out->status = status;
    if (status != MG_DNS_OK)
        out->n = out->nextra = 0;
    return 0;

malformed:
    /* the answer to our question, but not one to use: nothing of it */
    out->status = MG_DNS_EFORMAT;
    out->n = out->nextra = 0;
    return 0;
}

const char *mg_dns_status_name(int status)
{
    switch (status) {
    case MG_DNS_OK: return "ok";
    case MG_DNS_NXDOMAIN: return "nxdomain";
    case MG_DNS_SERVFAIL: return "servfail";
    case MG_DNS_REFUSED: return "refused";
    case MG_DNS_RCODE: return "rcode";
    case MG_DNS_TIMEOUT: return "timeout";
    case MG_DNS_EFORMAT: return "malformed";
    case MG_DNS_ESOCKET: return "socket";
    case MG_DNS_ENAME: return "bad name";
    default: return "error";
    }
}

/* ---- the client ------------------------------------------------------------ */

struct mg_dns_query_s {
    uv_udp_t udp;
    uv_timer_t timer;
    uv_udp_send_t send;
    mg_dns_conf_t conf;
    mg_dns_cb cb;
    void *arg;
    int handles;              /* open handles; freed when both closed */
    int tries;
    int done;                 /* answered, failed or cancelled */
    int sending;              /* a send in flight (its buffer is ours) */
    uint16_t id, qtype;
    size_t qlen;
    uint8_t qbuf[320];
    uint8_t rbuf[EDNS_PAYLOAD + 256];
    char name[MG_DNS_NAME_MAX];
    mg_dns_answer_t answer;
};

static void on_closed(uv_handle_t *h)
{
    mg_dns_query_t *q = h->data;
    if (--q->handles == 0)
        free(q);
}

static void finish(mg_dns_query_t *q, int status)
{
    if (q->done)
        return;
    q->done = 1;
    uv_udp_recv_stop(&q->udp);
    uv_timer_stop(&q->timer);
    if (q->cb) {
        q->answer.status = status;
        if (status != MG_DNS_OK)
            q->answer.n = q->answer.nextra = 0;
        q->cb(q->arg, &q->answer);
    }
    uv_close((uv_handle_t *)&q->udp, on_closed);
    uv_close((uv_handle_t *)&q->timer, on_closed);
}

static void on_sent(uv_udp_send_t *s, int status)
{
    mg_dns_query_t *q = s->data;
    q->sending = 0;
    if (status < 0 && status != UV_ECANCELED && !q->done)
        finish(q, MG_DNS_ESOCKET);
}

static int send_try(mg_dns_query_t *q);

static void on_timeout(uv_timer_t *t)
{
    mg_dns_query_t *q = t->data;
    if (q->tries >= q->conf.attempts) {
        finish(q, MG_DNS_TIMEOUT);
        return;
    }
    if (send_try(q) < 0)
        finish(q, MG_DNS_ESOCKET);
}

/* A new id for each try: a late answer to an earlier try no longer
 * matches, and an off-path attacker must guess it anew. */
static int send_try(mg_dns_query_t *q)
{
    uint16_t id;
    if (uv_random(NULL, NULL, &id, sizeof(id), 0, NULL) < 0)
        return -1;
    int n = mg_dns_query_build(q->qbuf, sizeof(q->qbuf), id, q->name, q->qtype);
    if (n < 0 || q->sending)
        return -1;
    q->id = id;
    q->qlen = (size_t)n;
    q->tries++;
    uv_buf_t b = uv_buf_init((char *)q->qbuf, (unsigned)q->qlen);
    q->send.data = q;
    if (uv_udp_send(&q->send, &q->udp, &b, 1, (const struct sockaddr *)&q->conf.server,
                    on_sent) < 0)
        return -1;
    q->sending = 1;
    uv_timer_start(&q->timer, on_timeout, q->conf.timeout, 0);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    mg_dns_query_t *q = h->data;
    *b = uv_buf_init((char *)q->rbuf, sizeof(q->rbuf));
}

static int same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

static void on_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
                    unsigned flags)
{
    mg_dns_query_t *q = u->data;
    if (q->done || n <= 0 || !from || (flags & UV_UDP_PARTIAL))
        return; /* nothing, or more than an answer we asked for: ignore */
    if (!same_addr(from, &q->conf.server))
        return;
    int rc = mg_dns_parse(q->rbuf, (size_t)n, q->id, q->name, q->qtype, &q->answer);
    if (rc == MG_DNS_EMISMATCH)
        return; /* not the answer to this try: keep waiting */
    finish(q, rc < 0 ? MG_DNS_EFORMAT : q->answer.status);
}

int mg_dns_query(uv_loop_t *loop, const mg_dns_conf_t *conf, const char *name, uint16_t qtype,
                 mg_dns_cb cb, void *arg, mg_dns_query_t **out)
{
    uint8_t probe[320];
    if (strlen(name) >= MG_DNS_NAME_MAX ||
        mg_dns_query_build(probe, sizeof(probe), 0, name, qtype) < 0)
        return MG_DNS_ENAME;
    mg_dns_query_t *q = calloc(1, sizeof(*q));
    if (!q)
        return MG_DNS_ESOCKET;
    q->conf = *conf;
    if (q->conf.attempts < 1)
        q->conf.attempts = 1;
    q->cb = cb;
    q->arg = arg;
    q->qtype = qtype;
    snprintf(q->name, sizeof(q->name), "%s", name);
    if (uv_udp_init(loop, &q->udp) < 0) {
        free(q);
        return MG_DNS_ESOCKET;
    }
    uv_timer_init(loop, &q->timer);
    q->udp.data = q->timer.data = q;
    q->handles = 2;
    int family = conf->server.ss_family;
    struct sockaddr_storage any;
    memset(&any, 0, sizeof(any));
    if (family == AF_INET6)
        uv_ip6_addr("::", 0, (struct sockaddr_in6 *)&any);
    else
        uv_ip4_addr("0.0.0.0", 0, (struct sockaddr_in *)&any);
    /* port 0: the kernel's random ephemeral port, one per query */
    if (uv_udp_bind(&q->udp, (struct sockaddr *)&any, 0) < 0 ||
        uv_udp_recv_start(&q->udp, on_alloc, on_recv) < 0 || send_try(q) < 0) {
        q->done = 1;
        uv_close((uv_handle_t *)&q->udp, on_closed);
        uv_close((uv_handle_t *)&q->timer, on_closed);
        return MG_DNS_ESOCKET;
    }
    if (out)
        *out = q;
    return 0;
}

void mg_dns_cancel(mg_dns_query_t *q)
{
    if (!q || q->done)
        return;
    q->cb = NULL;
    finish(q, MG_DNS_TIMEOUT);
}

/* ---- servers and the hosts file ----------------------------------------------- */

int mg_dns_server_parse(const char *s, struct sockaddr_storage *out)
{
    char host[64];
    unsigned port = 53;
    size_t n = strlen(s);
    memset(out, 0, sizeof(*out));
    const char *colon = strrchr(s, ':');
    if (n && s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (size_t)(close - s - 1) >= sizeof(host))
            return -1;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (close[1] == ':')
            colon = close + 1;
        else if (close[1])
            return -1;
        else
            colon = NULL;
    } else if (colon && strchr(s, ':') != colon) {
        /* two colons or more without brackets: a bare IPv6 address */
        if (n >= sizeof(host))
            return -1;
        memcpy(host, s, n + 1);
        colon = NULL;
    } else {
        size_t hl = colon ? (size_t)(colon - s) : n;
        if (hl >= sizeof(host))
            return -1;
        memcpy(host, s, hl);
        host[hl] = '\0';
    }
    if (colon) {
        const char *p = colon + 1;
        if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
            return -1;
        port = (unsigned)atoi(p);
        if (port < 1 || port > 65535)
            return -1;
    }
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0 &&
        mg_ffi_host_kind(host, strlen(host)) == MG_HOST_IPV4)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0 &&
        mg_ffi_host_kind(host, strlen(host)) == MG_HOST_IPV6)
        return 0;
    return -1;
}

int mg_dns_server_check(const char *s, size_t len, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    if (len >= cap || memchr(s, '\0', len))
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return mg_dns_server_parse(out, &ss) == 0 ? MG_STR_VALUE : MG_STR_BAD;
}

int mg_dns_system_server(const char *path, struct sockaddr_storage *out)
{
    FILE *f = fopen(path ? path : "/etc/resolv.conf", "re");
    char line[512];
    int rc = -1;
    if (!f)
        return -1;
    while (rc < 0 && fgets(line, sizeof(line), f)) {
        char addr[128];
        if (sscanf(line, " nameserver %127s", addr) == 1 && !strchr(addr, '%'))
            rc = mg_dns_server_parse(addr, out);
    }
    fclose(f);
    return rc;
}

size_t mg_dns_hosts_lookup(const char *path, const char *name, uint16_t port,
                           struct sockaddr_storage *out, size_t max)
{
    FILE *f = fopen(path ? path : "/etc/hosts", "re");
    char line[1024];
    size_t n = 0;
    if (!f)
        return 0;
    while (n < max && fgets(line, sizeof(line), f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL, *addr = strtok_r(line, " \t\r\n", &save);
        if (!addr)
            continue;
        for (char *alias = strtok_r(NULL, " \t\r\n", &save); alias;
             alias = strtok_r(NULL, " \t\r\n", &save)) {
            if (strcasecmp(alias, name) != 0)
                continue;
            struct sockaddr_storage *o = &out[n];
            memset(o, 0, sizeof(*o));
            if (uv_ip4_addr(addr, port, (struct sockaddr_in *)o) == 0 ||
                uv_ip6_addr(addr, port, (struct sockaddr_in6 *)o) == 0)
                n++;
            break;
        }
    }
    fclose(f);
    return n;
}

struct mg_dns_hosts_seen_s {
    char *name;
    int found;
    struct sockaddr_storage addr; /* port 0 */
};

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

int mg_dns_hosts_first(mg_dns_hosts_memo_t *memo, const char *name, uint16_t port,
                       struct sockaddr_storage *out)
{
    for (size_t i = 0; memo && i < memo->n; i++) {
        if (strcasecmp(memo->seen[i].name, name) != 0)
            continue;
        *out = memo->seen[i].addr;
        set_port(out, port);
        return memo->seen[i].found;
    }
    int found = mg_dns_hosts_lookup(NULL, name, port, out, 1) == 1;
    if (!memo)
        return found;
    if (memo->n == memo->cap) {
        size_t cap = memo->cap ? memo->cap * 2 : 8;
        struct mg_dns_hosts_seen_s *p = realloc(memo->seen, cap * sizeof(*p));
        if (!p)
            return found; /* not remembered: read again next time */
        memo->seen = p;
        memo->cap = cap;
    }
    struct mg_dns_hosts_seen_s *e = &memo->seen[memo->n];
    if (!(e->name = strdup(name)))
        return found;
    e->found = found;
    e->addr = *out;
    memo->n++;
    return found;
}

void mg_dns_hosts_forget(mg_dns_hosts_memo_t *memo)
{
    for (size_t i = 0; i < memo->n; i++)
        free(memo->seen[i].name);
    free(memo->seen);
    memo->seen = NULL;
    memo->n = memo->cap = 0;
}
