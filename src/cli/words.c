/* What every client subcommand says in the same words: a fatal error, a
 * connection not made, a reply no protocol of the shared port has, a
 * registration refused.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "proto/msg_wire.h"
#include "proto/vault_wire.h"

#define NAME_CODES_SHOWN 8

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
	       (code >= BW_VAULT_RESP_LIST && code <= BW_VAULT_RESP_LIMITS) ||
	       code == BW_MSG_RESP_ERROR;
}

void
bw_cli_register_refused(const char *prog, const char *name, const char *host,
			uint16_t port)
{
	char shown[BW_ESC_CAP];

	fprintf(stderr,
		"%s: %s:%u refused to register '%s': the name is taken, or one "
		"that reads as it (choose another), or the server registers no "
		"more for now\n",
		prog, host, port,
		bw_escape_display(name, shown, sizeof(shown)));
}

char *
bw_cli_name_shown(const char *name, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t at, k, shown = 0;
	uint32_t cp;

	bw_escape_display(name, out, cap);
	at = strlen(out);
	for (; *p != '\0'; p += k) {
		if ((k = bw_utf8_seq(p, &cp)) == 0) {
			k = 1; /* escaped above: \xNN */
			continue;
		}
		if (cp < 0x80)
			continue;
		if (shown == NAME_CODES_SHOWN) {
			at += (size_t)snprintf(out + at, cap - at, " ...");
			break;
		}
		at += (size_t)snprintf(out + at, cap - at, "%sU+%04X",
				       shown == 0 ? " [" : " ", (unsigned)cp);
		shown++;
		if (at >= cap)
			return out; /* cut: snprintf ended it */
	}
	if (shown > 0 && at + 1 < cap)
		snprintf(out + at, cap - at, "]");
	return out;
}
