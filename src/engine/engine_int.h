/* Between the engine's files: engine.c (listeners, lifecycle), conn*.c
 * (connections) and the frames: a connection's engine-only part, and what
 * they call of each other. Internal to the engine.
 */
#ifndef BULWARK_ENGINE_INT_H
#define BULWARK_ENGINE_INT_H

#include <sys/types.h>

#include "engine/engine.h"

/* A connection's engine-only part, allocated with it (conn.c):
 * c->own. */
struct bw_conn_own {
	struct bw_watch w;
	uint64_t opened_ms, last_read_ms;
	size_t last_read_n; /* what the last read took */
	int lowat;	    /* SO_RCVLOWAT as set (0: never; bw_conn_expect) */
	/* when the output last became empty: out_total then, and how much
	 * input had arrived by then (read, or waiting in the socket) */
	uint64_t drained_out_total, drained_in_total;
	size_t unacked_seen;  /* output unacknowledged at the last idle look */
	uint64_t deadline_ms; /* closed when the clock passes it */
	uint64_t over_since_ms;	       /* unsent output above out_max since */
	unsigned refs;		       /* worker jobs holding the connection */
	struct bw_conn *prev, *next;   /* every connection */
	struct bw_conn *lprev, *lnext; /* its listener's */
	struct bw_conn *qprev, *qnext; /* output waiting for the flush */
	/* the deferred close and free (never allocated: closing cannot
	 * fail for want of memory) and what it is to do (conn.c) */
	struct bw_call call;
	unsigned call_want;
	/* out_total when the tick last saw the output empty
	 * (engine_conn_trim) */
	uint64_t trim_out_total;
	/* a TLS listener's: the session, and how much of the head of out its
	 * records hold (out is consumed once they are all sent, so that out
	 * is empty only when the peer has been sent everything) */
	struct bw_tls *tls;
	size_t tls_enc;
	struct bw_call tls_call; /* a read of what the session holds */
	unsigned devs;		 /* deviation kinds counted (1u << kind) */
	/* holds one of the engine's bulk reads (tls_bulk_max); was refused
	 * one (counted once a connection) */
	unsigned tls_bulk : 1, tls_bulk_no : 1;
};

/* Gives back c's bulk read (conn_io.c): at its close, or whenever its
 * input is no bigger than reads through the loop's scratch buffer make
 * (TLS_SMALL_IN) once a trim has shrunk it. */
#define TLS_SMALL_IN (128u * 1024u)
void engine_tls_bulk_release(struct bw_conn *c);
void engine_tls_bulk_trimmed(struct bw_conn *c);

/* the tick that enforces deadlines and trims idle buffers (engine.c) */
#define ENGINE_TICK_MS	     200u
#define ENGINE_TLS_WINDOW_MS 1000u
/* input room a service that says nothing of its wants gets */
#define ENGINE_DEFAULT_WANT 2048u

/* Sets up a connection for an accepted fd (closing fd on failure);
 * proxied: from a --proxy-from address, started once its PROXY header has
 * come. */
void engine_conn_open(struct bw_listener *l, int fd, const char *peer,
		      int proxied);
/* Counts c for its address and hands it to its service (on_open). */
void engine_conn_start(struct bw_conn *c);
/* 1 if the peer's address, from l's view, already holds its share of l's
 * connections (--max-conns-per-addr); *addr: its entry (or NULL). */
int engine_addr_full(struct bw_listener *l, const char *peer,
		     struct bw_addr **addr);
/* conn_proxy.c: input arrived on c while the engine takes PROXY headers.
 * 1 if the service may read c->in now; 2 if the header was just taken (c
 * is to be started, engine_conn_start, and then read); 0 if the header is
 * still awaited or c was closed (a header missing, malformed, over its
 * address's share, or sent from an address not allowed to). */
int engine_conn_proxy_input(struct bw_conn *c);
/* Closes c now: the service's on_close, the socket, the counters; the
 * memory is freed after the current batch. why is logged if not NULL. */
void engine_conn_kill(struct bw_conn *c, const char *why);
/* The input that has arrived on c by now, read or still in the socket. */
uint64_t engine_conn_arrived(const struct bw_conn *c);
/* c's idle time has passed: 1 (and its deadline moved on) if the peer is
 * still taking output the kernel holds for it, unacknowledged bytes that
 * shrank since the last look (to none, too: once, as it may have taken
 * the last of them just now); 0 if it is idle indeed. */
