/* A chained hash map from byte-string keys to pointers. Keys are not copied:
 * the caller keeps each key alive (typically inside the value) until its entry
 * is removed.
 */
#ifndef BULWARK_HASH_H
#define BULWARK_HASH_H

#include <stddef.h>
#include <stdint.h>

struct bw_hash_ent {
	struct bw_hash_ent *next;
	const void *key;
	size_t key_len;
	uint64_t h;
	void *val;
};

struct bw_hash {
	struct bw_hash_ent **slots;
	size_t slots_n;	 /* power of two */
	size_t n;	 /* entries */
	uint64_t key[2]; /* SipHash's key, random per table */
};

/* SipHash-1-3 (the table's) and SipHash-2-4 of msg under the 128-bit key
 * k[0] | k[1] << 64, each half read as little-endian bytes would be. */
uint64_t bw_siphash13(const uint64_t k[2], const void *msg, size_t n);
uint64_t bw_siphash24(const uint64_t k[2], const void *msg, size_t n);

/* BW_ENOMEM leaves h empty and usable, as fini does: lookups find nothing
 * and the next put tries the allocation again. */
int bw_hash_init(struct bw_hash *h);
/* Frees the table (not the values). */
void bw_hash_fini(struct bw_hash *h);
/* Inserts key -> val; BW_EEXIST if the key is present. */
int bw_hash_put(struct bw_hash *h, const void *key, size_t key_len, void *val)
	__attribute__((warn_unused_result));
void *bw_hash_get(const struct bw_hash *h, const void *key, size_t key_len);
/* Removes key; returns its value or NULL. */
void *bw_hash_del(struct bw_hash *h, const void *key, size_t key_len);
/* Calls fn for each value in no particular order; fn must not change h. A
 * non-zero return stops the walk and is returned. */
int bw_hash_each(const struct bw_hash *h, int (*fn)(void *arg, void *val),
		 void *arg);

#endif
