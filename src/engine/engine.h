/* The connection engine every service runs on: listeners, accepted
 * connections with input and output buffers capped per listener, idle and
 * request deadlines, the connection cap, output queued and flushed once per
 * loop pass, and a graceful drain on SIGTERM/SIGINT. It knows no service: a
 * service is a table of callbacks and an instance pointer given at listen
 * time; it consumes a connection's input and queues output, never touching
 * sockets.
 */
#ifndef BULWARK_ENGINE_H
#define BULWARK_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/addrtab.h"
#include "bulwark/buf.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/loop.h"
#include "bulwark/tls.h"
#include "engine/deviation.h"
#include "engine/proxy.h"

#define BW_ADDR_CAP	   64
#define BW_MAX_LISTENERS   8
#define BW_OUT_HARD_FACTOR 4u
#define BW_OUT_OVER_MS	   2000u
/* A closing connection has this long (renewed while the peer takes its
 * output) to take its last words. */
#define BW_FINISH_MS 5000u

/* Whom a full listener closes to admit a newcomer. */
enum bw_evict {
	BW_EVICT_NONE, /* nobody: the newcomer is refused */
	/* the oldest connection not yet proven (bw_conn_proven: greeted,
	 * authenticated, a complete request), else the proven one idle
	 * longest (over a second): an operator always gets in */
	BW_EVICT_UNPROVEN,
};

struct bw_conn;
struct bw_engine;

struct bw_service {
	const char *name;
	/* Sets up c->state; non-zero refuses the connection. May be NULL. */
	int (*on_open)(struct bw_conn *c);
	/* New bytes are in c->in: consume what forms complete steps, queue
	 * replies with bw_conn_send. A negative return closes at once. */
	int (*on_input)(struct bw_conn *c);
	/* Output queued earlier has all been written to the socket (after a
	 * flush that emptied a non-empty buffer). May be NULL. */
	void (*on_drained)(struct bw_conn *c);
	/* The connection is going away: release c->state. May be NULL. */
	void (*on_close)(struct bw_conn *c);
	/* 1 while a request is in progress (the drain waits for it). */
	int (*busy)(const struct bw_conn *c);
	/* During a drain: 1 while the service still expects requests on new
	 * connections, so its listener stays open. May be NULL. */
	int (*draining)(void *inst);
	/* The drain began: a last word to the peer may be queued (it is
	 * flushed before the close). Called once per open connection. May
	 * be NULL. */
	void (*on_stop)(struct bw_conn *c);
};

/* The limits of a service's connections (each service's configuration
 * holds its own; a listener applies them to every connection it accepts). */
struct bw_conn_limits {
	size_t in_max; /* a connection's input buffer never grows past */
	/* output the peer may leave unread: a connection whose unsent output
	 * stays above this for BW_OUT_OVER_MS, or ever passes
	 * BW_OUT_HARD_FACTOR times it, is closed (a peer that does not read
	 * cannot make the server hold its output; one that reads is not cut
	 * off because one loop pass queued a burst) */
	size_t out_max;
	unsigned idle_ms;    /* closed after this long without input */
	unsigned request_ms; /* the first request must be in within this */
};

/* One listener and the limits of every connection it accepts. */
struct bw_listen_cfg {
	char name[32]; /* logged and shown; "" = the service's name */
	char addr[BW_ADDR_CAP];
	uint16_t port; /* 0: any */
	unsigned max_conns;
	/* open connections from one source address; 0: no share */
	unsigned max_conns_per_addr;
	struct bw_conn_limits lim;
	enum bw_evict evict; /* when max_conns is reached */
	/* connections from the engine's proxy_from start with a PROXY
	 * header */
	int proxy;
	/* TLS 1.3 on every connection (after its PROXY header), with the
	 * engine's bw_engine_set_tls settings */
	int tls;
};

