/* The messenger (spec/messages.md, requests 600-604): a routing table on
 * the shared port beside the vault's, one identity with it (a client of
 * either is a row of clients), and messages held durably in the store until
 * the recipient has shown that it received them.
 */
#ifndef BULWARK_SVC_MSG_H
#define BULWARK_SVC_MSG_H

#include <stdint.h>

#include "bulwark/err.h"
#include "bulwark/store.h"
#include "svc/engine.h"
#include "svc/frame.h"
#include "svc/registry.h"
#include "svc/stats.h"

struct bw_msg_cfg {
	char data_dir[4096];	   /* messages/ (large contents) lives here */
	uint64_t max_content;	   /* largest 603 content (default 1 GiB) */
	uint64_t max_queued_n;	   /* messages waiting for one recipient */
	uint64_t max_queued_bytes; /* their content bytes */
	uint64_t pull_cap;	   /* a 2104's payload (default 64 MiB) */
	uint64_t inline_max;	   /* larger contents go to a file */
	unsigned window_ms;	   /* a 603 body's rate is checked per window */
	unsigned min_rate;	   /* bytes/s a 603 body must keep up */
};

struct bw_msg;

void bw_msg_cfg_defaults(struct bw_msg_cfg *cfg);
/* Opens messages/, reconciles it with the table, and loads each
 * recipient's queue totals. Everything given must outlive the messenger. */
int bw_msg_open(struct bw_msg **out, const struct bw_msg_cfg *cfg,
		struct bw_engine *eng, struct bw_registry *reg,
		struct bw_store *store) BW_WUR;
/* After the engine has closed. NULL-safe. */
void bw_msg_close(struct bw_msg *m);
/* Queued messages and bytes, commits, pulls in progress. */
void bw_msg_stats(const void *m, bw_stat_emit emit, void *arg);

/* Its table on the shared port; the context is the struct bw_msg. */
extern const struct bw_frame_proto bw_msg_proto;

#endif
