/* dns.h: a small DNS stub resolver for service discovery (dns.c).
 *
 * getaddrinfo gives neither a record's TTL nor a choice of server, and it
 * blocks; upstream targets named by host need both (discovery.h), so the
 * gateway asks a DNS server itself:
 *
 *   - the wire format (RFC 1035): queries for A, AAAA and SRV (RFC 2782)
 *     with an EDNS(0) OPT record (RFC 6891) offering 1232-byte answers;
 *     answers parsed with their TTLs, CNAME chains followed, compression
 *     pointers honoured (each must point before the name that uses it, so
 *     no pointer loop is possible), the additional section's addresses of
 *     SRV targets kept;
 *   - a client on libuv UDP: one socket per query (the kernel picks a
 *     random source port), a random 16-bit id per try (uv_random), an
 *     answer taken only from the server's address with the query's id and
 *     question (anything else is ignored: spoofed or stale); a timeout per
 *     try and a number of tries. A truncated answer (TC) is not retried
 *     over TCP: the records it holds are used, which EDNS makes rare to
 *     matter (about 70 A records fit); discovery.h says so.
 *
 * Everything runs on the loop the caller gives (the control thread's,
 * never a worker's). Nothing here keeps global state.
 */
#ifndef MG_DNS_H
#define MG_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

enum { MG_DNS_A = 1, MG_DNS_CNAME = 5, MG_DNS_AAAA = 28, MG_DNS_SRV = 33, MG_DNS_OPT = 41 };

/* A lookup's outcome (mg_dns_answer_t.status and callbacks). */
enum {
    MG_DNS_OK = 0,          /* NOERROR; the answer may still hold no record (NODATA) */
    MG_DNS_NXDOMAIN = -1,   /* the name does not exist */
    MG_DNS_SERVFAIL = -2,   /* the server failed (RCODE 2) */
    MG_DNS_REFUSED = -3,    /* the server refused (RCODE 5) */
    MG_DNS_RCODE = -4,      /* another RCODE */
    MG_DNS_TIMEOUT = -5,    /* no answer to any try */
    MG_DNS_EFORMAT = -6,    /* an answer that does not parse (or FORMERR) */
    MG_DNS_ESOCKET = -7,    /* cannot send (socket error) */
    MG_DNS_ENAME = -8,      /* the name cannot be queried (too long, bad label) */
    MG_DNS_EMISMATCH = -9,  /* the message answers another query (parser only) */
};

#define MG_DNS_NAME_MAX 256   /* a name as text, with its NUL */
#define MG_DNS_MAX_RECORDS 64 /* records kept from one answer (more are ignored) */

/* One record of an answer: an address (A, AAAA) or a service (SRV). */
typedef struct mg_dns_rr_s {
    uint16_t type;           /* MG_DNS_A, MG_DNS_AAAA, MG_DNS_SRV */
    uint32_t ttl;            /* seconds: the least along its CNAME chain */
    uint8_t addr[16];        /* A: 4 bytes, AAAA: 16 */
    uint16_t priority, weight, port;    /* SRV */
    char target[MG_DNS_NAME_MAX];       /* SRV: the target's name, lower case */
} mg_dns_rr_t;

/* An address from the additional section (for SRV targets). */
typedef struct mg_dns_extra_s {
    char name[MG_DNS_NAME_MAX]; /* lower case */
    uint16_t type;              /* MG_DNS_A, MG_DNS_AAAA */
    uint32_t ttl;
    uint8_t addr[16];
} mg_dns_extra_t;

/* A parsed answer. */
typedef struct mg_dns_answer_s {
    int status;              /* MG_DNS_OK, or the failure (MG_DNS_*) */
    int truncated;           /* TC was set */
    uint32_t ttl;            /* NXDOMAIN/NODATA: the SOA's negative TTL if any, else 0 */
    size_t n;
    mg_dns_rr_t rr[MG_DNS_MAX_RECORDS];
    size_t nextra;
    mg_dns_extra_t extra[MG_DNS_MAX_RECORDS];
} mg_dns_answer_t;