struct bw_engine_cfg {
	unsigned workers; /* threads for blocking work */
	/* load balancers whose connections start with a PROXY header (none:
	 * the protocol is off) */
	struct bw_proxy_nets proxy_from;
	unsigned shutdown_grace_ms; /* in-flight work allowed at shutdown */
	/* TLS handshakes begun a second: in all (past it the TLS listeners
	 * stop accepting until the next second, as HAProxy's maxsslrate),
	 * and from one address (past it its newcomers are closed); 0: no
	 * limit */
	unsigned tls_rate, tls_rate_per_addr;
	/* TLS connections that may read in bulk at a time (half a MiB of
	 * records held each while they send); the others read through the
	 * loop's 64 KiB. 0: no limit */
	unsigned tls_bulk_max;
	/* SIGHUP (with signals on): called on the loop thread. NULL: the
	 * signal is logged and ignored. */
	void (*on_hup)(void *arg);
	void *hup_arg;
};

struct bw_listener {
	const struct bw_service *svc;
	void *inst; /* the service's instance */
	const char *name;
	struct bw_listen_cfg cfg;
	int fd;
	struct bw_watch w;
	uint16_t port; /* bound */
	unsigned conns_n;
	struct bw_conn *conns; /* its own, through lprev/lnext */
	uint64_t accepted, refused;
	uint64_t paused_until_ms; /* accepting paused (out of descriptors) */
	int addr_slot; /* bw_addr.held[] counting its connections, or -1 */
	struct bw_engine *eng;
};

enum {
	BW_CONN_CLOSING = 1u,  /* close once output is flushed */
	BW_CONN_PAUSED = 2u,   /* do not read input */
	BW_CONN_LINGER = 4u,   /* write side shut; draining input */
	BW_CONN_DEAD = 8u,     /* closed; freed when no job holds it */
	BW_CONN_FAILED = 16u,  /* no more I/O: closed after this callback */
	BW_CONN_QUEUED = 32u,  /* on the engine's list of output to flush */
	BW_CONN_BLOCKED = 64u, /* the socket took less than was queued */
	BW_CONN_EOF = 128u,    /* the peer closed in order (read its FIN) */
	/* ... and its FIN came once every byte queued before it had been
	 * written and acknowledged: the peer had all of out_acked_total */
	BW_CONN_EOF_ACKED = 256u,
	BW_CONN_NOTE = 1024u,	  /* bw_conn_note_arrivals was called */
	BW_CONN_PROVEN = 2048u,	  /* bw_conn_proven was called */
	BW_CONN_OVERFLOW = 4096u, /* closed: its peer did not read */
	/* from a --proxy-from address: its PROXY header is awaited; the
	 * service has not seen it yet */
	BW_CONN_PROXY_WAIT = 8192u,
	BW_CONN_QUIET = 16384u, /* the proxy's own (LOCAL): closes not logged */
	BW_CONN_PROXY_LOOKED = 32768u, /* its first bytes are not a header */
	BW_CONN_OUT_ACTIVE = 65536u, /* bw_conn_output_is_activity was called */
	BW_CONN_TLS_UP = 131072u,    /* its TLS handshake is done */
	BW_CONN_PROXIED = 262144u,   /* from a --proxy-from balancer */
	BW_CONN_PEER_RESET = 524288u /* the peer reset the connection */
};

struct bw_conn_own; /* the engine's links and bookkeeping (engine_int.h) */

/* A connection as services see it. The engine allocates it; a service
 * reads the first group, and the second only through the bw_conn_*
 * functions below. */
