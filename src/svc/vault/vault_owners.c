/* Each owner's files as a list, newest first (svc/vault/vault_int.h):
 * what a listing reads a page at a time. A file joins at the head with the
 * next mark; a changed row of the same file goes back to its place.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "svc/vault/vault_int.h"

/* The owner's list of files: a node of its own in by_owner, so that no
 * removal needs memory. */
struct vowner {
	uint8_t id[BW_ID_LEN]; /* the key */
	struct vfile *first;
};

struct vfile *
vfile_first_of(const struct bw_vault *v, const uint8_t id[BW_ID_LEN])
{
	const struct vowner *o = bw_hash_get(&v->by_owner, id, BW_ID_LEN);

	return o != NULL ? o->first : NULL;
}

void
vault_owner_del(struct bw_vault *v, struct vfile *f)
{
	struct vowner *o = f->owner_node;

	if (f->owner_prev != NULL)
		f->owner_prev->owner_next = f->owner_next;
	else
		o->first = f->owner_next;
	if (f->owner_next != NULL)
		f->owner_next->owner_prev = f->owner_prev;
	if (o->first == NULL) {
		bw_hash_del(&v->by_owner, o->id, BW_ID_LEN);
		free(o);
	}
}

int
vault_owner_add(struct bw_vault *v, struct vfile *f, const struct vplace *place)
{
	struct vowner *o = bw_hash_get(&v->by_owner, f->owner, BW_ID_LEN);

	if (o == NULL) {
		if ((o = calloc(1, sizeof(*o))) == NULL)
			return BW_ENOMEM;
		memcpy(o->id, f->owner, BW_ID_LEN);
		if (bw_hash_put(&v->by_owner, o->id, BW_ID_LEN, o) != 0) {
			free(o);
			return BW_ENOMEM;
		}
	}
	f->owner_node = o;
	if (place != NULL &&
	    (place->after == NULL || place->after->owner_node == o)) {
		/* back where the version it replaces was */
		f->seq = place->seq;
		f->owner_prev = place->after;
		f->owner_next = place->after != NULL ? place->after->owner_next
						     : o->first;
	} else {
		f->seq = ++v->file_seq;
		f->owner_prev = NULL;
		f->owner_next = o->first;
	}
	if (f->owner_next != NULL)
		f->owner_next->owner_prev = f;
	if (f->owner_prev != NULL)
		f->owner_prev->owner_next = f;
	else
		o->first = f;
	return 0;
}
