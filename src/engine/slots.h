/* Slots for request bodies arriving (the vault's uploads, the messenger's
 * 603 contents, and refused bodies being discarded): a cap in all and one
 * per source address, so neither many slow peers nor one address can hold
 * every slot. When every slot is taken, a newcomer takes the slot of the
 * holder that would need longest to finish at its own average rate so far,
 * if that is more than the window (--timeout) away, or whose average rate
 * is below the minimum (--min-rate), and the holder has had its slot for a
 * second: a body trickled, or one that stopped, yields to one that may be
 * fast. Loop thread only.
 */
#ifndef BULWARK_ENGINE_SLOTS_H
#define BULWARK_ENGINE_SLOTS_H

#include <stdint.h>

#include "bulwark/addrtab.h"
#include "bulwark/err.h"
#include "engine/engine.h"

#define BW_SLOT_GRACE_MS 1000u /* a holder keeps its slot this long */

struct bw_slot;
/* Takes s's holder off its slot (answer, close): must call
 * bw_slots_release(s) before it returns. */
typedef void (*bw_slot_evict_fn)(struct bw_slot *s);

struct bw_slot {
	struct bw_slot *prev, *next;
	struct bw_conn *c;
	struct bw_addr *addr; /* counted in held[addr_slot]; NULL: untracked */
	uint64_t start_ms;
	uint64_t size, left; /* bytes of the body, and still to come */
	bw_slot_evict_fn evict;
	int taken;
};

struct bw_slots {
	unsigned n;		   /* slots taken */
	unsigned max, per_addr;	   /* caps (0 per_addr: none) */
	unsigned window_ms;	   /* a holder must finish within this */
	unsigned min_rate;	   /* bytes/s a holder must average (0: any) */
	int addr_slot;		   /* its count in bw_addr.held[] */
	struct bw_slot *head;	   /* holders */
	uint64_t evicted, refused; /* since start */
};

/* A pool counting per address in a slot of e's address table. */
int bw_slots_init(struct bw_slots *p, struct bw_engine *e) BW_WUR;
/* A slot for c's body of size bytes: 0 (s is c's), or BW_EBUSY with *why
 * saying which cap refused it. May evict another holder (its evict runs
 * here). */
int bw_slots_take(struct bw_slots *p, struct bw_slot *s, struct bw_conn *c,
		  uint64_t size, bw_slot_evict_fn evict,
		  const char **why) BW_WUR;
/* The body is over (or gone): the slot is free. Safe on a slot not taken. */
void bw_slots_release(struct bw_slots *p, struct bw_slot *s);

/* left bytes of s's body are still to come. */
static inline void
bw_slot_progress(struct bw_slot *s, uint64_t left)
{
	s->left = left;
}

#endif
