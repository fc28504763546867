/* Per-source-address counters (exact IP): open connections, uploads in
 * progress, registrations in the current minute. Bounded: an entry lives
 * while it counts something, and idle entries are dropped when the table is
 * full or swept. Loop thread only.
 */
#ifndef BULWARK_ADDRTAB_H
#define BULWARK_ADDRTAB_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/hash.h"

#define BW_ADDR_TEXT 48 /* an IPv6 address in text, with NUL */

struct bw_addr {
	char addr[BW_ADDR_TEXT];
	unsigned conns;		/* open connections (all services) */
	unsigned console_conns; /* of which the console's */
	unsigned uploads;	/* vault uploads and refused bodies */
	unsigned regs;		/* registrations since reg_start_ms */
	uint64_t reg_start_ms;	/* start of the registration window */
	uint64_t failed_ms;	/* last time a limit refused this address */
};

struct bw_addrtab {
	struct bw_hash map;
	size_t cap; /* most entries kept */
};

int bw_addrtab_init(struct bw_addrtab *t, size_t cap)
	__attribute__((warn_unused_result));
void bw_addrtab_fini(struct bw_addrtab *t);
/* The entry for addr, created if absent; NULL when the table is full of
 * entries that still count something (or out of memory). The pointer stays
 * valid while the entry counts something. */
struct bw_addr *bw_addrtab_get(struct bw_addrtab *t, const char *addr,
			       uint64_t now_ms);
/* Drops entries that count nothing and whose registration window ended. */
void bw_addrtab_sweep(struct bw_addrtab *t, uint64_t now_ms);
/* Counts a registration if fewer than per_min happened in the current
 * minute: 0, or BW_ETOOBIG when over the limit (0 per_min = no limit). */
int bw_addr_count_reg(struct bw_addr *a, unsigned per_min, uint64_t now_ms);
/* The IP part of "ip:port" (or "[ip]:port") into out[BW_ADDR_TEXT]. */
void bw_addr_of_peer(const char *peer, char out[BW_ADDR_TEXT]);

#endif
