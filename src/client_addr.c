/* client_addr.c: the real client address, wired (client_addr.h). The rules
 * themselves are the building blocks': which addresses are trusted
 * (cidr.c), what a PROXY header says (proxy_protocol.c), which header
 * element is the client (real_ip.c). This file only decides where each
 * applies, and keeps what must outlive the bytes it came in.
 *
 * The FFI part (mg_ffi.h): config.lua checks trusted_proxies entries with
 * cidr.c (mg_ffi_cidr_check); the testing kit builds the same set and
 * resolves a kit request's client through the same header walk as the
 * gateway (mg_ffi_trusted_new, mg_ffi_real_client); hooks read the PROXY
 * TLVs (mg_ffi_req_proxy_tlv).
 *
 * Ownership: mg_peer_t.pp (one malloc per connection that sent TLVs) is the
 * connection's, freed by mg_client_addr_release; a request's client text is
 * in its arena; a set from mg_ffi_trusted_new is the caller's. */
#include "client_addr.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "errlog.h"
#include "worker.h"
#include "mg_ffi.h"
#include "proxy_protocol.h"
#include "real_ip.h"

/* What a PROXY v2 header said besides the addresses: its TLVs, spans into
 * the copy of the header's bytes that follows. */
struct mg_pp_info_s {
    mg_pp_header_t h;
    uint8_t bytes[];
};

int mg_client_addr_proxy_allowed(const mg_peer_t *p, const mg_config_t *cfg)
{
    if (mg_cidr_set_contains(cfg->trusted_proxies, &p->addr, NULL))
        return 1;
    mg_log(MG_LOG_WARN,
           "connection from %s refused: a PROXY header is accepted only from "
           "settings.trusted_proxies",
           p->client_ip);
    return 0;
}

int mg_client_addr_proxy_header(mg_peer_t *p, const uint8_t *buf, size_t n)
{
    mg_pp_header_t h;
    const char *why = NULL;
    int len = mg_pp_parse(buf, n, MG_CLIENT_ADDR_PP_MAX, &h, &why);
    if (len == MG_PP_AGAIN)
        return len;
    if (len < 0) {
        mg_log(MG_LOG_WARN, "connection from %s closed: bad PROXY header: %s", p->client_ip,
               why ? why : "malformed");
        return MG_PP_ERROR;
    }
    if (h.ntlvs > 0) {
        struct mg_pp_info_s *pp = malloc(sizeof(*pp) + (size_t)len);
        if (!pp) {
            mg_log(MG_LOG_ERROR, "connection from %s closed: out of memory", p->client_ip);
            return MG_PP_ERROR;
        }
        pp->h = h;
        memcpy(pp->bytes, buf, (size_t)len);
        p->pp = pp;
    }
    /* LOCAL (the sender's health check), UNSPEC and AF_UNIX: no address,
     * the socket's stays */
    if (h.command == MG_PP_PROXY && h.has_addr) {
        memcpy(p->socket_ip, p->client_ip, sizeof(p->socket_ip));
        p->proxied = 1;
        p->addr = h.src;
        p->client_port = h.src_port;
        mg_addr_format(&h.src, p->client_ip, sizeof(p->client_ip));
    }
    return len;
}

void mg_client_addr_release(mg_peer_t *p)
{
    free(p->pp);
    p->pp = NULL;
}

/* The header lines a request walk reads, at most this many (the last ones:
 * the walk goes right to left, so those hold the hops nearest the gateway;
 * one that gets past them all ends on a trusted hop, never on a spoof). */
#define LINES_MAX 32

/* The client of request r whose connection's client is `from`, per
 * `trusted` and the header kind: real_ip.c's walk over r's received lines
 * of that header. Returns MG_REAL_IP_PEER or MG_REAL_IP_HEADER. */
