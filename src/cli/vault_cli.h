/* bulwark ls, get and rm: an owner's vault files, over TLS only. */
#ifndef BULWARK_CLI_VAULT_CLI_H
#define BULWARK_CLI_VAULT_CLI_H

/* cmd is "ls", "get", "rm" or "tls-only"; argv[0] is the command's name. An
 * exit status. */
int bw_cli_vault(const char *cmd, int argc, char **argv);

#endif
