/* The daemon: what bulwarkd opens and which service listens where. It owns
 * the data directory's database and the registry over it, builds each
 * service's instance from its configuration through the service's module
 * (svc/module.h), and puts the services on the engine's listeners: the
 * routing tables on the shared port (on a second one too when port.info and
 * myport.info differ), every other service on a listener of its own.
 */
#ifndef BULWARK_DAEMON_H
#define BULWARK_DAEMON_H

#include <stdint.h>
#include <stdio.h>

#include "bulwark/err.h"
#include "svc/console/console.h"
#include "engine/engine.h"
#include "engine/frame.h"
#include "svc/metrics/metrics.h"
#include "host/module.h"
#include "svc/msg/msg.h"
#include "host/registry.h"
#include "svc/rooms/rooms.h"
#include "svc/vault/vault.h"

#define BW_DAEMON_SERVICES 5

struct bw_daemon_cfg {
	char data_dir[4096];
	char db[2048];	  /* the metadata store's URL ("" = the embedded one) */
	char blobs[2048]; /* the contents' store's URL ("" = the embedded) */
	char s3_endpoint[1024];
	char s3_region[128];
	char s3_credentials[4096];
	int s3_path_style;
	uint32_t blob_grace_s;
	uint32_t s3_timeout_s;
	char bus[1024]; /* the bus between nodes (redis://...) */
	char bus_password_file[4096];
	char node_name[64]; /* logs, metrics, the console ("" = none) */
	int node_given;	    /* by --node-name (not the host name) */
	struct bw_engine_cfg engine;
	unsigned timeout_ms;	     /* a connection silent this long closes */
	unsigned request_timeout_ms; /* a request must be in within this */
	uint64_t max_clients;	     /* registered clients in all */
	unsigned max_reg_per_min;    /* registrations a minute per address */
	struct bw_listen_cfg port;   /* the shared port (vault, messenger) */
	uint16_t port2;		     /* a second one (0: none) */
	/* TLS 1.3 listeners (0: off): the shared port's services, the rooms;
	 * the server's certificate and key ("": made in the data directory)
	 */
	int32_t tls_port, rooms_tls_port; /* -1: off; 0: any free port */
	char tls_cert[4096], tls_key[4096];
	int require_tls; /* the plain listeners off */
	struct bw_vault_cfg vault;
	struct bw_msg_cfg msg;
	int console_enabled;
	struct bw_listen_cfg console_listen;
	struct bw_console_cfg console;
	int rooms_enabled;
	struct bw_listen_cfg rooms_listen;
	struct bw_rooms_cfg rooms;
	int metrics_enabled; /* off unless --metrics-listen */
	struct bw_listen_cfg metrics_listen;
	struct bw_metrics_cfg metrics;
	int log_level;		/* 0 debug, 1 info, 2 warn, 3 error */
	char log_file[4096];	/* "" = standard error */
	char config_path[4096]; /* "" = none */
	/* what the options said, beyond the values */
	int port_given;	  /* --port: port.info and myport.info not read */
	int secret_given; /* the console secret came from an option */
};

/* The blob store's configuration out of cfg (pointing into it). */
struct bw_blob_conf;
void bw_daemon_blob_conf(const struct bw_daemon_cfg *cfg,
			 struct bw_blob_conf *bc);

/* The command line's options, in order: long names and values (NULL for
 * a flag). The strings must outlive the daemon (argv's do). */
#define BW_DAEMON_ARGS_MAX 128
struct bw_daemon_args {
	unsigned n;
	const char *name[BW_DAEMON_ARGS_MAX];
	const char *value[BW_DAEMON_ARGS_MAX];
};

/* What the command line asks bulwarkd to do (daemon_args.c). */
enum bw_daemon_mode {
	BW_MODE_SERVE,
	BW_MODE_MIGRATE, /* bulwarkd migrate --from DIR */
	BW_MODE_CHECK,	 /* --check-config, -t */
	BW_MODE_FINGERPRINT,
	BW_MODE_HELP,
	BW_MODE_VERSION,
};
struct bw_daemon_cmdline {
	enum bw_daemon_mode mode;
	const char *from; /* migrate's */
};
/* argv into args (the options in order) and cl: 0, or an exit status told
 * on stderr (2: bad usage). A password in a URL on the command line is
 * overwritten with '*'s in argv (ps shows them) and kept in a copy. */
int bw_daemon_parse_argv(int argc, char **argv, struct bw_daemon_args *args,
			 struct bw_daemon_cmdline *cl) BW_WUR;
