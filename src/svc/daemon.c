/* bulwarkd's assembly: database, registry, services, listeners, and the
 * order they are torn down in (the engine first, so no job is left running
 * when the services it calls back are freed).
 */
#include <stdio.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/store.h"
#include "bulwark/util.h"
#include "svc/daemon.h"

#define PORT_IN_MAX	 (1024u * 1024u) /* an upload's 1 MiB chunk */
#define PORT_OUT_MAX	 (16u * 1024u * 1024u)
#define CONSOLE_IN_MAX	 4096u
#define CONSOLE_OUT_MAX	 (64u * 1024u)
#define CONSOLE_IDLE_MIN (5u * 60u * 1000u) /* an operator at a prompt */

void
bw_daemon_cfg_defaults(struct bw_daemon_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->data_dir, sizeof(cfg->data_dir), ".");
	cfg->engine.workers = 2;
	cfg->engine.shutdown_grace_ms = 10000;
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
	snprintf(cfg->console_listen.addr, sizeof(cfg->console_listen.addr),
		 "127.0.0.1");
	cfg->console_listen.port = 8820;
	cfg->console_listen.max_conns = 128;
}

/* Every service's figures, for the console. */
static void
all_stats(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	const struct bw_daemon *d = arg;

	bw_vault_stats(d->vault, emit, emit_arg);
	bw_msg_stats(d->msg, emit, emit_arg);
}

/* The limits that follow from the daemon-wide timeouts. */
static void
derive(struct bw_daemon_cfg *cfg)
{
	unsigned console_idle = cfg->timeout_ms > CONSOLE_IDLE_MIN
					? cfg->timeout_ms
					: CONSOLE_IDLE_MIN;

	cfg->port.in_max = PORT_IN_MAX;
	cfg->port.out_max = PORT_OUT_MAX;
	cfg->port.idle_ms = cfg->timeout_ms;
	cfg->port.request_ms = cfg->request_timeout_ms;
	snprintf(cfg->vault.data_dir, sizeof(cfg->vault.data_dir), "%s",
		 cfg->data_dir);
	cfg->vault.window_ms = cfg->timeout_ms;
	snprintf(cfg->msg.data_dir, sizeof(cfg->msg.data_dir), "%s",
		 cfg->data_dir);
	cfg->msg.window_ms = cfg->timeout_ms;
	cfg->msg.min_rate = cfg->vault.min_rate;
	cfg->console_listen.in_max = CONSOLE_IN_MAX;
	cfg->console_listen.out_max = CONSOLE_OUT_MAX;
	cfg->console_listen.idle_ms = console_idle;
	cfg->console_listen.request_ms = cfg->request_timeout_ms;
	cfg->console_listen.evict_idle = 1;
}

/* The shared port on port: one listener serving both tables. */
static int
listen_shared(struct bw_daemon *d, uint16_t port)
{
	struct bw_listen_cfg lc = d->cfg.port;
	struct bw_listener *l;
	int rc;

	lc.port = port;
	if ((rc = bw_engine_listen(&d->eng, &bw_frame_service, d->frame, &lc,
				   &l)) != 0)
		return rc;
	/* one line per service, as operators and scripts look for them */
	bw_info("vault listening on %s:%u", lc.addr, l->port);
	bw_info("messenger listening on %s:%u", lc.addr, l->port);
	return 0;
}

int
bw_daemon_open(struct bw_daemon *d, const struct bw_daemon_cfg *cfg)
{
	struct bw_console_view view;
	char path[4096 + 64];
	int rc;

	memset(d, 0, sizeof(*d));
	d->cfg = *cfg;
	derive(&d->cfg);
	d->started_s = bw_time_s();
	if ((rc = bw_engine_open(&d->eng, &d->cfg.engine, 1)) != 0)
		return rc;
	snprintf(path, sizeof(path), "%s/defensive.db", d->cfg.data_dir);
	if ((rc = bw_store_open(&d->store, path)) != 0) {
		bw_error("cannot open database %s: %s", path, bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_registry_open(&d->reg, d->store, d->cfg.data_dir)) != 0) {
		bw_error("cannot load database %s: %s", path, bw_strerror(rc));
		return rc;
	}
	d->reg_open = 1;
	d->reg.max_clients = d->cfg.max_clients;
	d->reg.max_reg_per_min = d->cfg.max_reg_per_min;
	bw_info("loaded %llu clients and %llu files from %s",
		(unsigned long long)d->reg.clients_n,
		(unsigned long long)d->reg.files_n, path);
	if ((rc = bw_vault_open(&d->vault, &d->cfg.vault, &d->eng, &d->reg)) !=
		    0 ||
	    (rc = bw_msg_open(&d->msg, &d->cfg.msg, &d->eng, &d->reg,
			      d->store)) != 0 ||
	    (rc = bw_frame_new(&d->frame)) != 0 ||
	    (rc = bw_frame_add(d->frame, &bw_vault_proto, d->vault)) != 0 ||
	    (rc = bw_frame_add(d->frame, &bw_msg_proto, d->msg)) != 0 ||
	    (rc = listen_shared(d, d->cfg.port.port)) != 0)
		return rc;
	if (d->cfg.port2 != 0 && d->cfg.port2 != d->cfg.port.port &&
	    (rc = listen_shared(d, d->cfg.port2)) != 0)
		return rc;
	if (!d->cfg.console_enabled)
		return 0;
	view.eng = &d->eng;
	view.reg = &d->reg;
	view.started_s = d->started_s;
	view.stats = all_stats;
	view.stats_arg = d;
	if ((rc = bw_console_new(&d->console, &d->cfg.console, &view)) != 0)
		return rc;
	return bw_engine_listen(&d->eng, &bw_console_service, d->console,
				&d->cfg.console_listen, NULL);
}

int
bw_daemon_run(struct bw_daemon *d)
{
	return bw_engine_run(&d->eng);
}

void
bw_daemon_close(struct bw_daemon *d)
{
	bw_engine_close(&d->eng); /* connections first, then queued jobs */
	bw_console_free(d->console);
	d->console = NULL;
	bw_vault_close(d->vault);
	d->vault = NULL;
	bw_msg_close(d->msg);
	d->msg = NULL;
	bw_frame_free(d->frame);
	d->frame = NULL;
	if (d->reg_open)
		bw_registry_close(&d->reg);
	d->reg_open = 0;
	bw_store_close(d->store);
	d->store = NULL;
	bw_wipe(d->cfg.console.secret, sizeof(d->cfg.console.secret));
}
