/* What the messenger's files share: the instance, its queue table, the
 * per-connection state, a send (603) on its way to the store, and the
 * functions one file offers the others. Internal to src/svc/msg/.
 */
#ifndef BULWARK_SVC_MSG_INT_H
#define BULWARK_SVC_MSG_INT_H

#include <stdint.h>

#include "bulwark/util.h"
#include "bulwark/hash.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "engine/slots.h"
#include "store/blob.h"
#include "store/meta.h"
#include "host/registry.h"
#include "proto/msg_wire.h"
#include "svc/msg/msg.h"

#define MSG_TMP_CAP 64
#define MSG_SPACE   "messages/"
/* Output a streamed list reply (2101) or waiting reply (2104) queues at a
 * time (stream.c). */
#define MSG_STREAM_CHUNK (64u * 1024u)
/* A spilled content is written, and read back, this much at a time. */
#define MSG_FILE_CHUNK (256u * 1024u)

/* What the messenger keeps for one client: the messages waiting for it,
 * and its pulls. */
struct mqueue {
	uint8_t id[BW_ID_LEN];
	uint64_t queued_n, queued_bytes; /* rows durable in the store */
	/* sends (603) to this client accepted and not yet rows: they count
	 * against its queue's limits from the moment they start, by the bytes
	 * they brought so far (inbound_bytes) while they arrive, whole once in
	 * (reserved_bytes) */
	uint64_t inbound_n, inbound_bytes, reserved_bytes;
	/* the number of its latest pull (only that pull's evidence deletes),
	 * and its pulls (604) being answered */
	uint64_t pull_gen;
	unsigned pulls_n;
	/* on a shared store, when its count was last asked of the store
	 * (msg_refresh: at most once a second, whatever sends (603) come) */
	uint64_t counted_ms;
};

struct bw_msg {
	struct bw_msg_cfg cfg;
	struct bw_engine *eng;
	struct bw_registry *reg;
	struct bw_meta *meta;	/* the rows; a stored reply (2103) waits
				 * until its row is durable, and only
				 * durable rows are read */
	struct bw_blobs *blobs; /* large contents */
	struct bw_hash queues;	/* id -> struct mqueue */
	/* live figures */
	uint64_t queued_n, queued_bytes; /* waiting in the store */
	uint64_t stored, delivered, pulls_active;
	/* streamed replies (stream.c): their output held, those waiting for
	 * room under --reply-memory, readers closed to make room */
	struct msg_conn *streams, *waiters;
	uint64_t reply_held, evicted;
	struct bw_call wake_call;
	/* armed when a stream waits for room and no reader has stalled for
	 * STALL_MS yet (readers are judged as they are looked at): it looks
	 * again then */
	struct bw_timer stall_t;
	/* contents of sends (603) arriving (and refused ones being
	 * discarded), in all and per address */
	struct bw_slots slots;
	uint64_t stored_bytes; /* content bytes of the messages stored */
	/* errors since start: a message or registration not made durable
	 * (answered with an error reply, 9000), a pull cut short by a content
	 * it could not read */
	uint64_t err_store, err_pull;
};

enum mstate {
	M_IDLE,
	M_BODY,	 /* the content of a send (603) arriving */
	M_STORE, /* the send (603) waits for its row and the fsync */
	M_LIST,	 /* a list reply (2101) streaming */
	M_PULL,	 /* a waiting reply (2104) streaming */
};

/* A send (603) on its way to the store. */
struct pending {
	struct bw_meta_req req; /* its row's insert */
	struct bw_msg *m;
	struct bw_conn *conn; /* held until the reply; NULL when gone */
	struct bw_msg_rec rec;
	uint8_t *content; /* inline content (rec.content points here) */
	/* a spilled content (wbuf set): the object being written, made by
	 * the first worker job, its buffer (filled from the input, written
	 * by a worker), and how far it got */
	struct bw_blob_w *w;
	uint8_t *wbuf;
	size_t wlen;
	uint64_t woff;
	int writing; /* a worker job holds p */
	int aborted; /* its connection went while the job ran */
	int rc;	     /* what failed before the store was asked */
	int fail;    /* what failed after */
	/* what it counts against its recipient's queue until its row does:
	 * the bytes received while it arrives, all of it once in */
	int inbound;
	uint64_t inbound_bytes;
	struct bw_slot slot; /* while its content arrives */
};

