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

/* How long s's holder would still take at its average rate so far, in ms
 * (UINT64_MAX when nothing came). */
static uint64_t
projected_ms(const struct bw_slot *s, uint64_t now)
{
	uint64_t done = s->size - s->left, elapsed = now - s->start_ms;

	if (done == 0)
		return UINT64_MAX;
	if (s->left > UINT64_MAX / (elapsed ? elapsed : 1))
		return UINT64_MAX;
	return s->left * elapsed / done;
}

/* Whether s's holder averaged less than min_rate bytes/s so far: one that
 * sent a little and stopped projects a short finish (as long again as it
 * took, for half a body) and would keep its slot until its idle timeout. */
static int
below_rate(const struct bw_slots *p, const struct bw_slot *s, uint64_t now)
{
	uint64_t done = s->size - s->left, elapsed = now - s->start_ms;

	return p->min_rate > 0 &&
	       done * 1000u < (uint64_t)p->min_rate * elapsed;
}

/* The holder that would take longest, if that is over the window or it is
 * below the minimum rate, and it has had its slot for the grace; NULL
 * otherwise. */
static struct bw_slot *
slowest(const struct bw_slots *p, uint64_t now)
{
	struct bw_slot *s, *worst = NULL;
	uint64_t t, worst_t = 0;

	for (s = p->head; s != NULL; s = s->next) {
		/* a body all in is being committed, not trickled: never taken
		 * off its slot (its reply would follow a 2107) */
		if (now - s->start_ms < BW_SLOT_GRACE_MS || s->evict == NULL ||
		    s->left == 0)
			continue;
		t = below_rate(p, s, now) ? UINT64_MAX : projected_ms(s, now);
		if (t > p->window_ms && (worst == NULL || t > worst_t)) {
			worst = s;
			worst_t = t;
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
		if (below_rate(p, victim, now))
			bw_info("c%llu: its body came slower than %u bytes/s; "
				"its slot goes to c%llu",
				(unsigned long long)victim->c->id, p->min_rate,
				(unsigned long long)c->id);
		else
			bw_info("c%llu: its body would take %llu s more at "
				"its rate; its slot goes to c%llu",
				(unsigned long long)victim->c->id,
				(unsigned long long)(projected_ms(victim, now) /
						     1000u),
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
	s->start_ms = now;
	s->size = s->left = size;
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
