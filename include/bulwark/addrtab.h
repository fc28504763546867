/* Per-source-address counters (exact IP): open connections, what each
 * service holds for the address (a slot of its own: the vault's uploads in
 * progress), registrations in the current minute, and recent failed
 * attempts (strikes, e.g. wrong passwords). Bounded: an entry lives while
 * it counts something, and idle entries are dropped when the table is full
 * or swept. Loop thread only.
 */
#ifndef BULWARK_ADDRTAB_H
#define BULWARK_ADDRTAB_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/hash.h"

#define BW_ADDR_TEXT	    48	    /* an IPv6 address in text, with NUL */
#define BW_ADDR_SLOTS	    12	    /* counts held per address */
#define BW_ADDR_STRIKE_KEEP 600000u /* ms a strike is remembered */

struct bw_addr {
	char addr[BW_ADDR_TEXT];
	unsigned conns;		      /* open connections (all services) */
	unsigned held[BW_ADDR_SLOTS]; /* per service (bw_addrtab_slot) */
	unsigned regs;		      /* registrations since reg_start_ms */
	uint64_t reg_start_ms;	      /* start of the registration window */
	uint64_t failed_ms; /* last time a limit refused this address */
	unsigned strikes;   /* failed attempts, the last at strike_ms */
	uint64_t strike_ms;
	unsigned tls_n;	       /* TLS handshakes begun since tls_start_ms */
	unsigned tls_bulk;     /* its connections holding a TLS bulk read */
	uint64_t tls_start_ms; /* start of that one-second window */
};

struct bw_addrtab {
	struct bw_hash map;
	size_t cap;	  /* most entries kept */
	unsigned slots_n; /* held[] slots given out */
	uint64_t evicted; /* entries dropped, when full, while remembering */
};

int bw_addrtab_init(struct bw_addrtab *t, size_t cap)
	__attribute__((warn_unused_result));
void bw_addrtab_fini(struct bw_addrtab *t);
/* The entry for addr, created if absent. When the table is full, entries
 * that only remember (strikes, a registration window) are dropped to make
 * room; NULL only when every entry has a connection or a held count (or
 * out of memory). The pointer stays valid while the entry counts a
 * connection or a held count, or until the next bw_addrtab_get or sweep
 * otherwise. */
struct bw_addr *bw_addrtab_get(struct bw_addrtab *t, const char *addr,
			       uint64_t now_ms);
/* A slot of held[] for one service's own count: its index, or BW_ETOOBIG
 * when every slot is taken. */
int bw_addrtab_slot(struct bw_addrtab *t) __attribute__((warn_unused_result));
/* Drops entries that count nothing and whose registration window ended. */
void bw_addrtab_sweep(struct bw_addrtab *t, uint64_t now_ms);
/* Counts a registration if fewer than per_min happened in the current
 * minute: 0, or BW_ETOOBIG when over the limit (0 per_min = no limit). */
int bw_addr_count_reg(struct bw_addr *a, unsigned per_min, uint64_t now_ms);
/* Counts a TLS handshake begun if fewer than per_sec began in the current
 * second: 0, or BW_ETOOBIG when over the limit (0 = no limit). */
int bw_addr_count_tls(struct bw_addr *a, unsigned per_sec, uint64_t now_ms);
/* Counts a failed attempt. Strikes are forgotten BW_ADDR_STRIKE_KEEP ms
 * after the last one. */
void bw_addr_strike(struct bw_addr *a, uint64_t now_ms);
/* Strikes still remembered at now_ms. */
unsigned bw_addr_strikes(const struct bw_addr *a, uint64_t now_ms);
/* The address "ip:port" (or "[ip]:port") is counted under, into
 * out[BW_ADDR_TEXT]: an IPv4 address in its usual form (an IPv4-mapped
 * IPv6 one too), an IPv6 one as its /64 ("2001:db8:1:2::/64": one host
 * usually has a whole /64 to pick from), anything else as it is. */
void bw_addr_of_peer(const char *peer, char out[BW_ADDR_TEXT]);
/* The IP part of "ip:port" (or "[ip]:port") as it is written. */
void bw_addr_host(const char *peer, char out[BW_ADDR_TEXT]);

#endif
