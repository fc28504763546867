/* The daemon's connection engine, shared by every service: listeners,
 * accepted connections with capped input/output buffers, deadlines, the
 * connection cap, graceful shutdown. A service is a set of callbacks that
 * consume a connection's input and queue output; it never touches sockets.
 */
#ifndef BULWARK_SVC_SERVER_H
#define BULWARK_SVC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/addrtab.h"
#include "bulwark/buf.h"
#include "bulwark/loop.h"
#include "bulwark/store.h"
#include "svc/registry.h"

#define BW_ADDR_CAP 64

struct bw_server_cfg {
	char data_dir[4096];
	char listen_addr[BW_ADDR_CAP];
	uint16_t port;
	unsigned max_conns;
	uint64_t max_file_size;	       /* largest 1028 ciphertext accepted */
	unsigned max_uploads;	       /* 1028s in progress at once */
	unsigned max_uploads_per_addr; /* of those, from one address */
	unsigned min_rate;	       /* bytes/s a 1028 body must keep up */
	unsigned key_lifetime_s;       /* an AES key is refused after this */
	unsigned key_failures;	       /* decryption failures that revoke it */
	unsigned max_reg_per_min;      /* registrations per address a minute */
	uint64_t max_clients;	       /* registered clients in all */
	unsigned timeout_ms;	       /* no progress while mid-request/idle */
	unsigned request_timeout_ms;   /* a request must complete within this */
	unsigned shutdown_grace_ms;    /* in-flight work allowed at shutdown */
	unsigned workers;
	int console_enabled;
	char console_addr[BW_ADDR_CAP];
	uint16_t console_port;
	char console_secret[256];
	unsigned console_max_conns;
};

struct bw_conn;
struct bw_server;
struct bw_vault;

struct bw_service {
	const char *name;
	/* Allocates c->state; non-zero refuses the connection. */
	int (*on_open)(struct bw_conn *c);
	/* New bytes are in c->in: consume what forms complete steps, queue
	 * replies with bw_conn_send. A negative return closes at once. */
	int (*on_input)(struct bw_conn *c);
	/* Everything queued has been written to the socket. May be NULL. */
	void (*on_drained)(struct bw_conn *c);
	/* The connection is going away: release c->state (abort uploads). */
	void (*on_close)(struct bw_conn *c);
	/* 1 while a request is in progress (shutdown waits for it). */
	int (*busy)(const struct bw_conn *c);
	/* During a graceful stop: 1 while the service still expects requests
	 * on new connections (its listener stays open). May be NULL. */
	int (*draining)(struct bw_server *s);
	/* When the listener is full, close its longest-idle connection to
	 * admit the new one (the console: the operator must get in). */
	int evict_idle;
};

struct bw_listener {
	const struct bw_service *svc;
	int fd;
	struct bw_watch w;
	uint16_t port;
	unsigned max_conns;
	unsigned conns_n; /* open connections (read by the console) */
	uint64_t accepted, refused;
	uint64_t paused_until_ms; /* accepting paused (out of descriptors) */
	struct bw_server *srv;
};

enum {
	BW_CONN_CLOSING = 1u, /* close once output is flushed */
	BW_CONN_PAUSED = 2u,  /* do not read input */
	BW_CONN_LINGER = 4u,  /* write side shut; draining input */
	BW_CONN_DEAD = 8u,    /* closed; freed when no job holds it */
	BW_CONN_FAILED = 16u, /* a send failed: closed after this callback */
};

struct bw_conn {
	struct bw_server *srv;
	struct bw_listener *lis;
	struct bw_watch w;
	uint64_t id;
	char peer[64];
	struct bw_addr *addr; /* the peer's address entry; NULL if untracked */
	uint64_t opened_ms, last_read_ms;
	struct bw_buf in, out;
	size_t want;	      /* bytes the service wants room for in c->in */
	uint64_t deadline_ms; /* closed when the clock passes it */
	uint64_t req_deadline_ms; /* the current request's deadline, or 0 */
	unsigned flags;
	unsigned refs; /* worker jobs holding the connection */
	void *state;
	struct bw_conn *prev, *next;
};

#define BW_MAX_LISTENERS 4

struct bw_server {
	struct bw_server_cfg cfg;
	struct bw_loop *loop;
	struct bw_store *store;
	struct bw_registry reg;
	struct bw_listener lis[BW_MAX_LISTENERS];
	unsigned lis_n;
	struct bw_conn *conns;
	uint64_t conns_n, next_conn_id;
	int sigfd;
	struct bw_watch sig_w;
	int stopping;
	uint64_t stop_deadline_ms;
	int64_t started_s;
	struct bw_addrtab addrs;
	int reserve_fd; /* given up to accept and close at EMFILE */
	uint64_t emfile_dropped, emfile_warn_ms;
	struct bw_vault *vault;
	/* live figures for the console */
	uint64_t uploads_active, upload_bytes_active, swallowing;
};

/* Fills cfg with the defaults. */
void bw_server_cfg_defaults(struct bw_server_cfg *cfg);
/* Opens the store and registry, binds every listener, installs signal
 * handling. Logs "<service> listening on ADDR:PORT" for each listener. */
int bw_server_open(struct bw_server *s, const struct bw_server_cfg *cfg)
	__attribute__((warn_unused_result));
/* Serves until SIGTERM/SIGINT and a graceful drain; returns 0 on a clean
 * stop. */
int bw_server_run(struct bw_server *s);
void bw_server_close(struct bw_server *s);

/* For services. Queues p and writes what the socket takes. Never closes or
 * frees c, so a caller may go on using c and c->state after it returns:
 * when the write fails, c stops all I/O, later sends return BW_ECLOSED,
 * and c is closed after the current callback. */
int bw_conn_send(struct bw_conn *c, const void *p, size_t n)
	__attribute__((warn_unused_result));
/* Closes after the queued output is flushed (and input is drained briefly so
 * the peer gets the reply rather than a reset). */
void bw_conn_finish(struct bw_conn *c);
void bw_conn_pause(struct bw_conn *c, int paused);
void bw_conn_hold(struct bw_conn *c);
/* Drops a hold; the connection is freed if it is dead and unheld, so the
 * caller must not touch c afterwards unless it knows c is alive (test
 * bw_conn_dead before releasing). */
void bw_conn_release(struct bw_conn *c);
/* 1 if the connection has been closed (e.g. while a job held it). */
int bw_conn_dead(const struct bw_conn *c);
/* Runs the service's input handler again (after a job completes). */
void bw_conn_kick(struct bw_conn *c);
/* Starts (ms > 0) or clears (ms == 0) the current request's deadline. */
void bw_conn_request_deadline(struct bw_conn *c, unsigned ms);

/* The vault's instance: directories, commit locks, start-up reconciliation
 * (src/svc/vault/). */
int bw_vault_open(struct bw_server *s) __attribute__((warn_unused_result));
void bw_vault_close(struct bw_server *s);

extern const struct bw_service bw_vault_service;
extern const struct bw_service bw_console_service;

#endif
