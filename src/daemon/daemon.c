/* bulwarkd's assembly: the storage tables, the registry, the services from
 * their modules, listeners, and the order they are torn down in (the
 * engine first, so no job or store request is left running when the
 * services it calls back are freed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "bulwark/notify.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"
#include "store/blob.h"

#define CONSOLE_IDLE_MIN (5u * 60u * 1000u) /* an operator at a prompt */
#define PER_ADDR_MIN	 1024u
/* --workers when not given: a local disk's calls take microseconds and two
 * workers keep up with one loop; an object store's are a network round
 * trip each (a 4 KiB upload holds a worker for two of them), so an S3
 * store gets the most a daemon has. On a store 50 ms away, 4 KiB sessions
 * went from 13/s with two workers to 52/s with sixteen. */
#define WORKERS_LOCAL 2u
#define WORKERS_S3    16u

/* The host name, as a word --node-name accepts (other bytes become '-';
 * "node" if there is none). */
static void
default_node_name(char *out, size_t cap)
{
	char host[256];
	size_t i, n = 0;

	if (gethostname(host, sizeof(host)) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	for (i = 0; host[i] != '\0' && n + 1 < cap; i++) {
		char ch = host[i];

		out[n++] = (ch >= 'a' && ch <= 'z') ||
					   (ch >= 'A' && ch <= 'Z') ||
					   (ch >= '0' && ch <= '9') ||
					   ch == '.' || ch == '_'
				   ? ch
				   : '-';
	}
	if (n == 0)
		n = (size_t)snprintf(out, cap, "node");
	out[n] = '\0';
}

void
bw_daemon_cfg_defaults(struct bw_daemon_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->data_dir, sizeof(cfg->data_dir), ".");
	cfg->engine.workers = 0; /* derive() chooses */
	cfg->engine.shutdown_grace_ms = 10000;
	cfg->engine.tls_rate = 1000;
	cfg->engine.tls_rate_per_addr = 100;
	cfg->engine.tls_bulk_max = 64; /* 32 MiB of bulk reads' buffers */
	cfg->timeout_ms = 30000;
	cfg->request_timeout_ms = 10000;
	cfg->max_clients = 1000000;
	cfg->max_reg_per_min = 1000;
	snprintf(cfg->port.addr, sizeof(cfg->port.addr), "0.0.0.0");
	snprintf(cfg->port.name, sizeof(cfg->port.name), "shared");
	cfg->port.port = 1357;
	cfg->port.max_conns = 16000;
	bw_vault_cfg_defaults(&cfg->vault);
	bw_msg_cfg_defaults(&cfg->msg);
	cfg->console_enabled = 1;
	bw_console_cfg_defaults(&cfg->console);
	snprintf(cfg->console_listen.addr, sizeof(cfg->console_listen.addr),
		 "127.0.0.1");
	cfg->console_listen.port = 8820;
	cfg->console_listen.max_conns = 128;
	cfg->console_listen.evict = BW_EVICT_UNPROVEN;
	cfg->rooms_enabled = 1;
	bw_rooms_cfg_defaults(&cfg->rooms);
	snprintf(cfg->rooms_listen.addr, sizeof(cfg->rooms_listen.addr),
		 "0.0.0.0");
	cfg->rooms_listen.port = 5555;
	cfg->rooms_listen.max_conns = 10000;
	bw_metrics_cfg_defaults(&cfg->metrics);
	snprintf(cfg->metrics_listen.addr, sizeof(cfg->metrics_listen.addr),
		 "127.0.0.1");
	cfg->metrics_listen.port = 9357;
	cfg->metrics_listen.max_conns = 64;
	cfg->metrics_listen.evict = BW_EVICT_UNPROVEN;
	cfg->log_level = 1;
	default_node_name(cfg->node_name, sizeof(cfg->node_name));
	/* behind a load balancer (--proxy-from), these two take headers */
	cfg->port.proxy = 1;
	cfg->rooms_listen.proxy = 1;
	cfg->tls_port = cfg->rooms_tls_port = -1; /* off unless given */
}

/* Every service's figures (stats) or errors by kind, in the order the
 * services were added. */
static void
each_figure(const struct bw_daemon *d, int errors, bw_stat_emit emit,
	    void *emit_arg)
{
	bw_stats_fn fn;
	unsigned i;

	for (i = 0; i < d->svc_n; i++) {
		fn = errors ? d->svc[i].mod->errors : d->svc[i].mod->stats;
		if (fn != NULL && d->svc[i].inst != NULL)
			fn(d->svc[i].inst, emit, emit_arg);
	}
}

