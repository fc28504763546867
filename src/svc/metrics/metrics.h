/* The metrics endpoint: a few lines of HTTP/1.1 on a listener of its own
 * (off unless --metrics-listen is given; loopback is the sensible place),
 * answering GET /metrics with every figure of the daemon in the Prometheus
 * text format. It reads the daemon through the host it is given.
 */
#ifndef BULWARK_SVC_METRICS_H
#define BULWARK_SVC_METRICS_H

#include "engine/engine.h"
#include "host/module.h"

struct bw_metrics_cfg {
	struct bw_conn_limits limits; /* a request's head; the answer */
};

void bw_metrics_cfg_defaults(struct bw_metrics_cfg *cfg);

/* The service, on a listener of its own. */
extern const struct bw_module bw_metrics_module;

#endif
