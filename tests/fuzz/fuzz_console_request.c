/* libFuzzer harness for the operator console (src/svc/console/console.c,
 * docs/console.md): the real service on the real engine, in-process
 * (engine_fuzz.h), opened on the first input with a registry over a
 * temporary SQLite store holding five clients with hostile names, and a
 * host whose figures, files and queues are small fakes. Each input is one
 * connection: the first byte says how the rest is cut into pieces, the
 * second which secret the console wants (none, "s3cret", "Hi", or 255
 * bytes; set with the module's reload) and how many files the fake lists
 * (0, 1, 5 or 300: more than a reply holds), the rest is what the client
 * sends before it shuts its write side.
 *
 * Invariants (abort() on a violation), against a model of the protocol
 * written here: the server says nothing unless the input starts with "Hi"
 * (or "Hi <secret>", exactly); then it sends the 48-byte greeting and
 * answers the 4-byte requests that follow, in order, up to and including
 * EXIT: each answer is 4 ASCII digits and exactly that many bytes of text,
 * valid UTF-8 without control characters but tab and newline; TIME is an
 * ISO 8601 time, NAME the version, RAND 1 to 10, STAT the listener, the
 * registry's count and the fakes' figures, USRS every client once (its
 * escaped name, its id, a time and the fake's queue), FILS the fake's
 * files as many as fit and the line saying how many were left out, EXIT
 * and QUIT "bye", HELP its list, anything else the ERR line the model
 * spells out. Every request is
 * answered, also when the answers pass the 32 KiB the console queues
 * before it waits for the client to read, and the client has ended its
 * side meanwhile. The server closes the connection, and no descriptor or
 * connection is left behind.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bulwark/util.h"
#include "store/meta.h"
#include "host/module.h"
#include "host/registry.h"
#include "svc/console/console.h"

#include "engine_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GREETING     "bulwarkd 3: TIME NAME RAND STAT USRS FILS EXIT  "
#define GREETING_LEN 48
#define TEXT_MAX     9999u
#define LIST_MAX     (TEXT_MAX - 96u) /* room kept for "left out" */
#define CLIENTS_N    5u
#define UPTIME_S     93784 /* 1d 02h 03m 04s at the start */

static void
check(int ok)
{
	if (!ok)
		abort();
}

static const char *const client_names[CLIENTS_N] = {
	"alice",
	"bob\tthe\x1b[31mred",
	"caf\xc3\xa9",
	"\xe2\x80\xae"
	"evil",
	"\xff\xfe\x80",
};

static struct {
	struct bw_engine e;
	struct bw_meta *meta;
	struct bw_registry reg;
	struct bw_console_cfg cfg;
	void *inst;
	struct bw_listener *l;
	char dir[256];
	unsigned added;
	unsigned files_n; /* what the fake lists, this input */
	char fils[TEXT_MAX + 1];
	size_t fils_len;
} g;

/* --- the fakes ------------------------------------------------------------
 */

static void
fake_summary(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	(void)arg;
	emit(emit_arg, "bytes_stored", "bytes stored", 123456789);
	emit(emit_arg, "files", "files", g.files_n);
}

static void
fake_stats(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	(void)arg;
	emit(emit_arg, "vault_uploads_active", "uploads in progress", 3);
	emit(emit_arg, "msg_stored_total", "messages stored since start",
	     18446744073709551615u);
}

static const char *
file_owner(unsigned i)
{
	return client_names[i % CLIENTS_N];
}

static void
file_name(unsigned i, char *out, size_t cap)
{
	switch (i % 4) {
	case 0:
		snprintf(out, cap, "notes-%u.txt", i);
		break;
	case 1:
		snprintf(out, cap, "evil\t\x1b[2J-%u.bin", i);
		break;
	case 2:
		snprintf(out, cap, "\xe2\x80\x8f\xc2\x9b%u", i);
		break;
	default:
		snprintf(out, cap, "a\\b\xc3-%u", i);
		break;
	}
}

static uint64_t
fake_files(const void *arg, bw_file_fn fn, void *fn_arg)
{
	struct bw_file_view f;
	char name[64];
	unsigned i;

	(void)arg;
	for (i = 0; i < g.files_n; i++) {
		file_name(i, name, sizeof(name));
		f.owner = file_owner(i);
		f.name = name;
		f.size = (uint64_t)i * 7919u;
		f.verified = (int)(i & 1u);
		if (fn(fn_arg, &f) != 0)
			break;
	}
	return g.files_n;
}

static void
fake_queue(const void *arg, const uint8_t id[BW_ID_LEN], uint64_t *n,
	   uint64_t *bytes)
{
	(void)arg;
	*n = id[0] % 5u;
	*bytes = *n * 100u + id[1];
}

