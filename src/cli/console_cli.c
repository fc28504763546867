/* bulwark console: a plain blocking client of the operator console. One
 * request per line of standard input (terminal or pipe); EXIT or the end of
 * input ends the session.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/console_cli.h"

#define DEFAULT_SERVER "127.0.0.1:8820"
#define GREETING_LEN   48
#define REQ_LEN	       4
#define TEXT_MAX       9999u
#define SECRET_MAX     255u /* what bulwarkd accepts */
#define LINE_CAP       256u
#define SECRET_ENV     "BULWARK_CONSOLE_SECRET"

static void
usage(FILE *f)
{
	fprintf(f, "Usage: bulwark console [OPTION]... [HOST:PORT]\n"
		   "Talk to the operator console of a running bulwarkd "
		   "(default " DEFAULT_SERVER ").\n\n"
		   "Prints the server's greeting, then reads one request per "
		   "line from standard\ninput: the first 4 characters, upper-"
		   "cased and padded with spaces.\nRequests: TIME NAME RAND "
		   "STAT USRS FILS EXIT (HELP says what each does;\nDEVS lists "
		   "the clients seen "
		   "bending a protocol). EXIT, "
		   "QUIT or the end of input ends the session (EXIT is sent "
		   "for\nyou: any server knows it).\n\n"
		   "  -s, --secret S        the console secret (bulwarkd "
		   "--console-secret);\n"
		   "                        default: $" SECRET_ENV "\n"
		   "  -t, --timeout SEC     network timeout (default 10)\n"
		   "  -h, --help            this help\n\n"
		   "Exit status: 0 after EXIT; 1 the server or network failed "
		   "(Fatal:);\n2 bad usage.\n");
}

/* Writes text with control characters other than newline and tab (C0,
 * DEL, C1, bidi) and bytes that are not UTF-8 shown as '?', so a reply
 * cannot drive the terminal. */
static void
print_text(const char *p, size_t n)
{
	bw_put_safe(stdout, p, n);
}

static const char *
net_error(int rc)
{
	if (rc == BW_ECLOSED)
		return "the server closed the connection";
	if (rc == BW_ETIMEDOUT)
		return "no answer from the server in time";
	return bw_strerror(rc);
}

/* Sends one request and prints its reply. 0 or a negative error; *why says
 * what failed. */
static int
exchange(int fd, const char req[REQ_LEN], const char **why)
{
	char len_text[REQ_LEN], text[TEXT_MAX];
	size_t n = 0, i;
	int rc;

	*why = "cannot send the request";
	if ((rc = bw_net_write_full(fd, req, REQ_LEN)) != 0)
		return rc;
	*why = "no reply";
	if ((rc = bw_net_read_full(fd, len_text, sizeof(len_text))) != 0)
		return rc;
	for (i = 0; i < sizeof(len_text); i++) {
		if (len_text[i] < '0' || len_text[i] > '9') {
			*why = "the reply does not start with 4 digits";
			return BW_EPROTO;
		}
		n = n * 10 + (size_t)(len_text[i] - '0');
	}
	/* 4 digits: n <= 9999 == sizeof(text) */
	*why = "the reply was cut short";
	if (n > 0 && (rc = bw_net_read_full(fd, text, n)) != 0)
		return rc;
	print_text(text, n);
	if (n == 0 || text[n - 1] != '\n')
		putchar('\n');
	fflush(stdout);
	return 0;
}

/* Reads the next request from f into req: the first 4 bytes of a non-empty
 * line, upper-cased, padded with spaces; the rest of the line is dropped.
 * 1 for a request, 0 at the end of input. */
