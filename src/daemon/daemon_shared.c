/* bulwarkd on a store several daemons share (PostgreSQL behind a load
 * balancer): a client registered, or a key issued, through another node is
 * known here only from its row, and so are the vault's files another node
 * stored or verified. Before each request on the shared port, the rows of
 * the clients it names (the requester, a 602's or 603's recipient) are read
 * again, a 601 first reads the clients registered since the last one, and
 * the service's own rows the request acts on (bw_module.refresh) come
 * next. On the embedded database nothing is read: one daemon owns it.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "daemon/daemon.h"
#include "proto/msg_wire.h"

struct prep {
	struct bw_conn *c;
	unsigned left;
	/* then the service's own rows (bw_module.refresh) */
	const struct bw_daemon_svc *svc;
	uint8_t id[BW_ID_LEN], other[BW_ID_LEN];
	int has_other;
	uint16_t code;
};

static void
prep_end(void *arg)
{
	struct prep *p = arg;

	bw_frame_prepared(p->c); /* the service sees the store's answer,
				  * or its refusal, as RAM holds it */
	bw_conn_release(p->c);
	free(p);
}

static void
prep_step(struct prep *p)
{
	if (--p->left > 0)
		return;
	if (p->svc != NULL && !bw_conn_dead(p->c) &&
	    p->svc->mod->refresh(p->svc->inst, p->id,
				 p->has_other ? p->other : NULL, p->code,
				 prep_end, p))
		return;
	prep_end(p);
}

static void
prep_one(void *arg, int rc, struct bw_client *cl)
{
	struct prep *p = arg;

	(void)cl;
	if (rc != 0)
		bw_debug("c%llu: a client's row could not be read again: %s",
			 (unsigned long long)p->c->id, bw_strerror(rc));
	prep_step(p);
}

static void
prep_listed(void *arg)
{
	prep_step(arg);
}

static int
is_zero(const uint8_t id[BW_ID_LEN])
{
	static const uint8_t zero[BW_ID_LEN];

	return memcmp(id, zero, BW_ID_LEN) == 0;
}

/* A 603 and a 604 use little of a client's row: that a recipient exists
 * (a client's id and name never change and it is never removed), and of
 * the requester on a plain listener whether its owner chose TLS only
 * (never undone, so a row read within ROW_FRESH_MS is at most that late).
 * Only what RAM does not know, or the requester's row past that age, is
 * read. Every other request reads its clients' rows again (keys and their
 * state, public keys). Without this, every message cost two reads of the
 * shared store before its insert: 5,464 durable 603s a second on
 * PostgreSQL against 31,426 on SQLite (bench/storebench.py). */
#define ROW_FRESH_MS 2000u

static int
known_is_enough(const struct bw_daemon *d, const struct bw_conn *c,
		const struct bw_frame_req *r, const uint8_t id[BW_ID_LEN])
{
	uint16_t code = r->hdr.code;
	const struct bw_client *cl;

	if ((code != BW_MSG_REQ_SEND && code != BW_MSG_REQ_PULL) ||
	    (cl = bw_registry_by_id(&d->reg, id)) == NULL)
		return 0;
	if (id != r->hdr.client_id)
		return 1; /* a recipient: only that it exists */
	/* the requester: its key is judged on a TLS listener, and whether
	 * its owner chose TLS only on a plain one; a row read within
	 * ROW_FRESH_MS is taken as the store's */
	return !bw_conn_tls(c) && bw_now_ms() - cl->read_ms < ROW_FRESH_MS;
}

