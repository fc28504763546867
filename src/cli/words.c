/* What every client subcommand says in the same words: a fatal error, a
 * connection not made, a reply no protocol of the shared port has, a
 * registration refused.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "proto/msg_wire.h"
#include "proto/vault_wire.h"

void
bw_cli_fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("Fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *
bw_cli_connect_error(char *buf, size_t cap, const char *host, uint16_t port,
		     int rc)
{
	if (rc == -ECONNREFUSED)
		snprintf(buf, cap,
			 "%s:%u refuses connections: is bulwarkd running "
			 "there, on that port?",
			 host, port);
	else if (rc == BW_ETIMEDOUT)
		snprintf(buf, cap, "%s:%u did not answer in time", host, port);
	else
		snprintf(buf, cap, "cannot connect to %s:%u: %s", host, port,
			 bw_strerror(rc));
	return buf;
}

int
bw_reply_code_known(uint16_t code)
{
	return (code >= BW_VAULT_RESP_REGISTERED &&
		code <= BW_VAULT_RESP_ERROR) ||
	       code == BW_MSG_RESP_ERROR;
}

void
bw_cli_register_refused(const char *prog, const char *name, const char *host,
			uint16_t port)
{
	char shown[BW_ESC_CAP];

	fprintf(stderr,
		"%s: %s:%u refused to register '%s': the name is taken (choose "
		"another), or the server registers no more for now\n",
		prog, host, port,
		bw_escape_display(name, shown, sizeof(shown)));
}