static int
next_request(FILE *f, int prompt, char req[REQ_LEN])
{
	char line[LINE_CAP];
	size_t n, i;
	int ch;

	for (;;) {
		if (prompt) {
			fputs("> ", stdout);
			fflush(stdout);
		}
		if (fgets(line, sizeof(line), f) == NULL)
			return 0;
		n = strlen(line);
		if (n > 0 && line[n - 1] != '\n') {
			while ((ch = getc(f)) != EOF && ch != '\n')
				;
		}
		n = strcspn(line, "\r\n");
		if (n == 0)
			continue;
		for (i = 0; i < REQ_LEN; i++) {
			ch = i < n ? (unsigned char)line[i] : ' ';
			req[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
		}
		return 1;
	}
}

/* Connects, sends Hi, prints the greeting. */
static int
greet(const char *host, uint16_t port, unsigned timeout_ms, const char *secret,
      int *fd, const char **why)
{
	char hi[3 + SECRET_MAX + 1], greeting[GREETING_LEN + 1];
	size_t n = 2, len;
	int rc;

	*why = NULL; /* a connection not made: said in the one wording */
	if ((rc = bw_net_connect(host, port, timeout_ms, fd)) != 0)
		return rc;
	memcpy(hi, "Hi", 2);
	if (secret[0] != '\0') {
		len = strlen(secret);
		hi[2] = ' ';
		memcpy(hi + 3, secret, len);
		n = 3 + len;
	}
	*why = "cannot send Hi";
	rc = bw_net_write_full(*fd, hi, n);
	bw_wipe(hi, sizeof(hi));
	if (rc != 0)
		return rc;
	*why = secret[0] != '\0'
		       ? "no greeting (is the secret right?)"
		       : "no greeting (does the server want --secret?)";
	if ((rc = bw_net_read_full(*fd, greeting, GREETING_LEN)) != 0)
		return rc;
	len = GREETING_LEN;
	while (len > 0 && greeting[len - 1] == ' ')
		len--;
	print_text(greeting, len);
	putchar('\n');
	fflush(stdout);
	return 0;
}

int
bw_cli_console(int argc, char **argv)
{
	static const struct option opts[] = {
		{"secret", required_argument, NULL, 's'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char secret[SECRET_MAX + 1] = "", host[256], req[REQ_LEN];
	const char *env, *why = "";
	unsigned timeout_ms = 10u * 1000u;
	uint16_t port;
	int ch, rc, fd = -1, prompt, status = BW_EXIT_FATAL;

	optind = 1;
	if ((env = getenv(SECRET_ENV)) != NULL && strlen(env) <= SECRET_MAX)
		snprintf(secret, sizeof(secret), "%s", env);
	while ((ch = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (strlen(optarg) > SECRET_MAX) {
				fprintf(stderr,
					"bulwark console: the secret "
					"is longer than %u bytes\n",
					SECRET_MAX);
				return BW_EXIT_USAGE;
			}
			snprintf(secret, sizeof(secret), "%s", optarg);
			/* keep it out of ps from now on */
			memset(optarg, 'x', strlen(optarg));
			break;
		default:
			if ((rc = bw_cli_common_opt("bulwark console", ch,
						    optarg, &timeout_ms,
						    usage)) != BW_CLI_GO_ON)
				return rc;
		}
	}
	if ((rc = bw_cli_server_arg("bulwark console", DEFAULT_SERVER, NULL,
				    argc, argv, usage, host, sizeof(host),
				    &port)) != 0)
		return rc;
	rc = greet(host, port, timeout_ms, secret, &fd, &why);
	bw_wipe(secret, sizeof(secret));
	if (rc != 0)
		goto out;
	prompt = isatty(STDIN_FILENO);
	for (;;) {
		if (!next_request(stdin, prompt, req)) {
			if (prompt)
				putchar('\n');
			memcpy(req, "EXIT", REQ_LEN);
		}
		if (memcmp(req, "QUIT", REQ_LEN) == 0)
			memcpy(req, "EXIT",
			       REQ_LEN); /* what every server knows */
		if ((rc = exchange(fd, req, &why)) != 0)
			goto out;
		if (memcmp(req, "EXIT", REQ_LEN) == 0)
			break;
	}
	status = BW_EXIT_OK;
out:
	if (rc != 0 && why == NULL) {
		char text[512];

		bw_cli_fatal("%s", bw_cli_connect_error(text, sizeof(text),
							host, port, rc));
	} else if (rc != 0) {
		bw_cli_fatal("%s:%u: %s: %s", host, port, why, net_error(rc));
	}
	if (fd >= 0)
		close(fd);
	return status;
}
