/* The frame's insides, shared by frame.c (the state machine), frame_body.c
 * (a streamed body's rate, and refused bodies discarded) and frame_stats.c
 * (what the requests came to). Internal to src/engine/.
 */
#ifndef BULWARK_ENGINE_FRAME_INT_H
#define BULWARK_ENGINE_FRAME_INT_H

#include "bulwark/util.h"
#include "engine/frame.h"
#include "engine/slots.h"

#define CTRL_WANT     2048u	    /* input buffered between requests */
#define DISCARD_WANT  (16u * 1024u) /* a refused body read at a time */
#define ERRORS_LOGGED 10	    /* error replies logged per connection */
/* Replies queued past which the next request waits for them to drain: a
 * peer pipelining small requests it never reads the replies of holds
 * this much, not the engine's read limit (256 KiB) and then some */
#define FRAME_OUT_BUDGET (32u * 1024u)

_Static_assert(CTRL_WANT >= BW_REQ_HDR_LEN, "a header fits");

/* Request latency buckets, in microseconds (the last is +Inf). */
#define FRAME_BUCKETS 10

/* What each protocol's requests came to. */
struct frame_stats {
	uint64_t *ok, *err; /* per route: answered, answered with the error */
	uint64_t unknown;   /* codes in its range that no route has */
	uint64_t framing;   /* payload sizes out of bounds */
	/* [0] small requests, [1] bulk ones (a payload of FRAME_BULK bytes
	 * or more: their time holds the transfer) */
	uint64_t hist[2][FRAME_BUCKETS + 1];
	uint64_t sum_us[2], count[2];
};

#define FRAME_BULK (64u * 1024u)

struct bw_frame {
	const struct bw_frame_proto *p[BW_FRAME_PROTOS_MAX];
	void *ctx[BW_FRAME_PROTOS_MAX];
	struct bw_conn_limits lim[BW_FRAME_PROTOS_MAX]; /* 0s: the listener's */
	struct frame_stats st[BW_FRAME_PROTOS_MAX];
	unsigned n;
	/* open connections by the protocol of their last request (the
	 * vault's and the messenger's share the listener); none: no request
	 * ended yet */
	uint64_t conns[BW_FRAME_PROTOS_MAX], conns_none;
	/* run before each request's handler (bw_frame_set_prepare) */
	bw_frame_prepare_fn prepare;
	void *prepare_arg;
	bw_frame_admit_fn admit; /* and then (bw_frame_set_admit) */
	void *admit_arg;
	/* the bodies of requests the admit hook refused for now, thrown away
	 * so that their connections stay (made at the first) */
	struct bw_slots refused;
	int refused_ready;
};

#define FRAME_REFUSED_SLOTS    64u
#define FRAME_REFUSED_PER_ADDR 8u

enum fstate {
	F_HDR,	/* waiting for a 23-byte header */
	F_HEAD, /* waiting for the route's head of the payload */
	F_REQ,	/* in the route's on_request */
	F_BODY, /* the rest of the payload streams through on_body */
	F_WAIT, /* the answer is being worked on elsewhere */
};

struct frame_conn {
	enum fstate st;
	struct bw_frame_req req;
	int padded;	   /* course-sample client: pad replies, then close */
	int in_input;	   /* inside frame_input: a kick must not re-enter */
	int failed;	   /* bw_frame_fail: nothing more is read as requests */
	int stalled;	   /* requests wait for the replies to drain */
	unsigned requests; /* complete requests read */
	uint8_t last_id[BW_ID_LEN]; /* the last request header's client id */
	uint64_t reply_len;	    /* bytes of the reply being written */
	uint64_t reply_left; /* payload bytes announced, not yet queued */
	uint16_t reply_code; /* 0: no reply in pieces open */
	unsigned errors_logged, errors_dropped;
	const struct bw_frame_proto *last; /* of the previous request */
	void *state[BW_FRAME_PROTOS_MAX];
	uint64_t req_start_us; /* the request's header arrived */
	int req_counted;       /* its result is in the stats */
	/* BW_ROUTE_LAX: the header said 0 and the fields follow (lax_zero),
	 * or payload bytes past the head to read and ignore (skip) */
	int lax_zero, lax_logged;
	uint32_t skip;
	/* a streamed body: where it starts in the input, its size, and its
	 * rate, checked per window (frame_body.c) */
	uint64_t body_start, body_size;
	unsigned min_rate, window_ms;
	uint64_t win_start_ms, win_left;
	/* a refused body being read and thrown away, in a slot of the
	 * service's, counted in *discard_n */
	int discarding;
	struct bw_slot slot;
	struct bw_slots *slots;
	uint64_t *discard_n;
	const char *discard_why;
	/* the prepare hook: not asked yet for this request, working, done */
	enum { P_NONE, P_WAIT, P_DONE } prep;
};

#define FC(c) ((struct frame_conn *)(c)->state)

/* The index of p in f's table, or -1. */
static inline int
frame_proto_index(const struct bw_frame *f, const struct bw_frame_proto *p)
{
	unsigned i;

	for (i = 0; i < f->n; i++) {
		if (f->p[i] == p)
			return (int)i;
	}
	return -1;
}

/* Whether the bytes after a request of req_len bytes are padding: 1, 0, or
 * -1 (wait). At the peer's end of stream, zeros are padding. */
static inline int
frame_padding(const struct bw_conn *c, size_t skip, uint64_t req_len)
{
	if (c->in.len <= skip)
		return 0;
	return bw_frame_padding(bw_buf_head(&c->in) + skip, c->in.len - skip,
				req_len, (c->flags & BW_CONN_CLOSING) != 0);
}

/* frame_table.c */
/* The count of open connections whose last protocol is p (NULL: none). */
uint64_t *frame_conns_of(struct bw_frame *f, const struct bw_frame_proto *p);

/* frame_body.c */
/* The body starts at the input's current position. */
void frame_body_begin(struct bw_conn *c);
/* Before each step of a body: 1 if it came slower than its minimum rate
 * over the last window (logged: the connection goes). */
int frame_body_slow(struct bw_conn *c);
/* The server did not read for a while (a worker, the store): the window
 * starts again. */
void frame_body_resumed(struct bw_conn *c);
/* A step of a body being discarded. */
int frame_discard_step(struct bw_conn *c);
/* The connection goes: a discarded body's slot is free. */
void frame_discard_end(struct bw_conn *c);

/* frame_stats.c */
int frame_stats_init(struct bw_frame *f, unsigned i) BW_WUR;
void frame_stats_fini(struct bw_frame *f);
/* A request's header was routed: its clock starts. */
void frame_req_start(struct bw_conn *c);
/* Its answer (reply code, or 0 when it ends without one): counted once. */
void frame_req_result(struct bw_conn *c, uint16_t reply_code);
/* A code no route has, or a size out of bounds, in protocol p. */
void frame_req_refused(struct bw_conn *c, const struct bw_frame_proto *p,
		       int unknown);

#endif
