/* What the vault's files share: the per-connection state, an upload in
 * progress, the vault instance (directories held open, commit locks), and
 * the functions one file offers the others. Internal to src/svc/vault/.
 */
#ifndef BULWARK_SVC_VAULT_INT_H
#define BULWARK_SVC_VAULT_INT_H

#include <limits.h>
#include <stdint.h>

#include "bulwark/crc.h"
#include "bulwark/crypto.h"
#include "bulwark/hash.h"
#include "proto/vault_wire.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "engine/slots.h"
#include "svc/vault/vault.h"

#define CTRL_WANT    2048u
#define SWALLOW_WANT (16u * 1024u)
/* A refused 1028 body up to this size is read and discarded so the client
 * gets its 2107 in step; a larger one is answered at once and closed. */
#define SWALLOW_MAX  (1024u * 1024u)
#define TMP_NAME_CAP 64
#define PENDING_DIR  "files/.pending/"
/* Steps waiting for one stored path's lock; one more gets BW_EBUSY (a
 * 1029/1031 is answered 2107, a 1030 dropped). */
#define VAULT_LOCK_WAITERS 64u

#define ULL(x) ((unsigned long long)(x))

enum vstate {
	V_IDLE,	   /* between requests (the frame reads them) */
	V_BODY,	   /* streaming a 1028 ciphertext into a file */
	V_SWALLOW, /* discarding a 1028 ciphertext that will get 2107 */
	V_COMMIT,  /* the upload is being committed */
	V_CRC,	   /* a 1029/1030/1031 waits for its file's lock or a worker */
};

struct bw_vault {
	struct bw_vault_cfg cfg;
	struct bw_engine *eng;
	struct bw_registry *reg;
	struct bw_durable *durable; /* 2103s and 2104s wait for it */
	const char *data_dir;	    /* files/ lives here */
	/* uploads and refused bodies in progress, in all and per address */
	struct bw_slots slots;
	/* live figures */
	uint64_t uploads_active, upload_bytes_active, swallowing;
	uint64_t stored_n, stored_bytes; /* uploads committed since start */
	/* errors since start: uploads that did not decrypt, keys revoked
	 * for it, uploads that could not be stored */
	uint64_t err_decrypt, err_revoked, err_store;
	/* Everything under the data directory is reached from these, with
	 * O_NOFOLLOW: a symbolic link planted there is refused, never
	 * followed. */
	int data_fd, files_fd, incoming_fd, pending_fd;
	struct bw_hash locks; /* rel_path -> struct vlock: commits running */
	/* locks being handed to their next waiters (commit.c) */
	struct vwait *handoff, **handoff_tail;
	int handing_off;
	uint64_t seq; /* for unique temporary names */
};

/* A step waiting for a stored path's lock. */
struct vwait {
	struct vwait *next;
	void (*run)(struct vwait *w);
};

struct upload {
	struct bw_vault *v;
	struct bw_conn *conn; /* NULL once the connection is gone */
	struct bw_slot slot;  /* held until the upload is done */
	int counted;	      /* in uploads_active */
	uint8_t client_id[BW_ID_LEN];
	uint8_t name_field[BW_NAME_FIELD]; /* echoed in 2103 */
	char file_name[BW_NAME_CAP];
	char stored[BW_NAME_CAP];
	char rel_path[BW_PATH_CAP];
	char tmp_name[TMP_NAME_CAP]; /* in files/.incoming */
	int fd;	     /* the temporary file, O_DIRECT if allowed */
	int fd_tail; /* a buffered descriptor for the tail */
	int dir_fd;  /* files/<client id hex> */
	struct bw_aes *aes;
	uint8_t key[BW_AES_KEY_LEN]; /* the key decrypting it */
	struct bw_cksum crc;
	uint32_t content_size;
	uint64_t left;	    /* ciphertext bytes still to come */
	uint64_t plain_len; /* plaintext bytes decrypted */
	size_t chunk;	    /* bytes decrypted and written at a time */
	uint8_t *wbuf[2];
	int wbusy[2];
	unsigned wnext;
	unsigned refs; /* worker jobs in flight */
	int werr;      /* the first write error */
	uint64_t start_ms, body_ms;
	/* the commit (commit.c) */
	struct vwait wait;
	int pending;		 /* kept aside until its 1029 */
	int had_prev;		 /* a row owned rel_path before */
	struct bw_file_rec prev; /* that row, to restore */
	uint64_t prev_size, prev_pending_size;
	char backup[TMP_NAME_CAP]; /* the replaced file, in .incoming */
	char pend_name[TMP_NAME_CAP];
	char old_pending[BW_PATH_CAP]; /* a replaced pending file */
	int rc;
};

