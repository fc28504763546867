/* The metadata store: clients and their keys, stored files, messages. A
 * table of operations (struct bw_meta_backend) with one backend per
 * storage engine, chosen at start-up by URL (host/sqlite/ for "sqlite:",
 * the embedded default; host/pg/ for "postgresql://"), so that a backend
 * that does network round trips goes behind it without a service knowing.
 *
 * While the daemon serves, every operation is a request (struct
 * bw_meta_req, the caller's storage, as libuv's uv_fs_t) submitted with
 * bw_meta_submit and completed through its done callback on the loop
 * thread, never inside the submitting call. Requests run in the order they
 * were submitted (a read that spans several pages of rows may see requests
 * submitted after it); a backend may put consecutive ones in one
 * transaction. A request with BW_META_DURABLE completes only once its effect is
 * on disk (and so does every request submitted before it). A message is never
 * read back (BW_META_MSG_READ) before its insert is durable.
 *
 * Before serving (start-up, reconciliation, a migration) the same requests
 * run synchronously with bw_meta_run, and the loads read whole tables.
 */
#ifndef BULWARK_HOST_META_H
#define BULWARK_HOST_META_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/ids.h"
#include "bulwark/loop.h"
#include "store/stats.h"

struct bw_client_rec {
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP];
	int has_pubkey;
	uint8_t pubkey[BW_RSA_PUB_LEN];
	int has_aes;
	uint8_t aes_key[BW_AES_KEY_LEN];
	int64_t last_seen;  /* Unix seconds; 0 = never */
	int64_t key_issued; /* when aes_key was issued (Unix s); 0 = unknown */
	int key_used;	    /* a key was delivered for the public key, or an
			     * upload decrypted with it: it is the client's */
	int tls_only;	    /* its owner asked that the plain listeners refuse
			     * its id (never undone) */
	/* an insert's: what the name is compared by (host/registry.h); a
	 * shared store refuses a second name of that key */
	const char *name_key;
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
	/* On a shared store: the lock (a BW_META_LOCK key) held by the node
	 * whose connection uploaded the version waiting for a verdict, for as
	 * long as that connection is open; 0: none. While another holds it,
	 * no other connection decides the verdict, on any node. Kept only
	 * where the store is shared (one daemon's RAM knows its connections) */
	int64_t uploader;
	/* load_files: a row that could not be read (nothing else is set):
	 * the files it may name are not to be taken for nobody's */
	int unreadable;
};

struct bw_msg_rec {
	int64_t id; /* set by an insert */
	uint8_t to[BW_ID_LEN];
	uint8_t from[BW_ID_LEN];
	unsigned type;
	uint64_t size;		/* content bytes */
	const uint8_t *content; /* inline content, or NULL */
	char path[BW_PATH_CAP]; /* or its blob's key */
};

/* The largest message id: ids travel as u32. An insert that would need a
 * larger one fails with BW_ETOOBIG. */
#define BW_META_MSG_ID_MAX ((int64_t)UINT32_MAX)

/* LastSeen of one client, for BW_META_CLIENT_TOUCH. */
struct bw_meta_touch {
	uint8_t id[BW_ID_LEN];
	int64_t last_seen;
};

