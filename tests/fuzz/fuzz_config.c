/* libFuzzer harness for bulwarkd's configuration file parser: the input is
 * the text of the file, parsed from memory by bw_daemon_parse_config (the
 * code bw_daemon_read_config runs on a file's bytes) into the defaults.
 *
 * Invariants (abort() on a violation): it never crashes; parsing the same
 * text twice gives the same result, why and configuration, byte for byte;
 * on failure why is NUL-terminated within its buffer and reads
 * "fuzz.conf: not a text file" exactly when the text holds a NUL, else
 * lines of "fuzz.conf:LINE: ...", one per problem in the file's order
 * (every line the classifier below refuses is among them, unless the last
 * says "and N more"), where the first LINE is a line of the text and, by a
 * reference line classifier written here, neither blank, nor a comment,
 * nor certainly right (a flag with yes or no), and no line before it is
 * certainly wrong (no '=', an unknown key, a flag that is not yes, no,
 * true or false, a value left empty); on success no line is certainly
 * wrong, why is untouched, the numeric fields re-checked here lie within
 * the bounds the option table documents (--help; workers may be 0, not
 * given), the string fields are NUL-terminated and the addresses numeric,
 * and the last line on a few options (workers, port, timeout, rooms-pause
 * given in plain digits, log-level, the two flags) is what the
 * configuration holds.
 *
 * A console-secret-file line reads the file it names; bw_read_small_file
 * opens only regular files, without blocking, so this cannot hang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/net.h"
#include "daemon/daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME	 "fuzz.conf"
#define WHY_CAP	 600
#define WHY_FILL 0x5a

static void
check(int ok)
{
	if (!ok)
		abort();
}

enum verdict {
	V_SKIP,	 /* blank or a comment */
	V_OK,	 /* certainly accepted (a flag with a yes or no) */
	V_MAYBE, /* a key with a value: the value decides */
	V_BAD,	 /* certainly refused */
};

static int
blank(char c)
{
	return c == ' ' || c == '\t';
}

/* [*b, *e) without leading blanks and trailing blanks or CRs. */
static void
strip(const char **b, const char **e)
{
	while (*b < *e && blank(**b))
		(*b)++;
	while (*e > *b && (blank((*e)[-1]) || (*e)[-1] == '\r'))
		(*e)--;
}

static int
is(const char *b, const char *e, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(e - b) == n && memcmp(b, word, n) == 0;
}

/* What the lines said of a few options, the last line winning: a number
 * (-1: no line, -2: a value that is not plain digits), whether a flag was
 * set, the log level's index. */
struct said {
	int64_t workers, port, timeout, pause;
	int no_console, no_rooms, level;
};

static int64_t
digits(const char *b, const char *e)
{
	uint64_t v = 0;

	if (b == e || e - b > 18)
		return -2;
	for (; b < e; b++) {
		if (*b < '0' || *b > '9')
			return -2;
		v = v * 10 + (uint64_t)(*b - '0');
	}
	return (int64_t)v;
}

static void
note(struct said *s, const char *key, const char *vb, const char *ve)
{
	static const char *const levels[] = {"debug", "info", "warn", "error"};
	int i;

	if (strcmp(key, "workers") == 0)
		s->workers = digits(vb, ve);
	else if (strcmp(key, "port") == 0)
		s->port = digits(vb, ve);
	else if (strcmp(key, "timeout") == 0)
		s->timeout = digits(vb, ve);
	else if (strcmp(key, "rooms-pause") == 0)
		s->pause = digits(vb, ve);
	else if (strcmp(key, "no-console") == 0)
		s->no_console |= is(vb, ve, "yes") || is(vb, ve, "true");
	else if (strcmp(key, "no-rooms") == 0)
		s->no_rooms |= is(vb, ve, "yes") || is(vb, ve, "true");
	for (i = 0; i < 4 && strcmp(key, "log-level") == 0; i++) {
		if (is(vb, ve, levels[i]))
			s->level = i;
	}
}

/* What the file's rules (daemon_conf.c's opening comment, and --help) say
 * of the line [b, e), written without the parser's code; what it says of
 * the options followed goes into s. */
