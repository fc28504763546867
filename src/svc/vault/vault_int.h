/* What the vault's files share: the per-connection state, an upload in
 * progress, the vault instance (its files table, commit locks), and the
 * functions one file offers the others. Internal to src/svc/vault/.
 */
#ifndef BULWARK_SVC_VAULT_INT_H
#define BULWARK_SVC_VAULT_INT_H

#include <limits.h>
#include <stdint.h>

#include "bulwark/util.h"
#include "bulwark/crc.h"
#include "bulwark/crypto.h"
#include "bulwark/hash.h"
#include "proto/vault_wire.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "engine/slots.h"
#include "host/lock.h"
#include "store/blob.h"
#include "store/meta.h"
#include "svc/vault/vault.h"

#define TMP_NAME_CAP 64
#define FILES_SPACE  "files/"
#define PENDING_DIR  "files/.pending/"
/* Steps waiting for one stored path's lock past which a verdict gets
 * BW_EBUSY: a CRC ok or fail (1029/1031) is answered with a general error
 * (2107), a CRC retry (1030) dropped. A commit always waits its turn:
 * commits are as many as upload slots at most, and verdicts anyone with the
 * client's id may send must not crowd out the owner's upload after its body
 * was read. */
#define VAULT_LOCK_WAITERS 64u
/* After an upload of a client failed to decrypt, its verified files are
 * not replaced for this long (vault_commit.c): someone without its key
 * may be guessing. */
#define SUSPECT_MS (10u * 60u * 1000u)

enum vstate {
	V_IDLE,	  /* between requests (the frame reads them) */
	V_BODY,	  /* streaming the ciphertext of a send file request
		   * (1028) into a file */
	V_COMMIT, /* the upload is being committed */
	V_CRC,	  /* a CRC verdict (1029/1030/1031) waits for its
		   * file's lock or a worker */
	V_STORE,  /* a register, public key or reconnect request
		   * (1025/1026/1027) waits for the store to have it */
};

struct bw_vault {
	struct bw_vault_cfg cfg;
	struct bw_engine *eng;
	struct bw_registry *reg;
	struct bw_meta *meta;	/* the file rows; file OK replies (2103)
				 * and acks (2104) wait for their rows to
				 * be durable */
	struct bw_blobs *blobs; /* the stored files */
	/* every file row (struct vfile), by owner id + file name and by
	 * stored path (our paths hold the owner's id: unique across clients) */
	struct bw_hash files, by_path;
	struct bw_hash by_owner; /* owner id -> struct vowner (its files) */
	uint64_t refresh_pass;	 /* vref_apply's, to mark files seen */
	/* start-up on a shared store: every object under files/ and its
	 * size, from one listing (a request per object would keep a node
	 * that joins a cluster from serving for minutes); NULL otherwise */
	struct bw_hash *sizes;
	uint64_t files_n, bytes_stored;
	/* uploads and refused bodies in progress, in all and per address */
	struct bw_slots slots;
	/* live figures; swallowing: refused bodies being discarded */
	uint64_t uploads_active, upload_bytes_active, swallowing;
	/* files rows the start-up could not read, or whose client it did not
	 * have: the objects they name look like nobody's, so none is removed
	 * as such (vault_reconcile.c) */
	uint64_t rows_unread;
	uint64_t stored_n, stored_bytes; /* uploads committed since start */
	uint64_t uploads_cut; /* uploads whose client closed mid-body */
	/* errors since start: uploads that did not decrypt, keys revoked
	 * for it, uploads that could not be stored */
	uint64_t err_decrypt, err_revoked, err_store;
	/* stored paths locked by commits, verdicts and deletions running */
	struct bw_locks locks;
	int handing_off;
	/* the periodic sweep of a shared store (reconcile.c): its timer,
	 * and a round listing or judging */
	struct bw_timer sweep_t;
	int sweeping;
	/* public keys as parsed (keys.c): DER -> struct bw_rsa, at most
	 * RSA_CACHE_MAX; parsing one is most of the CPU a reconnect request
	 * (1027) costs */
	struct bw_hash rsa_cache;
	/* this process among the nodes of a shared store: the high half of
	 * its connections' claim keys (owes.c), drawn at start */
	uint32_t node_tag;
	/* get requests (1101) sending files back (vault_ext.c): slots as the
	 * uploads', the body being the reply; a reader slower than --min-rate
	 * gives its place to a newcomer when every slot is taken */
	struct bw_slots gets;
	unsigned lists_active; /* list requests (1100) under way */
	uint64_t file_seq;     /* the last vfile.seq given */
};