enum bw_meta_op {
	/* u.client: a new client; BW_EEXIST if its name or id is taken */
	BW_META_CLIENT_INSERT,
	/* u.key: the public key (if not NULL), the AES key (NULL revokes
	 * it), when it was issued, whether it is in use, LastSeen */
	BW_META_CLIENT_KEY,
	/* u.touch: LastSeen of n clients */
	BW_META_CLIENT_TOUCH,
	/* u.file: every row of the client whose PathName is path or whose
	 * FileName is rec->file_name goes, then rec (if not NULL) is the row:
	 * the one primitive of the vault's commits and their undoing */
	BW_META_FILE_SET,
	/* u.msg: a new message; its id (never one used before, at most
	 * BW_META_MSG_ID_MAX) is set */
	BW_META_MSG_INSERT,
	/* u.drop: one message (its content's blob is the caller's);
	 * BW_ENOTFOUND if it was not there */
	BW_META_MSG_DROP,
	/* u.drop_path: the message whose content is kept under that key (an
	 * insert whose commit went unanswered, its id unknown); BW_ENOTFOUND
	 * if there is none */
	BW_META_MSG_DROP_PATH,
	/* u.del: to's messages with id <= upto and, if ids is not NULL, only
	 * those of its ids_n ids (what a reply carried: on a store shared by
	 * several writers, a lower id can commit after a higher one was
	 * read; a backend with one writer, whose ids commit in their order,
	 * may go by upto alone); path is called with each
	 * content's blob key before the deletion commits (a non-zero return
	 * undoes it), possibly on a backend's thread and more than once for
	 * one key (a batch tried again): it may touch only what the request
	 * owns; n and bytes say what went */
	BW_META_MSG_DELETE,
	/* u.read: to's messages with after < id <= upto (0: no bound) in id
	 * order, at most limit (0: no limit), each given to row on the loop
	 * thread before done is called (with content: m->content points at an
	 * inline content, valid during the call); a non-zero return from row
	 * stops the read */
	BW_META_MSG_READ,
	/* u.msg: a message with its id kept (a migration); BW_EEXIST if the
	 * id is taken. Ids issued later are higher. */
	BW_META_MSG_PUT,
	/* u.drop: ids issued from now on are higher than it (a migration
	 * carries the source's high-water mark) */
	BW_META_MSG_FLOOR,
	/* nothing: with BW_META_DURABLE, a barrier (everything submitted
	 * before it is durable when it completes) */
	BW_META_SYNC,
	/* u.get: the row of the client with id, into *rec; BW_ENOTFOUND if
	 * none. Only on a shared store (bw_meta_backend.shared). */
	BW_META_CLIENT_GET,
	/* u.files: every file row of the client with id, in recs[0..n)
	 * (allocated by the backend, freed by the caller with free()). Only
	 * on a shared store. */
	BW_META_FILE_GET,
	/* u.since: at most limit clients registered after the one numbered
	 * after (0: from the first), in registration order, in recs[0..n)
	 * (allocated by the backend, freed with free()); last: the number
	 * of the last one given. Only on a shared store. */
	BW_META_CLIENT_SINCE,
	/* u.fail: a decryption failure with the AES key aes, counted in the
	 * client's row if aes is still its key; count: that key's failures
	 * so far (0: it is not the key any more). Only on a shared store. */
	BW_META_CLIENT_FAIL,
	/* u.totals: what the whole store holds (every daemon's): clients,
	 * files, queued messages and their bytes. Only on a shared store. */
	BW_META_TOTALS,
	/* u.lock: a lock named by key, across the daemons sharing the store
	 * (PostgreSQL's advisory locks, held by this daemon's session): taken
	 * if free (got: 1) or not (got: 0), never waited for; released by
	 * BW_META_UNLOCK. A lost connection releases every one. Only on a
	 * shared store. */
	BW_META_LOCK,
	BW_META_UNLOCK,
	/* u.lock: 0 if this daemon still holds the lock key (its session to
	 * the store, which took it, is the one that still holds it), else
	 * BW_EBUSY: the lock went with a lost connection and another daemon
	 * may hold it now. Only on a shared store. */
	BW_META_FENCE,
	/* u.queue: the messages queued for the client with id, and their
	 * bytes, as the whole store holds them (every daemon's sends and
	 * deliveries). Only on a shared store. */
	BW_META_QUEUE,
	/* u.pull: the client's pulls numbered across the daemons: gen is
	 * this one's, committed before any request submitted after it runs.
	 * A BW_META_MSG_DELETE with that gen deletes only while no later pull
	 * has been numbered. Only on a shared store. */
	BW_META_MSG_PULL_GEN,
	/* u.key.id: the client's id is refused on the plain listeners from
	 * now on (its owner asked, proven over TLS); never undone */
	BW_META_CLIENT_TLS_ONLY,
};
/* how many there are (the last one's + 1: a new operation goes before
 * this line's and here, and in bw_meta_op_traits' table) */
#define BW_META_OPS ((unsigned)BW_META_CLIENT_TLS_ONLY + 1u)

/* What an operation is, in one table (meta.c) rather than a list in each
 * backend: it changes rows (a write transaction), and whether only a
 * store shared by several daemons serves it (a backend of one daemon's
 * answers it BW_ECONFIG: its RAM is the truth). */
enum {
	BW_META_WRITES = 1u,
	BW_META_SHARED_ONLY = 2u,
};
unsigned bw_meta_op_traits(enum bw_meta_op op);

static inline int
bw_meta_op_writes(enum bw_meta_op op)
{
	return (bw_meta_op_traits(op) & BW_META_WRITES) != 0;
}

static inline int
bw_meta_op_shared_only(enum bw_meta_op op)
{
	return (bw_meta_op_traits(op) & BW_META_SHARED_ONLY) != 0;
}