struct bw_conn {
	/* read by services */
	struct bw_engine *eng;
	uint64_t id;
	char peer[64];
	struct bw_addr *addr; /* the peer's address entry; NULL if untracked */
	struct bw_buf in;     /* input read, not yet consumed */
	size_t want;	      /* room the service wants in c->in */
	uint64_t out_total;   /* bytes ever queued by bw_conn_send */
	/* out_total when the peer's FIN came after all of it was acked
	 * (bw_conn_eof_acked) */
	uint64_t out_acked_total;
	uint64_t req_deadline_ms; /* the current request's deadline, or 0 */
	void *state;		  /* the service's */
	/* read through the functions below */
	struct bw_listener *lis;
	unsigned flags;	   /* BW_CONN_* */
	struct bw_buf out; /* output queued, not yet written */
	uint64_t in_total; /* bytes ever read from the socket */
	/* after a TLS handshake: the DER SubjectPublicKeyInfo of the key
	 * the peer proved it holds (a client certificate's); NULL if none */
	uint8_t *peer_key;
	size_t peer_key_len;
	/* the engine's own: its links, timers and TLS session */
	struct bw_conn_own *own;
};

struct bw_engine {
	struct bw_engine_cfg cfg;
	struct bw_loop *loop;
	struct bw_listener lis[BW_MAX_LISTENERS];
	unsigned lis_n;
	struct bw_conn *conns;
	uint64_t conns_n, next_conn_id;
	struct bw_conn *queue_head, *queue_tail;
	uint64_t queue_n;
	int sigfd;
	struct bw_watch sig_w;
	int stopping;
	uint64_t stop_deadline_ms;
	struct bw_addrtab addrs;
	struct bw_hash by_id; /* open connections by id */
	int reserve_fd;	      /* given up to accept and close at EMFILE */
	uint64_t emfile_dropped, emfile_warn_ms;
	/* connections closed by the engine since start, by why */
	uint64_t closed_idle, closed_deadline, closed_overflow, closed_emfile;
	/* PROXY headers taken (LOCAL ones among them), and connections from
	 * a --proxy-from address closed for a missing or malformed one or
	 * from another address for sending one */
	uint64_t proxy_headers, proxy_local, proxy_refused;
	/* the TLS listeners' settings (bw_engine_set_tls), and their
	 * handshakes: done (resuming a session among them), failed */
	struct bw_tls_ctx *tls;
	uint64_t tls_handshakes, tls_resumed, tls_failed;
	/* the handshake budget (engine_tls_budget): this second's count,
	 * pauses of the TLS listeners, newcomers closed for their address */
	uint64_t tls_window_ms, tls_paused, tls_addr_refused;
	unsigned tls_begun;
	uint64_t tls_warn_ms, tls_addr_warn_ms, tls_addr_dropped;
	/* connections holding a bulk read's buffer now (tls_bulk_max), and
	 * those refused one since start */
	unsigned tls_bulk;
	uint64_t tls_bulk_refused;
	struct bw_devtab devs; /* clients' deviations (deviation.h) */
};

/* Creates the loop and its workers, the address table, and (with signals
 * set) blocks SIGTERM/SIGINT/SIGHUP and watches them: the first TERM or INT
 * starts the drain, the second ends it; HUP calls cfg->on_hup. Raises the
 * open-file limit to the hard limit. */
int bw_engine_open(struct bw_engine *e, const struct bw_engine_cfg *cfg,
		   int signals) BW_WUR;
/* Binds a listener for svc (inst is the service's instance, returned by
 * bw_conn_inst). Logs "<name> listening on ADDR:PORT". */
int bw_engine_listen(struct bw_engine *e, const struct bw_service *svc,
		     void *inst, const struct bw_listen_cfg *cfg,
		     struct bw_listener **out) BW_WUR;
/* The settings of the TLS listeners' new connections (the caller keeps x
 * and frees the one it replaces: open sessions hold what they need). */
void bw_engine_set_tls(struct bw_engine *e, struct bw_tls_ctx *x);
/* Serves until the drain ends (or bw_engine_stop); 0 on a clean stop. */
int bw_engine_run(struct bw_engine *e);
/* Starts the drain, as SIGTERM does. */
void bw_engine_stop(struct bw_engine *e);
/* Closes every connection and listener and finishes queued jobs and
 * deferred calls, keeping the loop: a connection held by a request that
 * ends later (a store's last answers, at its close) is released, and freed
 * by the next shut or the close. May be called again. */
