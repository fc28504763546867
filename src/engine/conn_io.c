/* A connection's bytes on its socket: as they are on a plain listener, in
 * TLS 1.3 records on a TLS one. The session works on memory (bulwark/tls.h):
 * what the socket gives is fed to it, what it produces is sent from it, so
 * the engine's caps, deadlines and PROXY headers work the same on both.
 *
 * Bounds: ciphertext is read only when the session needs more to give
 * plaintext (so it holds at most one read and a partial record), and the
 * head of c->out is encrypted only once the last records have all been
 * sent (so the session holds at most one chunk's records); c->out keeps a
 * chunk until its records are sent, and so stays non-empty until the peer
 * has been sent everything, as on a plain connection.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/engine_int.h"

#define TLS_READ_CHUNK	(64u * 1024u)
#define TLS_READ_BULK	(512u * 1024u)
#define TLS_WRITE_CHUNK (64u * 1024u) /* four records */

/* The loop's one thread reads every connection: one buffer serves all. */
static uint8_t scratch[TLS_READ_CHUNK];

int
engine_tls_open(struct bw_conn *c)
{
	if (!c->lis->cfg.tls)
		return 0;
	if (c->eng->tls == NULL ||
	    (c->own->tls = bw_tls_new(c->eng->tls, 1, NULL)) == NULL)
		return BW_ENOMEM;
	return 0;
}

/* The global count's second starts again once a second has passed. */
static void
tls_window(struct bw_engine *e, uint64_t now)
{
	if (now - e->tls_window_ms >= ENGINE_TLS_WINDOW_MS) {
		e->tls_window_ms = now;
		e->tls_begun = 0;
	}
}

int
engine_tls_budget(struct bw_listener *l)
{
	struct bw_engine *e = l->eng;
	uint64_t now = bw_now_ms();

	if (e->cfg.tls_rate == 0)
		return 1;
	tls_window(e, now);
	if (e->tls_begun < e->cfg.tls_rate)
		return 1;
	/* the newcomers wait in the kernel's backlog, costing nothing */
	l->paused_until_ms = e->tls_window_ms + ENGINE_TLS_WINDOW_MS;
	(void)bw_loop_update(e->loop, &l->w, 0);
	e->tls_paused++;
	if (now - e->tls_warn_ms >= 10000u) {
		e->tls_warn_ms = now;
		bw_warn("%s: %u TLS handshakes began within a second "
			"(--tls-handshakes): accepting paused until the next",
			l->name, e->cfg.tls_rate);
	}
	return 0;
}

void
engine_tls_begun(struct bw_engine *e)
{
	tls_window(e, bw_now_ms());
	e->tls_begun++;
}

int
engine_tls_addr_ok(struct bw_listener *l, struct bw_addr *a, int counted)
{
	struct bw_engine *e = l->eng;
	uint64_t now = bw_now_ms();

	/* a newcomer refused here counts for nobody else's budget (one the
	 * balancer passed was counted at accept: its address comes later) */
	if (a == NULL ||
	    bw_addr_count_tls(a, e->cfg.tls_rate_per_addr, now) == 0) {
		if (!counted)
			engine_tls_begun(e);
		return 1;
	}
	e->tls_addr_refused++;
	e->tls_addr_dropped++;
	if (now - e->tls_addr_warn_ms >= 10000u) {
		e->tls_addr_warn_ms = now;
		bw_warn("%s: TLS handshakes from %s over %u a second "
			"(--tls-handshakes-per-addr): closed %llu newcomer(s)",
			l->name, a->addr, e->cfg.tls_rate_per_addr,
			(unsigned long long)e->tls_addr_dropped);
		e->tls_addr_dropped = 0;
	}
	return 0;
}

/* One counted at accept that begins no handshake after all (a balancer's
 * check, or one its address may not begin): its count given back, so
 * that one address behind the balancer cannot pause the port for all. */
static void
tls_uncount(struct bw_engine *e)
{
	tls_window(e, bw_now_ms());
	if (e->tls_begun > 0)
		e->tls_begun--;
}

int
engine_tls_addr_budget(struct bw_conn *c)
{
	/* one the balancer passed, judged once its header named the client
	 * (in the global count since its accept); a balancer's health check
	 * is the balancer's */
	if (c->own->tls == NULL || !(c->flags & BW_CONN_PROXIED))
		return 1;
	if (c->flags & BW_CONN_QUIET) {
		tls_uncount(c->eng);
		return 1;
	}
	if (engine_tls_addr_ok(c->lis, c->addr, 1))
		return 1;
	tls_uncount(c->eng);
	engine_conn_kill(c, NULL);
	return 0;
}

