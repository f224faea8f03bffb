/* health.h: active health checks of upstream targets.
 *
 * Runs on the control thread's loop. Every target of an upstream with a
 * `health` option gets `GET <path>` on a fresh connection every `interval`;
 * an answer 200-399 within `timeout` is a good check, anything else (refused,
 * reset, timeout, another status) a failed one. `fall` failed checks in a
 * row take the target out of its upstream's balancing (mg_target_health_t
 * .down, read by every worker's balancer); `rise` good ones bring it back.
 * When every target of an upstream is out, they all get traffic again (a
 * wrong health path must not take a whole service down).
 *
 * The state lives in the generation (mg_gen_t.health); a reload carries it
 * over to the new generation by upstream and target name, so a target that
 * is down stays down.
 */
#ifndef MG_HEALTH_H
#define MG_HEALTH_H

#include <uv.h>
#include "generation.h"

typedef struct mg_health_s mg_health_t;

/* Starts checking gen's upstreams (holds a reference to gen). NULL when out
 * of memory. */
mg_health_t *mg_health_start(uv_loop_t *loop, mg_gen_t *gen);
/* A reload: check gen's upstreams from now on, carrying the state over. */
void mg_health_switch(mg_health_t *h, mg_gen_t *gen);
/* Stops the checks; probes in flight are closed and everything is freed
 * once their handles are (run the loop). */
void mg_health_stop(mg_health_t *h);

#endif
