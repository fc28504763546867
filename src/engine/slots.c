/* The body slots (slots.h): who holds one, and who gives it up to a
 * newcomer when all are taken.
 */
#include <stddef.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/slots.h"

int
bw_slots_init(struct bw_slots *p, struct bw_engine *e)
{
	int rc = bw_addrtab_slot(&e->addrs);

	if (rc < 0)
		return rc;
	p->addr_slot = rc;
	return 0;
}

/* s's rate lately, in bytes/s: over the last two marks' span (2 to 4 s),
 * or, once nothing has come for BW_SLOT_RECENT_MS, since the newer mark
 * alone (which falls to nothing as the silence lasts). */
static uint64_t
recent_rate(const struct bw_slot *s, uint64_t now)
{
	int k = now - s->mark_ms[1] >= BW_SLOT_RECENT_MS ? 1 : 0;
	uint64_t span = now - s->mark_ms[k];

	return span == 0 ? UINT64_MAX
			 : (s->mark_left[k] - s->left) * 1000u / span;
}

/* The holder that behaves as no honest sender does (silent for
 * BW_SLOT_RECENT_MS, or slower than min_rate lately), past its grace and
 * still receiving; of those, the slowest lately. NULL: none. */
static struct bw_slot *
slowest(const struct bw_slots *p, uint64_t now)
{
	struct bw_slot *s, *worst = NULL;
	uint64_t r, worst_r = 0;

	for (s = p->head; s != NULL; s = s->next) {
		/* a body all in is being committed, not trickled: never taken
		 * off its slot (its reply would follow a 2107) */
		if (now - s->start_ms < BW_SLOT_GRACE_MS || s->evict == NULL ||
		    s->left == 0)
			continue;
		r = recent_rate(s, now);
		if (now - s->moved_ms < BW_SLOT_RECENT_MS && r >= p->min_rate)
			continue; /* sending, and fast enough */
		if (worst == NULL || r < worst_r) {
			worst = s;
			worst_r = r;
		}
	}
	return worst;
}

int
bw_slots_take(struct bw_slots *p, struct bw_slot *s, struct bw_conn *c,
	      uint64_t size, bw_slot_evict_fn evict, const char **why)
{
	struct bw_slot *victim;
	uint64_t now = bw_now_ms();

	if (c->addr != NULL && p->per_addr > 0 &&
	    c->addr->held[p->addr_slot] >= p->per_addr) {
		p->refused++;
		*why = "too many in progress from this address";
		return BW_EBUSY;
	}
	if (p->n >= p->max && (victim = slowest(p, now)) != NULL) {
		if (now - victim->moved_ms >= BW_SLOT_RECENT_MS)
			bw_info("c%llu: its body has sent nothing for %llu "
				"ms; its slot goes to c%llu",
				(unsigned long long)victim->c->id,
				(unsigned long long)(now - victim->moved_ms),
				(unsigned long long)c->id);
		else
			bw_info("c%llu: its body came slower than %u bytes/s "
				"lately; its slot goes to c%llu",
				(unsigned long long)victim->c->id, p->min_rate,
				(unsigned long long)c->id);
		p->evicted++;
		victim->evict(victim);
	}
	if (p->n >= p->max) {
		p->refused++;
		*why = "too many in progress";
		return BW_EBUSY;
	}
	s->c = c;
	s->addr = c->addr;
	s->start_ms = s->moved_ms = s->mark_ms[0] = s->mark_ms[1] = now;
	s->size = s->left = s->mark_left[0] = s->mark_left[1] = size;
	s->evict = evict;
	s->taken = 1;
	s->prev = NULL;
	s->next = p->head;
	if (p->head != NULL)
		p->head->prev = s;
	p->head = s;
	p->n++;
	if (s->addr != NULL)
		s->addr->held[p->addr_slot]++;
	return 0;
}

void
bw_slots_release(struct bw_slots *p, struct bw_slot *s)
{
	if (!s->taken)
		return;
	s->taken = 0;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		p->head = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	p->n--;
	if (s->addr != NULL)
		s->addr->held[p->addr_slot]--;
	s->addr = NULL;
}