int
engine_tls_after_proxy(struct bw_conn *c)
{
	int rc;

	if (c->own->tls == NULL || c->in.len == 0)
		return 0;
	rc = bw_tls_feed(c->own->tls, bw_buf_head(&c->in), c->in.len);
	c->in_total -= c->in.len; /* counted again as plaintext */
	bw_buf_reset(&c->in);
	return rc;
}

int
engine_conn_has_output(const struct bw_conn *c)
{
	size_t len = 0;

	if (c->out.len > 0)
		return 1;
	if (c->own->tls != NULL)
		(void)bw_tls_out(c->own->tls, &len);
	return len > 0;
}

/* The key the peer proved it holds, kept for the services to judge (a
 * certificate chain is at most 32 KiB: its key fits scratch). */
static void
tls_keep_peer_key(struct bw_conn *c)
{
	size_t len = 0;

	if (bw_tls_peer_key(c->own->tls, scratch, sizeof(scratch), &len) != 0 ||
	    len == 0)
		return;
	if ((c->peer_key = malloc(len)) == NULL) {
		bw_conn_close_later(c, "out of memory");
		return;
	}
	memcpy(c->peer_key, scratch, len);
	c->peer_key_len = len;
}

/* After the session ran: records it made (the handshake's, tickets,
 * alerts) and output held back for the handshake go out this pass. */
static void
tls_ran(struct bw_conn *c)
{
	if (!(c->flags & BW_CONN_TLS_UP) && bw_tls_done(c->own->tls)) {
		c->flags |= BW_CONN_TLS_UP;
		c->eng->tls_handshakes++;
		c->eng->tls_resumed += (uint64_t)bw_tls_resumed(c->own->tls);
		tls_keep_peer_key(c);
		bw_debug("c%llu TLS: %s %s%s", (unsigned long long)c->id,
			 bw_tls_version(c->own->tls),
			 bw_tls_cipher(c->own->tls),
			 bw_tls_resumed(c->own->tls) ? " (resumed)" : "");
	}
	if (engine_conn_has_output(c) && !(c->flags & BW_CONN_BLOCKED))
		engine_queue_add(c);
}

/* A bulk read's buffer (TLS_READ_BULK) stays with its connection while the
 * peer sends in bulk, and goes with the slot once a trim has shrunk it (a
 * drained read that was not bulk, or a quiet second: engine_conn_trim): at
 * most tls_bulk_max connections hold one at a time, so that the memory TLS
 * uploads take is bounded as the vault bounds its own buffers, and one
 * address holds at most a quarter of them (so that one peer's many
 * connections cannot take every one); the others read through the scratch
 * buffer, at a system call per 64 KiB. 1 if c may read in bulk. */
static int
tls_bulk_slot(struct bw_conn *c)
{
	struct bw_engine *e = c->eng;
	unsigned share =
		e->cfg.tls_bulk_max / 4 > 0 ? e->cfg.tls_bulk_max / 4 : 1;

	if (c->own->tls_bulk)
		return 1;
	if (e->cfg.tls_bulk_max != 0 &&
	    (e->tls_bulk >= e->cfg.tls_bulk_max ||
	     (c->addr != NULL && c->addr->tls_bulk >= share))) {
		if (!c->own->tls_bulk_no)
			e->tls_bulk_refused++;
		c->own->tls_bulk_no = 1;
		return 0;
	}
	c->own->tls_bulk = 1;
	e->tls_bulk++;
	if (c->addr != NULL)
		c->addr->tls_bulk++;
	return 1;
}

void
engine_tls_bulk_trimmed(struct bw_conn *c)
{
	if (bw_tls_in_size(c->own->tls) <= TLS_SMALL_IN)
		engine_tls_bulk_release(c);
}

void
engine_tls_bulk_release(struct bw_conn *c)
{
	if (!c->own->tls_bulk)
		return;
	c->own->tls_bulk = 0;
	c->eng->tls_bulk--;
	if (c->addr != NULL)
		c->addr->tls_bulk--;
}

/* Reads ciphertext for tls_recv: into the session's own input when the peer
 * sends in bulk (one copy less, and a system call per half MiB instead of
 * per 64 KiB: the kernel's acknowledgements and wake-ups went with them;
 * docs/performance.md, issue 48's sixth round), else through the loop's
 * scratch buffer, so that an idle member's few bytes cost no buffer of
 * its own. want is about the plaintext the caller still has room for. */
