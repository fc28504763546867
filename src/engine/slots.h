/* Slots for request bodies arriving (the vault's uploads, the messenger's
 * 603 contents, and refused bodies being discarded): a cap in all and one
 * per source address, so neither many slow peers nor one address can hold
 * every slot. When every slot is taken, a newcomer takes the slot of a
 * holder that behaves as no honest sender does: one that has sent nothing
 * for BW_SLOT_RECENT_MS, or whose rate over its last few seconds is below
 * the minimum (--min-rate); of those, the one that moved least recently.
 * What a body still has to send never counts (a large file on a modest
 * link is no trickle), nor does a holder's average since it began (a
 * burst, then a stop, would keep it above any minimum for hours). A
 * holder keeps its slot for its first BW_SLOT_GRACE_MS, and a body all in
 * is being committed, never taken off. Loop thread only.
 */
#ifndef BULWARK_ENGINE_SLOTS_H
#define BULWARK_ENGINE_SLOTS_H

#include <stdint.h>

#include "bulwark/addrtab.h"
#include "bulwark/err.h"
#include "bulwark/util.h"
#include "engine/engine.h"

#define BW_SLOT_GRACE_MS  1000u /* a holder keeps its slot this long */
#define BW_SLOT_RECENT_MS 2000u /* "lately": its rate over 2 to 4 s */

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
	/* left as it was at two marks, the newer one at most
	 * BW_SLOT_RECENT_MS old while bytes come: its recent rate */
	uint64_t mark_ms[2], mark_left[2];
	uint64_t moved_ms; /* when a byte last came */
	bw_slot_evict_fn evict;
	int taken;
};

struct bw_slots {
	unsigned n;		   /* slots taken */
	unsigned max, per_addr;	   /* caps (0 per_addr: none) */
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
	uint64_t now;

	if (left == s->left)
		return;
	now = bw_now_ms();
	s->left = left;
	s->moved_ms = now;
	if (now - s->mark_ms[1] >= BW_SLOT_RECENT_MS) {
		s->mark_ms[0] = s->mark_ms[1];
		s->mark_left[0] = s->mark_left[1];
		s->mark_ms[1] = now;
		s->mark_left[1] = left;
	}
}

#endif
