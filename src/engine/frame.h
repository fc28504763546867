/* The shared port's state machine: 23-byte request headers, 7-byte
 * responses, course-sample padding, and a routing table per protocol (the
 * vault's 1025-1031, the messenger's 600-604). The table bounds each code's
 * payload before a byte of it is read; the frame buffers a route's head,
 * hands it to the handler, and streams the rest of the payload through the
 * route's body handler. Replies of any size, padded when the client pads.
 */
#ifndef BULWARK_ENGINE_FRAME_H
#define BULWARK_ENGINE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"
#include "proto/wire.h"
#include "engine/engine.h"
#include "engine/slots.h"

#define BW_FRAME_PROTOS_MAX 4

struct bw_frame;
struct bw_frame_req;

enum {
	/* served as the first request of a connection opened during the
	 * drain (the vault's 1029-1031 of a session that got its 2103) */
	BW_ROUTE_DURING_DRAIN = 1u,
	/* the header's payload size may be wrong the ways widely copied
	 * clients get it wrong, as long as the request's own bytes say what
	 * it is (logged once per connection):
	 *  - 0, with the fields following in the same arrival: a fixed-size
	 *    request then counts as its head when zero padding follows it;
	 *    a streamed one takes its size from its head (route lax_size);
	 *  - more than a fixed-size request's size, up to
	 *    BW_ROUTE_LAX_MAX: the head is the request, the rest is read
	 *    and ignored. */
	BW_ROUTE_LAX = 2u,
};

/* The most payload a BW_ROUTE_LAX fixed-size request may announce: what
 * fits one padded 1024-byte request. */
#define BW_ROUTE_LAX_MAX (BW_PAD_UNIT - BW_REQ_HDR_LEN)

struct bw_frame_route {
	uint16_t code;
	unsigned flags;
	/* payload_size outside [min_size, max_size] is a framing error: the
	 * error reply, then a close, before any payload is read */
	uint32_t min_size, max_size;
	/* payload bytes buffered and given to on_request (head <= min_size);
	 * the rest of the payload streams through on_body. A route without
	 * on_body has head == min_size == max_size. */
	uint32_t head;
	/* p holds head bytes. The handler replies (or starts a body with
	 * bw_frame_stream, or waits with bw_frame_wait). Negative: close. */
	int (*on_request)(struct bw_conn *c, struct bw_frame_req *r,
			  const uint8_t *p);
	/* Consumes streamed payload from c->in as it arrives; ends the
	 * request with bw_frame_done or bw_frame_wait. */
	int (*on_body)(struct bw_conn *c, struct bw_frame_req *r);
	/* BW_ROUTE_LAX, streamed: the payload size the head says (0: it
	 * cannot say). May be NULL. */
	uint32_t (*lax_size)(const uint8_t *head);
};

struct bw_frame_proto {
	const char *name;
	uint8_t version;   /* of every reply */
	uint16_t err_code; /* the general error reply */
	/* other replies that refuse (counted as errors in the metrics) */
	const uint16_t *refusals;
	size_t refusals_n;
	uint16_t code_lo, code_hi; /* an unknown code in here is ours */
	const struct bw_frame_route *routes;
	size_t routes_n;
	size_t state_size; /* per-connection state, zeroed at first use */
	/* A request header arrived on c (any protocol's); it starts at
	 * bw_conn_in_offset(c). A client that speaks in turn has read what
	 * came before it (bw_conn_arrived_after tells whether it could
	 * have). May be NULL. */
	void (*on_next)(struct bw_conn *c, void *ctx, void *state);
	/* Output queued earlier has all been written. May be NULL. */
	void (*on_drained)(struct bw_conn *c, void *ctx, void *state);
	/* The connection closes: release what the state holds (not the
	 * state itself). c->flags tells how (BW_CONN_EOF: the peer's
	 * orderly close). May be NULL. */
	void (*on_close)(struct bw_conn *c, void *ctx, void *state);
	/* 1 while this protocol has work in progress on c. May be NULL. */
	int (*busy)(const struct bw_conn *c, const void *state);
	/* During the drain: 1 while new connections are still expected. */
	int (*draining)(void *ctx);
	/* 1: its spec keeps a client's session on one connection, so that
	 * one that carries a single request and closes is a deviation
	 * (BW_DEV_ONE_REQUEST) unless it pads */
	int sessions;
};

/* The request being served. Valid from on_request until the request ends
 * (bw_frame_done, or the connection closes). */
struct bw_frame_req {
	struct bw_req_hdr hdr;
	const struct bw_frame_route *route;
	const struct bw_frame_proto *proto;
	void *ctx;   /* the protocol's instance */
	void *state; /* the protocol's state on this connection */
};

extern const struct bw_service bw_frame_service;

/* Before a request's handler runs, with its header and head: 0 to go on
 * at once, 1 if it started work that ends with bw_frame_prepared(c) (the
 * connection reads nothing meanwhile; one that goes meanwhile is not
 * called back). The daemon's use: on a store several daemons share, the
 * rows of the clients a request names are read again first. */
typedef int (*bw_frame_prepare_fn)(void *arg, struct bw_conn *c,
				   const struct bw_frame_req *r,
				   const uint8_t *head);
void bw_frame_set_prepare(struct bw_frame *f, bw_frame_prepare_fn fn,
			  void *arg);