static enum verdict
classify(const char *b, const char *e, struct said *s)
{
	const char *eq, *kb, *ke, *vb, *ve;
	char key[64];
	int quoted = 0;

	strip(&b, &e);
	if (b == e || *b == '#')
		return V_SKIP;
	if ((eq = memchr(b, '=', (size_t)(e - b))) == NULL)
		return V_BAD;
	kb = b;
	ke = eq;
	vb = eq + 1;
	ve = e;
	strip(&kb, &ke);
	strip(&vb, &ve);
	if (vb < ve && *vb == '"') {
		/* taken as written between the quotes; after them, nothing
		 * but a comment */
		const char *q = memchr(vb + 1, '"', (size_t)(ve - vb - 1));
		const char *rb = q != NULL ? q + 1 : ve, *re = ve;

		strip(&rb, &re);
		if (q == NULL || (rb < re && *rb != '#'))
			return V_BAD;
		vb++;
		ve = q;
		quoted = 1;
	} else {
		/* a '#' after a blank starts a comment */
		const char *c;

		for (c = vb + 1; c < ve; c++) {
			if (*c == '#' && blank(c[-1])) {
				ve = c;
				strip(&vb, &ve);
				break;
			}
		}
	}
	if ((size_t)(ke - kb) >= sizeof(key))
		return V_BAD; /* longer than any option */
	memcpy(key, kb, (size_t)(ke - kb));
	key[ke - kb] = '\0';
	if (!bw_daemon_opt_is_key(key))
		return V_BAD;
	note(s, key, vb, ve);
	if (!bw_daemon_opt_has_value(key))
		return is(vb, ve, "yes") || is(vb, ve, "true") ||
				       is(vb, ve, "no") || is(vb, ve, "false")
			       ? V_OK
			       : V_BAD;
	return vb == ve && !quoted ? V_BAD : V_MAYBE;
}

/* One pass over the lines of text: how many there are, the first the
 * classifier refuses (0: none), the verdict of line no (from 1; V_SKIP
 * past the end), and what the lines said. */
struct walk {
	size_t lines, first_bad, bad_n; /* bad_n: how many it refuses */
	enum verdict v;
	struct said said;
};

