/* bulwark chat: the group chat client (docs/rooms.md): the server's text as
 * it arrives, the user's lines sent, from a terminal or a pipe.
 */
#ifndef BULWARK_CLI_CHAT_H
#define BULWARK_CLI_CHAT_H

/* Runs the subcommand; returns the process exit status. */
int bw_cli_chat(int argc, char **argv);

#endif