/* ---- wire format --------------------------------------------------------- */

/* Writes a query for (name, qtype) with id into buf (cap bytes; 300 is
 * always enough). name is dotted text ("a.example" or "a.example.").
 * Returns its length, or MG_DNS_ENAME. */
int mg_dns_query_build(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype);

/* Parses msg (len bytes) as the answer to the query (id, name, qtype) into
 * *out. Returns 0 when msg is that answer (out->status then says what it
 * said: MG_DNS_OK with its records, or MG_DNS_NXDOMAIN, ...),
 * MG_DNS_EMISMATCH when it is another message (not an answer, another id
 * or question: to be ignored), or MG_DNS_EFORMAT when it claims to be the
 * answer but does not parse. Never reads outside msg; never allocates. */
int mg_dns_parse(const uint8_t *msg, size_t len, uint16_t id, const char *name, uint16_t qtype,
                 mg_dns_answer_t *out);

/* A short name of an outcome: "ok", "nxdomain", "servfail", "refused",
 * "rcode", "timeout", "malformed", "socket", "bad name"; "nodata" for an
 * MG_DNS_OK answer without records is the caller's to say. */
const char *mg_dns_status_name(int status);

/* ---- the client ------------------------------------------------------------ */

/* Where and how to ask. */
typedef struct mg_dns_conf_s {
    struct sockaddr_storage server;
    uint64_t timeout;        /* ms per try */
    int attempts;            /* tries in all, >= 1 */
} mg_dns_conf_t;

typedef struct mg_dns_query_s mg_dns_query_t;

/* Called once per query that started, on the loop's thread: a->status
 * says how it went (MG_DNS_OK: a holds the answer). `a` is valid during
 * the call only. The query is freed after the callback returns. */
typedef void (*mg_dns_cb)(void *arg, const mg_dns_answer_t *a);

/* Starts a query of (name, qtype) on loop. Returns 0 and *q (for
 * mg_dns_cancel; may be NULL if not wanted), or MG_DNS_ENAME /
 * MG_DNS_ESOCKET, and then cb is never called. */
int mg_dns_query(uv_loop_t *loop, const mg_dns_conf_t *conf, const char *name, uint16_t qtype,
                 mg_dns_cb cb, void *arg, mg_dns_query_t **q);
/* Stops q: its callback is not called; its handles close on the loop. */
void mg_dns_cancel(mg_dns_query_t *q);

/* "ADDR" or "ADDR:PORT" ("[v6]:PORT", or a bare IPv6 address) to an
 * address, port 53 when none is given. Returns 0 or -1. */
int mg_dns_server_parse(const char *s, struct sockaddr_storage *out);
/* The first `nameserver` of resolv.conf at path (NULL: /etc/resolv.conf)
 * into out (port 53). Returns 0, or -1 when there is none. */
int mg_dns_system_server(const char *path, struct sockaddr_storage *out);
/* The settings.resolver check (config.c, a mg_ffi_str_check_fn): "ADDR"
 * or "ADDR:PORT" as mg_dns_server_parse reads it. */
int mg_dns_server_check(const char *s, size_t len, char *out, size_t cap);

/* The addresses /etc/hosts (or path) gives `name` (case-insensitive),
 * in the file's order, at most max of them, each with `port`. Returns
 * how many (0: the file does not list it). */
size_t mg_dns_hosts_lookup(const char *path, const char *name, uint16_t port,
                           struct sockaddr_storage *out, size_t max);

/* The first address /etc/hosts gives `name` (with `port`), remembered in
 * memo so that the file is read once per name until mg_dns_hosts_forget
 * (memo NULL: read it now). 1 with *out, or 0. One thread's memo. */
typedef struct mg_dns_hosts_memo_s {
    struct mg_dns_hosts_seen_s *seen;
    size_t n, cap;
} mg_dns_hosts_memo_t;
int mg_dns_hosts_first(mg_dns_hosts_memo_t *memo, const char *name, uint16_t port,
                       struct sockaddr_storage *out);
void mg_dns_hosts_forget(mg_dns_hosts_memo_t *memo);

#endif