/* --- set-up ---------------------------------------------------------------
 */

static void
cleanup(void)
{
	char path[600];
	struct dirent *d;
	DIR *dp;

	if (g.dir[0] == '\0' || (dp = opendir(g.dir)) == NULL)
		return;
	while ((d = readdir(dp)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", g.dir, d->d_name);
		unlink(path);
	}
	closedir(dp);
	rmdir(g.dir);
}

static void
added(void *arg, int rc, struct bw_client *c)
{
	(void)arg;
	(void)c;
	if (rc != 0)
		ef_die("cannot add a client");
	g.added++;
}

static void
setup_once(void)
{
	const char *tmp = getenv("TMPDIR");
	struct bw_host h;
	struct bw_listen_cfg lc;
	uint64_t until;
	unsigned i;

	if (g.l != NULL)
		return;
	if (access("/dev/shm", W_OK) == 0)
		tmp = "/dev/shm";
	else if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	snprintf(g.dir, sizeof(g.dir), "%s/bw_fuzz_console_XXXXXX", tmp);
	if (mkdtemp(g.dir) == NULL)
		ef_die("mkdtemp failed");
	atexit(cleanup);
	ef_open(&g.e);
	if (bw_meta_open(&g.meta, "", g.dir, g.e.loop) != 0 ||
	    bw_registry_open(&g.reg, g.meta, g.e.loop) != 0)
		ef_die("cannot open the registry");
	g.reg.max_clients = 100;
	for (i = 0; i < CLIENTS_N; i++) {
		if (bw_registry_add(&g.reg, client_names[i], NULL, added,
				    NULL) != 0)
			ef_die("cannot add a client");
	}
	until = bw_now_ms() + 10000;
	while (g.added < CLIENTS_N) {
		ef_pass(&g.e);
		if (bw_now_ms() > until)
			ef_die("the store does not answer");
	}
	check(g.reg.clients_n == CLIENTS_N);
	memset(&h, 0, sizeof(h));
	h.eng = &g.e;
	h.reg = &g.reg;
	h.meta = g.meta;
	h.data_dir = g.dir;
	h.started_s = bw_time_s() - UPTIME_S;
	h.stats = fake_stats;
	h.summary = fake_summary;
	h.each_file = fake_files;
	h.client_queue = fake_queue;
	bw_console_cfg_defaults(&g.cfg);
	if (bw_console_module.init(&h, &g.cfg, &g.inst) != 0)
		ef_die("cannot start the console");
	lc = ef_listen_cfg("console", &g.cfg.limits);
	if (bw_engine_listen(&g.e, bw_console_module.service, g.inst, &lc,
			     &g.l) != 0)
		ef_die("cannot listen");
}

/* --- the model ------------------------------------------------------------
 */

static int
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* Valid UTF-8 with no C0 but tab and newline, no DEL, C1 or bidi
 * control. */
static void
check_text(const uint8_t *s, size_t n)
{
	size_t i = 0, k, len;
	uint32_t cp;

	while (i < n) {
		if (s[i] < 0x80) {
			check(s[i] >= 0x20 || s[i] == '\t' || s[i] == '\n');
			check(s[i] != 0x7f);
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			len = 2;
			cp = s[i] & 0x1fu;
		} else if ((s[i] & 0xf0) == 0xe0) {
			len = 3;
			cp = s[i] & 0x0fu;
		} else {
			check((s[i] & 0xf8) == 0xf0);
			len = 4;
			cp = s[i] & 0x07u;
		}
		check(i + len <= n);
		for (k = 1; k < len; k++) {
			check((s[i + k] & 0xc0) == 0x80);
			cp = cp << 6 | (s[i + k] & 0x3fu);
		}
		check(cp >= (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u));
		check(cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff));
		check(cp > 0x9f);
		check(cp != 0x61c && cp != 0x200e && cp != 0x200f);
		check(cp < 0x202a || cp > 0x202e);
		check(cp < 0x2066 || cp > 0x2069);
		i += len;
	}
}

/* 2026-11-21T05:00:00+00:00 */
static int
is_time(const uint8_t *s, size_t n)
{
	static const char form[] = "dddd-dd-ddTdd:dd:dd+dd:dd";
	size_t i;

	if (n != sizeof(form) - 1)
		return 0;
	for (i = 0; i < n; i++) {
		if (form[i] == 'd'   ? !is_digit(s[i])
		    : form[i] == '+' ? s[i] != '+' && s[i] != '-'
				     : s[i] != (uint8_t)form[i])
			return 0;
	}
	return 1;
}