static int
prepare(void *arg, struct bw_conn *c, const struct bw_frame_req *r,
	const uint8_t *head)
{
	struct bw_daemon *d = arg;
	const uint8_t *ids[2];
	unsigned n = 0, i;
	struct prep *p;
	int list;

	if (!bw_registry_others_write(&d->reg))
		return 0;
	if (!is_zero(r->hdr.client_id))
		ids[n++] = r->hdr.client_id;
	/* the recipient a public key or a message is asked for */
	if ((r->hdr.code == BW_MSG_REQ_PUBKEY ||
	     r->hdr.code == BW_MSG_REQ_SEND) &&
	    r->route->head >= BW_ID_LEN && !is_zero(head))
		ids[n++] = head;
	list = r->hdr.code == BW_MSG_REQ_LIST; /* others' clients too */
	if ((n == 0 && !list) || (p = calloc(1, sizeof(*p))) == NULL)
		return 0;
	for (i = 0; i < d->svc_n && n > 0 && ids[0] == r->hdr.client_id; i++)
		if (d->svc[i].mod->proto == r->proto &&
		    d->svc[i].mod->refresh != NULL) {
			p->svc = &d->svc[i];
			memcpy(p->id, r->hdr.client_id, BW_ID_LEN);
			p->code = r->hdr.code;
			if (n > 1) {
				memcpy(p->other, ids[1], BW_ID_LEN);
				p->has_other = 1;
			}
		}
	p->c = c;
	p->left = n + (unsigned)list + 1; /* one more, dropped below: none
					   * ends in here */
	bw_conn_hold(c);
	for (i = 0; i < n; i++)
		if (known_is_enough(d, c, r, ids[i]) ||
		    bw_registry_refresh(&d->reg, ids[i], prep_one, p) != 0)
			p->left--;
	if (list && bw_registry_catch_up(&d->reg, prep_listed, p) != 0)
		p->left--;
	if (--p->left > 0)
		return 1;
	/* no row was asked for: the service's own, if any, still are */
	if (p->svc != NULL &&
	    p->svc->mod->refresh(p->svc->inst, p->id,
				 p->has_other ? p->other : NULL, p->code,
				 prep_end, p))
		return 1;
	bw_conn_release(c);
	free(p);
	return 0;
}

/* --- the cluster's figures ----------------------------------------------- */

#define TOTALS_EVERY_MS 5000u

static void totals_ask(void *arg);

static void
totals_got(struct bw_meta_req *req)
{
	struct bw_daemon *d = req->arg;

	if (req->rc == 0) {
		d->cluster.clients = req->u.totals.clients;
		d->cluster.files = req->u.totals.files;
		d->cluster.messages = req->u.totals.messages;
		d->cluster.message_bytes = req->u.totals.message_bytes;
		d->cluster.known = 1;
	}
	if (bw_loop_timer_start(d->eng.loop, &d->cluster.t, TOTALS_EVERY_MS,
				totals_ask, d) != 0)
		bw_warn("the cluster's figures will not be read again");
}

static void
totals_ask(void *arg)
{
	struct bw_daemon *d = arg;

	bw_meta_req_init(&d->cluster.req, BW_META_TOTALS, 0, totals_got, d);
	bw_meta_submit(d->meta, &d->cluster.req);
}

void
bw_daemon_cluster_summary(const struct bw_daemon *d, bw_stat_emit emit,
			  void *emit_arg)
{
	if (!d->cluster.known)
		return;
	emit(emit_arg, "cluster_clients",
	     "Registered clients, every node's (the shared database, at most "
	     "5 s old).",
	     d->cluster.clients);
	emit(emit_arg, "cluster_files", "Stored files, every node's.",
	     d->cluster.files);
	emit(emit_arg, "cluster_messages_queued",
	     "Messages waiting for their recipients, every node's.",
	     d->cluster.messages);
	emit(emit_arg, "cluster_message_bytes_queued",
	     "Their content bytes, every node's.", d->cluster.message_bytes);
}

void
bw_daemon_shared_prepare(struct bw_daemon *d)
{
	bw_frame_set_prepare(d->frame, prepare, d);
	if (bw_registry_others_write(&d->reg))
		totals_ask(d);
}

/* The bus (--bus): its password from --bus-password-file, else
 * REDISCLI_AUTH, else the URL's. Connecting goes on in the background. */
int
bw_daemon_open_bus(struct bw_daemon *d)
{
	struct bw_bus_cfg bc = {.url = d->cfg.bus, .password = NULL};
	char why[256], *text = NULL;
	size_t len = 0;
	int rc;

	if (d->cfg.bus_password_file[0] != '\0') {
		if ((rc = bw_read_small_file(d->cfg.bus_password_file, 4096,
					     &text, &len)) != 0) {
			bw_error("bus-password-file %s: %s",
				 d->cfg.bus_password_file, bw_strerror(rc));
			return BW_ECONFIG;
		}
		text[strcspn(text, "\r\n")] = '\0';
		bc.password = text;
	} else if (getenv("REDISCLI_AUTH") != NULL) {
		bc.password = getenv("REDISCLI_AUTH");
	}
	rc = bw_bus_open(&d->bus, &bc, d->eng.loop, why, sizeof(why));
	if (text != NULL) {
		bw_wipe(text, len);
		free(text);
	}
	if (rc != 0)
		bw_error("%s", rc == BW_ECONFIG ? why : bw_strerror(rc));
	return rc;
}