void bw_engine_shut(struct bw_engine *e);
/* Shuts, then frees the loop. */
void bw_engine_close(struct bw_engine *e);

static inline int
bw_engine_stopping(const struct bw_engine *e)
{
	return e->stopping;
}

/* The open connection with this id, or NULL (ids are never reused). */
struct bw_conn *bw_engine_conn(const struct bw_engine *e, uint64_t id);

/* --- for services ---------------------------------------------------------
 * The contract that makes loops over many connections safe: no function
 * below closes or frees a connection before it returns. A connection that
 * must go (a failed or over-cap send, bw_conn_close_later) stops all I/O at
 * once and is closed after the current callback has returned; until then
 * c and c->state stay valid and later sends return BW_ECLOSED. */

/* Queues p for the peer; nothing is written before the end of the current
 * loop pass, when each connection's queue is flushed once. BW_ECLOSED if c
 * is closing or closed; BW_ETOOBIG if the queue would pass
 * BW_OUT_HARD_FACTOR times the listener's out_max, and then c is closed
 * after the callback. (Output the peer leaves above out_max for
 * BW_OUT_OVER_MS closes it too, from the flush or the tick.) */
int bw_conn_send(struct bw_conn *c, const void *p, size_t n) BW_WUR;
/* 1 if the peer has closed its side of the connection (its FIN arrived,
 * whether or not it has been read yet). */
int bw_conn_peer_shut(const struct bw_conn *c);
/* The position in the input stream of the first byte of c->in not yet
 * consumed (bytes consumed before it, counted from the connection's
 * start). */
static inline uint64_t
bw_conn_in_offset(const struct bw_conn *c)
{
	return c->in_total - c->in.len;
}
/* From now on, each time c's output is all written, notes how much input
 * had arrived (read, or waiting in the socket) before the write that
 * finished it began, for bw_conn_arrived_after. Costs an ioctl per flush:
 * only connections that need it ask. */
void bw_conn_note_arrivals(struct bw_conn *c);
/* From now on, output all written counts as activity: the idle time runs
 * again from the tick that sees it (a room's member who only reads). One
 * that does not read blocks the output, which has its own deadline. */
void bw_conn_output_is_activity(struct bw_conn *c);
/* The peer is bound to send at least n more bytes (the rest of a body
 * whose length it gave). A peer whose last read was large (it sends in
 * bulk) then wakes the loop once for them, not once per segment: the
 * kernel holds back readiness until min(n, 1 MiB) bytes wait
 * (SO_RCVLOWAT). The tick undoes it for a peer not read for a tick (so
 * within 200-400 ms), and one that slows down is read, and timed, as
 * before. n = 0 ends it: say so once the body is all read. */
void bw_conn_expect(struct bw_conn *c, size_t n);
/* 1 if the input byte at in_off arrived only once the last of the output
 * up to out_total was being written: a peer that speaks in turn sent it
 * after it had that output. 0 if it was there before (sent before the peer
 * could have read the output: pipelined), if that output is not all
 * written yet, or if arrivals are not noted. */
int bw_conn_arrived_after(const struct bw_conn *c, uint64_t in_off,
			  uint64_t out_total);
/* Bytes queued and not yet written. */
static inline size_t
bw_conn_queued(const struct bw_conn *c)
{
	return c->out.len;
}
/* Bytes of c's output the peer has acknowledged (taken off its socket's
 * queue, read or not yet read by the program): it grows with every byte
 * a reader takes, however slow, and stands still for a peer that reads
 * nothing. UINT64_MAX when the kernel cannot say. */
uint64_t bw_conn_out_acked(const struct bw_conn *c);
/* Logs an event of c's (bw_log_event): conn=ID peer=ADDR:PORT before the
 * fields, the peer as the PROXY header named it when there was one. */