static int
same(const uint8_t *s, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* The answer to a request the console does not know, as docs/console.md
 * spells it. */
static void
unknown_text(const uint8_t *req, char *out, size_t cap)
{
	static const char *const known[] = {"TIME", "NAME", "RAND",
					    "STAT", "USRS", "FILS",
					    "EXIT", "QUIT", "HELP"};
	char shown[17], upper[5];
	size_t i, o = 0;
	int lower = 0;

	for (i = 0; i < 4; i++) {
		if (req[i] >= 0x20 && req[i] < 0x7f && req[i] != '\'' &&
		    req[i] != '\\') {
			shown[o++] = (char)req[i];
		} else {
			snprintf(shown + o, sizeof(shown) - o, "\\x%02x",
				 req[i]);
			o += 4;
		}
		upper[i] = (char)(req[i] >= 'a' && req[i] <= 'z' ? req[i] - 32
								 : req[i]);
		lower |= req[i] >= 'a' && req[i] <= 'z';
	}
	shown[o] = '\0';
	upper[4] = '\0';
	for (i = 0; lower && i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(upper, known[i]) == 0) {
			snprintf(out, cap,
				 "ERR unknown request '%s'; requests are upper "
				 "case: try '%s'",
				 shown, known[i]);
			return;
		}
	}
	snprintf(out, cap,
		 "ERR unknown request '%s'; try TIME NAME RAND STAT USRS FILS "
		 "EXIT, or HELP",
		 shown);
}

static void
add_line(char *out, size_t *len, size_t limit, int *full, const char *line)
{
	size_t n = strlen(line);

	if (*full || *len + n > limit) {
		*full = 1;
		return;
	}
	memcpy(out + *len, line, n);
	*len += n;
}

/* FILS for this input's files_n. */
static void
make_fils(void)
{
	char line[3 * BW_ESC_CAP], owner[BW_ESC_CAP], name[BW_ESC_CAP];
	char raw[64];
	unsigned i, shown = 0;
	int full = 0;

	g.fils_len = 0;
	if (g.files_n == 0) {
		add_line(g.fils, &g.fils_len, TEXT_MAX, &full, "no files\n");
		g.fils[g.fils_len] = '\0';
		return;
	}
	add_line(g.fils, &g.fils_len, TEXT_MAX, &full,
		 "owner\tfile\tsize\tverified\n");
	for (i = 0; i < g.files_n && !full; i++) {
		file_name(i, raw, sizeof(raw));
		bw_escape_display(file_owner(i), owner, sizeof(owner));
		bw_escape_display(raw, name, sizeof(name));
		snprintf(line, sizeof(line), "%s\t%s\t%llu\t%s\n", owner, name,
			 (unsigned long long)i * 7919u, i & 1u ? "yes" : "no");
		add_line(g.fils, &g.fils_len, LIST_MAX, &full, line);
		if (!full)
			shown++;
	}
	if (full && shown < g.files_n) {
		snprintf(line, sizeof(line),
			 "%u more files left out (a reply holds at most %u "
			 "bytes)\n",
			 g.files_n - shown, TEXT_MAX);
		full = 0;
		add_line(g.fils, &g.fils_len, TEXT_MAX, &full, line);
	}
	g.fils[g.fils_len] = '\0';
}

static void
check_stat(const uint8_t *s, size_t n)
{
	char rest[512];
	const uint8_t *nl = memchr(s, '\n', n);
	int k;

	check(n > 8 && memcmp(s, "uptime: ", 8) == 0 && nl != NULL);
	check(nl - s > 10 && nl[-1] == ')');
	k = snprintf(rest, sizeof(rest),
		     "connections: console 1\nclients: %u\n"
		     "bytes stored: 123456789\nfiles: %u\n"
		     "uploads in progress: 3\n"
		     "messages stored since start: 18446744073709551615\n",
		     CLIENTS_N, g.files_n);
	check(same(nl + 1, n - (size_t)(nl + 1 - s), rest) && k > 0);
}

/* Every client once: escaped name, id, a time, the fake's queue. */
static void
check_usrs(const uint8_t *s, size_t n)
{
	static const char head[] =
		"name\tid\tlast seen\tqueued\tqueued bytes\tplain\n";
	char line[BW_ESC_CAP + 128], esc[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1];
	const uint8_t *p = s + sizeof(head) - 1, *end = s + n, *nl, *tab;
	unsigned seen = 0, i;
	const struct bw_client *c;
	int k;

	check(n >= sizeof(head) - 1 && memcmp(s, head, sizeof(head) - 1) == 0);
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		check(nl != NULL);
		for (i = 0; i < CLIENTS_N; i++) {
			bw_escape_display(client_names[i], esc, sizeof(esc));
			if ((size_t)(nl - p) > strlen(esc) &&
			    memcmp(p, esc, strlen(esc)) == 0 &&
			    p[strlen(esc)] == '\t')
				break;
		}
		if (i >= CLIENTS_N || (seen & (1u << i)))
			abort(); /* no client, or one listed twice */
		seen |= 1u << i;
		c = bw_registry_by_name(&g.reg, client_names[i]);
		check(c != NULL);
		bw_hex_encode(c->id, BW_ID_LEN, hex);
		/* name, id, then the time of the line's third field */
		tab = p + strlen(esc) + 1 + 2 * BW_ID_LEN + 1;
		check(tab + 25 < nl && is_time(tab, 25));
		k = snprintf(line, sizeof(line), "%s\t%s\t", esc, hex);
		check(k > 0 && memcmp(p, line, (size_t)k) == 0);
		k = snprintf(line, sizeof(line), "\t%u\t%u\t%s\n",
			     c->id[0] % 5u, (c->id[0] % 5u) * 100u + c->id[1],
			     c->tls_only ? "refused" : "served");
		check(k > 0 &&
		      same(tab + 25, (size_t)(nl + 1 - (tab + 25)), line));
	}
	check(seen == (1u << CLIENTS_N) - 1u);
}

