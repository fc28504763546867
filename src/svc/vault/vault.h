/* The file vault (spec/files.md, requests 1025-1031): a routing table on
 * the shared port, its instance (directories, commit locks, start-up
 * reconciliation, live counters) and its configuration.
 */
#ifndef BULWARK_SVC_VAULT_H
#define BULWARK_SVC_VAULT_H

#include <stdint.h>

#include "bulwark/err.h"
#include "svc/engine.h"
#include "svc/frame.h"
#include "svc/registry.h"
#include "svc/stats.h"

struct bw_vault_cfg {
	char data_dir[4096];	       /* files/ lives here */
	uint64_t max_file_size;	       /* largest 1028 ciphertext accepted */
	unsigned max_uploads;	       /* 1028s in progress at once */
	unsigned max_uploads_per_addr; /* of those, from one address */
	unsigned min_rate;	       /* bytes/s a 1028 body must keep up */
	unsigned key_lifetime_s;       /* an AES key is refused after this */
	unsigned key_failures;	       /* decryption failures that revoke it */
	unsigned window_ms; /* the --min-rate window, and how long a 2103
			     * keeps the listener open at shutdown */
};

struct bw_vault;

void bw_vault_cfg_defaults(struct bw_vault_cfg *cfg);
/* Opens the directories and reconciles them with the registry's rows. The
 * engine and the registry must outlive the vault. */
int bw_vault_open(struct bw_vault **out, const struct bw_vault_cfg *cfg,
		  struct bw_engine *eng, struct bw_registry *reg) BW_WUR;
/* After the engine has closed (no job may still run). NULL-safe. */
void bw_vault_close(struct bw_vault *v);
/* Uploads in progress and their bytes so far, refused bodies being
 * discarded. */
void bw_vault_stats(const void *v, bw_stat_emit emit, void *arg);

/* Its table on the shared port; the context is the struct bw_vault. */
extern const struct bw_frame_proto bw_vault_proto;

#endif