static void
all_stats(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	const struct bw_daemon *d = arg;

	each_figure(arg, 0, emit, emit_arg);
	if (d->meta != NULL && !d->meta->closed && d->meta->be->stats != NULL)
		d->meta->be->stats(d->meta->state, emit, emit_arg);
	if (d->blobs != NULL)
		bw_blob_stats(d->blobs, emit, emit_arg);
}

static void
all_errors(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	each_figure(arg, 1, emit, emit_arg);
	bw_daemon_auth_errors(arg, emit, emit_arg);
}

static void
all_summary(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	const struct bw_daemon *d = arg;
	unsigned i;

	for (i = 0; i < d->svc_n; i++) {
		if (d->svc[i].mod->summary != NULL && d->svc[i].inst != NULL)
			d->svc[i].mod->summary(d->svc[i].inst, emit, emit_arg);
	}
	bw_daemon_cluster_summary(d, emit, emit_arg);
}

static uint64_t
all_files(const void *arg, bw_file_fn fn, void *fn_arg)
{
	const struct bw_daemon *d = arg;
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < d->svc_n; i++) {
		if (d->svc[i].mod->each_file != NULL && d->svc[i].inst != NULL)
			n += d->svc[i].mod->each_file(d->svc[i].inst, fn,
						      fn_arg);
	}
	return n;
}

static void
all_queues(const void *arg, const uint8_t id[BW_ID_LEN], uint64_t *n,
	   uint64_t *bytes)
{
	const struct bw_daemon *d = arg;
	uint64_t sn, sb;
	unsigned i;

	*n = *bytes = 0;
	for (i = 0; i < d->svc_n; i++) {
		if (d->svc[i].mod->client_queue == NULL ||
		    d->svc[i].inst == NULL)
			continue;
		d->svc[i].mod->client_queue(d->svc[i].inst, id, &sn, &sb);
		*n += sn;
		*bytes += sb;
	}
}

/* The shared port's requests, for the metrics endpoint. */
static int
frame_metrics(const void *arg, struct bw_buf *out)
{
	const struct bw_daemon *d = arg;

	return bw_frame_metrics(d->frame, out);
}

/* The limits that follow from the daemon-wide timeouts. */
/* One address may hold a quarter of a port's connections (the shared
 * port's, the rooms'), but no fewer than PER_ADDR_MIN (a small cap is a
 * test or a tiny site): a single host cannot lock everyone else out. */
static void
per_addr_default(struct bw_listen_cfg *l)
{
	if (l->max_conns_per_addr == 0)
		l->max_conns_per_addr = l->max_conns / 4 > PER_ADDR_MIN
						? l->max_conns / 4
						: PER_ADDR_MIN;
}

static void
derive(struct bw_daemon_cfg *cfg)
{
	struct bw_conn_limits *lim[] = {&cfg->vault.limits, &cfg->msg.limits,
					&cfg->console.limits,
					&cfg->metrics.limits};
	size_t i;

	for (i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
		lim[i]->idle_ms = cfg->timeout_ms;
		lim[i]->request_ms = cfg->request_timeout_ms;
	}
	if (cfg->console.limits.idle_ms < CONSOLE_IDLE_MIN)
		cfg->console.limits.idle_ms = CONSOLE_IDLE_MIN;
	per_addr_default(&cfg->port);
	per_addr_default(&cfg->rooms_listen);
	/* a ghost holds what a connection held: no more of them than of
	 * connections */
	cfg->rooms.max_ghosts = cfg->rooms_listen.max_conns;
	if (cfg->engine.workers == 0)
		cfg->engine.workers = bw_blobs_url_shared(cfg->blobs)
					      ? WORKERS_S3
					      : WORKERS_LOCAL;
	cfg->vault.window_ms = cfg->timeout_ms;
	cfg->msg.window_ms = cfg->timeout_ms;
	cfg->msg.min_rate = cfg->vault.min_rate;
}

static void
add(struct bw_daemon *d, const struct bw_module *mod, const void *cfg,
    const struct bw_conn_limits *limits, const struct bw_listen_cfg *listen)
{
	struct bw_daemon_svc *s = &d->svc[d->svc_n++];

	s->mod = mod;
	s->cfg = cfg;
	s->limits = limits;
	s->listen = listen;
}