int engine_conn_still_reading(struct bw_conn *c, uint64_t now_ms);
/* conn.c, beneath the other conn*.c files (each of which calls down to
 * it, never up): the lifecycle, the watch, the output list */
/* The most output c may hold at any moment (BW_OUT_HARD_FACTOR x cap). */
size_t engine_out_hard(const struct bw_conn *c);
/* After output was written or a hold dropped: a finished connection with
 * nothing left to send starts to linger. */
void engine_conn_after_output(struct bw_conn *c);
/* What c's watch waits for now (read, write), from its flags. */
void engine_conn_update(struct bw_conn *c);
/* The input room c's service wants now (its want, within the cap). */
size_t engine_conn_room(const struct bw_conn *c);
/* Ends c's TLS session: its close_notify, a last best-effort send. */
void engine_tls_close(struct bw_conn *c);
/* On, and off, the list of connections whose output the pass flushes. */
void engine_queue_add(struct bw_conn *c);
void engine_queue_del(struct bw_conn *c);
/* conn_out.c: output */
/* Flushes c and runs what follows a write: the service's on_drained, the
 * close of a finished connection, the watch update. */
void engine_conn_write(struct bw_conn *c);
/* c's peer does not read: closed after the callback, counted. */
void engine_conn_overflow(struct bw_conn *c);
/* Writes what the socket takes: 0 (c->out may still hold bytes, then c
 * is BLOCKED until writable) or -errno. */
int engine_conn_flush(struct bw_conn *c);
/* After a flush, or on the tick: output the peer leaves unread above the
 * listener's out_max for BW_OUT_OVER_MS closes c. */
void engine_conn_measure(struct bw_conn *c, uint64_t now);
/* On the tick: an idle connection gives its buffers back (an empty input
 * buffer once nothing was read for BW_TRIM_IDLE_MS, an empty output buffer
 * once nothing was queued since the last tick), so thousands of quiet
 * connections (chat members between lines) cost their state only. */
void engine_conn_trim(struct bw_conn *c, uint64_t now);
/* bw_conn_expect's hold undone for a peer not read for a tick */
void engine_conn_lowat_lapse(struct bw_conn *c, uint64_t now);
/* The idle time c is allowed now (less once it is closing). */
uint64_t engine_conn_idle_ms(const struct bw_conn *c);
/* conn_io.c: TLS on a connection of a TLS listener */
/* Starts c's session (0, or BW_ENOMEM). */
int engine_tls_open(struct bw_conn *c);
/* A TLS listener may accept one more connection now (the handshakes
 * begun this second, in all, under tls_rate): 1, or 0 with l paused until
 * the next second. A direct handshake counts once its address's budget let
 * it; one through the balancer counts at its accept (engine_tls_begun),
 * its address judged when its PROXY header names it. */
int engine_tls_budget(struct bw_listener *l);
void engine_tls_begun(struct bw_engine *e);
/* Address a (NULL: untracked) may begin one more handshake this second
 * (tls_rate_per_addr): 1, and counted in all unless it was already
 * (counted); or 0, counted as refused. */
int engine_tls_addr_ok(struct bw_listener *l, struct bw_addr *a, int counted);
/* The same for c, which a balancer passed (its PROXY header named the
 * client): 1, or 0 and c is closed. A direct connection was judged before
 * it was accepted into a connection (engine.c). */
int engine_tls_addr_budget(struct bw_conn *c);
/* What a PROXY header left in c->in is the start of the handshake. */
int engine_tls_after_proxy(struct bw_conn *c);
/* Reads c's socket as recv() would (bytes, 0 at the end, -1 with errno),
 * giving plaintext; *why names a protocol error. */
ssize_t engine_conn_recv(struct bw_conn *c, void *p, size_t room,
			 const char **why);
/* One step of writing c's output: the bytes sent (0: progress without a
 * send), -EAGAIN when the socket is full, -EINPROGRESS when nothing can
 * go before the handshake ends, or -errno. */
ssize_t engine_conn_push(struct bw_conn *c);
/* c has output to write: its queue, or its session's records. */
int engine_conn_has_output(const struct bw_conn *c);
/* The loop's prepoll hook: flushes queued output, 1 if some is left. */
int bw_engine_flush(void *arg);

#endif