struct vowner; /* files.c: the list of one owner's files */

/* A row of the files table. */
struct vfile {
	uint8_t owner[BW_ID_LEN];
	uint8_t key[BW_ID_LEN + BW_NAME_CAP]; /* owner id + file name */
	size_t key_len;
	int path_indexed; /* the by_path index names this file */
	char file_name[BW_NAME_CAP];
	char path_name[BW_PATH_CAP];
	int verified;
	uint64_t size; /* plaintext bytes stored */
	/* a replacement waiting for its CRC ok (1029); "" = none */
	char pending_name[BW_NAME_CAP];
	char pending_path[BW_PATH_CAP];
	uint64_t pending_size;
	int64_t up_key;	  /* the row's uploader (bw_file_rec.uploader) */
	uint64_t acked_s; /* when its last file OK reply (2103) went out
			   * (RAM only) */
	/* the connection (engine id) that uploaded the version waiting for
	 * a verdict; while it is open, verdicts come from it alone */
	uint64_t uploader;
	uint64_t seen;		   /* vref_apply's pass that found its row */
	struct vowner *owner_node; /* the owner's files: */
	struct vfile *owner_prev, *owner_next; /* a list, newest first */
	uint64_t seq; /* when it joined the list: larger toward the head */
};

/* the most write buffers an upload turns through (vault_upload.c) */
#define UPLOAD_WBUFS_MAX 4

struct upload {
	struct bw_vault *v;
	struct bw_conn *conn; /* NULL once the connection is gone */
	struct bw_slot slot;  /* held until the upload is done */
	int counted;	      /* in uploads_active */
	uint8_t client_id[BW_ID_LEN];
	uint16_t code; /* 1028, or 1106 (no cipher: aes is NULL) */
	int proven;    /* on a TLS listener: the id's key proved it */
	uint8_t name_field[BW_NAME_FIELD]; /* echoed in the file OK reply
					    * (2103) */
	char file_name[BW_NAME_CAP];
	char stored[BW_NAME_CAP];
	char rel_path[BW_PATH_CAP];
	/* the new object, until it is put: made by the first worker job
	 * that needs it (the first write, or the commit's), since creating
	 * a file writes its directory and the loop must not wait on a disk */
	struct bw_blob_w *w;
	struct bw_aes *aes;
	uint8_t key[BW_AES_KEY_LEN]; /* the key decrypting it */
	struct bw_cksum crc;
	uint32_t content_size;
	uint64_t left;	    /* ciphertext bytes still to come */
	uint64_t plain_len; /* plaintext bytes decrypted */
	size_t chunk;	    /* bytes decrypted and written at a time */
	uint8_t *wbuf[UPLOAD_WBUFS_MAX];
	int wbusy[UPLOAD_WBUFS_MAX];
	unsigned nwbuf; /* write buffers in turn: 2 or UPLOAD_WBUFS_MAX */
	unsigned wnext;
	unsigned refs; /* worker jobs in flight */
	int werr;      /* the first write error */
	int w_tried;   /* a write job has ended: w exists, or werr says why */
	/* the last chunk, decrypted into wbuf[last_idx]: written by the
	 * commit's own worker job (a small upload's only one), which saves
	 * a hand-off to a worker and back */
	int last_held;
	unsigned char step; /* vault_commit.c's enum commit_step */
	unsigned last_idx;
	size_t last_len;
	uint64_t start_ms, body_ms;
	/* the commit (vault_commit.c) */
	struct bw_lock_wait wait;
	int locked;   /* the path's lock is this upload's (wait ran) */
	int pending;  /* kept aside until its CRC ok (1029) */
	int had_prev; /* a row owned rel_path before */
	struct bw_file_rec prev; /* that row, to restore */
	uint64_t prev_size, prev_pending_size;
	char backup[BW_BLOB_KEY_CAP]; /* the replaced file, kept aside */
	char pend_key[BW_PATH_CAP];
	/* the pending key chosen at the start, when a verified file was
	 * there: the store may write the upload there as it arrives */
	char pend_hint[BW_PATH_CAP];
	char old_pending[BW_PATH_CAP]; /* a replaced pending file */
	int rc;
	struct bw_meta_req sync; /* the wait for its row's durability */
	/* on a shared store: the lock its connection holds as the one that
	 * owes the verdict (owes.c), written in its row; 0: none */
	int64_t up_key;
	struct bw_meta_req up_req;
	void (*up_then)(struct upload *u);
	struct bw_meta_req fence; /* the path's lock asked before the put */
};

