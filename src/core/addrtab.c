/* The per-address table behind addrtab.h: a hash of small entries keyed by
 * the address text, each freed once it counts nothing.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/addrtab.h"
#include "bulwark/err.h"

#define REG_WINDOW_MS 60000u
#define TLS_WINDOW_MS 1000u

int
bw_addrtab_init(struct bw_addrtab *t, size_t cap)
{
	t->cap = cap;
	t->slots_n = 0;
	t->evicted = 0;
	return bw_hash_init(&t->map);
}

static int
free_one(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

void
bw_addrtab_fini(struct bw_addrtab *t)
{
	if (t->map.slots != NULL)
		(void)bw_hash_each(&t->map, free_one, NULL);
	bw_hash_fini(&t->map);
}

int
bw_addrtab_slot(struct bw_addrtab *t)
{
	if (t->slots_n >= BW_ADDR_SLOTS)
		return BW_ETOOBIG;
	return (int)t->slots_n++;
}

static int
idle(const struct bw_addr *a, uint64_t now_ms)
{
	unsigned i;

	for (i = 0; i < BW_ADDR_SLOTS; i++) {
		if (a->held[i] != 0)
			return 0;
	}
	return a->conns == 0 && bw_addr_strikes(a, now_ms) == 0 &&
	       now_ms - a->reg_start_ms >= REG_WINDOW_MS &&
	       now_ms - a->tls_start_ms >= TLS_WINDOW_MS;
}

struct sweep {
	struct bw_addr *victims[256];
	size_t n;
	uint64_t now_ms;
};

static int
collect_idle(void *arg, void *val)
{
	struct sweep *s = arg;

	if (idle(val, s->now_ms))
		s->victims[s->n++] = val;
	return s->n == sizeof(s->victims) / sizeof(s->victims[0]);
}

void
bw_addrtab_sweep(struct bw_addrtab *t, uint64_t now_ms)
{
	struct sweep s;
	size_t i;

	do {
		s.n = 0;
		s.now_ms = now_ms;
		(void)bw_hash_each(&t->map, collect_idle, &s);
		for (i = 0; i < s.n; i++) {
			bw_hash_del(&t->map, s.victims[i]->addr,
				    strlen(s.victims[i]->addr));
			free(s.victims[i]);
		}
	} while (s.n == sizeof(s.victims) / sizeof(s.victims[0]));
}

static int
pinned(const struct bw_addr *a)
{
	unsigned i;

	for (i = 0; i < BW_ADDR_SLOTS; i++) {
		if (a->held[i] != 0)
			return 1;
	}
	return a->conns != 0;
}

static int
collect_unpinned(void *arg, void *val)
{
	struct sweep *s = arg;

	if (!pinned(val))
		s->victims[s->n++] = val;
	return s->n == sizeof(s->victims) / sizeof(s->victims[0]);
}

/* The table is full of entries that still count something: those that
 * only remember (strikes, a registration window) make room, so a flood of
 * addresses costs memory for a while but never locks out a new peer. */
static void
evict_unpinned(struct bw_addrtab *t)
{
	struct sweep s;
	size_t i;

	s.n = 0;
	(void)bw_hash_each(&t->map, collect_unpinned, &s);
	for (i = 0; i < s.n; i++) {
		bw_hash_del(&t->map, s.victims[i]->addr,
			    strlen(s.victims[i]->addr));
		free(s.victims[i]);
	}
	t->evicted += s.n;
}

struct bw_addr *
bw_addrtab_get(struct bw_addrtab *t, const char *addr, uint64_t now_ms)
{
	struct bw_addr *a;
	size_t n = strnlen(addr, BW_ADDR_TEXT);

	if (n == BW_ADDR_TEXT)
		return NULL;
	if ((a = bw_hash_get(&t->map, addr, n)) != NULL)
		return a;
	if (t->map.n >= t->cap) {
		bw_addrtab_sweep(t, now_ms);
		if (t->map.n >= t->cap)
			evict_unpinned(t);
		if (t->map.n >= t->cap)
			return NULL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	memcpy(a->addr, addr, n);
	/* a new entry's window has already ended: it counts nothing yet */
	a->reg_start_ms = now_ms - REG_WINDOW_MS;
	a->tls_start_ms = now_ms - TLS_WINDOW_MS;
	if (bw_hash_put(&t->map, a->addr, n, a) != 0) {
		free(a);
		return NULL;
	}
	return a;
}

int
bw_addr_count_reg(struct bw_addr *a, unsigned per_min, uint64_t now_ms)
{
	if (now_ms - a->reg_start_ms >= REG_WINDOW_MS) {
		a->reg_start_ms = now_ms;
		a->regs = 0;
	}
	if (per_min != 0 && a->regs >= per_min)
		return BW_ETOOBIG;
	a->regs++;
	return 0;
}

int
bw_addr_count_tls(struct bw_addr *a, unsigned per_sec, uint64_t now_ms)
{
	if (now_ms - a->tls_start_ms >= TLS_WINDOW_MS) {
		a->tls_start_ms = now_ms;
		a->tls_n = 0;
	}
	if (per_sec != 0 && a->tls_n >= per_sec)
		return BW_ETOOBIG;
	a->tls_n++;
	return 0;
}

void
bw_addr_strike(struct bw_addr *a, uint64_t now_ms)
{
	if (bw_addr_strikes(a, now_ms) == 0)
		a->strikes = 0;
	a->strikes++;
	a->strike_ms = now_ms;
}

unsigned
bw_addr_strikes(const struct bw_addr *a, uint64_t now_ms)
{
	return now_ms - a->strike_ms < BW_ADDR_STRIKE_KEEP ? a->strikes : 0;
}

/* One text per counted address: "0::1" and "::1", a v1 PROXY header's
 * "::ffff:10.0.0.1" and another's "10.0.0.1", are one. */
static void
canonical(char text[BW_ADDR_TEXT])
{
	unsigned char b[16];
	size_t n;

	if (inet_pton(AF_INET, text, b) == 1) {
		(void)inet_ntop(AF_INET, b, text, BW_ADDR_TEXT);
		return;
	}
	if (inet_pton(AF_INET6, text, b) != 1)
		return;
	if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)b)) {
		(void)inet_ntop(AF_INET, b + 12, text, BW_ADDR_TEXT);
		return;
	}
	memset(b + 8, 0, 8);
	if (inet_ntop(AF_INET6, b, text, BW_ADDR_TEXT - 3) == NULL)
		return;
	n = strlen(text);
	memcpy(text + n, "/64", 4);
}

void
bw_addr_host(const char *peer, char out[BW_ADDR_TEXT])
{
	const char *colon = strrchr(peer, ':');
	size_t n = colon != NULL ? (size_t)(colon - peer) : strlen(peer);

	if (n > 0 && peer[0] == '[') {
		peer++;
		n -= n >= 2 ? 2 : 1;
	}
	if (n >= BW_ADDR_TEXT)
		n = BW_ADDR_TEXT - 1;
	memcpy(out, peer, n);
	out[n] = '\0';
}

void
bw_addr_of_peer(const char *peer, char out[BW_ADDR_TEXT])
{
	bw_addr_host(peer, out);
	canonical(out);
}
