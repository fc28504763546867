/* What the messenger's files share: the instance, the per-connection state,
 * a 603 on its way to the disk, and the functions one file offers the
 * others. Internal to src/svc/msg/.
 */
#ifndef BULWARK_SVC_MSG_INT_H
#define BULWARK_SVC_MSG_INT_H

#include <stdint.h>

#include "proto/msg_wire.h"
#include "host/durable.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "svc/msg/msg.h"
#include "host/registry.h"
#include "engine/slots.h"

#define ULL(x) ((unsigned long long)(x))

#define MSG_TMP_CAP   64
#define MSG_SPILL_DIR "messages"
/* A refused 603 body up to this size is read and discarded so the client
 * gets its 9000 in step; a larger one is answered at once and closed. */
#define MSG_SWALLOW_MAX (1024u * 1024u)
/* Output a streamed 2101 or 2104 queues at a time (stream.c). */
#define MSG_STREAM_CHUNK (64u * 1024u)

struct bw_msg {
	struct bw_msg_cfg cfg;
	struct bw_engine *eng;
	struct bw_registry *reg;
	struct bw_store *store;
	struct bw_durable *durable;
	int dir_fd, incoming_fd; /* messages/, messages/.incoming */
	uint64_t seq;		 /* for unique file names */
	/* 603s whose rows are written at the end of the loop's batch, in
	 * one transaction */
	struct pending *batch, **batch_tail;
	int batch_scheduled;
	/* rows committed whose fsync has not completed: a 2104 carries only
	 * rows up to synced_upto while there are any (a message is never
	 * delivered before its 2103 could be) */
	uint64_t unsynced_n;
	int64_t synced_upto;
	/* live figures */
	uint64_t queued_n, queued_bytes; /* waiting in the store */
	uint64_t stored, delivered, pulls_active;
	/* streamed replies (stream.c): their output held, those waiting for
	 * room under --reply-memory, readers closed to make room */
	struct msg_conn *streams, *waiters;
	uint64_t reply_held, evicted;
	struct bw_call wake_call;
	/* 603 contents arriving (and refused ones being discarded), in all
	 * and per address */
	struct bw_slots slots;
	uint64_t stored_bytes; /* content bytes of the messages stored */
	/* errors since start: a message or registration not made durable
	 * (answered 9000), a pull cut short by a content it could not read */
	uint64_t err_store, err_pull;
};

enum mstate {
	M_IDLE,
	M_BODY,	   /* a 603's content arriving */
	M_SWALLOW, /* a refused 603's content being discarded */
	M_STORE,   /* the 603 waits for its row and the fsync */
	M_LIST,	   /* a 2101 streaming */
	M_PULL,	   /* a 2104 streaming */
};

/* A 603 on its way to the disk. */
struct pending {
	struct pending *next;
	struct bw_msg *m;
	struct bw_conn *conn; /* held until the reply; NULL when gone */
	struct bw_msg_rec rec;
	uint8_t *content; /* inline content (rec.content points here) */
	char tmp[MSG_TMP_CAP];
	int fd; /* the spilled content being written, or -1 */
	int rc;
	/* what it counts against its recipient's queue until its row does:
	 * the bytes received while it arrives, all of it once in */
	int inbound;
	uint64_t inbound_bytes;
	int counted;	     /* its row is committed and counted as queued */
	struct bw_slot slot; /* while its content arrives */
};

struct msg_conn {
	enum mstate st;
	struct bw_msg *m;
	uint8_t who[BW_ID_LEN]; /* the requester of the request in progress */
	/* 603 */
	struct pending *p;
	uint64_t left;		     /* content bytes still to come */
	struct bw_slot swallow_slot; /* a refused content being discarded */
	uint64_t win_start_ms, win_left;
	/* 2101: clients after this one, entries still to write */
	const struct bw_client *list_at;
	uint64_t list_left;
	/* 2104: rows (cursor, upto], payload bytes still to write */
	uint64_t gen; /* the pull's number (bw_client.pull_gen) */
	int64_t cursor, upto;
	uint64_t reply_left;
	int file_open; /* a spilled content is being streamed from file_fd */
	int file_fd;
	uint64_t file_left;
	/* delivered, waiting for evidence it arrived: the rows up to
	 * delivered_upto, the reply's last byte at c->out_total == sent_total
	 */
	int delivered;
	int64_t delivered_upto;
	uint64_t sent_total;
	/* the stream (stream.c) */
	struct bw_conn *c;
	int streaming, waiting, evicting;
	struct msg_conn *sprev, *snext, *wnext;
	size_t held;	      /* output queued, counted in reply_held */
	uint64_t progress_ms; /* when its reader last took all of it */
	int pull_counted;     /* in its client's pulls_n */
};

/* msg.c */
/* Its table on the shared port; the context is the struct bw_msg. */
extern const struct bw_frame_proto bw_msg_proto;
/* The state of the messenger on c; NULL once c is closed. */
#define MC(c) ((struct msg_conn *)bw_frame_state((c), &bw_msg_proto))
/* The requester named in the header, touched; NULL if unknown. */
struct bw_client *msg_requester(struct bw_msg *m, struct bw_frame_req *r);
/* A fresh unique name for a file under messages/. */
void msg_tmp_name(struct bw_msg *m, const char *prefix, char out[MSG_TMP_CAP]);

/* send.c: 603 */
int msg_on_send(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
int msg_on_send_body(struct bw_conn *c, struct bw_frame_req *r);
void msg_send_abort(struct bw_conn *c, struct msg_conn *mc);
void msg_swallow_end(struct bw_msg *m, struct msg_conn *mc);
void pending_free(struct pending *p);

/* pull.c: 601 and 604, delivery evidence */
int msg_on_list(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
int msg_on_pull(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
/* The pull on mc no longer counts against its client's --max-pulls. */
void pull_uncount(struct bw_msg *m, struct msg_conn *mc);
/* More output fits: go on streaming. */
void msg_stream_more(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc);
/* c sent a request after a delivery, or is closing: delete what it
 * received if evidence says so and its pull is the client's latest. */
void msg_settle(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc,
		int evidence);
/* Loads each recipient's queue totals into the registry. */
int msg_load_totals(struct bw_msg *m) BW_WUR;

/* stream.c: the memory of streamed replies */
void msg_stream_begin(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc);
/* The reply is over, or c goes. */
void msg_stream_end(struct bw_msg *m, struct msg_conn *mc);
/* 1 if the stream may queue more now; 0: it is called again when its
 * output drains or room comes back. */
int msg_stream_room(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc);
/* After queuing: its share of the budget is what it holds. */
void msg_stream_account(struct bw_conn *c, struct bw_msg *m,
			struct msg_conn *mc);
/* c's output was all taken: more follows. */
void msg_stream_drained(struct bw_conn *c, struct bw_msg *m,
			struct msg_conn *mc);

/* reconcile.c: makes messages/ and the rows agree at start-up. */
int msg_reconcile(struct bw_msg *m) BW_WUR;

#endif
