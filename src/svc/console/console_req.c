/* The console's requests (docs/console.md): each answer is built from the
 * running daemon (its engine, its registry, the modules' hooks) into a
 * reply of at most TEXT_MAX bytes; lists that do not fit say how many
 * entries were left out.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/console/console_int.h"

char *
console_reply_text(struct reply *r)
{
	return r->buf + LEN_DIGITS;
}

/* Appends formatted text whole, or nothing: BW_ETOOBIG if the text would
 * pass limit bytes. */
int
console_reply_addf(struct reply *r, size_t limit, const char *fmt, ...)
{
	size_t room = TEXT_MAX + 1 - r->len;
	va_list ap;
	int n;

	if (limit > TEXT_MAX)
		limit = TEXT_MAX;
	va_start(ap, fmt);
	n = vsnprintf(console_reply_text(r) + r->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || r->len + (size_t)n > limit) {
		console_reply_text(r)[r->len] = '\0';
		return BW_ETOOBIG;
	}
	r->len += (size_t)n;
	return 0;
}

/* ISO 8601 in the daemon's time zone, e.g. 2026-11-21T05:00:00+00:00. */
void
console_iso_time(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	long off;

	if (localtime_r(&tt, &tm) == NULL || tm.tm_year < -1900 ||
	    tm.tm_year > 9999 - 1900 ||
	    strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(out, 32, "%s", "0000-00-00T00:00:00+00:00");
		return;
	}
	off = tm.tm_gmtoff / 60;
	snprintf(out + strlen(out), 32 - strlen(out), "%c%02ld:%02ld",
		 off < 0 ? '-' : '+', (off < 0 ? -off : off) / 60,
		 (off < 0 ? -off : off) % 60);
}

/* --- requests ------------------------------------------------------------
 */

static int
do_time(struct bw_conn *c, struct reply *r)
{
	char t[32];

	(void)c;
	console_iso_time(bw_time_s(), t);
	return console_reply_addf(r, TEXT_MAX, "%s", t);
}

static int
do_name(struct bw_conn *c, struct reply *r)
{
	const struct bw_console *cs = bw_conn_inst(c);

	/* a node of a cluster says which (one daemon alone answers as it
	 * always has) */
	if (cs->view.node_given && cs->view.node != NULL)
		return console_reply_addf(r, TEXT_MAX, "bulwarkd %s (node %s)",
					  BW_VERSION, cs->view.node);
	return console_reply_addf(r, TEXT_MAX, "bulwarkd %s", BW_VERSION);
}

static int
do_rand(struct bw_conn *c, struct reply *r)
{
	uint8_t b;

	(void)c;
	do { /* 250 = 25 * 10: rejecting the rest keeps 1..10 uniform */
		if (bw_random(&b, 1) != 0)
			return console_reply_addf(
				r, TEXT_MAX, "ERR no random numbers available");
	} while (b >= 250);
	return console_reply_addf(r, TEXT_MAX, "%u", b % 10u + 1u);
}

struct stat_out {
	struct reply *r;
	int rc;
};

static void
add_stat(void *arg, const char *key, const char *label, uint64_t value)
{
	struct stat_out *o = arg;

	(void)key;
	if (o->rc == 0)
		o->rc = console_reply_addf(o->r, TEXT_MAX, "%s: %llu\n", label,
					   ULL(value));
}

/* A summary figure, named by its key ("queued_messages": "queued
 * messages"), but for the one whose metric puts its unit last
 * ("stored_bytes", which STAT has always called "bytes stored"). */
static void
add_summary(void *arg, const char *key, const char *label, uint64_t value)
{
	struct stat_out *o = arg;
	char name[64];
	size_t i;

	(void)label;
	for (i = 0; key[i] != '\0' && i + 1 < sizeof(name); i++)
		name[i] = key[i] == '_' ? ' ' : key[i];
	name[i] = '\0';
	if (strcmp(key, "stored_bytes") == 0)
		snprintf(name, sizeof(name), "bytes stored");
	if (o->rc == 0)
		o->rc = console_reply_addf(o->r, TEXT_MAX, "%s: %llu\n", name,
					   ULL(value));
}