/* The log as cfg says (level, node, file; a check's output is its
 * findings: its level stays as it is): 0, or an exit status (said). */
int bw_daemon_log_start(const struct bw_daemon_cfg *cfg,
			enum bw_daemon_mode m) BW_WUR;
/* Before serving: a log that stops being read stops nobody, journald's
 * priorities; the data directory, which must exist; the start-up line. 0,
 * or an exit status (said). */
int bw_daemon_serve_start(const struct bw_daemon_cfg *cfg) BW_WUR;

/* A service the daemon runs. */
struct bw_daemon_svc {
	const struct bw_module *mod;
	const void *cfg;		     /* its configuration */
	const struct bw_conn_limits *limits; /* in cfg */
	const struct bw_listen_cfg *listen;  /* its own listener, or NULL */
	void *inst;
};

/* Why a request on a TLS listener was refused (daemon_auth.c). */
enum bw_auth_kind {
	BW_AUTH_NO_CERT,   /* it names a client and proves no key */
	BW_AUTH_WRONG_KEY, /* it proves another key than the client's */
	BW_AUTH_OTHER_KEY, /* it registers another key than it proves */
	BW_AUTH_PLAIN,	   /* a plain request for a TLS-only client */
	BW_AUTH_UNREAD,	   /* the client's row could not be read again */
	BW_AUTH_KINDS
};

struct bw_daemon {
	struct bw_daemon_cfg given; /* as configured */
	struct bw_daemon_cfg cfg;   /* and with what follows from it */
	struct bw_engine eng;
	struct bw_meta *meta;	/* the rows */
	struct bw_bus *bus;	/* between nodes, or NULL */
	struct bw_blobs *blobs; /* the stored objects */
	struct bw_registry reg;
	int reg_open;
	struct bw_host host;
	struct bw_frame *frame;
	struct bw_daemon_svc svc[BW_DAEMON_SERVICES];
	unsigned svc_n;
	int64_t started_s;
	struct bw_daemon_args args; /* for SIGHUP's reload */
	int lock_fd; /* the data directory's lock, held while running */
	struct bw_tls_ctx *tls; /* the TLS listeners' settings, or NULL */
	uint64_t auth_refused[BW_AUTH_KINDS];
	/* on a shared store: what the whole cluster holds, read every few
	 * seconds (daemon_shared.c), shown beside the node's own figures */
	struct {
		struct bw_meta_req req;
		struct bw_timer t;
		int known;
		uint64_t clients, files, messages, message_bytes;
	} cluster;
};

/* daemon_shared.c: the bus (--bus), its password from --bus-password-file,
 * else REDISCLI_AUTH, else the URL's; connecting goes on in the
 * background. */
int bw_daemon_open_bus(struct bw_daemon *d);
/* daemon_tls.c: the TLS listeners' key and certificate */
#define BW_DAEMON_TLS_KEY  "tls.key"
#define BW_DAEMON_TLS_CERT "tls.crt"
/* Loads (making them first if none are given and none exist) the key and
 * certificate, and logs the key's fingerprint. 0 when TLS is off. */
int bw_daemon_tls_open(struct bw_daemon *d);
/* SIGHUP: the files read again; on a failure the old ones are kept. */
void bw_daemon_tls_reload(struct bw_daemon *d);
void bw_daemon_tls_close(struct bw_daemon *d);
/* daemon_auth.c: a request on a TLS listener that names a registered
 * client is served only when the key proven in the handshake is the
 * client's; the refusals by kind, for the metrics. */
void bw_daemon_auth_start(struct bw_daemon *d);
void bw_daemon_auth_errors(const struct bw_daemon *d, bw_stat_emit emit,
			   void *emit_arg);
/* The TLS options that do not go together: BW_ECONFIG and a sentence. */
int bw_daemon_tls_cfg_check(const struct bw_daemon_cfg *cfg, char *why,
			    size_t why_cap);
/* bulwarkd -t: the key and certificate loaded as at start (or that they
 * will be made), one line; 1 if they are not usable. */
int bw_daemon_tls_check(const struct bw_daemon_cfg *cfg, FILE *out);
/* bulwarkd --fingerprint: prints the key's fingerprint; an exit status. */
int bw_daemon_fingerprint(const struct bw_daemon_cfg *cfg, FILE *out,
			  FILE *err);

/* The data directory's lock file: a second daemon on it refuses to start
 * and names the first one's pid. */
#define BW_DAEMON_LOCK "bulwarkd.lock"

void bw_daemon_cfg_defaults(struct bw_daemon_cfg *cfg);

