/* The clients every service shares (one identity for the vault and the
 * messenger): loaded from the metadata store at start-up and kept in RAM,
 * indexed by id and by name, every change written through the store's
 * asynchronous requests. A change is in RAM from the moment it is asked
 * for (so that two requests in one pass see each other) and taken back if
 * the store refuses it. Loop thread only. What a service keeps of its own
 * about a client (the messenger's queue, the vault's files) is the
 * service's.
 */
#ifndef BULWARK_HOST_REGISTRY_H
#define BULWARK_HOST_REGISTRY_H

#include <stdint.h>

#include "bulwark/addrtab.h"
#include "bulwark/hash.h"
#include "bulwark/loop.h"
#include "store/meta.h"

struct bw_client {
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP];
	int has_pubkey;
	uint8_t pubkey[BW_RSA_PUB_LEN];
	int64_t last_seen;
	int tls_only; /* see bw_client_rec.tls_only */
	/* when its row was last read (bw_now_ms; at start-up, the load) */
	uint64_t read_ms;
	/* the last read of its row again failed (a shared store): what RAM
	 * says of its key and its owner's choices may be stale until a read
	 * succeeds */
	int unread;
	/* the vault's alone: the session key it issued (its row in the
	 * store carries it, so the record does too) */
	struct bw_client_vault {
		int has_aes;
		uint8_t aes_key[BW_AES_KEY_LEN];
		int64_t key_issued;	/* when aes_key was issued (Unix s) */
		uint64_t key_issued_ms; /* and on the monotonic clock (0:
					 * before this run, or not known) */
		int key_used;		/* see bw_client_rec.key_used */
		unsigned key_failures;	/* decryption failures with aes_key */
		/* uploads that failed to decrypt under any of its keys, the
		 * last at undecryptable_ms (monotonic): not reset by a new
		 * key (this node's count) */
		unsigned undecryptable;
		uint64_t undecryptable_ms;
		unsigned key_seq; /* key changes asked for */
	} vault;
	/* its insert is still on its way: the name and id are taken, but it
	 * is nobody's yet (not listed, not counted) */
	int pending;
	/* what its name is compared by (bw_text_client_key): name itself,
	 * or a copy of its own; named: the by-name index holds c under it */
	char *key;
	int named;
	int shadowing; /* pending, a loaded look-alike waits for its key */
	int touched;   /* on the list of LastSeen changes to write */
	struct bw_client *touch_next;
	/* in the order clients were added (never removed while running):
	 * a listing can walk it across loop passes */
	struct bw_client *added_next;
};

struct bw_registry {
	struct bw_meta *meta;
	/* the store is shared with other daemons: a client's row is read
	 * again before a request that names it (bw_registry_refresh), and
	 * the clients others registered before a listing (catch_up) */
	int shared;
	int64_t seen_seq; /* the store's numbering: clients read up to it */
	struct bw_catch_up *cu_run, *cu_next; /* served by this round, next */
	int cu_busy;
	struct bw_meta_req cu_req;
	struct bw_loop *loop;
	struct bw_hash by_id, by_name;
	uint64_t clients_n;
	struct bw_client *first_added, *last_added;
	/* registration limits (bw_registry_admit), shared by every protocol
	 * that registers clients; set after open */
	uint64_t max_clients;	  /* registered clients in all */
	unsigned max_reg_per_min; /* from one address; 0: no limit */
	/* LastSeen changes, written at the end of the pass in one request */
	struct bw_client *touched;
	struct bw_call touch_call;
	struct bw_meta_req touch_req;
	struct bw_meta_touch *touch_v;
	size_t touch_n, touch_cap;
	int touch_busy;
};

/* Other daemons register and change clients in the same store: a
 * client's row must be read again before RAM is trusted with it. */
static inline int
bw_registry_others_write(const struct bw_registry *r)
{
	return r->shared;
}