static ssize_t
tls_pull(struct bw_conn *c, size_t want, int bulk)
{
	size_t held, left;
	uint8_t *p;
	ssize_t n;

	if (!bulk || !tls_bulk_slot(c)) {
		n = recv(c->own->w.fd, scratch, sizeof(scratch), 0);
		if (n > 0 && bw_tls_feed(c->own->tls, scratch, (size_t)n) != 0)
			return BW_ENOMEM;
		return n < 0 ? -errno : n;
	}
	/* the buffer holds TLS_READ_BULK in all, with the part of a record
	 * that is all a pull finds waiting (OpenSSL took every whole one) */
	held = bw_tls_in_len(c->own->tls);
	left = held < TLS_READ_BULK - TLS_READ_CHUNK ? TLS_READ_BULK - held
						     : TLS_READ_CHUNK;
	if (want < TLS_READ_CHUNK)
		want = TLS_READ_CHUNK;
	if (want > left)
		want = left;
	if ((p = bw_tls_in_room(c->own->tls, want)) == NULL) {
		engine_tls_bulk_release(c); /* no room: a little at a time */
		return tls_pull(c, want, 0);
	}
	n = recv(c->own->w.fd, p, want, 0);
	if (n > 0)
		bw_tls_in_fed(c->own->tls, (size_t)n);
	return n < 0 ? -errno : n;
}

static ssize_t
tls_recv(struct bw_conn *c, uint8_t *p, size_t room, const char **why)
{
	size_t total = 0, got;
	int drained = 0, bulk = c->own->last_read_n >= TLS_READ_CHUNK;
	ssize_t n;

	while (total < room) {
		switch (bw_tls_read(c->own->tls, p + total, room - total,
				    &got)) {
		case BW_TLS_OK:
			total += got;
			continue;
		case BW_TLS_EOF:
			tls_ran(c);
			if (total > 0)
				return (ssize_t)total;
			return 0;
		case BW_TLS_ERROR:
			if (!(c->flags & BW_CONN_TLS_UP))
				c->eng->tls_failed++;
			*why = bw_tls_why(c->own->tls);
			tls_ran(c); /* its alert */
			errno = EPROTO;
			return -1;
		case BW_TLS_WANT:
			break;
		}
		n = tls_pull(c, room - total, bulk);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN) {
			drained = 1;
			break;
		}
		if (n == BW_ENOMEM) {
			errno = ENOMEM;
			return -1;
		}
		if (n <= 0) {
			tls_ran(c);
			if (n == 0 && total == 0 &&
			    !(c->flags & BW_CONN_TLS_UP))
				c->eng->tls_failed++; /* gone mid-handshake */
			if (total > 0)
				return (ssize_t)total;
			errno = (int)-n;
			return n == 0 ? 0 : -1;
		}
		if ((size_t)n == (bulk ? TLS_READ_BULK : TLS_READ_CHUNK))
			bulk = 1; /* there is more where that came from */
	}
	tls_ran(c);
	if (drained && !bulk) {
		bw_tls_trim(c->own->tls); /* a quiet peer: no buffers kept */
		engine_tls_bulk_trimmed(c);
	}
	if (total == 0) {
		errno = EAGAIN;
		return -1;
	}
	return (ssize_t)total;
}

ssize_t
engine_conn_recv(struct bw_conn *c, void *p, size_t room, const char **why)
{
	*why = NULL;
	if (c->own->tls == NULL || (c->flags & BW_CONN_PROXY_WAIT))
		return recv(c->own->w.fd, p, room, 0);
	return tls_recv(c, p, room, why);
}

ssize_t
engine_conn_push(struct bw_conn *c)
{
	const uint8_t *rec;
	size_t len, chunk, took;
	ssize_t n;

	if (c->own->tls == NULL) {
		n = send(c->own->w.fd, bw_buf_head(&c->out), c->out.len,
			 MSG_NOSIGNAL);
		if (n < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		bw_buf_consume(&c->out, (size_t)n);
		return n;
	}
	if ((rec = bw_tls_out(c->own->tls, &len)) != NULL && len > 0) {
		n = send(c->own->w.fd, rec, len, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		bw_tls_out_consume(c->own->tls, (size_t)n);
		return n;
	}
	if (c->own->tls_enc > 0) {
		bw_buf_consume(&c->out, c->own->tls_enc);
		c->own->tls_enc = 0;
		return 0;
	}
	if (c->out.len == 0)
		return 0;
	if (!(c->flags & BW_CONN_TLS_UP))
		return -EINPROGRESS; /* the rooms' greeting waits for it */
	chunk = c->out.len < TLS_WRITE_CHUNK ? c->out.len : TLS_WRITE_CHUNK;
	if (bw_tls_write(c->own->tls, bw_buf_head(&c->out), chunk, &took) !=
		    BW_TLS_OK ||
	    took == 0)
		return -EPROTO;
	c->own->tls_enc = took;
	return 0;
}
