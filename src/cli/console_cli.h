/* bulwark console: the operator console client (docs/console.md). Sends
 * `Hi`, prints the greeting, then turns each line of standard input into a
 * 4-byte request and prints the server's reply.
 */
#ifndef BULWARK_CLI_CONSOLE_H
#define BULWARK_CLI_CONSOLE_H

/* Runs the subcommand; returns the process exit status. */
int bw_cli_console(int argc, char **argv);

#endif
