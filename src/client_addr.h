/* client_addr.h: the real client address, wired (issue #14): the building
 * blocks cidr.c, proxy_protocol.c and real_ip.c applied to connections and
 * requests.
 *
 * - At accept, a listener with `proxy_protocol = true` takes connections
 *   from settings.trusted_proxies only (mg_client_addr_proxy_allowed).
 * - Its first bytes are a PROXY header (mg_client_addr_proxy_header): the
 *   connection's client becomes the header's source, its TLVs are kept.
 * - Before the hooks, when trusted_proxies is set, mg_client_addr_resolve
 *   reads settings.real_ip_header from a trusted connection client.
 *
 * Ownership: the TLV copy (mg_peer_t.pp) belongs to the connection and is
 * freed with mg_client_addr_release. A request's client text lives in its
 * arena. Threading: a connection's worker only. */
#ifndef MG_CLIENT_ADDR_H
#define MG_CLIENT_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include "proxy_protocol.h"
#include "request.h"

/* The longest PROXY v2 header taken (16 bytes and the address and TLVs a
 * sender adds; HAProxy's with SSL TLVs fit in a few hundred): a peer cannot
 * make the gateway buffer the protocol's own 64 KiB. */
#define MG_CLIENT_ADDR_PP_MAX 2048

/* At accept, on a proxy_protocol listener: 1 when the socket peer p->addr
 * may send a PROXY header (it is in cfg's trusted_proxies), else 0, the
 * refusal logged. */
int mg_client_addr_proxy_allowed(const mg_peer_t *p, const mg_config_t *cfg);

/* The first n bytes of a proxy_protocol connection. Returns the header's
 * length (> 0) with p updated (the source, when the header has one: LOCAL
 * and UNSPEC keep the socket's; TLVs copied), MG_PP_AGAIN (proxy_protocol.h)
 * for more bytes, or MG_PP_ERROR (logged): close the connection. */
int mg_client_addr_proxy_header(mg_peer_t *p, const uint8_t *buf, size_t n);

/* Frees what mg_client_addr_proxy_header kept (the connection closes). */
void mg_client_addr_release(mg_peer_t *p);

/* Sets r's real client from settings.real_ip_header when its connection's
 * client is a trusted proxy, and r->xff_trusted / r->xff_drop. Only called
 * when r's config has trusted_proxies. */
void mg_client_addr_resolve(mg_request_t *r);

#endif
