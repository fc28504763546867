/* Persistent storage of clients, files and messages: the one
 * interface services use, so another backend (PostgreSQL) can be added
 * behind it. The SQLite backend lives in src/core/store/, the only code that
 * includes SQLite: one database in WAL mode, one file per table, every
 * statement prepared once at open. Not thread-safe: one thread owns a store.
 */
#ifndef BULWARK_STORE_H
#define BULWARK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/ids.h"

struct bw_store;

struct bw_client_rec {
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP];
	int has_pubkey;
	uint8_t pubkey[BW_RSA_PUB_LEN];
	int has_aes;
	uint8_t aes_key[BW_AES_KEY_LEN];
	int64_t last_seen;  /* Unix seconds; 0 = never */
	int64_t key_issued; /* when aes_key was issued (Unix s); 0 = unknown */
	int key_used;	    /* the public key has been used: an upload decrypted
			     * with its AES key, or a 1027 answered */
};

struct bw_file_rec {
	uint8_t client_id[BW_ID_LEN];
	char file_name[BW_NAME_CAP]; /* as sent by the client */
	char path_name[BW_PATH_CAP]; /* relative to the data directory */
	int verified;
	/* A replacement uploaded for a verified file, waiting for its 1029:
	 * the name it was sent under and where it is kept ("" = none). */
	char pending_name[BW_NAME_CAP];
	char pending_path[BW_PATH_CAP];
};

/* Opens (creating if absent) the database at path: WAL, foreign keys off,
 * tables created if missing. */
int bw_store_open(struct bw_store **out, const char *path) BW_WUR;
void bw_store_close(struct bw_store *s);

/* Calls cb for every row; a non-zero return from cb stops and is returned. */
typedef int (*bw_store_client_cb)(void *arg, const struct bw_client_rec *c);
typedef int (*bw_store_file_cb)(void *arg, const struct bw_file_rec *f);
int bw_store_load_clients(struct bw_store *s, bw_store_client_cb cb,
			  void *arg) BW_WUR;
int bw_store_load_files(struct bw_store *s, bw_store_file_cb cb,
			void *arg) BW_WUR;

/* Inserts a new client; BW_EEXIST if the name or id is taken. */
int bw_store_client_insert(struct bw_store *s,
			   const struct bw_client_rec *c) BW_WUR;
/* Sets the public key (if pubkey is not NULL), the AES key and LastSeen. */
int bw_store_client_set_keys(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			     const uint8_t *pubkey,
			     const uint8_t aes_key[BW_AES_KEY_LEN],
			     int64_t last_seen) BW_WUR;
/* Sets the public key (if pubkey is not NULL), the AES key (NULL revokes
 * it), when it was issued, whether the public key has been used, and
 * LastSeen, in one statement. */
int bw_store_client_set_key(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			    const uint8_t *pubkey, const uint8_t *aes_key,
			    int64_t issued, int used, int64_t last_seen) BW_WUR;
int bw_store_client_touch(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			  int64_t last_seen) BW_WUR;

/* Inserts or replaces (client_id, file_name) with Verified = false. */
int bw_store_file_upsert(struct bw_store *s,
			 const struct bw_file_rec *f) BW_WUR;
/* In one transaction: removes every row of client id whose PathName is path
 * or whose FileName is rec->file_name, then inserts rec (if not NULL). The
 * one primitive of the vault's commits: each step of a commit, and each
 * undo, replaces the one row that owns a stored path. */
int bw_store_file_set(struct bw_store *s, const uint8_t id[BW_ID_LEN],
		      const char *path, const struct bw_file_rec *rec) BW_WUR;
int bw_store_file_set_verified(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			       const char *file_name, int verified) BW_WUR;
int bw_store_file_delete(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			 const char *file_name) BW_WUR;

/* ---- transactions and durability ----
 * Commits need not be durable when they return (SQLite: WAL with
 * synchronous=NORMAL): a caller that promises durability calls
 * bw_store_sync after its commit, off the loop thread. */
int bw_store_begin(struct bw_store *s) BW_WUR;
/* Commits, or rolls back and returns the error. */
int bw_store_commit(struct bw_store *s) BW_WUR;
/* Makes every commit made so far durable: 0 or -errno. It blocks (an
 * fsync), so it runs on a worker, and it is the one call that may run on
 * another thread while the owner goes on using the store. A backend whose
 * commits are durable when they return makes it a no-op. */
int bw_store_sync(struct bw_store *s) BW_WUR;

/* ---- messages ---- */

struct bw_msg_rec {
	int64_t id; /* set by insert */
	uint8_t to[BW_ID_LEN];
	uint8_t from[BW_ID_LEN];
	unsigned type;
	uint64_t size;		/* content bytes */
	const uint8_t *content; /* inline content, or NULL */
	char path[BW_PATH_CAP]; /* or its file, relative to the data dir */
};

/* Inserts m with a fresh id (never one used before, also after deletes)
 * and sets m->id. Inside bw_store_begin/commit, so ids and rows commit
 * together. */
int bw_store_msg_insert(struct bw_store *s, struct bw_msg_rec *m) BW_WUR;
typedef int (*bw_store_msg_cb)(void *arg, const struct bw_msg_rec *m);
/* to's messages with after < id <= upto (upto 0: no bound), in id order,
 * at most limit (0: no limit). With content set, m->content points at an
 * inline content, valid during the call. A non-zero return from cb stops
 * the walk (and is not an error). */
int bw_store_msg_each(struct bw_store *s, const uint8_t to[BW_ID_LEN],
		      int64_t after, int64_t upto, unsigned limit, int content,
		      bw_store_msg_cb cb, void *arg) BW_WUR;
/* Deletes to's messages with id <= upto, in one transaction, and reports
 * how many and their content bytes. path_cb gets each content file's path
 * before the deletion commits: the caller removes the files only if this
 * returns 0 (committed); a non-zero return from path_cb rolls it back and
 * is returned. */
int bw_store_msg_delete(struct bw_store *s, const uint8_t to[BW_ID_LEN],
			int64_t upto, int (*path_cb)(void *, const char *),
			void *arg, uint64_t *n, uint64_t *bytes) BW_WUR;
/* Per recipient: messages and content bytes waiting. */
int bw_store_msg_totals(struct bw_store *s,
			int (*cb)(void *arg, const uint8_t to[BW_ID_LEN],
				  uint64_t n, uint64_t bytes),
			void *arg) BW_WUR;
/* Every message whose content is a file: cb(arg, id, path); a non-zero
 * return stops. */
int bw_store_msg_files(struct bw_store *s,
		       int (*cb)(void *arg, int64_t id, const char *path),
		       void *arg) BW_WUR;
/* Removes one message (its content file is the caller's). */
int bw_store_msg_drop(struct bw_store *s, int64_t id) BW_WUR;

#endif
