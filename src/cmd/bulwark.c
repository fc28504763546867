/* bulwark: the Bulwark client. One subcommand per service. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "cli/chat.h"
#include "cli/console_cli.h"
#include "cli/msg_cli.h"
#include "cli/probe.h"
#include "cli/send.h"
#include "cli/tlsclient.h"
#include "cli/vault_cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark COMMAND [OPTION]...\n"
		"Bulwark client.\n\n"
		"Commands:\n"
		"  send      send a file to the vault, encrypted and "
		"verified\n"
		"  ls        list your files in the vault (tls:// only)\n"
		"  get       get one of your files back (tls:// only)\n"
		"  rm        delete one of your files (tls:// only)\n"
		"  tls-only  have your id refused on the plain ports "
		"(tls:// only)\n"
		"  msg       the messenger: encrypted messages and files "
		"between users\n"
		"  chat      group chat in password-protected rooms\n"
		"  console   ask a running bulwarkd for its status "
		"(operator console)\n"
		"  probe     check a server (or a client) of one of the four "
		"protocols\n            against its spec\n"
		"  trust-server  pin a tls:// server's new key after its "
		"operator confirmed it\n\n"
		"A server given as tls://HOST:PORT is reached over TLS 1.3; "
		"its key is\npinned on first use in known_servers (see "
		"bulwark trust-server --help).\n\n"
		"  bulwark COMMAND --help   options of a command\n"
		"  bulwark --version        version\n");
}

int
main(int argc, char **argv)
{
	/* a write past a file-size limit, or to a closed pipe, fails with
	 * EFBIG or EPIPE and is reported, rather than killing the client in
	 * the middle of keeping what it received */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("bulwark %s (vault protocol 3, messenger protocol 2)\n",
		       BW_VERSION);
		return 0;
	}
	/* openssl.cnf only when the user names one: reading the system's
	 * costs every command ~0.3 ms and configures nothing of ours */
	bw_crypto_start(getenv("OPENSSL_CONF") != NULL);
	if (strcmp(argv[1], "send") == 0)
		return bw_cli_send(argc - 1, argv + 1);
	if (strcmp(argv[1], "ls") == 0 || strcmp(argv[1], "get") == 0 ||
	    strcmp(argv[1], "rm") == 0 || strcmp(argv[1], "tls-only") == 0)
		return bw_cli_vault(argv[1], argc - 1, argv + 1);
	if (strcmp(argv[1], "msg") == 0)
		return bw_cli_msg(argc - 1, argv + 1);
	if (strcmp(argv[1], "chat") == 0)
		return bw_cli_chat(argc - 1, argv + 1);
	if (strcmp(argv[1], "console") == 0)
		return bw_cli_console(argc - 1, argv + 1);
	if (strcmp(argv[1], "probe") == 0)
		return bw_cli_probe(argc - 1, argv + 1);
	if (strcmp(argv[1], "trust-server") == 0)
		return bw_trust_server_main(argc - 1, argv + 1);
	fprintf(stderr, "bulwark: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