struct vault_conn {
	enum vstate st;
	struct bw_vault *v;
	struct upload *up;
	uint64_t swallow_left;
	struct bw_slot swallow_slot; /* a refused body being discarded */
	/* the body's rate, checked per window of --timeout */
	uint64_t body_size, win_start_ms, win_left;
	/* the AES key this connection was given (1026/1027 on it): its own
	 * 1028s use it, whatever others do with the same client id */
	int has_key;
	uint8_t key_id[BW_ID_LEN];
	uint8_t key[BW_AES_KEY_LEN];
	int64_t key_issued;	/* wall clock, s */
	uint64_t key_issued_ms; /* monotonic */
	int awaiting;		/* 2103 sent: a 1029/1030/1031 should follow */
	struct crc_op *op;	/* a 1029/1030/1031 in progress */
};

/* The vault's state on c; NULL once c is closed. */
#define VC(c) ((struct vault_conn *)bw_frame_state((c), &bw_vault_proto))

/* vault.c */
/* The key failed to decrypt an upload of cl: counts it, revokes the key
 * after --key-failures. */
void vault_key_failed(struct bw_conn *c, struct bw_vault *v,
		      const uint8_t id[BW_ID_LEN],
		      const uint8_t key[BW_AES_KEY_LEN]);
/* An upload decrypted with cl's key: the public key is in use. */
void vault_key_used(struct bw_vault *v, const uint8_t id[BW_ID_LEN]);
/* Runs the state machine again once a worker or a lock let it go on. */
void vault_resume(struct bw_conn *c);

/* upload.c */
/* BW_EBUSY (with *why) when no slot is free, else 0 or why it failed. */
int vault_upload_start(struct bw_conn *c, struct bw_vault *v,
		       struct bw_client *cl, const uint8_t *key,
		       const uint8_t *prefix, uint32_t content_size,
		       const char *file_name, const char **why);
int vault_body_step(struct bw_conn *c);
int vault_swallow_step(struct bw_conn *c, struct bw_vault *v);
/* The refused body's slot is free (it ended, or the connection goes). */
void vault_swallow_end(struct bw_vault *v, struct vault_conn *vc);
void vault_upload_abort(struct bw_conn *c, const char *why);
void vault_upload_free(struct upload *u);
/* The upload is no longer in progress: uncounts it. */
void vault_upload_done(struct upload *u);

/* commit.c */
/* Runs w now if path is free (returns 1), or queues it (returns 0; w->run
 * is called when the path is released, never from inside the releasing
 * vault_unlock's caller's frame); BW_EBUSY when VAULT_LOCK_WAITERS wait
 * already; BW_ENOMEM. */
int vault_lock(struct bw_vault *v, const char *path, struct vwait *w);
void vault_unlock(struct bw_vault *v, const char *path);
/* Removes dfd/name on a worker (freeing a big file's blocks takes time),
 * or here if that cannot be arranged. "" does nothing. */
void vault_unlink_later(struct bw_vault *v, int dfd, const char *name);
/* Keeps dir/stored alive as incoming/backup (a hard link): a replacement
 * can be undone. 0 ("" in backup if there was no file) or -errno. */
int vault_keep_backup(int dir_fd, const char *stored, int incoming_fd,
		      char *backup);
/* Puts the backup (or nothing) back at dir/stored, logging a failure. */
void vault_restore_backup(int dir_fd, const char *stored, int incoming_fd,
			  const char *backup);
/* Drops the hold a commit or an op had on c and lets c go on. */
void vault_release_and_resume(struct bw_conn *c);
/* The whole body is in and written: commits it, replies 2103 or 2107. */
void vault_commit(struct bw_conn *c, struct upload *u);
/* verify.c: 1029, 1030 or 1031 for name from cl. */
int vault_crc_request(struct bw_conn *c, struct bw_vault *v, uint16_t code,
		      struct bw_client *cl, const char *name);

/* vault.c */
/* Its table on the shared port; the context is the struct bw_vault. */
extern const struct bw_frame_proto bw_vault_proto;

/* reconcile.c */
/* The module's init and fini: the instance, its directories reconciled. */
int vault_open(const struct bw_host *h, const void *cfg, void **out) BW_WUR;
void vault_close(void *inst);
/* Opens the directories, empties .incoming and makes the rows and the
 * stored files agree, logging what it changed. */
int vault_dirs_open(struct bw_vault *v);
void vault_dirs_close(struct bw_vault *v);
/* Opens (creating) files/<hex> with O_NOFOLLOW; -errno (ELOOP: a link). */
int vault_client_dir(struct bw_vault *v, const uint8_t id[BW_ID_LEN], int *fd);
/* A fresh unique name for a temporary file. */
void vault_tmp_name(struct bw_vault *v, const char *prefix,
		    char out[TMP_NAME_CAP]);

#endif
