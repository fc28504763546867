/* The in-RAM view of clients and stored files, loaded from the store at
 * start-up and written through to it: the database is the truth, RAM the
 * cache. Every change goes to the database first and to RAM only if that
 * succeeded. Loop thread only.
 */
#ifndef BULWARK_SVC_REGISTRY_H
#define BULWARK_SVC_REGISTRY_H

#include <stdint.h>

#include "bulwark/addrtab.h"
#include "bulwark/hash.h"
#include "host/store.h"

struct bw_file;

struct bw_client {
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP];
	int has_pubkey;
	uint8_t pubkey[BW_RSA_PUB_LEN];
	int has_aes;
	uint8_t aes_key[BW_AES_KEY_LEN];
	int64_t last_seen;
	int64_t key_issued;	/* when aes_key was issued (Unix s) */
	uint64_t key_issued_ms; /* and on the monotonic clock (0: before
				 * this run, or not known) */
	int key_used;		/* see bw_client_rec.key_used */
	unsigned key_failures;	/* decryption failures with aes_key */
	struct bw_file *files;	/* this client's files, newest first */
	unsigned files_n;
	/* the messenger's: messages waiting for this client, and the number
	 * of its latest pull (only that pull's evidence deletes) */
	uint64_t queued_n, queued_bytes;
	/* 603s to this client accepted and not yet rows: they count against
	 * its queue's limits from the moment they start, by the bytes they
	 * brought so far (inbound_bytes) while they arrive, whole once in
	 * (reserved_bytes) */
	uint64_t inbound_n, inbound_bytes, reserved_bytes;
	uint64_t pull_gen;
	unsigned pulls_n; /* its 604s being answered */
	/* in the order clients were added (never removed while running):
	 * a listing can walk it across loop passes */
	struct bw_client *added_next;
};

struct bw_file {
	struct bw_file *prev, *next; /* in the owner's list */
	struct bw_client *owner;
	uint8_t key[BW_ID_LEN + BW_NAME_CAP]; /* owner id + file name */
	size_t key_len;
	/* the by_path index names this file (by path_name: our paths hold
	 * the owner's id, so they are unique across clients) */
	int path_indexed;
	char file_name[BW_NAME_CAP];
	char path_name[BW_PATH_CAP];
	int verified;
	uint64_t size; /* plaintext bytes on disk */
	/* a replacement waiting for its 1029 ("" = none) */
	char pending_name[BW_NAME_CAP];
	char pending_path[BW_PATH_CAP];
	uint64_t pending_size;
	uint64_t acked_s; /* when its last 2103 went out (RAM only) */
	/* the connection (engine id) that uploaded the version waiting for
	 * a verdict; while it is open, verdicts come from it alone */
	uint64_t uploader;
};

struct bw_registry {
	struct bw_store *store;
	char *data_dir;
	struct bw_hash by_id, by_name, files, by_path;
	uint64_t clients_n, files_n, bytes_stored;
	struct bw_client *first_added, *last_added;
	/* registration limits (bw_registry_admit), shared by every protocol
	 * that registers clients; set after open */
	uint64_t max_clients;	  /* registered clients in all */
	unsigned max_reg_per_min; /* from one address; 0: no limit */
};

/* Loads every client and file from store (which stays owned by the caller
 * and must outlive r). data_dir is used to measure stored files. */
int bw_registry_open(struct bw_registry *r, struct bw_store *store,
		     const char *data_dir) BW_WUR;
void bw_registry_close(struct bw_registry *r);

struct bw_client *bw_registry_by_id(const struct bw_registry *r,
				    const uint8_t id[BW_ID_LEN]);
struct bw_client *bw_registry_by_name(const struct bw_registry *r,
				      const char *name);
/* Whether a registration from addr (NULL: untracked, refused) may go
 * ahead now: 0, counting it against addr's minute, or BW_ETOOBIG with *why
 * saying which limit refused it. */
int bw_registry_admit(struct bw_registry *r, struct bw_addr *addr,
		      uint64_t now_ms, const char **why) BW_WUR;
/* Registers name with a fresh random id; BW_EEXIST if the name is taken. The
 * client is in the database when this returns 0 (committed, not yet synced:
 * see svc/durable.h). A public key given here is in use from the start. */
int bw_registry_add(struct bw_registry *r, const char *name,
		    const uint8_t *pubkey, struct bw_client **out) BW_WUR;
/* Stores the key state: a new public key if pubkey is not NULL, the AES key
 * (NULL revokes it; the failure count restarts either way), when it was
 * issued and whether the public key has been used. */
int bw_registry_set_key(struct bw_registry *r, struct bw_client *c,
			const uint8_t *pubkey, const uint8_t *aes_key,
			int64_t issued, int used) BW_WUR;
/* Updates LastSeen in RAM and in the database (failure is only logged). */
void bw_registry_touch(struct bw_registry *r, struct bw_client *c);

struct bw_file *bw_registry_file(const struct bw_registry *r,
				 const struct bw_client *c,
				 const char *file_name);
/* The file of c stored at path_name, or NULL. */
struct bw_file *bw_registry_file_at(const struct bw_registry *r,
				    const struct bw_client *c,
				    const char *path_name);
/* Makes rec the one row of c at path (NULL: none), in the database and then
 * in RAM; size and pending_size are the bytes on disk. Every file of c at
 * path or named rec->file_name is dropped from RAM: pointers to them die. */
int bw_registry_set_file(struct bw_registry *r, struct bw_client *c,
			 const char *path, const struct bw_file_rec *rec,
			 uint64_t size, uint64_t pending_size) BW_WUR;
/* Fills rec from f (to restore it later, or to change a field). */
void bw_registry_file_rec(const struct bw_file *f, struct bw_file_rec *rec);

/* Calls fn for each client / file; a non-zero return stops the walk. */
int bw_registry_each_client(const struct bw_registry *r,
			    int (*fn)(void *arg, void *client), void *arg);
int bw_registry_each_file(const struct bw_registry *r,
			  int (*fn)(void *arg, void *file), void *arg);

#endif
