/* bulwark msg: the messenger client (docs/messenger-protocol.md): the
 * interactive menu, and one-shot commands for scripts.
 */
#ifndef BULWARK_CLI_MSG_H
#define BULWARK_CLI_MSG_H

/* Runs the subcommand; returns the process exit status. */
int bw_cli_msg(int argc, char **argv);

#endif
