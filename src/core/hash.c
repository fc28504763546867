/* Chained hash map keyed by SipHash-1-3 under a random 128-bit key per
 * table: keys come from peers, so no one may choose keys that share a chain
 * without knowing the table's key.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/hash.h"
#include "bulwark/log.h"

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static inline void
sipround(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = ROTL(v[1], 13);
	v[1] ^= v[0];
	v[0] = ROTL(v[0], 32);
	v[2] += v[3];
	v[3] = ROTL(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = ROTL(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = ROTL(v[1], 17);
	v[1] ^= v[2];
	v[2] = ROTL(v[2], 32);
}

static inline uint64_t
load_le64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 |
	       (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
	       (uint64_t)p[7] << 56;
}

/* SipHash-c-d (Aumasson and Bernstein) with c compression and d
 * finalisation rounds; k[0] and k[1] are the key's two little-endian
 * halves. */
static inline uint64_t
siphash(int c, int d, const uint64_t k[2], const void *msg, size_t n)
{
	const uint8_t *p = msg; /* NULL when n is 0: never offset then */
	size_t whole = n & ~(size_t)7, off;
	uint64_t v[4] = {
		k[0] ^ 0x736f6d6570736575ULL, k[1] ^ 0x646f72616e646f6dULL,
		k[0] ^ 0x6c7967656e657261ULL, k[1] ^ 0x7465646279746573ULL};
	uint64_t m, b = (uint64_t)n << 56;
	int i;

	for (off = 0; off < whole; off += 8) {
		m = load_le64(p + off);
		v[3] ^= m;
		for (i = 0; i < c; i++)
			sipround(v);
		v[0] ^= m;
	}
	switch (n & 7) {
	case 7:
		b |= (uint64_t)p[whole + 6] << 48;
		/* fall through */
	case 6:
		b |= (uint64_t)p[whole + 5] << 40;
		/* fall through */
	case 5:
		b |= (uint64_t)p[whole + 4] << 32;
		/* fall through */
	case 4:
		b |= (uint64_t)p[whole + 3] << 24;
		/* fall through */
	case 3:
		b |= (uint64_t)p[whole + 2] << 16;
		/* fall through */
	case 2:
		b |= (uint64_t)p[whole + 1] << 8;
		/* fall through */
	case 1:
		b |= (uint64_t)p[whole + 0];
		break;
	default:
		break;
	}
	v[3] ^= b;
	for (i = 0; i < c; i++)
		sipround(v);
	v[0] ^= b;
	v[2] ^= 0xff;
	for (i = 0; i < d; i++)
		sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t
bw_siphash13(const uint64_t k[2], const void *msg, size_t n)
{
	return siphash(1, 3, k, msg, n);
}

uint64_t
bw_siphash24(const uint64_t k[2], const void *msg, size_t n)
{
	return siphash(2, 4, k, msg, n);
}

static uint64_t
hash_bytes(const struct bw_hash *h, const void *key, size_t n)
{
	return siphash(1, 3, h->key, key, n);
}

#define SLOTS_MIN 64u

/* A table without slots (an init whose allocation failed, or after fini)
 * is empty: lookups find nothing, and the next put allocates them. */
static int
has_slots(struct bw_hash *h)
{
	if (h->slots != NULL)
		return 1;
	if ((h->slots = calloc(SLOTS_MIN, sizeof(*h->slots))) == NULL)
		return 0;
	h->slots_n = SLOTS_MIN;
	return 1;
}

int
bw_hash_init(struct bw_hash *h)
{
	struct timespec ts;

	memset(h, 0, sizeof(*h));
	/* The generator does not fail once seeded, which the daemon's start
	 * made sure of; should it, a table keyed by what a peer cannot see
	 * still beats no table. */
	if (bw_random(h->key, sizeof(h->key)) != 0) {
		(void)clock_gettime(CLOCK_MONOTONIC, &ts);
		h->key[0] = (uint64_t)(uintptr_t)h ^ 0x9e3779b97f4a7c15ULL;
		h->key[1] = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30;
		bw_warn("hash: no random key for a table; keyed by the clock");
	}
	return has_slots(h) ? 0 : BW_ENOMEM;
}

void
bw_hash_fini(struct bw_hash *h)
{
	struct bw_hash_ent *e, *next;
	size_t i;

	if (h->slots == NULL)
		return;
	for (i = 0; i < h->slots_n; i++) {
		for (e = h->slots[i]; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(h->slots);
	h->slots = NULL;
	h->slots_n = 0;
	h->n = 0;
}

static struct bw_hash_ent **
find(const struct bw_hash *h, const void *key, size_t key_len, uint64_t hv)
{
	struct bw_hash_ent **pp = &h->slots[hv & (h->slots_n - 1)];

	for (; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->h == hv && (*pp)->key_len == key_len &&
		    memcmp((*pp)->key, key, key_len) == 0)
			return pp;
	}
	return pp;
}

static void
grow(struct bw_hash *h)
{
	size_t nn = h->slots_n * 2, i;
	struct bw_hash_ent **ns, *e, *next;

	if ((ns = calloc(nn, sizeof(*ns))) == NULL)
		return; /* keep working with longer chains */
	for (i = 0; i < h->slots_n; i++) {
		for (e = h->slots[i]; e != NULL; e = next) {
			next = e->next;
			e->next = ns[e->h & (nn - 1)];
			ns[e->h & (nn - 1)] = e;
		}
	}
	free(h->slots);
	h->slots = ns;
	h->slots_n = nn;
}

int
bw_hash_put(struct bw_hash *h, const void *key, size_t key_len, void *val)
{
	uint64_t hv = hash_bytes(h, key, key_len);
	struct bw_hash_ent **pp, *e;

	if (!has_slots(h))
		return BW_ENOMEM;
	if (*(pp = find(h, key, key_len, hv)) != NULL)
		return BW_EEXIST;
	if ((e = malloc(sizeof(*e))) == NULL)
		return BW_ENOMEM;
	e->next = NULL;
	e->key = key;
	e->key_len = key_len;
	e->h = hv;
	e->val = val;
	*pp = e;
	if (++h->n > h->slots_n)
		grow(h);
	return 0;
}

void *
bw_hash_get(const struct bw_hash *h, const void *key, size_t key_len)
{
	uint64_t hv;
	struct bw_hash_ent **pp;

	if (h->slots == NULL)
		return NULL;
	hv = hash_bytes(h, key, key_len);
	pp = find(h, key, key_len, hv);
	return *pp != NULL ? (*pp)->val : NULL;
}

void *
bw_hash_del(struct bw_hash *h, const void *key, size_t key_len)
{
	uint64_t hv;
	struct bw_hash_ent **pp, *e;
	void *val;

	if (h->slots == NULL)
		return NULL;
	hv = hash_bytes(h, key, key_len);
	pp = find(h, key, key_len, hv);
	if ((e = *pp) == NULL)
		return NULL;
	*pp = e->next;
	val = e->val;
	free(e);
	h->n--;
	return val;
}

int
bw_hash_each(const struct bw_hash *h, int (*fn)(void *arg, void *val),
	     void *arg)
{
	struct bw_hash_ent *e;
	size_t i;
	int rc;

	for (i = 0; i < h->slots_n; i++) {
		for (e = h->slots[i]; e != NULL; e = e->next) {
			if ((rc = fn(arg, e->val)) != 0)
				return rc;
		}
	}
	return 0;
}
