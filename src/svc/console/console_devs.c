/* The console's DEVS: the clients this node has seen bending a protocol
 * (the engine's deviation table), most recently seen first, each with the
 * kinds and how many connections showed each, and the totals per kind
 * since start. A client named by id shows its registered name too.
 */
#include <stdio.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "svc/console/console_int.h"

/* The entries' indexes, most recently seen first. */
static unsigned
by_recency(const struct bw_devtab *t, unsigned idx[BW_DEV_TABLE])
{
	unsigned i, j;

	for (i = 0; i < t->used; i++) {
		for (j = i; j > 0 && t->e[idx[j - 1]].last_s < t->e[i].last_s;
		     j--)
			idx[j] = idx[j - 1];
		idx[j] = i;
	}
	return t->used;
}

static void
kinds(const uint64_t n[BW_DEV_KINDS], char *out, size_t cap)
{
	size_t o = 0;
	unsigned k;

	out[0] = '\0';
	for (k = 0; k < BW_DEV_KINDS && o < cap; k++) {
		if (n[k] > 0)
			o += (size_t)snprintf(out + o, cap - o, "%s%s=%llu",
					      o > 0 ? " " : "",
					      bw_dev_kind_name(k), ULL(n[k]));
	}
}

static void
name_of(const struct bw_host *h, const char *who, char *out, size_t cap)
{
	uint8_t id[BW_ID_LEN];
	const struct bw_client *cl;

	snprintf(out, cap, "-");
	if (strncmp(who, "id:", 3) != 0 || h->reg == NULL ||
	    bw_hex_decode(who + 3, strlen(who + 3), id, BW_ID_LEN) != 0 ||
	    (cl = bw_registry_by_id(h->reg, id)) == NULL)
		return;
	bw_escape_display(cl->name, out, cap);
}

int
console_do_devs(struct bw_conn *c, struct reply *r)
{
	const struct bw_host *h =
		&((const struct bw_console *)bw_conn_inst(c))->view;
	const struct bw_devtab *t = bw_engine_devs(c->eng);
	unsigned idx[BW_DEV_TABLE], n = by_recency(t, idx), i;
	char k[256], name[BW_ESC_CAP], seen[32];

	kinds(t->total, k, sizeof(k));
	if (console_reply_addf(r, TEXT_MAX, "since start: %s\n",
			       k[0] != '\0' ? k : "none") != 0)
		return BW_ETOOBIG;
	if (n > 0 && console_reply_addf(r, TEXT_MAX,
					"client\tname\tkinds (connections)\t"
					"last seen\n") != 0)
		return BW_ETOOBIG;
	for (i = 0; i < n; i++) {
		const struct bw_dev_entry *e = &t->e[idx[i]];

		kinds(e->n, k, sizeof(k));
		name_of(h, e->who, name, sizeof(name));
		console_iso_time(e->last_s, seen);
		if (console_reply_addf(r, TEXT_MAX - LEFT_OUT_MAX,
				       "%s\t%s\t%s\t%s\n", e->who, name, k,
				       seen) != 0)
			return console_reply_addf(
				r, TEXT_MAX,
				"%u more clients left out (a reply holds at "
				"most %u bytes)\n",
				n - i, TEXT_MAX);
	}
	return 0;
}
