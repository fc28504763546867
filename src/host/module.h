/* What the daemon hands every service and what each service hands back, so
 * that bulwarkd runs its services from a table without knowing any of them:
 * a service builds its instance from its own configuration (init), plugs
 * in either as a routing table on the shared port or as the service of a
 * listener of its own, and reports its live figures and what it keeps.
 */
#ifndef BULWARK_HOST_MODULE_H
#define BULWARK_HOST_MODULE_H

#include <stdint.h>

#include "bulwark/buf.h"
#include "bulwark/err.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "store/blob.h"
#include "store/bus/bus.h"
#include "store/meta.h"
#include "host/registry.h"
#include "store/stats.h"

/* What the daemon shares with its services. Everything outlives them. */
struct bw_host {
	struct bw_engine *eng;
	struct bw_registry *reg; /* the clients, in RAM over the store */
	/* the storage tables: rows (their requests complete on the loop;
	 * a durable one waits for the store's group commit, shared by every
	 * service) and stored objects (blocking: on the workers) */
	struct bw_meta *meta;
	struct bw_blobs *blobs;
	const char *data_dir;
	/* this node's name (--node-name, else the host name), and whether
	 * the operator chose it */
	const char *node;
	int node_given;
	/* the bus between nodes (--bus), or NULL */
	struct bw_bus *bus;
	int64_t started_s;
	/* every service's figures, in a fixed order (the console's STAT) */
	void (*stats)(const void *arg, bw_stat_emit emit, void *emit_arg);
	/* every service's errors by kind (bw_module.errors), same arg */
	void (*errors)(const void *arg, bw_stat_emit emit, void *emit_arg);
	/* the figures shown beside the daemon's own (bw_module.summary) */
	void (*summary)(const void *arg, bw_stat_emit emit, void *emit_arg);
	/* every stored file of every service; returns how many there are */
	uint64_t (*each_file)(const void *arg, bw_file_fn fn, void *fn_arg);
	/* what waits for a client, summed over the services */
	void (*client_queue)(const void *arg, const uint8_t id[BW_ID_LEN],
			     uint64_t *n, uint64_t *bytes);
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
	/* Figures that belong beside the daemon's own (the console's STAT
	 * shows them after the clients, by key with '_' as ' '; the metrics
	 * as gauges bulwark_<key>, label as their help); NULL: none. */
	bw_stats_fn summary;
	/* The files it stores (the console's FILS); NULL: none. */
	bw_each_file_fn each_file;
	/* What it keeps waiting for a client (the console's USRS); NULL:
	 * nothing. */
	bw_client_queue_fn client_queue;
	/* Where it plugs in, exactly one of the two: a routing table on the
	 * shared port (its context is the instance), or the service of a
	 * listener of its own (its instance is the instance). */
	const struct bw_frame_proto *proto;
	const struct bw_service *service;
	/* On a store several daemons share, before a request of its proto
	 * with this code from the client id is served: reads again the rows
	 * of the service's own that the request acts on (the vault: the
	 * client's files; the messenger: a 603's recipient's queue). other:
	 * the client a 602 or 603 names, or NULL. 0 if there is nothing to
	 * read (done is not called), 1 once started (done(arg) follows, on
	 * the loop). NULL: the service keeps nothing of its own in RAM. */
	int (*refresh)(void *inst, const uint8_t id[BW_ID_LEN],
		       const uint8_t *other, uint16_t code,
		       void (*done)(void *arg), void *arg);
};

#endif
