/* bulwark send: the file vault client's fixed sequence (register or
 * reconnect, key exchange, encrypted upload, CRC check with resends).
 */
#ifndef BULWARK_CLI_SEND_H
#define BULWARK_CLI_SEND_H

/* Runs the subcommand; returns the process exit status. */
int bw_cli_send(int argc, char **argv);

#endif