static int
do_stat(struct bw_conn *c, struct reply *r)
{
	const struct bw_console *cs = bw_conn_inst(c);
	const struct bw_engine *e = cs->view.eng;
	const struct bw_registry *reg = cs->view.reg;
	int64_t now = bw_time_s(), up = now - cs->view.started_s;
	struct stat_out o = {r, 0};
	char since[32];
	unsigned i;
	int rc;

	if (up < 0)
		up = 0;
	console_iso_time(cs->view.started_s, since);
	rc = console_reply_addf(
		r, TEXT_MAX,
		"uptime: %lldd %02lldh %02lldm %02llds (%lld s, since "
		"%s)\nconnections:",
		(long long)(up / 86400), (long long)(up / 3600 % 24),
		(long long)(up / 60 % 60), (long long)(up % 60), (long long)up,
		since);
	for (i = 0; rc == 0 && i < e->lis_n; i++)
		rc = console_reply_addf(r, TEXT_MAX, "%s %s %u", i ? "," : "",
					e->lis[i].name, e->lis[i].conns_n);
	if (rc == 0)
		rc = console_reply_addf(r, TEXT_MAX, "\nclients: %llu\n",
					ULL(reg->clients_n));
	if (rc == 0 && cs->view.summary != NULL) {
		cs->view.summary(cs->view.stats_arg, add_summary, &o);
		rc = o.rc;
	}
	if (rc == 0 && cs->view.stats != NULL) {
		cs->view.stats(cs->view.stats_arg, add_stat, &o);
		rc = o.rc;
	}
	if (rc == 0 && cs->view.node != NULL && cs->view.node[0] != '\0')
		rc = console_reply_addf(r, TEXT_MAX, "node: %s\n",
					cs->view.node);
	return rc;
}

struct list_walk {
	struct reply *r;
	const struct bw_host *h;
	uint64_t shown;
	int full, headed;
};

static int
add_client(void *arg, void *val)
{
	struct list_walk *w = arg;
	const struct bw_client *cl = val;
	char name[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1], seen[32];
	uint64_t n = 0, bytes = 0;

	if (cl->pending)
		return 0; /* not registered yet */
	bw_escape_display(cl->name, name, sizeof(name));
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	console_iso_time(cl->last_seen, seen);
	if (w->h->client_queue != NULL)
		w->h->client_queue(w->h->stats_arg, cl->id, &n, &bytes);
	if (console_reply_addf(w->r, TEXT_MAX - LEFT_OUT_MAX,
			       "%s\t%s\t%s\t%llu\t%llu\t%s\n", name, hex, seen,
			       ULL(n), ULL(bytes),
			       cl->tls_only ? "refused" : "served") != 0) {
		w->full = 1;
		return 1;
	}
	w->shown++;
	return 0;
}

static int
add_file(void *arg, const struct bw_file_view *f)
{
	struct list_walk *w = arg;
	char owner[BW_ESC_CAP], name[BW_ESC_CAP];

	if (!w->headed) {
		w->headed = 1;
		if (console_reply_addf(w->r, TEXT_MAX,
				       "owner\tfile\tsize\tverified\n") != 0) {
			w->full = 1;
			return 1;
		}
	}
	bw_escape_display(f->owner, owner, sizeof(owner));
	bw_escape_display(f->name, name, sizeof(name));
	if (console_reply_addf(w->r, TEXT_MAX - LEFT_OUT_MAX,
			       "%s\t%s\t%llu\t%s\n", owner, name, ULL(f->size),
			       f->verified ? "yes" : "no") != 0) {
		w->full = 1;
		return 1;
	}
	w->shown++;
	return 0;
}

/* Ends a list: a line with how many entries did not fit, if any. */
static int
list_end(struct list_walk *w, uint64_t total, const char *what)
{
	if (total == 0)
		return console_reply_addf(w->r, TEXT_MAX, "no %s\n", what);
	if (!w->full || total <= w->shown)
		return 0;
	return console_reply_addf(
		w->r, TEXT_MAX,
		"%llu more %s left out (a reply holds at most %u "
		"bytes)\n",
		ULL(total - w->shown), what, TEXT_MAX);
}

static int
do_usrs(struct bw_conn *c, struct reply *r)
{
	const struct bw_host *h =
		&((const struct bw_console *)bw_conn_inst(c))->view;
	const struct bw_registry *reg = h->reg;
	struct list_walk w = {r, h, 0, 0, 0};

	if (reg->clients_n > 0 &&
	    console_reply_addf(r, TEXT_MAX,
			       "name\tid\tlast seen\tqueued\tqueued "
			       "bytes\tplain\n") != 0)
		return BW_ETOOBIG;
	(void)bw_registry_each_client(reg, add_client, &w);
	return list_end(&w, reg->clients_n, "clients");
}

/* The store-wide count of files, when the store is shared (the daemon's
 * cluster_files summary figure). */
struct store_files {
	int known;
	uint64_t n;
};

static void
find_store_files(void *arg, const char *key, const char *label, uint64_t v)
{
	struct store_files *sf = arg;

	(void)label;
	if (strcmp(key, "cluster_files") == 0) {
		sf->known = 1;
		sf->n = v;
	}
}