/* The work a prepare hook started is over: the request goes on. */
void bw_frame_prepared(struct bw_conn *c);
/* After the prepare hook, before the handler: NULL serves the request;
 * a reason refuses it (the protocol's error reply, the reason logged,
 * the connection finished: whoever is refused for who it is would be
 * refused again), or, with *for_now set, only this request (the
 * connection stays, unless a body follows the head). The daemon's use:
 * on a TLS listener, a request naming a registered client is served only
 * to the holder of its key; a client whose row the shared store could
 * not give is refused for now. */
typedef const char *(*bw_frame_admit_fn)(void *arg, struct bw_conn *c,
					 const struct bw_frame_req *r,
					 const uint8_t *head, int *for_now);
void bw_frame_set_admit(struct bw_frame *f, bw_frame_admit_fn fn, void *arg);

int bw_frame_new(struct bw_frame **out) BW_WUR;
void bw_frame_free(struct bw_frame *f);
/* Adds a protocol's table; ctx is passed to its handlers as r->ctx. lim
 * (NULL: the listener's) bounds the protocol's replies (out_max) and the
 * idle time after each of its requests (idle_ms); the listener's own
 * limits must hold every protocol's (bw_frame_limits). */
int bw_frame_add(struct bw_frame *f, const struct bw_frame_proto *p, void *ctx,
		 const struct bw_conn_limits *lim) BW_WUR;
/* The limits a listener needs to serve every table added: the largest of
 * each. */
void bw_frame_limits(const struct bw_frame *f, struct bw_conn_limits *out);

/* Appends the requests' figures to out in the Prometheus text format:
 * bulwark_requests_total{protocol,code,result} and the histogram
 * bulwark_request_seconds{protocol}. BW_ETOOBIG if out is full. */
int bw_frame_metrics(const struct bw_frame *f, struct bw_buf *out) BW_WUR;

/* The state proto keeps on c (allocated on first use); NULL if it cannot
 * be allocated. */
void *bw_frame_state(struct bw_conn *c, const struct bw_frame_proto *p);

/* --- ending a request ------------------------------------------------- */

/* on_request: the rest of the payload follows; on_body is called as it
 * arrives (c->want sets how much is buffered at a time). */
void bw_frame_stream(struct bw_conn *c);
/* on_request, before bw_frame_stream or bw_frame_discard: each window of
 * window_ms must bring min_rate bytes a second of the body (0: no minimum),
 * else the connection closes. Time the server spent not reading (paused
 * for a worker or the store, until bw_frame_kick) starts a new window: a
 * peer trickling just enough to stay alive, after a fast start or not,
 * cannot hold a slot. */
void bw_frame_body_rate(struct bw_conn *c, unsigned min_rate,
			unsigned window_ms);
/* on_request: the body of a request refused before it arrived is read and
 * thrown away, holding a slot of slots while it lasts (and counted in
 * *counter, if not NULL), so that the error reply (why) comes in step and
 * the connection stays; a body over BW_FRAME_DISCARD_MAX, or one for
 * which no slot is free, is answered at once and the connection
 * finished. A newcomer may take the slot of one that trickles: it is
 * answered and finished then. */
#define BW_FRAME_DISCARD_MAX (1024u * 1024u)
int bw_frame_discard(struct bw_conn *c, uint64_t size, struct bw_slots *slots,
		     uint64_t *counter, const char *why);
/* The request is in and its answer is being worked on elsewhere: input is
 * paused until bw_frame_done. */
void bw_frame_wait(struct bw_conn *c);
/* The request is over: the next header may be read. Safe from any
 * callback; input resumes after it. */
void bw_frame_done(struct bw_conn *c);
/* A streamed payload has been consumed: decides whether the client pads
 * (from the bytes that follow it). 1 decided; 0 not yet, return and wait
 * for input (on_body is called again). */
int bw_frame_body_end(struct bw_conn *c);
/* Input may go on (after a pause for a worker): runs the handler again
 * unless it is already running. */
void bw_frame_kick(struct bw_conn *c);

/* --- replies ----------------------------------------------------------
 * A failed send closes the connection after the callback (engine.h), so
 * the caller may ignore the result; it is returned for handlers that want
 * to stop early. On a closed connection each of these (and those ending a
 * request above) does nothing and returns BW_ECLOSED. */

/* One reply: header and payload, padded to the pad unit (and the
 * connection finished) when the client pads. Any size a u32 holds. */
int bw_frame_reply(struct bw_conn *c, uint16_t code, const void *p, size_t n);
/* A reply in pieces: begin announces total payload bytes, add queues
 * pieces, end checks the count and pads. */
int bw_frame_reply_begin(struct bw_conn *c, uint16_t code, uint32_t total);
int bw_frame_reply_add(struct bw_conn *c, const void *p, size_t n);
int bw_frame_reply_end(struct bw_conn *c);
/* The protocol's general error; why is logged (at most a few lines per
 * connection, then counted). */
int bw_frame_error(struct bw_conn *c, const char *why);
/* A framing error: the error reply, then the connection is finished. */
int bw_frame_fail(struct bw_conn *c, const char *why);
/* 1 when the client pads its requests (course-sample style). */
int bw_frame_padded(struct bw_conn *c);

#endif