enum {
	/* done once the request's effect, and every earlier one's, is on
	 * disk: a reply that promises durability waits for it */
	BW_META_DURABLE = 1u,
};

struct bw_meta_req;
typedef void (*bw_meta_done_fn)(struct bw_meta_req *r);
typedef int (*bw_meta_row_fn)(void *arg, const struct bw_msg_rec *m);

struct bw_meta_req {
	enum bw_meta_op op;
	unsigned flags;
	bw_meta_done_fn done; /* on the loop thread; may free the request */
	void *arg;
	int rc; /* the result, set before done */
	/* what the request works on: records and keys it points at are the
	 * caller's, valid until done */
	union {
		const struct bw_client_rec *client;
		struct {
			uint8_t id[BW_ID_LEN];
			const uint8_t *pubkey, *aes;
			int64_t issued, last_seen;
			int used;
		} key;
		struct {
			const struct bw_meta_touch *v;
			size_t n;
		} touch;
		struct {
			uint8_t id[BW_ID_LEN];
			const char *path;
			const struct bw_file_rec *rec;
			/* a lock (BW_META_LOCK's key) this daemon must still
			 * hold for the change to be made, else BW_EBUSY and
			 * nothing changes; 0: none */
			int64_t fence;
		} file;
		struct bw_msg_rec *msg;
		int64_t drop;
		const char *drop_path;
		struct {
			uint8_t id[BW_ID_LEN];
			struct bw_client_rec *rec; /* out */
		} get;
		struct {
			uint8_t id[BW_ID_LEN];
			struct bw_file_rec *recs; /* out */
			size_t n;		  /* out */
		} files;
		struct {
			uint8_t id[BW_ID_LEN];
			uint8_t aes[BW_AES_KEY_LEN];
			unsigned count; /* out */
		} fail;
		struct {
			uint64_t clients, files, messages, message_bytes;
		} totals; /* out */
		struct {
			uint8_t id[BW_ID_LEN];
			uint64_t n, bytes; /* out */
		} queue;
		struct {
			int64_t key;
			/* taken again, where the store allows, on a new session
			 * after the one holding it was lost (a claim that only
			 * its holder's closing ends); not for a lock whose loss
			 * must be seen (BW_META_FENCE) */
			int keep;
			int got; /* out */
		} lock;
		struct {
			int64_t after;
			unsigned limit;
			struct bw_client_rec *recs; /* out */
			size_t n;		    /* out */
			int64_t last;		    /* out */
		} since;
		struct {
			uint8_t to[BW_ID_LEN];
			int64_t upto;
			const int64_t *ids; /* NULL: every id <= upto */
			size_t ids_n;
			int (*path)(void *arg, const char *key);
			void *path_arg;
			/* 0, or the BW_META_MSG_PULL_GEN of the pull that
			 * carried them: nothing is deleted if a later pull of
			 * the client was numbered since (its plan may hold
			 * them); -1: a pull that could not be numbered */
			int64_t gen;
			uint64_t n, bytes; /* out */
		} del;
		struct {
			uint8_t id[BW_ID_LEN];
			int64_t gen; /* out */
		} pull;
		struct {
			uint8_t to[BW_ID_LEN];
			int64_t after, upto;
			unsigned limit;
			int content;
			bw_meta_row_fn row;
			void *row_arg;
		} read;
	} u;
	/* the backend's */
	struct bw_meta_req *next;
	struct bw_call call;
	void *be_res;	  /* rows kept for the loop thread */
	int64_t be_after; /* a read continued page by page */
	unsigned be_rows; /* rows given so far */
};

/* Start-up loads: every row, in no particular order; a non-zero return
 * from cb stops and is returned. */
typedef int (*bw_meta_client_cb)(void *arg, const struct bw_client_rec *c);
typedef int (*bw_meta_file_cb)(void *arg, const struct bw_file_rec *f);
typedef int (*bw_meta_totals_cb)(void *arg, const uint8_t to[BW_ID_LEN],
				 uint64_t n, uint64_t bytes);
typedef int (*bw_meta_blobs_cb)(void *arg, int64_t id, const char *key);