/* Which services run, and where. */
static void
plan(struct bw_daemon *d)
{
	struct bw_daemon_cfg *c = &d->cfg;

	add(d, &bw_vault_module, &c->vault, &c->vault.limits, NULL);
	add(d, &bw_msg_module, &c->msg, &c->msg.limits, NULL);
	if (c->console_enabled)
		add(d, &bw_console_module, &c->console, &c->console.limits,
		    &c->console_listen);
	if (c->rooms_enabled)
		add(d, &bw_rooms_module, &c->rooms, &c->rooms.limits,
		    &c->rooms_listen);
	if (c->metrics_enabled)
		add(d, &bw_metrics_module, &c->metrics, &c->metrics.limits,
		    &c->metrics_listen);
}

/* The shared port on port: one listener serving every table (in TLS). */
static int
listen_shared(struct bw_daemon *d, uint16_t port, int tls)
{
	struct bw_listen_cfg lc = d->cfg.port;
	struct bw_listener *l;
	unsigned i;
	int rc;

	lc.port = port;
	lc.tls = tls;
	if (tls)
		snprintf(lc.name, sizeof(lc.name), "tls");
	bw_frame_limits(d->frame, &lc.lim);
	if ((rc = bw_engine_listen(&d->eng, &bw_frame_service, d->frame, &lc,
				   &l)) != 0)
		return rc;
	/* one line per service, as operators and scripts look for them */
	for (i = 0; i < d->svc_n; i++) {
		if (d->svc[i].mod->proto != NULL)
			bw_info("%s listening on %s%s:%u", d->svc[i].mod->name,
				tls ? "tls://" : "", lc.addr, l->port);
	}
	return 0;
}

static int
init(struct bw_daemon *d, struct bw_daemon_svc *s)
{
	int rc;

	if ((rc = s->mod->init(&d->host, s->cfg, &s->inst)) != 0) {
		bw_error("%s: cannot start: %s", s->mod->name, bw_strerror(rc));
		return rc;
	}
	if (s->mod->proto != NULL)
		return bw_frame_add(d->frame, s->mod->proto, s->inst,
				    s->limits);
	return 0;
}

/* A service on a listener of its own (on tls_port too, in TLS, and only
 * there with --require-tls). */
static int
listen_own(struct bw_daemon *d, struct bw_daemon_svc *s, int32_t tls_port)
{
	struct bw_listen_cfg lc = *s->listen;
	struct bw_listener *l;
	int rc;

	lc.lim = *s->limits;
	if (lc.name[0] == '\0')
		snprintf(lc.name, sizeof(lc.name), "%s", s->mod->name);
	if ((tls_port < 0 || !d->cfg.require_tls) &&
	    (rc = bw_engine_listen(&d->eng, s->mod->service, s->inst, &lc,
				   NULL)) != 0)
		return rc;
	if (tls_port < 0)
		return 0;
	lc.port = (uint16_t)tls_port;
	lc.tls = 1;
	snprintf(lc.name, sizeof(lc.name), "%s-tls", s->mod->name);
	if ((rc = bw_engine_listen(&d->eng, s->mod->service, s->inst, &lc,
				   &l)) != 0)
		return rc;
	bw_info("%s listening on tls://%s:%u", s->mod->name, lc.addr, l->port);
	return 0;
}

static void
reported(void *arg, const char *name, int applied)
{
	(void)arg;
	if (applied)
		bw_info("reload: %s changed", name);
	else
		bw_warn("reload: %s changed, but only a restart changes it; "
			"kept as it was",
			name);
}

/* SIGHUP: the log reopened, the configuration made again from the file
 * and the command line, and what may change while running applied. */
