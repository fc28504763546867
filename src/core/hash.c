/* Chained hash map with SipHash-like mixing (FNV-1a over a random seed, then
 * a 64-bit finaliser): keys come from peers, so the seed is random per table.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/hash.h"

static uint64_t
hash_bytes(uint64_t seed, const void *key, size_t n)
{
	const uint8_t *p = key;
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
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
	memset(h, 0, sizeof(*h));
	if (bw_random(&h->seed, sizeof(h->seed)) != 0)
		h->seed = (uint64_t)(uintptr_t)h ^ 0x9e3779b97f4a7c15ULL;
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
	uint64_t hv = hash_bytes(h->seed, key, key_len);
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
	hv = hash_bytes(h->seed, key, key_len);
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
	hv = hash_bytes(h->seed, key, key_len);
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
