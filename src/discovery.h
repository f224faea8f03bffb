/* discovery.h: upstream targets that change at run time, on the control
 * thread (discovery.c): host names looked up on their DNS TTL, SRV
 * records, and the admin API's target changes. Each change becomes a new
 * target set of the current generation (targets.h), published to every
 * worker without a reload.
 *
 * Declared targets, as gw.upstream writes them:
 *   - a numeric address, or a host name /etc/hosts lists: fixed, looked
 *     at when the config loads (the hosts file has no TTL);
 *   - any other host name ("api.internal:8080"): looked up with A and AAAA
 *     queries to settings.resolver (default: the first nameserver of
 *     /etc/resolv.conf); every address is a target of its own, named
 *     "10.0.0.7:8080", with the declared weight (Envoy's STRICT_DNS), and
 *     its requests carry Host: api.internal:8080. Asked again when the
 *     records' TTL ends (clamped to settings.dns.min_ttl .. max_ttl);
 *   - "srv://_http._tcp.api.internal": an SRV query; every address of
 *     every record's target (from the answer's additional section, else
 *     looked up) is a target with the record's port and weight (0 counts
 *     as 1) and priority: only the best (lowest) priority that has a
 *     target up takes requests.
 *
 * A lookup that fails (timeout, SERVFAIL, REFUSED, a malformed answer),
 * says NXDOMAIN, or finds no address keeps the last good set: one log
 * line when a name starts failing and one when it answers again, each
 * lookup counted in moongate_dns_lookups_total{name,result}; the next try
 * after settings.dns.retry. A family (A or AAAA) that fails keeps its own
 * last addresses while the other's change. A name never resolved has no
 * target yet (requests that need one get 503) until it answers.
 *
 * Admin API changes (POST/PUT/DELETE /upstreams/NAME/targets...: add a
 * target, remove one, set a weight, drain) are kept per upstream name and
 * applied over the declared and looked-up targets, across reloads, until
 * a reload changes that upstream's declared targets in the file: then the
 * file wins and its changes are dropped (logged).
 */
#ifndef MG_DISCOVERY_H
#define MG_DISCOVERY_H

#include <stddef.h>
#include <uv.h>
#include "generation.h"
#include "sbuf.h"

struct mg_workers_s;
typedef struct mg_discovery_s mg_discovery_t;

/* A discovery on the control loop, publishing to ws's workers. NULL when
 * out of memory. */
mg_discovery_t *mg_discovery_new(uv_loop_t *loop, struct mg_workers_s *ws);

/* gen is about to be run (start, or a reload before the workers take it):
 * its resolver settings apply from now on, names it has that were never
 * looked up are looked up now (blocking the control thread for at most
 * settings.dns.timeout x attempts, twice for SRV names), the admin changes
 * of upstreams whose declared targets changed are dropped, and every
 * upstream's set is published into gen. 0, or -1 when out of memory. */
int mg_discovery_load(mg_discovery_t *d, mg_gen_t *gen);
/* The workers run gen now (after a reload commits, or once they started):
 * lookups and admin changes go to it. The previous one's reference is
 * dropped, gen's is taken. */
void mg_discovery_switch(mg_discovery_t *d, mg_gen_t *gen);
/* Stops lookups; the memory goes once their handles closed (run the loop). */
void mg_discovery_stop(mg_discovery_t *d);

/* The admin API's target endpoints: `method` on "/upstreams/NAME/targets"
 * (POST: add) or "/upstreams/NAME/targets/TARGET" (PUT: weight, drain;
 * DELETE: remove), path percent-decoded here, body a JSON object. Returns
 * the HTTP status with *out (malloc'd JSON) set. */
int mg_discovery_admin(mg_discovery_t *d, const char *method, const char *path, size_t plen,
                       const char *body, size_t blen, char **out, size_t *len);

/* /upstreams: upstream ui's "dns" member (its names' state), appended to b
 * after the upstream's other members; nothing for one without names. */
void mg_discovery_upstream_json(mg_discovery_t *d, size_t ui, mg_sbuf_t *b);
/* /metrics: the moongate_dns_* families. */
void mg_discovery_metrics(mg_discovery_t *d, mg_sbuf_t *b);

#endif