static int walk(const mg_request_t *r, const mg_addr_t *from, const mg_cidr_set_t *trusted,
                int kind, mg_real_ip_t *out)
{
    static const struct {
        const char *name;
        size_t len;
    } names[] = { [MG_REAL_IP_XFF] = { "x-forwarded-for", 15 },
                  [MG_REAL_IP_FORWARDED] = { "forwarded", 9 },
                  [MG_REAL_IP_X_REAL_IP] = { "x-real-ip", 9 } };
    mg_real_ip_value_t v[LINES_MAX];
    size_t n = 0, seen = 0;
    if (kind < 0 || kind > MG_REAL_IP_X_REAL_IP)
        kind = MG_REAL_IP_XFF;
    const char *name = names[kind].name;
    size_t len = names[kind].len;
    for (uint32_t i = 0; i < r->nheaders; i++)
        seen += r->headers[i].name.len == len &&
                strncasecmp(mg_request_data(r, r->headers[i].name), name, len) == 0;
    size_t skip = seen > LINES_MAX ? seen - LINES_MAX : 0;
    for (uint32_t i = 0; i < r->nheaders && seen > 0; i++) {
        const mg_header_t *hd = &r->headers[i];
        if (hd->name.len != len || strncasecmp(mg_request_data(r, hd->name), name, len) != 0)
            continue;
        if (skip > 0)
            skip--;
        else
            v[n++] = (mg_real_ip_value_t){ mg_request_data(r, hd->value), hd->value.len };
    }
    return mg_real_ip_find(from, trusted, kind, v, n, out);
}

void mg_client_addr_resolve(mg_request_t *r)
{
    const mg_config_t *cfg = r->g->cfg;
    const mg_peer_t *p = r->peer;
    if (!mg_cidr_set_contains(cfg->trusted_proxies, &p->addr, NULL)) {
        r->xff_drop = 1; /* anyone may write one: not passed on */
        return;
    }
    r->xff_trusted = 1;
    mg_real_ip_t out;
    if (walk(r, &p->addr, cfg->trusted_proxies, cfg->real_ip_header, &out) != MG_REAL_IP_HEADER)
        return;
    char *s = mg_request_alloc(r, 48);
    if (s && mg_addr_format(&out.addr, s, 48) > 0)
        r->client_ip = s;
}

/* ---- FFI ------------------------------------------------------------------ */

int mg_ffi_cidr_check(const char *text, size_t n, char *err, size_t errcap)
{
    mg_cidr_set_t *s = mg_cidr_set_new();
    if (!s) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    int rc = mg_cidr_set_add(s, text, n, err, errcap);
    if (rc == -2)
        snprintf(err, errcap, "out of memory");
    mg_cidr_set_free(s);
    return rc < 0 ? -1 : 0;
}

mg_cidr_set_t *mg_ffi_trusted_new(const char *const *cidrs, const size_t *lens, size_t n)
{
    mg_cidr_set_t *s = mg_cidr_set_new();
    for (size_t i = 0; s && i < n; i++)
        if (mg_cidr_set_add(s, cidrs[i], lens[i], NULL, 0) != 0) {
            mg_cidr_set_free(s);
            return NULL;
        }
    if (s && mg_cidr_set_build(s) != 0) {
        mg_cidr_set_free(s);
        return NULL;
    }
    return s;
}

void mg_ffi_trusted_free(mg_cidr_set_t *s) { mg_cidr_set_free(s); }

int mg_ffi_real_client(mg_request_t *r, const mg_cidr_set_t *trusted, const char *header,
                       const char *peer, size_t peer_len, char *out, size_t cap)
{
    mg_addr_t from;
    mg_real_ip_t found;
    if (cap < 48 || mg_addr_parse(peer, peer_len, &from) != 0)
        return -1;
    int is_trusted = mg_cidr_set_contains(trusted, &from, NULL);
    walk(r, &from, trusted, mg_real_ip_header_parse(header), &found);
    mg_addr_format(&found.addr, out, cap);
    return is_trusted;
}

int mg_ffi_req_proxy_tlv(mg_request_t *r, int type, const char **p, size_t *len)
{
    const struct mg_pp_info_s *pp = r->peer->pp;
    mg_pp_tlv_t sub;
    const mg_pp_tlv_t *t = NULL;
    if (!pp || type < 0 || type > 255)
        return -1;
    if (type >= MG_PP2_SUBTYPE_SSL_VERSION && type <= MG_PP2_SUBTYPE_SSL_KEY_ALG) {
        if (mg_pp_ssl_sub(&pp->h, pp->bytes, (uint8_t)type, &sub) == 0)
            t = &sub;
    } else {
        t = mg_pp_tlv(&pp->h, (uint8_t)type);
    }
    if (!t)
        return -1;
    *p = (const char *)pp->bytes + t->off;
    *len = t->len;
    return 0;
}