static int
do_fils(struct bw_conn *c, struct reply *r)
{
	const struct bw_host *h =
		&((const struct bw_console *)bw_conn_inst(c))->view;
	struct list_walk w = {r, h, 0, 0, 0};
	struct store_files sf = {0, 0};
	uint64_t n = 0;
	int rc;

	if (h->each_file != NULL)
		n = h->each_file(h->stats_arg, add_file, &w);
	if (h->summary != NULL)
		h->summary(h->stats_arg, find_store_files, &sf);
	/* a node lists the files it has loaded or served: on a shared store
	 * whose last count (every 5 s) holds more, an empty or short list
	 * must not read as the store's */
	if (!sf.known || sf.n <= n)
		return list_end(&w, n, "files");
	if ((rc = list_end(&w, n, "files on this node")) != 0)
		return rc;
	return console_reply_addf(r, TEXT_MAX,
				  "(node %s lists the files it has loaded or "
				  "served; the shared store held %llu at its "
				  "last count)\n",
				  h->node != NULL ? h->node : "?", ULL(sf.n));
}

static int
do_exit(struct bw_conn *c, struct reply *r)
{
	(void)c;
	return console_reply_addf(r, TEXT_MAX, "bye");
}

/* What each request does: an operator at nc or telnet has nothing else
 * to read (beyond the spec, as QUIT beside EXIT). */
static int
do_help(struct bw_conn *c, struct reply *r)
{
	(void)c;
	return console_reply_addf(
		r, TEXT_MAX,
		"TIME  the server's date and time (ISO 8601)\n"
		"NAME  the server's name and version\n"
		"RAND  a random number from 1 to 10\n"
		"STAT  uptime, connections, clients, files, bytes, uploads, "
		"rooms\n"
		"USRS  the registered clients (name, id, last seen, queued)\n"
		"FILS  the stored files (owner, name, size, verified)\n"
		"DEVS  the clients seen bending a protocol, and how\n"
		"HELP  this list\n"
		"EXIT  bye, and the connection closes (QUIT too)\n"
		"Requests are 4 upper-case bytes; each reply is a 4-digit "
		"length and the text.");
}

static const struct {
	char req[REQ_LEN + 1];
	int (*fn)(struct bw_conn *c, struct reply *r);
} requests[] = {
	{"TIME", do_time},	   {"NAME", do_name}, {"RAND", do_rand},
	{"STAT", do_stat},	   {"USRS", do_usrs}, {"FILS", do_fils},
	{"EXIT", do_exit},	   {"QUIT", do_exit}, {"HELP", do_help},
	{"DEVS", console_do_devs},
};

#define REQUESTS_N (sizeof(requests) / sizeof(requests[0]))

static int
do_unknown(const uint8_t *p, struct reply *r)
{
	char shown[4 * REQ_LEN + 1], upper[REQ_LEN + 1];
	size_t i, o = 0, k;
	int lower = 0;

	for (i = 0; i < REQ_LEN; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\')
			shown[o++] = (char)p[i];
		else
			o += (size_t)snprintf(shown + o, sizeof(shown) - o,
					      "\\x%02x", p[i]);
		upper[i] =
			(char)(p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i]);
		lower |= p[i] >= 'a' && p[i] <= 'z';
	}
	shown[o] = '\0';
	upper[REQ_LEN] = '\0';
	for (k = 0; lower && k < REQUESTS_N; k++) {
		if (memcmp(upper, requests[k].req, REQ_LEN) == 0)
			return console_reply_addf(
				r, TEXT_MAX,
				"ERR unknown request '%s'; requests "
				"are upper case: try '%s'",
				shown, requests[k].req);
	}
	return console_reply_addf(
		r, TEXT_MAX,
		"ERR unknown request '%s'; try TIME NAME RAND STAT "
		"USRS FILS EXIT, or HELP",
		shown);
}

int
console_answer(struct bw_conn *c, const uint8_t req[REQ_LEN], struct reply *r)
{
	size_t k;

	r->len = 0;
	r->buf[LEN_DIGITS] = '\0';
	for (k = 0; k < REQUESTS_N; k++) {
		if (memcmp(req, requests[k].req, REQ_LEN) == 0)
			break;
	}
	if (k == REQUESTS_N) {
		bw_debug("c%llu console: unknown request", ULL(c->id));
		(void)do_unknown(req, r);
		return 0;
	}
	bw_debug("c%llu console %s", ULL(c->id), requests[k].req);
	if (requests[k].fn(c, r) != 0) {
		/* only a list overruns, and it has room kept */
		r->len = 0;
		(void)console_reply_addf(r, TEXT_MAX, "ERR reply too long");
	}
	return requests[k].fn == do_exit;
}
