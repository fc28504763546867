/* bulwark probe: a conformance suite for the vault, the messenger, the
 * rooms and the console, run against any server of that protocol; and
 * `probe client`, a recording server for a client under test
 * (probe_client.c). Each case ends as it runs (one line on stderr), the
 * report follows on stdout: a table, JSON (--json) or one HTML page
 * (--html FILE).
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/probe.h"
#include "cli/probe_int.h"

#define RESTART_WAIT_MS 30000u

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark probe vault|msg|rooms|console [OPTION]... "
		"HOST:PORT\n"
		"       bulwark probe client --listen PORT [OPTION]...\n"
		"Check a server of one of the four protocols against its "
		"spec: every request\nand reply, the error paths, framing, "
		"limits at their edges and a few hostile\ninputs. Each case "
		"names the clause it checks and ends PASS, FAIL, DEVIATION\n"
		"(the text is kept the way other implementations do not) or "
		"SKIP. The probe\nregisters its own users under random names, "
		"so it can run again.\n"
		"`probe client` listens as a vault and messenger server and "
		"reports how a\nclient under test deviates (see "
		"docs/conformance.md).\n\n"
		"  -v, --verbose         show what each case sent and what "
		"came back\n"
		"      --polite          leave out the hostile cases\n"
		"      --strict          deviations count as failures\n"
		"      --json            the report as JSON on stdout\n"
		"      --html FILE       also write the report as one HTML "
		"page\n"
		"      --restart-cmd CMD run CMD (sh -c) to restart the server "
		"for the\n"
		"                        cases that check what survives a "
		"restart\n"
		"      --secret S        the console's secret (Hi S)\n"
		"  -t, --timeout SEC     how long to wait for each reply "
		"(default 5)\n"
		"  -h, --help            this help\n\n"
		"The client probe (bulwark probe client) takes --json, --html, "
		"--strict, -v and:\n"
		"      --listen PORT     the port on 127.0.0.1 the client "
		"under "
		"test is\n"
		"                        pointed at\n"
		"      --server HOST:PORT  the server its connections are "
		"relayed to\n"
		"      --count N         end after N connections have closed\n"
		"      --duration SEC    end after SEC seconds (default: at "
		"^C)\n\n"
		"Exit status: 0 every case passed; 1 a case failed (or, with "
		"--strict,\ndeviated); 2 bad usage.\n");
}

const char *
probe_verdict_name(enum probe_verdict v)
{
	static const char *const names[] = {"PASS", "FAIL", "DEVIATION",
					    "SKIP"};

	return v < P_VERDICTS ? names[v] : "?";
}

int
probe_begin(struct probe *p, const char *id, const char *section,
	    const char *clause, unsigned flags)
{
	struct probe_case *k;

	if (p->cur != NULL)
		probe_fail(p, "the case ended without a verdict");
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct probe_case *nc = realloc(p->cases, cap * sizeof(*nc));

		if (nc == NULL) {
			bw_cli_fatal("out of memory");
			exit(BW_EXIT_FATAL);
		}
		p->cases = nc;
		p->cap = cap;
	}
	k = &p->cases[p->n++];
	memset(k, 0, sizeof(*k));
	k->id = id;
	k->section = section;
	k->clause = clause;
	k->flags = flags;
	p->cur = k;
	if ((flags & P_HOSTILE) && p->polite) {
		probe_skip(p, "hostile (--polite)");
		return 1;
	}
	if ((flags & P_RESTART) && p->restart_cmd == NULL) {
		probe_skip(p, "needs --restart-cmd");
		return 1;
	}
	if (p->stopped) {
		probe_skip(p, "the server stopped answering");
		return 1;
	}
	return 0;
}

int
probe_end(struct probe *p, enum probe_verdict v, const char *fmt, ...)
{
	struct probe_case *k = p->cur;
	va_list ap;

	if (k == NULL)
		return v == P_PASS ? 0 : -1;
	k->verdict = v;
	va_start(ap, fmt);
	vsnprintf(k->note, sizeof(k->note), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%-9s %s: %s\n", probe_verdict_name(v), k->id, k->note);
	if (p->verbose && k->transcript_len > 0)
		fprintf(stderr, "%s", k->transcript);
	p->cur = NULL;
	return v == P_PASS ? 0 : -1;
}

void
probe_say(struct probe *p, const char *fmt, ...)
{
	struct probe_case *k = p->cur;
	char line[512];
	va_list ap;
	int n;
	char *t;

	if (k == NULL || k->transcript_len >= PROBE_TRANSCRIPT_MAX)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (k->transcript_len + (size_t)n > PROBE_TRANSCRIPT_MAX) {
		/* cut, but still a line of its own */
		n = (int)(PROBE_TRANSCRIPT_MAX - k->transcript_len);
		line[n - 1] = '\n';
	}
	t = realloc(k->transcript, k->transcript_len + (size_t)n + 1);
	if (t == NULL)
		return;
	memcpy(t + k->transcript_len, line, (size_t)n);
	k->transcript = t;
	k->transcript_len += (size_t)n;
	t[k->transcript_len] = '\0';
}

