/* The operator console (docs/console.md): a service on its own listener
 * that answers from the live daemon. It sees the daemon only through the
 * host it is given: the engine's listeners, the registry, and the figures
 * every service reports.
 */
#ifndef BULWARK_SVC_CONSOLE_H
#define BULWARK_SVC_CONSOLE_H

#include "engine/engine.h"
#include "host/module.h"

#define BW_CONSOLE_SECRET_CAP 256

struct bw_console_cfg {
	struct bw_conn_limits limits;	    /* of its connections */
	char secret[BW_CONSOLE_SECRET_CAP]; /* "" = none ("Hi" alone) */
};

void bw_console_cfg_defaults(struct bw_console_cfg *cfg);

/* The service, on a listener of its own. */
extern const struct bw_module bw_console_module;

#endif
