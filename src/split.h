/* split.h: which upstream a request on a route with a canary or a traffic
 * split goes to (split.c; docs/traffic.md, "Traffic split and canaries").
 *
 * The choice is made once, when the router has matched the route (the
 * pipeline calls mg_split_route before on_route), on the request as
 * on_request left it: a matching canary header or cookie sends it to the
 * canary's upstream; else the split's entries share the requests by weight,
 * by a smooth weighted rotation per worker (the round robin balancer's,
 * balancer_rr.c) or, with split.key, by the key's hash so that one key
 * always goes to one upstream. A hook's req:set_upstream still overrides
 * it. The testing kit runs the same function on its own requests
 * (mg_ffi_kit_split), so the kit, the REPL and the gateway choose alike.
 */
#ifndef MG_SPLIT_H
#define MG_SPLIT_H

#include "config.h"
#include "request.h"

/* How the upstream was chosen (r->split_how; the access log's "split"). */
enum { MG_SPLIT_NONE = 0, MG_SPLIT_CANARY = 1, MG_SPLIT_WEIGHT = 2, MG_SPLIT_KEY = 3 };

/* The upstream (index) r goes to on route rt, which has a canary or a
 * split, and how (MG_SPLIT_*) in *how. cw: rt's split entries' current
 * weights (rt->split->n ints) of the calling worker, advanced by a
 * rotation's pick; unused otherwise. Reads r, allocates nothing. */
int mg_split_choose(const mg_request_t *r, const mg_route_t *rt, int *cw, int *how);

/* Sets r->split_upstream and r->split_how for r->route (which has a canary
 * or a split), with r's worker's current weights. */
void mg_split_route(mg_request_t *r);

/* "canary", "weight", "key", or NULL for MG_SPLIT_NONE. */
const char *mg_split_how_name(int how);

#endif
