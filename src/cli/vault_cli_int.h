/* Between the vault commands' files (vault_cli.c, vault_ls.c). Internal to
 * the client.
 */
#ifndef BULWARK_CLI_VAULT_CLI_INT_H
#define BULWARK_CLI_VAULT_CLI_INT_H

#include <stdint.h>

#include "cli/common.h"

struct vcli {
	const char *cmd; /* "ls", "get", "rm" */
	char prog[32];
	struct bw_identity me;
	struct bw_session s;
	int quiet;
	char hex[9]; /* the id's first 8 hex digits */
};

/* A request from the owner: 0, or an exit status (told). */
int vcli_send_req(struct vcli *x, uint16_t code, const void *p, uint32_t n);
/* A reply's header: 0 with *code and *size, or an exit status (told; a
 * 2107 is one). */
int vcli_head(struct vcli *x, uint16_t *code, uint32_t *size);
/* bulwark ls, on the connected session: an exit status. */
int vcli_ls(struct vcli *x);

#endif