static void
check_answer(const uint8_t *req, const uint8_t *s, size_t n)
{
	char want[128];

	check_text(s, n);
	if (memcmp(req, "TIME", 4) == 0) {
		check(is_time(s, n));
	} else if (memcmp(req, "NAME", 4) == 0) {
		check(same(s, n, "bulwarkd " BW_VERSION));
	} else if (memcmp(req, "RAND", 4) == 0) {
		check(n == 1 ? s[0] >= '1' && s[0] <= '9' : same(s, n, "10"));
	} else if (memcmp(req, "STAT", 4) == 0) {
		check_stat(s, n);
	} else if (memcmp(req, "USRS", 4) == 0) {
		check_usrs(s, n);
	} else if (memcmp(req, "FILS", 4) == 0) {
		check(same(s, n, g.fils));
	} else if (memcmp(req, "EXIT", 4) == 0 || memcmp(req, "QUIT", 4) == 0) {
		check(same(s, n, "bye"));
	} else if (memcmp(req, "HELP", 4) == 0) {
		check(n > 5 && memcmp(s, "TIME  ", 6) == 0 &&
		      memmem(s, n, "\nEXIT  ", 7) != NULL);
	} else {
		unknown_text(req, want, sizeof(want));
		check(same(s, n, want));
	}
}

/* The exchange against the model: in[0..n) sent with the console wanting
 * secret. */
static void
check_exchange(const char *secret, const uint8_t *in, size_t n,
	       const struct ef_out *o)
{
	size_t slen = strlen(secret), need = slen ? 3 + slen : 2;
	size_t pre = slen ? 3 : 2, pos, req, len, k;
	const uint8_t *r;

	if (memcmp(in, "Hi ", n < pre ? n : pre) != 0 || n < need ||
	    (slen > 0 && memcmp(in + 3, secret, slen) != 0)) {
		check(o->len == 0);
		return;
	}
	check(o->len >= GREETING_LEN &&
	      memcmp(o->p, GREETING, GREETING_LEN) == 0);
	pos = GREETING_LEN;
	for (req = need; req + 4 <= n; req += 4) {
		r = in + req;
		check(o->len - pos >= 4); /* every request is answered */
		for (len = 0, k = 0; k < 4; k++) {
			check(is_digit(o->p[pos + k]));
			len = len * 10 + (size_t)(o->p[pos + k] - '0');
		}
		pos += 4;
		check(o->len - pos >= len);
		check_answer(r, o->p + pos, len);
		pos += len;
		if (memcmp(r, "EXIT", 4) == 0 || memcmp(r, "QUIT", 4) == 0)
			break;
	}
	check(pos == o->len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned files[] = {0, 1, 5, 300};
	static char long_secret[BW_CONSOLE_SECRET_CAP];
	const char *secrets[] = {"", "s3cret", "Hi", long_secret};
	struct bw_console_cfg cfg;
	struct ef_out o;
	size_t i;

	if (size < 2)
		return 0;
	setup_once();
	if (long_secret[0] == '\0') {
		for (i = 0; i + 1 < sizeof(long_secret); i++)
			long_secret[i] = (char)('!' + i % 94);
	}
	cfg = g.cfg;
	snprintf(cfg.secret, sizeof(cfg.secret), "%s", secrets[data[1] & 3]);
	bw_console_module.reload(g.inst, &cfg);
	g.files_n = files[(data[1] >> 2) & 3];
	make_fils();
	ef_exchange(&g.e, g.l, data[0], data + 2, size - 2, &o);
	check(o.eof || o.reset);
	check_exchange(cfg.secret, data + 2, size - 2, &o);
	free(o.p);
	check(g.e.conns_n == 0 && g.l->conns_n == 0);
	ef_check_fds();
	return 0;
}