void bw_conn_event(const struct bw_conn *c, enum bw_log_level level,
		   const char *event, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Stops all I/O on c now and closes it after the current callback. why is
 * logged (NULL: nothing). Safe anywhere, also on a closed connection. */
void bw_conn_close_later(struct bw_conn *c, const char *why);
/* Closes after the queued output is flushed (input is drained briefly so
 * the peer gets the reply rather than a reset). A peer that does not take
 * it is closed after BW_FINISH_MS without progress. */
void bw_conn_finish(struct bw_conn *c);
/* The peer has shown it is a real client (greeted, authenticated, a
 * complete request): a full BW_EVICT_UNPROVEN listener closes unproven
 * connections first. */
void bw_conn_proven(struct bw_conn *c);
/* 1 while c may still bring requests: not closed, closing or failed. */
static inline int
bw_conn_serving(const struct bw_conn *c)
{
	return !(c->flags & (BW_CONN_DEAD | BW_CONN_CLOSING | BW_CONN_LINGER |
			     BW_CONN_FAILED));
}
/* 1 once the peer's orderly close (its FIN) has been read; eof_acked: and
 * it came once every byte queued before it had been written and
 * acknowledged (the peer had all of the output up to then). */
static inline int
bw_conn_eof(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_EOF) != 0;
}
static inline int
bw_conn_eof_acked(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_EOF_ACKED) != 0;
}
/* 1 while c is being closed (finishing its output, or about to go). */
static inline int
bw_conn_closing(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_CLOSING) != 0;
}
/* 1 once c can no longer be written to: closed, or a write failed. */
static inline int
bw_conn_broken(const struct bw_conn *c)
{
	return (c->flags & (BW_CONN_DEAD | BW_CONN_FAILED)) != 0;
}
/* The most connections c's listener lets one address hold (0: no cap). */
static inline unsigned
bw_conn_addr_share(const struct bw_conn *c)
{
	return c->lis != NULL ? c->lis->cfg.max_conns_per_addr : 0;
}
/* The limits of c's listener. */
static inline const struct bw_conn_limits *
bw_conn_limits(const struct bw_conn *c)
{
	return &c->lis->cfg.lim;
}
/* 1 if c was closed because its peer did not read its output. */
static inline int
bw_conn_overflowed(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_OVERFLOW) != 0;
}
void bw_conn_pause(struct bw_conn *c, int paused);
/* 1 while c's input is paused. */
static inline int
bw_conn_paused(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_PAUSED) != 0;
}
/* A worker job holds c: c is not freed (though it may close) until the
 * matching release. */
void bw_conn_hold(struct bw_conn *c);
/* Drops a hold; a dead, unheld c is freed after the current batch, so c
 * may be read until the callback returns, never after. */
void bw_conn_release(struct bw_conn *c);
/* When c was accepted (bw_now_ms). */
uint64_t bw_conn_opened_ms(const struct bw_conn *c);
/* 1 if the connection has been closed (e.g. while a job held it). */
int bw_conn_dead(const struct bw_conn *c);
/* Runs the service's input handler again (after a job completes). */
void bw_conn_kick(struct bw_conn *c);
/* Starts (ms > 0) or clears (ms == 0) the current request's deadline. */
void bw_conn_request_deadline(struct bw_conn *c, unsigned ms);
/* Closes c if no input arrives within ms from now; the next input
 * restores the listener's idle timeout. */
void bw_conn_idle_deadline(struct bw_conn *c, unsigned ms);

/* 1 on a TLS listener. */
static inline int
bw_conn_tls(const struct bw_conn *c)
{
	return c->lis->cfg.tls != 0;
}

/* On a TLS listener: the DER SubjectPublicKeyInfo of the key the peer
 * proved it holds in the handshake (*len), or NULL if it showed none. */
static inline const uint8_t *
bw_conn_peer_key(const struct bw_conn *c, size_t *len)
{
	*len = c->peer_key_len;
	return c->peer_key;
}

static inline void *
bw_conn_inst(const struct bw_conn *c)
{
	return c->lis->inst;
}

#endif