struct msg_conn {
	enum mstate st;
	struct bw_msg *m;
	uint8_t who[BW_ID_LEN]; /* the requester of the request in progress */
	/* a send (603) */
	struct pending *p;
	uint64_t left; /* content bytes still to come */
	/* a list reply (2101): clients after this one, entries still to
	 * write */
	const struct bw_client *list_at;
	uint64_t list_left;
	/* a waiting reply (2104): rows (cursor, upto], payload bytes still
	 * to write */
	uint64_t gen;	   /* the pull's number (struct mqueue.pull_gen) */
	int64_t store_gen; /* and across the nodes (msg_pull.c, numbered) */
	int64_t cursor, upto;
	uint64_t reply_left;
	/* whether the peer had shut its side when the last byte of a waiting
	 * reply (2104) was queued (before it could be written: a FIN then
	 * came before the client could have the whole reply); end_seen once
	 * that is known */
	int end_shut, end_seen;
	struct pull_read *read; /* its reads (msg_pull.c) */
	int reading;		/* one is in flight: a chunk is counted */
	/* a spilled content being streamed: its key, the bytes still to
	 * come, and its reader (a worker's) */
	int file_open;
	char file_key[BW_PATH_CAP];
	uint64_t file_left, file_size;
	struct bw_blob_r *file_r;
	/* delivered, waiting for evidence it arrived: the rows up to
	 * delivered_upto, the reply's last byte at c->out_total == sent_total
	 */
	int delivered;
	int64_t delivered_upto;
	int64_t *delivered_ids; /* the reply's ids, in order (heap) */
	uint64_t delivered_n, delivered_bytes; /* the reply's messages */
	uint64_t planned_n, planned_bytes;     /* the plan's, meanwhile */
	uint64_t sent_total;
	/* the stream (stream.c) */
	struct bw_conn *c;
	int streaming, waiting, evicting;
	struct msg_conn *sprev, *snext, *wnext;
	size_t held; /* output queued, counted in reply_held */
	/* when its reader was last seen to take a byte of it, and how many
	 * its peer had acknowledged then (bw_conn_out_acked) */
	uint64_t progress_ms, acked_seen;
	int pull_counted; /* in its client's pulls_n */
};

/* msg.c */
/* Its table on the shared port; the context is the struct bw_msg. */
extern const struct bw_frame_proto bw_msg_proto;
/* The state of the messenger on c; NULL once c is closed. */
#define MC(c) ((struct msg_conn *)bw_frame_state((c), &bw_msg_proto))
/* The requester named in the header, touched; NULL if unknown. */
struct bw_client *msg_requester(struct bw_msg *m, struct bw_frame_req *r);
/* The queue of client id (NULL if none yet, or no memory for one: then
 * nothing is counted for it). */
struct mqueue *msg_queue(const struct bw_msg *m, const uint8_t id[BW_ID_LEN]);
struct mqueue *msg_queue_for(struct bw_msg *m, const uint8_t id[BW_ID_LEN]);

/* send.c: the send (603) */
int msg_on_send(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
int msg_on_send_body(struct bw_conn *c, struct bw_frame_req *r);
void msg_send_abort(struct bw_conn *c, struct msg_conn *mc);
void pending_free(struct pending *p);
/* bw_module.refresh: before a send (603) on a shared store, the recipient's
 * queue counted again by the store once this node's count of it passed half
 * a limit. */
int msg_refresh(void *inst, const uint8_t id[BW_ID_LEN], const uint8_t *other,
		uint16_t code, void (*done)(void *arg), void *arg);

/* pull.c: the list request (601) and the pull (604), delivery evidence */
int msg_on_list(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
int msg_on_pull(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p);
/* The pull on mc no longer counts against its client's --max-pulls. */
void pull_uncount(struct bw_msg *m, struct msg_conn *mc);
/* More output fits: go on streaming. */
void msg_stream_more(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc);
/* c sent a request after a delivery, or is closing: delete what it
 * received if evidence says so and its pull is the client's latest. */
/* The row of message id (to's, of size bytes), whose content key is gone,
 * is dropped. */
void msg_drop_lost(struct bw_msg *m, const uint8_t to[BW_ID_LEN], int64_t id,
		   uint64_t size, const char *key);
void msg_settle(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc,
		int evidence);
/* Loads each recipient's queue totals. */
int msg_load_totals(struct bw_msg *m) BW_WUR;
/* The connection goes: a read in flight finishes without it. */
void msg_pull_abort(struct msg_conn *mc);

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

/* reconcile.c: makes the contents and the rows agree at start-up. */
int msg_reconcile(struct bw_msg *m) BW_WUR;

#endif
