/* The operator console (spec/console.md): a service on its own listener
 * that answers from the live daemon. It sees the daemon only through the
 * view it is given: the engine's listeners, the registry, and the figures
 * the other services report.
 */
#ifndef BULWARK_SVC_CONSOLE_H
#define BULWARK_SVC_CONSOLE_H

#include <stdint.h>

#include "bulwark/err.h"
#include "svc/engine.h"
#include "svc/registry.h"
#include "svc/stats.h"

#define BW_CONSOLE_SECRET_CAP 256

struct bw_console_cfg {
	char secret[BW_CONSOLE_SECRET_CAP]; /* "" = none ("Hi" alone) */
};

/* What the console reads; everything must outlive it. */
struct bw_console_view {
	const struct bw_engine *eng;
	const struct bw_registry *reg;
	int64_t started_s;
	/* the figures of every other service, in a fixed order */
	void (*stats)(const void *arg, bw_stat_emit emit, void *emit_arg);
	const void *stats_arg;
};

struct bw_console;

int bw_console_new(struct bw_console **out, const struct bw_console_cfg *cfg,
		   const struct bw_console_view *view) BW_WUR;
void bw_console_free(struct bw_console *cs);

/* The service; its instance is the struct bw_console. */
extern const struct bw_service bw_console_service;

#endif