struct vault_conn {
	enum vstate st;
	struct bw_vault *v;
	struct upload *up;
	/* the AES key a public key or reconnect request (1026/1027) on this
	 * connection gave it: its own send file requests (1028) use it,
	 * whatever others do with the same client id */
	int has_key;
	uint8_t key_id[BW_ID_LEN];
	uint8_t key[BW_AES_KEY_LEN];
	int64_t key_issued;	/* wall clock, s */
	uint64_t key_issued_ms; /* monotonic */
	int awaiting;		/* file OK reply (2103) sent: a CRC verdict
				 * (1029/1030/1031) should follow */
	struct vget *get;	/* a get request (1101) being answered
				 * (vault_ext.c) */
	struct crc_op *op;	/* a CRC verdict (1029/1030/1031) in
				 * progress */
	/* its claim to the verdicts of what it uploaded, on a shared store
	 * (owes.c): asked of the store, or held until it closes */
	enum { OWES_NONE, OWES_ASKING, OWES_HELD } owes;
};

/* The vault's state on c; NULL once c is closed. */
#define VC(c) ((struct vault_conn *)bw_frame_state((c), &bw_vault_proto))

/* vault_ext.c: the extensions (1100-1103, 1105), TLS listeners only */
struct vget;
/* vault_owners.c: each owner's files, newest first. A place in a list:
 * after a file (NULL: first), with the mark its file keeps. */
struct vplace {
	struct vfile *after;
	uint64_t seq;
};
int vault_owner_add(struct bw_vault *v, struct vfile *f,
		    const struct vplace *place) BW_WUR;
void vault_owner_del(struct bw_vault *v, struct vfile *f);

