/* upgrade.h: which connection upgrades the gateway tunnels.
 *
 * A request asking to switch protocols (Connection: upgrade + Upgrade) is
 * tunnelled only when its route lists the protocol in route.upgrades
 * (default { "websocket" }), and never for HTTP/1.0 (RFC 9110 §7.8) or h2c
 * (the gateway speaks HTTP/1.1 to upstreams). Any other upgrade is removed:
 * the request goes upstream as an ordinary one, and a 101 answer to it is a
 * 502. The decision is the core's, for every route, made after routing and
 * before policies run; policies that answer stop the upgrade like any
 * request.
 */
#ifndef MG_UPGRADE_H
#define MG_UPGRADE_H

#include <stddef.h>

typedef struct mg_request_s mg_request_t;

/* Decides request r once its route is known: keeps r->is_upgrade
 * only when one of the offered protocols is allowed, else turns the request
 * into an ordinary one (the parser reads its body, if any, as HTTP). May be
 * called again; later calls only confirm the first. */
void mg_upgrade_settle(mg_request_t *r);

/* Writes the allowed protocols the client offered as an Upgrade value
 * ("websocket, foo"; each entry of the route's list once, as the client
 * wrote it) at out, when out is not NULL. Returns its length (0: none):
 * at most the request's Upgrade values plus 2 bytes per list entry. */
size_t mg_upgrade_value(const mg_request_t *r, char *out);

/* Is the Upgrade value of a 101 answer (v, vl) one the request asked for
 * and the route allows? Every protocol it names must be. */
int mg_upgrade_accepted(const mg_request_t *r, const char *v, size_t vl);

#endif