static struct walk
walk_lines(const char *text, size_t len, size_t no)
{
	const char *p = text, *end = text + len, *nl;
	struct walk w = {0, 0, 0, V_SKIP, {-1, -1, -1, -1, 0, 0, -1}};
	enum verdict v;

	for (;;) {
		nl = memchr(p, '\n', (size_t)(end - p));
		w.lines++;
		v = classify(p, nl != NULL ? nl : end, &w.said);
		if (w.lines == no)
			w.v = v;
		if (v == V_BAD && w.first_bad == 0)
			w.first_bad = w.lines;
		w.bad_n += v == V_BAD;
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return w;
}

/* The last word of the text on the options followed. */
static void
check_said(const struct bw_daemon_cfg *c, const struct said *s)
{
	if (s->workers >= 0)
		check(c->engine.workers == (uint64_t)s->workers);
	if (s->port >= 0)
		check(c->port.port == s->port && c->port_given);
	else if (s->port == -1)
		check(c->port.port == 1357 && !c->port_given);
	if (s->timeout >= 0)
		check(c->timeout_ms == (uint64_t)s->timeout * 1000u);
	if (s->pause >= 0)
		check(c->rooms.pause_ms == (uint64_t)s->pause);
	check(c->console_enabled == !s->no_console);
	check(c->rooms_enabled == !s->no_rooms);
	check(c->log_level == (s->level >= 0 ? s->level : 1));
}

static void
in_range(uint64_t v, uint64_t min, uint64_t max)
{
	check(v >= min && v <= max);
}

static void
terminated(const char *s, size_t cap)
{
	check(memchr(s, '\0', cap) != NULL);
}

/* The bounds of --help, re-checked on what a parse accepted. */
static void
check_cfg(const struct bw_daemon_cfg *c)
{
	const char *addrs[] = {c->port.addr, c->console_listen.addr,
			       c->rooms_listen.addr, c->metrics_listen.addr};
	size_t i;

	in_range(c->port.max_conns, 1, 1000000);
	check(c->port.max_conns_per_addr == 0 ||
	      c->port.max_conns_per_addr <= 1000000);
	in_range(c->vault.max_file_size, 16, 0xFFFFFEF0u);
	in_range(c->vault.max_uploads, 1, 100000);
	in_range(c->vault.min_rate, 0, 1u << 30);
	in_range(c->vault.key_lifetime_s, 0, 86400u * 365u);
	in_range(c->vault.key_failures, 1, 1000);
	in_range(c->max_clients, 1, UINT32_MAX);
	in_range(c->msg.max_content, 0, 0xFFFFFFFFu - 25u);
	in_range(c->msg.pull_cap, 1024, 0xFFFFFFFFu);
	in_range(c->msg.reply_memory, 65536, UINT64_MAX / 2);
	/* seconds, kept in milliseconds */
	in_range(c->timeout_ms, 1000, 86400000u);
	check(c->timeout_ms % 1000 == 0);
	in_range(c->request_timeout_ms, 1000, 86400000u);
	check(c->request_timeout_ms % 1000 == 0);
	in_range(c->engine.shutdown_grace_ms, 0, 86400000u);
	check(c->engine.shutdown_grace_ms % 1000 == 0);
	in_range(c->rooms.limits.request_ms, 1000, 3600000u);
	/* 0 until given (the daemon chooses by its blob store) */
	if (c->engine.workers != 0)
		in_range(c->engine.workers, 1, 16);
	in_range(c->rooms.pause_ms, 10, 10000);
	in_range(c->rooms.limits.out_max, 4096, 1u << 30);
	in_range(c->rooms.max_attempts, 1, 1000);
	in_range((uint64_t)c->log_level, 0, 3);
	check(c->console_enabled == 0 || c->console_enabled == 1);
	check(c->rooms_enabled == 0 || c->rooms_enabled == 1);
	check(c->metrics_enabled == 0 || c->metrics_enabled == 1);
	terminated(c->data_dir, sizeof(c->data_dir));
	check(c->data_dir[0] != '\0');
	terminated(c->log_file, sizeof(c->log_file));
	terminated(c->console.secret, sizeof(c->console.secret));
	for (i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		terminated(addrs[i], BW_ADDR_CAP);
		check(bw_net_is_loopback(addrs[i]) >= 0);
	}
}

/* why after a failure, against the reference classifier: the line it
 * names is one with a value the classifier cannot judge or the first it
 * refuses. */
static void
check_why(const char *text, size_t len, const char *why)
{
	struct walk w;
	size_t no, n, named = 0;
	const char *p;
	char *end;
	int more = 0;

	check(memchr(why, '\0', WHY_CAP) != NULL);
	if (memchr(text, '\0', len) != NULL) {
		check(strcmp(why, NAME ": not a text file") == 0);
		return;
	}
	check(strncmp(why, NAME ":", sizeof(NAME)) == 0);
	check(why[sizeof(NAME)] >= '1' && why[sizeof(NAME)] <= '9');
	no = strtoul(why + sizeof(NAME), &end, 10);
	check(end[0] == ':' && end[1] == ' ' && end[2] != '\0');
	w = walk_lines(text, len, no);
	check(no >= 1 && no <= w.lines);
	check(w.v == V_BAD || w.v == V_MAYBE);
	check(w.first_bad == 0 || w.first_bad >= no);
	check(w.v != V_BAD || w.first_bad == no);
	named += w.v == V_BAD;
	/* every problem, one a line, in the file's order: each names a line
	 * the classifier refuses or cannot judge; every line it refuses is
	 * named, unless the last line says how many more did not fit */
	for (p = strchr(why, '\n'); p != NULL; p = strchr(p + 1, '\n')) {
		if (strncmp(p + 1, NAME ": and ", sizeof(NAME) + 5) == 0) {
			check(strchr(p + 1, '\n') == NULL);
			more = 1;
			break;
		}
		check(strncmp(p + 1, NAME ":", sizeof(NAME)) == 0);
		n = strtoul(p + 1 + sizeof(NAME), &end, 10);
		check(n > no && end[0] == ':' && end[1] == ' ');
		w = walk_lines(text, len, n);
		check(w.v == V_BAD || w.v == V_MAYBE);
		named += w.v == V_BAD;
		no = n;
	}
	check(more || named == w.bad_n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct bw_daemon_cfg a, b;
	static char why_a[WHY_CAP], why_b[WHY_CAP];
	const char *text = (const char *)data;
	struct walk w;
	size_t i;
	int rc_a, rc_b;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	bw_daemon_cfg_defaults(&a);
	bw_daemon_cfg_defaults(&b);
	memset(why_a, WHY_FILL, sizeof(why_a));
	memset(why_b, WHY_FILL, sizeof(why_b));

	rc_a = bw_daemon_parse_config(&a, text, size, NAME, why_a,
				      sizeof(why_a));
	rc_b = bw_daemon_parse_config(&b, text, size, NAME, why_b,
				      sizeof(why_b));
	check(rc_a == rc_b);
	check(memcmp(&a, &b, sizeof(a)) == 0);
	if (rc_a != 0) {
		check(rc_a == BW_ECONFIG);
		check_why(text, size, why_a);
		check(strcmp(why_a, why_b) == 0);
		return 0;
	}
	/* nothing is said on success */
	for (i = 0; i < sizeof(why_a); i++)
		check((uint8_t)why_a[i] == WHY_FILL);
	w = walk_lines(text, size, 0);
	check(w.first_bad == 0);
	check_cfg(&a);
	check_said(&a, &w.said);
	/* what no single option says: it either holds or says why */
	if (bw_daemon_cfg_check(&a, why_a, sizeof(why_a)) != 0)
		check(memchr(why_a, '\0', sizeof(why_a)) != NULL);
	return 0;
}