static void
reload(void *arg)
{
	static const enum bw_log_level levels[] = {BW_LOG_DEBUG, BW_LOG_INFO,
						   BW_LOG_WARN, BW_LOG_ERROR};
	struct bw_daemon *d = arg;
	struct bw_daemon_cfg *fresh = malloc(sizeof(*fresh));
	char why[2048];
	unsigned i;
	int rc;

	(void)bw_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu",
			 (unsigned long long)bw_now_ms() * 1000u);
	if ((rc = bw_log_reopen()) != 0)
		bw_error("reload: cannot reopen the log %s: %s",
			 d->cfg.log_file, bw_strerror(rc));
	if (fresh == NULL) {
		bw_error("reload: out of memory; nothing changed");
		(void)bw_notify(
			"READY=1\nSTATUS=reload refused: out of memory");
		return;
	}
	if (bw_daemon_configure(fresh, &d->args, why, sizeof(why)) != 0 ||
	    bw_daemon_reload_check(&d->given, fresh, why, sizeof(why)) != 0) {
		/* one line for the log and for systemctl status (which shows
		 * it until the next reload): the problems, "; " between */
		for (i = 0; why[i] != '\0'; i++)
			if (why[i] == '\n')
				why[i] = ';';
		bw_error("reload refused, nothing changed: %s", why);
		(void)bw_notifyf("READY=1\nSTATUS=reload refused, nothing "
				 "changed: %s",
				 why);
		goto out;
	}
	bw_daemon_opts_diff(&d->given, fresh, reported, NULL);
	d->given = *fresh;
	d->cfg = *fresh;
	derive(&d->cfg);
	d->reg.max_clients = d->cfg.max_clients;
	d->reg.max_reg_per_min = d->cfg.max_reg_per_min;
	d->eng.cfg.shutdown_grace_ms = d->cfg.engine.shutdown_grace_ms;
	bw_log_set_level(levels[d->cfg.log_level]);
	for (i = 0; i < d->svc_n; i++) {
		if (d->svc[i].mod->reload != NULL && d->svc[i].inst != NULL)
			d->svc[i].mod->reload(d->svc[i].inst, d->svc[i].cfg);
	}
	bw_daemon_tls_reload(d);
	bw_info("reload: done (%s)", d->cfg.config_path[0] != '\0'
					     ? d->cfg.config_path
					     : "no configuration file");
	(void)bw_notify("READY=1\nSTATUS=serving; the last reload was "
			"applied");
out:
	bw_wipe(fresh, sizeof(*fresh));
	free(fresh);
}

int
bw_daemon_open(struct bw_daemon *d, const struct bw_daemon_cfg *cfg,
	       const struct bw_daemon_args *args)
{
	struct bw_blob_conf bc;
	char path[4096 + 64];
	long holder = 0;
	unsigned i;
	int rc;

	memset(d, 0, sizeof(*d));
	d->lock_fd = -1;
	d->given = *cfg;
	d->cfg = *cfg;
	if (args != NULL)
		d->args = *args;
	derive(&d->cfg);
	d->cfg.engine.on_hup = reload;
	d->cfg.engine.hup_arg = d;
	d->started_s = bw_time_s();
	/* before anything in the data directory is touched: a second
	 * daemon on it would reconcile the live one's files away */
	if ((rc = bw_fs_lock(d->cfg.data_dir, BW_DAEMON_LOCK, &d->lock_fd,
			     &holder)) != 0) {
		if (rc == BW_EBUSY)
			bw_error("the data directory %s is in use by bulwarkd "
				 "pid %ld (%s/" BW_DAEMON_LOCK
				 "): refusing to start",
				 d->cfg.data_dir, holder, d->cfg.data_dir);
		else
			bw_error("cannot lock the data directory %s: %s",
				 d->cfg.data_dir, bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_engine_open(&d->eng, &d->cfg.engine, 1)) != 0)
		return rc;
	if (d->cfg.db[0] != '\0')
		snprintf(path, sizeof(path), "%s", "the database (--db)");
	else
		snprintf(path, sizeof(path), "%s/defensive.db",
			 d->cfg.data_dir);
	if ((rc = bw_meta_open(&d->meta, d->cfg.db, d->cfg.data_dir,
			       d->eng.loop)) != 0) {
		bw_error("cannot open %s: %s", path, bw_strerror(rc));
		return rc;
	}
	if (d->cfg.bus[0] != '\0' && (rc = bw_daemon_open_bus(d)) != 0)
		return rc;
	bw_daemon_blob_conf(&d->cfg, &bc);
	if ((rc = bw_blobs_open(&d->blobs, &bc)) != 0) {
		bw_error("cannot open the contents' store %s: %s",
			 d->cfg.blobs[0] != '\0' ? d->cfg.blobs
						 : d->cfg.data_dir,
			 bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_registry_open(&d->reg, d->meta, d->eng.loop)) != 0) {
		bw_error("cannot load database %s: %s", path, bw_strerror(rc));
		return rc;
	}
	d->reg_open = 1;
	d->reg.max_clients = d->cfg.max_clients;
	d->reg.max_reg_per_min = d->cfg.max_reg_per_min;
	bw_info("loaded %llu clients from %s",
		(unsigned long long)d->reg.clients_n, path);
	d->host = (struct bw_host){.eng = &d->eng,
				   .reg = &d->reg,
				   .meta = d->meta,
				   .blobs = d->blobs,
				   .data_dir = d->cfg.data_dir,
				   .node = d->cfg.node_name,
				   .bus = d->bus,
				   .node_given = d->cfg.node_given,
				   .started_s = d->started_s,
				   .stats = all_stats,
				   .errors = all_errors,
				   .summary = all_summary,
				   .each_file = all_files,
				   .client_queue = all_queues,
				   .stats_arg = d,
				   .metrics = frame_metrics,
				   .metrics_arg = d};
	if ((rc = bw_frame_new(&d->frame)) != 0)
		return rc;
	bw_daemon_shared_prepare(d);
	bw_daemon_auth_start(d);
	plan(d);
	for (i = 0; i < d->svc_n; i++) {
		if ((rc = init(d, &d->svc[i])) != 0)
			return rc;
	}
	if ((rc = bw_daemon_tls_open(d)) != 0)
		return rc;
	if (!d->cfg.require_tls &&
	    (rc = listen_shared(d, d->cfg.port.port, 0)) != 0)
		return rc;
	if (!d->cfg.require_tls && d->cfg.port2 != 0 &&
	    d->cfg.port2 != d->cfg.port.port &&
	    (rc = listen_shared(d, d->cfg.port2, 0)) != 0)
		return rc;
	if (d->cfg.tls_port >= 0 &&
	    (rc = listen_shared(d, (uint16_t)d->cfg.tls_port, 1)) != 0)
		return rc;
	for (i = 0; i < d->svc_n; i++) {
		if (d->svc[i].listen != NULL &&
		    (rc = listen_own(d, &d->svc[i],
				     d->svc[i].listen == &d->cfg.rooms_listen
					     ? d->cfg.rooms_tls_port
					     : -1)) != 0)
			return rc;
	}
	return 0;
}

