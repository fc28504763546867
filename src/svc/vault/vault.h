/* The file vault (docs/vault-protocol.md, requests 1025-1031): a routing table
 * on the shared port, its instance (directories, commit locks, start-up
 * reconciliation, live counters) and its configuration.
 */
#ifndef BULWARK_SVC_VAULT_H
#define BULWARK_SVC_VAULT_H

#include <stdint.h>

#include "engine/engine.h"
#include "host/module.h"

struct bw_vault_cfg {
	struct bw_conn_limits limits;  /* of its connections */
	uint64_t max_file_size;	       /* largest ciphertext a send file
					* request (1028) may carry */
	unsigned max_uploads;	       /* send file requests (1028) in
					* progress at once */
	unsigned max_uploads_per_addr; /* of those, from one address */
	unsigned min_rate;	       /* bytes/s the body of a send file
					* request (1028) must keep up */
	unsigned key_lifetime_s;       /* an AES key is refused after this */
	unsigned key_failures;	       /* decryption failures that revoke it */
	unsigned window_ms; /* the --min-rate window, and how long a file OK
			     * reply (2103) keeps the listener open at
			     * shutdown */
};

void bw_vault_cfg_defaults(struct bw_vault_cfg *cfg);

/* The service: files/ under the data directory, reconciled with the
 * registry's rows at init; a table on the shared port; figures: uploads in
 * progress, their bytes so far, refused bodies being discarded. */
extern const struct bw_module bw_vault_module;

#endif