/* Loads every client from meta (which stays the caller's and must outlive
 * r); changes are completed on loop. */
int bw_registry_open(struct bw_registry *r, struct bw_meta *meta,
		     struct bw_loop *loop) BW_WUR;
/* After the loop has stopped. */
void bw_registry_close(struct bw_registry *r);

/* A client by id or name; NULL if none (or still pending, by id). */
struct bw_client *bw_registry_by_id(const struct bw_registry *r,
				    const uint8_t id[BW_ID_LEN]);
struct bw_client *bw_registry_by_name(const struct bw_registry *r,
				      const char *name);
/* Whether a registration from addr (NULL: untracked, refused) may go
 * ahead now: 0, counting it against addr's minute, or BW_ETOOBIG with *why
 * saying which limit refused it. */
int bw_registry_admit(struct bw_registry *r, struct bw_addr *addr,
		      uint64_t now_ms, const char **why) BW_WUR;

/* What a change's caller is told: rc 0 (the client, or NULL if it went
 * away), or the store's refusal. */
typedef void (*bw_registry_fn)(void *arg, int rc, struct bw_client *c);

/* Registers name with a fresh random id (a public key given here is in use
 * from the start). BW_EEXIST at once if the name is taken; else 0, and
 * done(arg, rc, c) once the client is durably in the store (rc BW_EEXIST
 * if the store finds the name taken after all). */
int bw_registry_add(struct bw_registry *r, const char *name,
		    const uint8_t *pubkey, bw_registry_fn done,
		    void *arg) BW_WUR;
/* Stores the key state of c: a new public key if pubkey is not NULL, the
 * AES key (NULL revokes it; the failure count restarts either way), when
 * it was issued and whether the public key is in use. In RAM at once;
 * done (may be NULL) when the store has it (undone in RAM if the store
 * refused and nothing was asked since, unless it revoked the AES key: a
 * revocation holds).
 * 0, or BW_ENOMEM (nothing changed). */
int bw_registry_set_key(struct bw_registry *r, struct bw_client *c,
			const uint8_t *pubkey, const uint8_t *aes_key,
			int64_t issued, int used, bw_registry_fn done,
			void *arg) BW_WUR;
/* LastSeen is now (written at the end of the loop's pass, one request for
 * every client touched in it). */
void bw_registry_touch(struct bw_registry *r, struct bw_client *c);
/* The client a request names by id, touched; NULL if unknown. */
struct bw_client *bw_registry_seen(struct bw_registry *r,
				   const uint8_t id[BW_ID_LEN]);

/* On a shared store: reads the row of the client with id again and
 * brings RAM up to it (a client another daemon registered is added; a key
 * another daemon issued, revoked or saw used replaces this one's view,
 * its failures counted afresh). done(arg, rc, c) on the loop: c is the
 * client as now known (NULL if none), rc the store's error if it could
 * not be read (RAM is unchanged then). 0, or BW_ENOMEM. */
int bw_registry_refresh(struct bw_registry *r, const uint8_t id[BW_ID_LEN],
			bw_registry_fn done, void *arg) BW_WUR;

/* On a shared store: reads the clients registered since the last time
 * (by any daemon), then done(arg) on the loop; calls while a read is on
 * wait for one that starts after them. 0, or BW_ENOMEM. */
int bw_registry_catch_up(struct bw_registry *r, void (*done)(void *arg),
			 void *arg) BW_WUR;

/* c's id is refused on the plain listeners from now on: in the store,
 * then in RAM, then done(arg, rc, c). 0, or BW_ENOMEM. */
int bw_registry_set_tls_only(struct bw_registry *r, struct bw_client *c,
			     bw_registry_fn done, void *arg) BW_WUR;

/* Calls fn for each client (pending ones too); a non-zero return stops. */
int bw_registry_each_client(const struct bw_registry *r,
			    int (*fn)(void *arg, void *client), void *arg);

#endif