/* daemon_opts.c: bulwarkd's options, one table. */
/* Sets option name (a long option without its dashes) from value (NULL
 * for a flag). BW_ECONFIG with why set if the name is unknown or the value
 * out of bounds. */
int bw_daemon_opt_set(struct bw_daemon_cfg *cfg, const char *name,
		      const char *value, char *why, size_t why_cap) BW_WUR;
/* The configuration from scratch: defaults, then the file of a "config"
 * argument, then the arguments in order (they win over the file), then
 * BULWARK_CONSOLE_SECRET if no option gave the secret, then port.info and
 * myport.info unless a port was given. BW_ECONFIG with why set
 * ("FILE:LINE: ..." or "--option ...") on the first bad one. */
int bw_daemon_configure(struct bw_daemon_cfg *cfg,
			const struct bw_daemon_args *args, char *why,
			size_t why_cap) BW_WUR;
/* Applies the file at path ("key = value" lines) to cfg. */
int bw_daemon_read_config(struct bw_daemon_cfg *cfg, const char *path,
			  char *why, size_t why_cap) BW_WUR;
/* The same for the text[0..len) of a file called name (in errors only),
 * as bw_daemon_read_config applies a file's bytes: BW_ECONFIG with why
 * "NAME:LINE: ..." on the first bad line, or "NAME: not a text file" if the
 * text holds a NUL; BW_ENOMEM. On failure cfg may hold part of what the
 * text said. text is not kept (nor changed). */
int bw_daemon_parse_config(struct bw_daemon_cfg *cfg, const char *text,
			   size_t len, const char *name, char *why,
			   size_t why_cap) BW_WUR;
/* For each option whose value differs in fresh: report(arg, name,
 * applied). An option that cannot change while running gets old's value
 * back in fresh, and applied 0. */
void bw_daemon_opts_diff(struct bw_daemon_cfg *old, struct bw_daemon_cfg *fresh,
			 void (*report)(void *arg, const char *name,
					int applied),
			 void *arg);
/* What no single option can say: a console off loopback needs a secret.
 * BW_ECONFIG with why set. */
int bw_daemon_cfg_check(const struct bw_daemon_cfg *cfg, char *why,
			size_t why_cap) BW_WUR;
/* The same for what a SIGHUP would make of running with fresh (options
 * that only a restart changes keep their running values). */
int bw_daemon_reload_check(const struct bw_daemon_cfg *running,
			   const struct bw_daemon_cfg *fresh, char *why,
			   size_t why_cap) BW_WUR;
/* 1 if name is a key of the configuration file (a long option but
 * config). */
int bw_daemon_opt_is_key(const char *name);
/* 1 if option name takes a value. */
int bw_daemon_opt_has_value(const char *name);
/* 1 if option name's value may hold a password (a URL's). */
int bw_daemon_opt_url_secret(const char *name);
/* Up to cap options: their long names and one-letter forms (0: none);
 * returns how many there are in all. */
size_t bw_daemon_opts(const char **names, char *letters, size_t cap);
/* The --help text. */
void bw_daemon_usage(FILE *f);

/* daemon_migrate.c: bulwarkd migrate --from DIR, into cfg's store: the
 * exit status (0 copied and verified). */
int bw_daemon_migrate(const struct bw_daemon_cfg *cfg, const char *from);
/* daemon_check.c: bulwarkd --check-config: reaches what cfg names (the
 * data directory, the database) and says on out, one line each, what is
 * wrong; the exit status (0 all well). */
int bw_daemon_check(const struct bw_daemon_cfg *cfg, FILE *out);
/* Opens the storage tables and the registry, every service, and every
 * listener;
 * logs "<service> listening on ADDR:PORT" for each. args (may be NULL) are
 * what cfg was made from: SIGHUP makes it again from them (the file
 * re-read) and applies what may change while running, logging what needs
 * a restart. On failure the caller still calls bw_daemon_close. */
int bw_daemon_open(struct bw_daemon *d, const struct bw_daemon_cfg *cfg,
		   const struct bw_daemon_args *args) BW_WUR;
/* Serves until SIGTERM/SIGINT and a graceful drain; 0 on a clean stop. */
int bw_daemon_run(struct bw_daemon *d);
void bw_daemon_close(struct bw_daemon *d);

/* daemon_shared.c: on a shared store, the rows a request names are read
 * again before it is served (a no-op on the embedded one). */
void bw_daemon_shared_prepare(struct bw_daemon *d);
/* The cluster's figures, if known (a shared store), through emit. */
void bw_daemon_cluster_summary(const struct bw_daemon *d, bw_stat_emit emit,
			       void *emit_arg);

#endif
