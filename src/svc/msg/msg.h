/* The messenger (docs/messenger-protocol.md, requests 600-604): a routing table
 * on the shared port beside the vault's, one identity with it (a client of
 * either is a row of clients), and messages held durably in the store until
 * the recipient has shown that it received them.
 */
#ifndef BULWARK_SVC_MSG_H
#define BULWARK_SVC_MSG_H

#include <stdint.h>

#include "engine/engine.h"
#include "host/module.h"

struct bw_msg_cfg {
	struct bw_conn_limits limits; /* of its connections */
	uint64_t max_content;	      /* largest content of a send (603)
				       * (default 1 GiB) */
	uint64_t max_queued_n;	      /* messages waiting for one recipient */
	uint64_t max_queued_bytes;    /* their content bytes */
	uint64_t pull_cap;	      /* the payload of a waiting reply
				       * (2104; default 64 MiB) */
	uint64_t inline_max;	      /* larger contents go to a file */
	unsigned max_bodies;	      /* bodies of sends (603) arriving at once,
				       * all clients */
	unsigned max_bodies_per_addr; /* of those, from one address */
	uint64_t pull_max_n;	      /* messages in one waiting reply (2104) */
	unsigned max_pulls;	      /* pulls (604) of one client answered
				       * at once */
	uint64_t reply_memory; /* bytes all streamed replies hold at once */
	unsigned window_ms;    /* the body of a send (603) has its rate
				* checked per window */
	unsigned min_rate;     /* bytes/s the body of a send (603) must
				* keep up */
};

void bw_msg_cfg_defaults(struct bw_msg_cfg *cfg);

/* The service: messages/ under the data directory, reconciled with the
 * table at init, and each recipient's queue totals loaded; a table on the
 * shared port; figures: queued messages and bytes, commits, deliveries. */
extern const struct bw_module bw_msg_module;

#endif