/* A storage engine behind the table. */
struct bw_meta_backend {
	const char *scheme; /* of the URL: "sqlite" */
	/* several daemons may share one store (PostgreSQL): what one holds
	 * in RAM may be stale, its rows are the truth */
	int shared;
	/* where: the URL after "scheme:"; loop: where done callbacks run */
	int (*open)(const char *where, struct bw_loop *loop,
		    void **state) BW_WUR;
	/* Completes what is still queued with BW_ECLOSED, then closes. */
	void (*close)(void *state);
	void (*submit)(void *state, struct bw_meta_req *r);
	/* Runs r now, blocking (done is not called). */
	int (*run)(void *state, struct bw_meta_req *r) BW_WUR;
	int (*load_clients)(void *state, bw_meta_client_cb cb,
			    void *arg) BW_WUR;
	int (*load_files)(void *state, bw_meta_file_cb cb, void *arg) BW_WUR;
	/* per recipient: messages and content bytes waiting */
	int (*msg_totals)(void *state, bw_meta_totals_cb cb, void *arg) BW_WUR;
	/* every message whose content is a blob */
	int (*msg_blobs)(void *state, bw_meta_blobs_cb cb, void *arg) BW_WUR;
	/* syncs (or durable commits) done since open */
	uint64_t (*syncs)(const void *state);
	/* Reaches where without changing anything and says in msg what it
	 * found, or what is wrong (then non-zero). */
	int (*check)(const char *where, char *msg, size_t cap) BW_WUR;
	/* The backend's own figures (a connection's state, reconnections),
	 * from the loop thread; NULL if it has none. */
	void (*stats)(const void *state, bw_stat_emit emit, void *arg);
	/* the highest message id ever issued (0: none), start-up only */
	int (*msg_last_id)(void *state, int64_t *out) BW_WUR;
	/* Start-up is over: requests are served from now on (the limits a
	 * request may wait get their values); NULL if nothing changes. */
	void (*serving)(void *state);
};

/* The backends: SQLite (src/host/sqlite/) and PostgreSQL (src/host/pg/).
 * Only meta.c picks one, by the URL's scheme. */
extern const struct bw_meta_backend bw_meta_sqlite;
extern const struct bw_meta_backend bw_meta_postgresql;

struct bw_meta {
	const struct bw_meta_backend *be;
	void *state;
	struct bw_loop *loop;
	int closed; /* bw_meta_close: requests get BW_ECLOSED */
};

/* Opens the store named by url: "sqlite:PATH", a libpq URI
 * "postgresql://USER@HOST:PORT/DB?...", or "" for the embedded default
 * (sqlite:DATA_DIR/defensive.db). BW_ECONFIG for an unknown scheme. */
int bw_meta_open(struct bw_meta **out, const char *url, const char *data_dir,
		 struct bw_loop *loop) BW_WUR;
/* What --check-config says of url (as bw_meta_open takes it): 0 and what
 * was found in msg, or an error and what is wrong. */
int bw_meta_check(const char *url, const char *data_dir, char *msg,
		  size_t cap) BW_WUR;
/* With nothing queued, or once the loop is freed (its last deferred calls
 * run what was queued): whoever still waits is told (BW_ECLOSED). m stays
 * until bw_meta_free, and a request submitted after the close (by an
 * answer the close ran, or a job it started) gets BW_ECLOSED on the loop,
 * as any answer. */
void bw_meta_close(struct bw_meta *m);
void bw_meta_free(struct bw_meta *m);
/* r answered BW_ECLOSED on m's loop (bw_meta_submit after the close). */
void bw_meta_refuse(struct bw_meta *m, struct bw_meta_req *r);
/* Start-up is over (the backend's serving, if it has one). */
void bw_meta_serving(struct bw_meta *m);

/* Other daemons write the same rows (a shared store): what this one holds
 * in RAM may be stale, and a rule about who may decide (a lock, a count)
 * must be asked of the store. */
static inline int
bw_meta_others_write(const struct bw_meta *m)
{
	return m->be->shared;
}

static inline void
bw_meta_submit(struct bw_meta *m, struct bw_meta_req *r)
{
	if (m->closed)
		bw_meta_refuse(m, r);
	else
		m->be->submit(m->state, r);
}

static inline int
bw_meta_run(struct bw_meta *m, struct bw_meta_req *r)
{
	return m->closed ? BW_ECLOSED : m->be->run(m->state, r);
}

/* A request zeroed, with what every one has (its u is the caller's to
 * fill in next). */
static inline void
bw_meta_req_init(struct bw_meta_req *r, enum bw_meta_op op, unsigned flags,
		 bw_meta_done_fn done, void *arg)
{
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->flags = flags;
	r->done = done;
	r->arg = arg;
}

#endif
