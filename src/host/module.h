/* What the daemon hands every service and what each service hands back, so
 * that bulwarkd runs its services from a table without knowing any of them:
 * a service builds its instance from its own configuration (init), plugs
 * in either as a routing table on the shared port or as the service of a
 * listener of its own, and reports its live figures.
 */
#ifndef BULWARK_SVC_MODULE_H
#define BULWARK_SVC_MODULE_H

#include <stdint.h>

#include "bulwark/buf.h"
#include "bulwark/err.h"
#include "host/store.h"
#include "host/durable.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "host/registry.h"
#include "host/stats.h"

/* What the daemon shares with its services. Everything outlives them. */
struct bw_host {
	struct bw_engine *eng;
	struct bw_registry *reg; /* clients and files, in RAM over the store */
	struct bw_store *store;
	/* the store's group commit: a reply that promises durability waits
	 * for the fsync that covers its commits (one for every service) */
	struct bw_durable *durable;
	const char *data_dir;
	int64_t started_s;
	/* every service's figures, in a fixed order (the console's STAT) */
	void (*stats)(const void *arg, bw_stat_emit emit, void *emit_arg);
	/* every service's errors by kind (bw_module.errors), same arg */
	void (*errors)(const void *arg, bw_stat_emit emit, void *emit_arg);
	const void *stats_arg;
	/* figures with labels (the shared port's requests), appended to out
	 * in the Prometheus text format: 0 or BW_ETOOBIG */
	int (*metrics)(const void *arg, struct bw_buf *out);
	const void *metrics_arg;
};

struct bw_module {
	const char *name;
	/* Builds the instance from cfg (the service's own configuration
	 * struct). On failure nothing is left to free. */
	int (*init)(const struct bw_host *h, const void *cfg,
		    void **inst) BW_WUR;
	/* After the engine has closed: no connection or job is left. */
	void (*fini)(void *inst);
	/* SIGHUP: cfg is the service's configuration again, with only
	 * values that may change while running changed. NULL: nothing of
	 * it may change. */
	void (*reload)(void *inst, const void *cfg);
	/* The live figures; NULL: none. */
	bw_stats_fn stats;
	/* What went wrong since start, one figure per kind (key: the kind,
	 * label: what it means); NULL: nothing to report. */
	bw_stats_fn errors;
	/* Where it plugs in, exactly one of the two: a routing table on the
	 * shared port (its context is the instance), or the service of a
	 * listener of its own (its instance is the instance). */
	const struct bw_frame_proto *proto;
	const struct bw_service *service;
};

#endif