void
probe_name(struct probe *p, const char *prefix, char *out, size_t cap)
{
	static unsigned n;

	/* letters and digits only: servers that take nothing else exist */
	snprintf(out, cap, "%s%s%u", prefix, p->tag, ++n);
}

int
probe_restart(struct probe *p)
{
	uint64_t until;
	pid_t pid;
	int status;

	probe_say(p, "restart: sh -c '%s'", p->restart_cmd);
	fflush(NULL);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", p->restart_cmd, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		probe_say(p, "restart: the command failed (status %d)", status);
		return -1;
	}
	until = bw_now_ms() + RESTART_WAIT_MS;
	while (bw_now_ms() < until) {
		if (pc_alive(p))
			return 0;
		usleep(100 * 1000);
	}
	probe_say(p, "restart: the port took no connection within %u s",
		  RESTART_WAIT_MS / 1000);
	return -1;
}

static void
free_cases(struct probe *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		free(p->cases[i].transcript);
	free(p->cases);
}

enum { O_POLITE = 0x200, O_STRICT, O_JSON, O_HTML, O_RESTART, O_SECRET };

static int
run(struct probe *p, int json, const char *html)
{
	if (strcmp(p->proto, "vault") == 0)
		probe_vault(p);
	else if (strcmp(p->proto, "msg") == 0)
		probe_msg(p);
	else if (strcmp(p->proto, "rooms") == 0)
		probe_rooms(p);
	else
		probe_console(p);
	if (p->cur != NULL)
		probe_fail(p, "the case ended without a verdict");
	return probe_report(p, json, html);
}

int
bw_cli_probe(int argc, char **argv)
{
	static const struct option opts[] = {
		{"verbose", no_argument, NULL, 'v'},
		{"polite", no_argument, NULL, O_POLITE},
		{"strict", no_argument, NULL, O_STRICT},
		{"json", no_argument, NULL, O_JSON},
		{"html", required_argument, NULL, O_HTML},
		{"restart-cmd", required_argument, NULL, O_RESTART},
		{"secret", required_argument, NULL, O_SECRET},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	struct probe p;
	const char *html = NULL;
	uint8_t r[4];
	int ch, json = 0, rc;

	if (argc >= 2 && strcmp(argv[1], "client") == 0)
		return bw_cli_probe_client(argc - 1, argv + 1);
	memset(&p, 0, sizeof(p));
	p.timeout_ms = 5000;
	while ((ch = getopt_long(argc, argv, "vt:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'v':
			p.verbose = 1;
			break;
		case O_POLITE:
			p.polite = 1;
			break;
		case O_STRICT:
			p.strict = 1;
			break;
		case O_JSON:
			json = 1;
			break;
		case O_HTML:
			html = optarg;
			break;
		case O_RESTART:
			p.restart_cmd = optarg;
			break;
		case O_SECRET:
			p.secret = optarg;
			break;
		default:
			rc = bw_cli_common_opt("bulwark probe", ch, optarg,
					       &p.timeout_ms, usage);
			if (rc != BW_CLI_GO_ON)
				return rc;
		}
	}
	if (argc - optind != 2 || (strcmp(argv[optind], "vault") != 0 &&
				   strcmp(argv[optind], "msg") != 0 &&
				   strcmp(argv[optind], "rooms") != 0 &&
				   strcmp(argv[optind], "console") != 0)) {
		usage(stderr);
		return BW_EXIT_USAGE;
	}
	p.proto = argv[optind];
	if (bw_cli_parse_server(argv[optind + 1], p.host, sizeof(p.host),
				&p.port) != 0 ||
	    strncmp(p.host, "tls://", 6) == 0) {
		fprintf(stderr,
			"bulwark probe: %s is not HOST:PORT (the probe speaks "
			"the plain protocols)\n",
			argv[optind + 1]);
		return BW_EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	bw_crypto_start(0);
	if (bw_random(r, sizeof(r)) != 0) {
		bw_cli_fatal("no randomness");
		return BW_EXIT_FATAL;
	}
	bw_hex_encode(r, sizeof(r), p.tag);
	rc = run(&p, json, html);
	free_cases(&p);
	return rc;
}