/* The gets' slots, at start. */
int vault_ext_init(struct bw_vault *v) BW_WUR;
int vault_on_list(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
int vault_on_list_after(struct bw_conn *c, struct bw_frame_req *r,
			const uint8_t *p);
int vault_on_get(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
int vault_on_delete(struct bw_conn *c, struct bw_frame_req *r,
		    const uint8_t *p);
int vault_on_tls_only(struct bw_conn *c, struct bw_frame_req *r,
		      const uint8_t *p);
/* The client an extension's header names, or NULL with the error
 * replied (a plain listener, an unknown id). */
struct bw_client *vault_ext_client(struct bw_conn *c, struct bw_frame_req *r);
/* A no such file reply (2113) with the name field asked for. */
int vault_no_such_file(struct bw_conn *c, const uint8_t *field);
/* The file a get or delete request names (its name field first in p, the
 * name into name, its owner into *cl), or NULL once the error is replied
 * (a malformed name, the header's client refused, no such file), with
 * *ret what the handler returns. */
const struct vfile *vault_ext_file(struct bw_conn *c, struct bw_frame_req *r,
				   const uint8_t *p, char name[BW_NAME_CAP],
				   struct bw_client **cl, int *ret);
/* Output drained: the next chunk a get request (1101) sends back. */
void vault_get_drained(struct bw_conn *c, struct vault_conn *vc);
/* The connection closes: its get request (1101) ends. */
void vault_get_closed(struct vault_conn *vc);

/* vault.c */
/* The client the request's header names, touched; NULL if unknown. */
struct bw_client *vault_header_client(struct bw_frame_req *r);

/* keys.c */
/* The public key (1026) and reconnect (1027) requests. */
int vault_on_pubkey(struct bw_conn *c, struct bw_frame_req *r,
		    const uint8_t *p);
int vault_on_reconnect(struct bw_conn *c, struct bw_frame_req *r,
		       const uint8_t *p);
/* The key a send file request (1028) from cl on r's connection decrypts
 * with; NULL (with *why) if there is none usable. */
const uint8_t *vault_upload_key(struct bw_frame_req *r,
				const struct bw_client *cl, const char **why);
/* A reply that waits for the store: the connection reads nothing more
 * until it is sent. vault_stored_begin, when the store answered: 1 if c is
 * still there to be replied to (its reply follows, then vault_stored_end),
 * 0 if it went meanwhile (the hold is dropped). */
void vault_store_wait(struct bw_conn *c);
int vault_stored_begin(struct bw_conn *c);
void vault_stored_end(struct bw_conn *c);
/* The key failed to decrypt an upload of cl: counts it, revokes the key
 * after --key-failures. 1 if the connection's error reply (why) waits for
 * the count (a shared store: it is sent, and the connection closed, once
 * the count and any revocation are stored); 0: the caller replies. */
int vault_key_failed(struct bw_conn *c, struct bw_vault *v,
		     const uint8_t id[BW_ID_LEN],
		     const uint8_t key[BW_AES_KEY_LEN], const char *why);
/* An upload decrypted with cl's key: the public key is in use. */
void vault_key_used(struct bw_vault *v, const uint8_t id[BW_ID_LEN]);

/* upload.c */
/* BW_EBUSY (with *why) when no slot is free, else 0 or why it failed. */
int vault_upload_start(struct bw_conn *c, struct bw_vault *v,
		       struct bw_client *cl, const uint8_t *key,
		       const uint8_t *prefix, uint32_t content_size,
		       const char *file_name, const char **why);
int vault_body_step(struct bw_conn *c);
/* On a worker: the upload's object, made if no write made it yet (the
 * commit writes the last chunk into it and takes it: vault_commit.c). */
int vault_upload_w(struct upload *u);
void vault_upload_abort(struct bw_conn *c, const char *why);
void vault_upload_free(struct upload *u);
/* The upload is no longer in progress: uncounts it. */
void vault_upload_done(struct upload *u);

/* vault_commit.c */
/* Removes the stored object at key on a worker (freeing a big file's
 * blocks takes time), or here if that cannot be arranged. "" does
 * nothing. */
void vault_remove_later(struct bw_vault *v, const char *key);
/* A new key under files/.pending/ for a replacement of client id's file:
 * "files/.pending/<id hex>-<unique>", so that a sweep can tell whose it
 * is. */
/* reconcile.c: for each of keys[0..n), out[i] = 1 if it names an object
 * no row in RAM names, in a place that is ours (files/<client>/, or
 * files/.pending/). */
int vault_unnamed_keys(struct bw_vault *v, char *const *keys, size_t n,
		       unsigned char *out) BW_WUR;
/* sweep.c: the periodic sweep of a shared store, started with the
 * vault (nothing on a store of one daemon's). */
int vault_sweep_start(struct bw_vault *v) BW_WUR;
void vault_pending_key(const uint8_t id[BW_ID_LEN], char *out, size_t cap);
/* The client a stored key belongs to (files/<hex>/<name>, or a pending key
 * as above): 0, or BW_ENOTFOUND (an older pending key, or not ours). */
int vault_key_owner(const char *key, uint8_t id[BW_ID_LEN]);
/* Worker side: keeps the object at key alive under backup (a fresh
 * scratch key, or "" if there was no object): a replacement can be
 * undone. 0 or why not. */
int vault_keep_backup(struct bw_vault *v, const char *key, char *backup);
/* Worker side: puts the backup (or nothing) back at key, logging a
 * failure. */
void vault_restore_backup(struct bw_vault *v, const char *key,
			  const char *backup);
/* Calls done(arg, rc) once everything the store was asked so far is
 * durable (r is the caller's storage). */
void vault_durable(struct bw_vault *v, struct bw_meta_req *r,
		   bw_meta_done_fn done, void *arg);
/* Drops the hold a commit or an op had on c and lets c go on. */
void vault_release_and_resume(struct bw_conn *c);
/* The whole body is in and written: commits it, answers with a file OK
 * reply (2103) or a general error (2107). */
void vault_commit(struct bw_conn *c, struct upload *u);
/* owes.c: on a store several nodes share, the verdict on a version is
 * owed by the connection that uploaded it, on every node, while it is
 * open: that connection holds a lock of the store's (its key, written in
 * the version's row) from before its first row is written until it
 * closes, and a verdict from any other connection is refused while the
 * lock is held. One daemon alone on its store needs none of it: its RAM
 * knows its connections (vfile.uploader). */
/* c's claim key: this node's tag and c's id, never 0. */
int64_t vault_owes_key(const struct bw_vault *v, const struct bw_conn *c);
/* Before u's row is written: u's connection holds its claim (u->up_key
 * is its key, or 0 where the store is not shared, the connection is gone,
 * or the store did not grant it), then then(u) runs. */
void vault_owes_take(struct upload *u, void (*then)(struct upload *u));
/* c closes: its claim, if held, is given up. */
void vault_owes_release(struct bw_vault *v, struct vault_conn *vc,
			struct bw_conn *c);
/* Whether the connection holding the claim key is open: done(arg, 1) it
 * is (the verdict is not another's to give), 0 it is not, or the store
 * could not say (BW_EDB: refuse rather than guess). Another node's is
 * asked of the store (its lock tried, and let go at once if got). */
void vault_owes_probe(struct bw_vault *v, int64_t key,
		      void (*done)(void *arg, int open), void *arg);

/* verify.c: a CRC verdict (1029, 1030 or 1031) for name from cl. */
/* A CRC retry (1030) answered by nothing: a padded client's connection
 * (one request each, its zeros after it) is closed now, as an answered one
 * would be; 0. */
int vault_no_reply(struct bw_conn *c);
int vault_crc_request(struct bw_conn *c, struct bw_vault *v, uint16_t code,
		      struct bw_client *cl, const char *name);
/* A verdict whose connection closed: a wait for another node's uploader
 * ends now. */
void vault_crc_closed(struct crc_op *op);

/* vault.c */
/* Its table on the shared port; the context is the struct bw_vault. */
extern const struct bw_frame_proto bw_vault_proto;

/* reconcile.c */
/* The module's init and fini: the instance, its files loaded and
 * reconciled with the stored objects. */
int vault_open(const struct bw_host *h, const void *cfg, void **out) BW_WUR;
void vault_close(void *inst);

/* files.c: the files table */
typedef void (*vfile_fn)(void *arg, int rc);
/* The file of id named name, or stored at path; NULL if none. */
struct vfile *vfile_by_name(const struct bw_vault *v,
			    const uint8_t id[BW_ID_LEN], const char *name);
struct vfile *vfile_at(const struct bw_vault *v, const uint8_t id[BW_ID_LEN],
		       const char *path);
/* The first of id's files (the others follow by owner_next); NULL if
 * none. */
struct vfile *vfile_first_of(const struct bw_vault *v,
			     const uint8_t id[BW_ID_LEN]);
/* Fills rec from f (to restore it later, or to change a field). */
void vfile_rec(const struct vfile *f, struct bw_file_rec *rec);
/* Makes rec the one row of id at path (NULL: none): in the store, then in
 * RAM (size and pending_size are the stored objects' bytes), then
 * done(arg, rc). Every file of id at path or named rec->file_name leaves
 * RAM then: pointers to them die. BW_ENOMEM at once (done not called). */
int vfile_set(struct bw_vault *v, const uint8_t id[BW_ID_LEN], const char *path,
	      const struct bw_file_rec *rec, uint64_t size,
	      uint64_t pending_size, vfile_fn done, void *arg) BW_WUR;
/* The same, blocking: start-up only. */
int vfile_set_now(struct bw_vault *v, const uint8_t id[BW_ID_LEN],
		  const char *path, const struct bw_file_rec *rec,
		  uint64_t size, uint64_t pending_size) BW_WUR;
/* bw_module.refresh: before a send file request or a CRC verdict
 * (1028 to 1031), the client's rows as the shared store has them (another
 * node's uploads and verdicts), except those of paths this node is
 * committing. */
/* keys.c: the cache of parsed public keys, emptied at the end. */
void vault_rsa_cache_free(struct bw_vault *v);
int vault_refresh(void *inst, const uint8_t id[BW_ID_LEN], const uint8_t *other,
		  uint16_t code, void (*done)(void *arg), void *arg);
/* The size of the stored object at key: 0 and *size, or BW_ENOTFOUND, or
 * the store's error (from the start-up listing while there is one). */
int vault_object_size(struct bw_vault *v, const char *key, uint64_t *size);
/* Start-up on a shared store: the listing vault_object_size answers from
 * (0, or an error: then each object is asked alone); freed by the end. */
int vault_sizes_load(struct bw_vault *v);
void vault_sizes_free(struct bw_vault *v);
/* Loads every row (with its objects' sizes) at start-up. */
int vfile_load(struct bw_vault *v) BW_WUR;
void vfile_free_all(struct bw_vault *v);
/* Calls fn for each file (a struct vfile); a non-zero return stops. */
int vfile_each(const struct bw_vault *v, int (*fn)(void *arg, void *file),
	       void *arg);

#endif