int
bw_daemon_run(struct bw_daemon *d)
{
	/* start-up's loads and checks are done: requests get their limits */
	bw_meta_serving(d->meta);
	/* every listener is bound: systemd's Type=notify unit is active
	 * from here (and units ordered after it may connect) */
	(void)bw_notifyf("READY=1\nSTATUS=serving\nMAINPID=%ld",
			 (long)getpid());
	return bw_engine_run(&d->eng);
}

void
bw_daemon_close(struct bw_daemon *d)
{
	unsigned i;

	/* connections first, then queued jobs and the store's requests
	 * (the loop's last deferred calls run them) */
	bw_engine_shut(&d->eng);
	/* whoever still waits for the store is told, while the services
	 * whose state the requests name are still there; what the answers
	 * defer (a connection a request held, freed) runs on the loop kept
	 * for it */
	bw_meta_close(d->meta); /* kept: what asks it now is told */
	/* the bus's pending callbacks too, while the rooms they name are */
	bw_bus_shut(d->bus);
	bw_engine_shut(&d->eng);
	for (i = d->svc_n; i-- > 0;) {
		if (d->svc[i].inst != NULL)
			d->svc[i].mod->fini(d->svc[i].inst);
		d->svc[i].inst = NULL;
	}
	d->svc_n = 0;
	bw_bus_close(d->bus); /* its watches are the loop's */
	d->bus = NULL;
	bw_engine_close(&d->eng);
	bw_daemon_tls_close(d);
	bw_frame_free(d->frame);
	d->frame = NULL;
	if (d->reg_open)
		bw_registry_close(&d->reg);
	d->reg_open = 0;
	bw_meta_free(d->meta);
	d->meta = NULL;
	bw_blobs_close(d->blobs);
	d->blobs = NULL;
	if (d->lock_fd >= 0)
		close(d->lock_fd); /* the last thing: the directory is free */
	d->lock_fd = -1;
	bw_wipe(d->cfg.console.secret, sizeof(d->cfg.console.secret));
	bw_wipe(d->given.console.secret, sizeof(d->given.console.secret));
}

void
bw_daemon_blob_conf(const struct bw_daemon_cfg *cfg, struct bw_blob_conf *bc)
{
	memset(bc, 0, sizeof(*bc));
	bc->url = cfg->blobs;
	bc->data_dir = cfg->data_dir;
	bc->s3_endpoint = cfg->s3_endpoint;
	bc->s3_region = cfg->s3_region;
	bc->s3_credentials = cfg->s3_credentials;
	bc->s3_path_style = cfg->s3_path_style;
	bc->grace_s = cfg->blob_grace_s;
	bc->s3_timeout_s = cfg->s3_timeout_s;
}
