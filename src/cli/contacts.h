/* The messenger client's memory across runs (contacts.info beside me.info,
 * mode 0600, written atomically): each contact's id and name, the public
 * key pinned on first use, a key the server later offered in its place and
 * the user has not accepted, the AES key shared with the contact, and the
 * ids of messages already shown that the server may deliver again
 * (delivery is at least once): those of the last complete pull, and of any
 * pull cut short since.
 *
 *   bulwark-contacts 1
 *   c <id hex> <pinned key hex|-> <aes key hex|-> <offered key hex|-> <name>
 *   p <id hex> <name>
 *   m <id hex>
 *   s <id> <id> ...
 *
 * A key is pinned under the name the contact had then: that name is its
 * (a "p" line when the contact has been renamed since). An "m" line marks
 * a contact the server gave a name that a pinned contact holds: a key
 * change, refused until the user accepts it, whether the server renamed
 * the first contact in the same list or long before. Lookups are by hash;
 * the table has no cap but the protocol's (a 2101 of a u32 size).
 */
#ifndef BULWARK_CLI_CONTACTS_H
#define BULWARK_CLI_CONTACTS_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/hash.h"
#include "bulwark/ids.h"

/* contacts: as many as a 2101 can list (4294967295 / 271 bytes) */
#define BW_CONTACTS_MAX 15848699u
#define BW_SEEN_MAX	(1u << 22) /* message ids remembered */

struct bw_contact {
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP];
	int has_key;
	uint8_t key[BW_RSA_PUB_LEN]; /* pinned on first use */
	int has_aes;
	uint8_t aes[BW_AES_KEY_LEN];
	int has_offered; /* the server's key differs from the pinned one */
	uint8_t offered[BW_RSA_PUB_LEN];
	/* the name was another contact's, whose key was pinned: using it
	 * is a key change until the user accepts it (bw_contacts_accept) */
	int moved;
	int named; /* the by_name index names this contact */
	/* the name its key was pinned under ("" none); by_pin names it */
	char pin_name[BW_NAME_CAP];
};

struct bw_contacts {
	struct bw_contact **c; /* each its own allocation: pointers last */
	size_t n, cap;
	struct bw_hash by_id, by_name, by_pin;
	uint32_t *seen; /* ids that may come again, ascending */
	size_t seen_n, seen_cap;
	uint32_t *got; /* ids of the pull in progress */
	size_t got_n, got_cap;
};

void bw_contacts_init(struct bw_contacts *cs);
/* Wipes the keys and frees. */
void bw_contacts_fini(struct bw_contacts *cs);

/* Parses the text of a contacts file into cs (emptied first). BW_EPROTO
 * with *line set to the first bad line (1-based); cs is then empty. */
int bw_contacts_decode(const char *text, size_t len, struct bw_contacts *cs,
		       size_t *line) BW_WUR;
/* Encodes cs; *out is heap text the caller wipes and frees with
 * bw_secure_free(*out, *len). */
int bw_contacts_encode(const struct bw_contacts *cs, char **out,
		       size_t *len) BW_WUR;
/* The file: a missing one is empty. */
int bw_contacts_load(const char *path, struct bw_contacts *cs,
		     const char **why) BW_WUR;
int bw_contacts_save(const char *path, const struct bw_contacts *cs) BW_WUR;

struct bw_contact *bw_contacts_by_id(struct bw_contacts *cs,
				     const uint8_t id[BW_ID_LEN]);
struct bw_contact *bw_contacts_by_name(struct bw_contacts *cs,
				       const char *name);
/* The contact for id, created (with name) if absent; its name is updated.
 * A name that another contact with a pinned key had moves to this one as a
 * key change (its "moved" is set). NULL when out of memory or full.
 * Pointers stay valid until bw_contacts_fini. */
struct bw_contact *bw_contacts_add(struct bw_contacts *cs,
				   const uint8_t id[BW_ID_LEN],
				   const char *name);
/* Pins key for c under its present name (first use, or the user accepted
 * a new key): 0 or BW_ENOMEM. */
int bw_contacts_pin(struct bw_contacts *cs, struct bw_contact *c,
		    const uint8_t key[BW_RSA_PUB_LEN]) BW_WUR;
/* The user accepts that c now holds its name: the contact that pinned a
 * key under that name gives the name up. */
void bw_contacts_accept(struct bw_contacts *cs, struct bw_contact *c);
/* 1 if message id was shown before and may be delivered again. */
int bw_contacts_seen(const struct bw_contacts *cs, uint32_t id);
/* The pull in progress delivered id (shown now, or a repeat): BW_ENOMEM
 * if it cannot be remembered. */
int bw_contacts_got(struct bw_contacts *cs, uint32_t id) BW_WUR;
/* The pull is over. A complete one (the whole 2104 read and the connection
 * ended in order) is all the server can still deliver again of what was
 * shown before (it returns waiting messages oldest first, so anything
 * older that it did not repeat is gone): the ids remembered become its
 * own. One cut short adds its ids to those remembered. */
void bw_contacts_pull_end(struct bw_contacts *cs, int complete);

/* "ab12 cd34 ..." : the SHA-256 of a key in 16 groups of four hex digits,
 * into out[80]. */
#define BW_FINGERPRINT_CAP 80
int bw_fingerprint(const uint8_t key[BW_RSA_PUB_LEN],
		   char out[BW_FINGERPRINT_CAP]) BW_WUR;

#endif
