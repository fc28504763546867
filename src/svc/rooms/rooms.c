/* The rooms service on the engine: a connection's lines (ended by a
 * newline or by a pause), the rate limit that pauses reads from a member,
 * the instance and its figures. What a line means is menu.c's (before a
 * room) and room.c's (in one).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "proto/line.h"
#include "proto/rooms_text.h"
#include "proto/text.h"
#include "svc/rooms/rooms_int.h"

static const char *const prompts[] = {
	[R_MENU] = BW_ROOMS_MENU,
	[R_C_NAME] = BW_ROOMS_ASK_NAME "\n",
	[R_C_PASS] = BW_ROOMS_ASK_ROOM_PASS "\n",
	[R_J_NAME] = BW_ROOMS_ASK_NAME "\n",
	[R_J_ID] = BW_ROOMS_ASK_ID "\n",
	[R_J_PASS] = BW_ROOMS_ASK_PASS "\n",
	[R_J_RENAME] = BW_ROOMS_ASK_NAME "\n",
};

void
bw_rooms_cfg_defaults(struct bw_rooms_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	/* input: lines waiting while a member is throttled; output: a
	 * member's queue; a member may be silent for a day; a menu step
	 * must be answered within a minute */
	cfg->limits = (struct bw_conn_limits){64u * 1024u, 256u * 1024u,
					      24u * 3600u * 1000u, 60000};
	cfg->line_max = BW_LINE_MAX;
	cfg->pause_ms = 150;
	cfg->max_members = 1000;
	cfg->max_rooms = 10000;
	cfg->rate = 20;
	cfg->burst = 40;
	cfg->max_attempts = 5;
	cfg->max_ghosts = 10000;
	/* 16 MiB and about 60 ms a password: see docs/rooms.md */
	cfg->kdf = (struct bw_scrypt_cost){1u << 14, 8, 1};
}

/* --- saying things ------------------------------------------------------ */

int
rc_send(struct rconn *rc, const void *p, size_t n)
{
	return rc->c != NULL ? bw_conn_send(rc->c, p, n) : BW_ECLOSED;
}

int
rc_say(struct rconn *rc, const char *text)
{
	return rc_send(rc, text, strlen(text));
}

int
rc_sayf(struct rconn *rc, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return BW_EPROTO;
	return rc_send(rc, buf,
		       (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Each step of the menu has its deadline; saying something invalid is
 * asked again within the same one (a peer cannot stay at the menu by
 * answering nonsense), and the whole menu ends after MENU_STEPS steps'
 * time whatever happens. Time the server keeps the peer waiting (a hash,
 * a delay) moves both deadlines on, up to another MENU_STEPS steps' time
 * in all. A deadline that has passed ends the connection here, whatever
 * the engine's tick has seen yet: answering faster than the tick cannot
 * keep a connection at the menu. */
void
rc_prompt(struct rconn *rc, enum rstate st)
{
	uint64_t now = bw_now_ms(), step = rc->rs->cfg.limits.request_ms;
	uint64_t waited, credit = (uint64_t)MENU_STEPS * step;

	if (rc->st == R_GONE)
		return; /* told goodbye while a hash or a delay ran */
	if (rc->waiting_since_ms != 0) {
		waited = now - rc->waiting_since_ms;
		if (waited > credit - rc->waited_ms)
			waited = credit - rc->waited_ms;
		rc->waited_ms += waited;
		rc->step_end_ms += waited;
		rc->menu_end_ms += waited;
		rc->waiting_since_ms = 0;
	}
	if (st != rc->step) {
		rc->step = st;
		rc->step_end_ms = now + step;
		if (rc->step_end_ms > rc->menu_end_ms)
			rc->step_end_ms = rc->menu_end_ms;
	}
	if (now >= rc->step_end_ms) {
		bw_info("c%llu rooms: the menu's time is up", ULL(rc->c->id));
		rc_bye(rc, "Time is up, goodbye.\n");
		return;
	}
	rc->st = st;
	(void)rc_say(rc, prompts[st]);
	bw_conn_request_deadline(rc->c, (unsigned)(rc->step_end_ms - now));
}

void
rc_wait(struct rconn *rc)
{
	bw_conn_request_deadline(rc->c, 0);
	if (rc->waiting_since_ms == 0)
		rc->waiting_since_ms = bw_now_ms();
}

void
rc_bye(struct rconn *rc, const char *text)
{
	if (rc->st == R_GONE)
		return;
	if (text != NULL)
		(void)rc_say(rc, text);
	rc->st = R_GONE;
	if (rc->c == NULL)
		return; /* a ghost: take_lines frees it */
	bw_conn_request_deadline(rc->c, 0);
	bw_conn_finish(rc->c);
}

/* --- lines -------------------------------------------------------------- */

/* Whether lines are being taken from rc now. */
static int
reading(const struct rconn *rc)
{
	return rc->st != R_HASH && rc->st != R_DELAY && rc->st != R_GONE &&
	       rc->st != R_BUS && !rc->throttled;
}

/* Where rc's lines wait: its connection's input, or a ghost's copy. */
static struct bw_buf *
input(struct rconn *rc)
{
	return rc->c != NULL ? &rc->c->in : &rc->ghost_in;
}

static void on_rate(void *arg);

/* A member's line costs a token; without one, reads pause until the
 * bucket has one again (the lines wait in the buffer, none is dropped). */
static int
take_token(struct rconn *rc)
{
	const struct bw_rooms_cfg *cfg = &rc->rs->cfg;
	uint64_t now = bw_now_ms(), cap = (uint64_t)cfg->burst * RATE_SCALE_MS;
	uint64_t wait;

	if (cfg->rate == 0)
		return 1;
	rc->tokens += (now - rc->tokens_ms) * cfg->rate;
	if (rc->tokens > cap)
		rc->tokens = cap;
	rc->tokens_ms = now;
	if (rc->tokens >= RATE_SCALE_MS) {
		rc->tokens -= RATE_SCALE_MS;
		return 1;
	}
	wait = (RATE_SCALE_MS - rc->tokens + cfg->rate - 1) / cfg->rate;
	if (bw_loop_timer_start(rc->rs->eng->loop, &rc->rate_t, (unsigned)wait,
				on_rate, rc) != 0)
		return 1; /* no timer: let it through rather than stall */
	rc->throttled = 1;
	if (rc->c != NULL)
		bw_conn_pause(rc->c, 1);
	return 0;
}

static void on_pause(void *arg);

/* Takes every complete line rc has sent (flush: a partial one too), as
 * long as its state reads lines. A ghost (a member gone with lines held
 * back) says them at its rate, then leaves. */
static void
take_lines(struct rconn *rc, int flush)
{
	struct bw_rooms *rs = rc->rs;
	struct bw_conn *c = rc->c;
	struct bw_buf *in = input(rc);
	struct bw_loop *loop = rs->eng->loop;
	const uint8_t *line;
	size_t n;
	long took;

	while (reading(rc) && (c == NULL || !bw_conn_broken(c))) {
		took = bw_line_next(bw_buf_head(in), in->len, rs->cfg.line_max,
				    flush || c == NULL, &line, &n);
		if (took == 0)
			break;
		if (took < 0 && c == NULL) {
			/* a ghost has no one to say goodbye to: what it held
			 * goes, and it leaves below */
			rs->too_long++;
			bw_buf_consume_wipe(in, in->len);
			break;
		}
		if (took < 0) {
			rs->too_long++;
			rc_sayf(rc, "That line is over %u bytes, goodbye.\n",
				rs->cfg.line_max);
			rc_bye(rc, NULL);
			return;
		}
		if ((rc->st == R_ROOM || rc->st == R_GHOST) && !take_token(rc))
			break;
		/* the line leaves the buffer before anything is said; what
		 * it held is wiped there (a password at the menu) */
		memcpy(rs->line, line, n);
		rs->line[n] = '\0';
		if (c != NULL)
			rc_note_deviations(rc, line, n, (size_t)took, flush);
		bw_buf_consume_wipe(in, (size_t)took);
		if (rc->st == R_ROOM || rc->st == R_GHOST)
			room_line(rc, rs->line, n);
		else
			menu_line(rc, rs->line, n);
		bw_wipe(rs->line, n);
		if (rc->st == R_GONE && c == NULL) {
			ghost_free(rc); /* its Exit, or its room is gone */
			return;
		}
	}
	if (c == NULL) {
		if (in->len == 0 || rc->room == NULL) {
			room_leave(rc, " has removed from the group\n");
			ghost_free(rc);
		}
		return; /* else its rate timer brings it back */
	}
	/* a partial line ends after a pause measured from its last byte;
	 * while reads are paused no pause can end it */
	if (in->len == 0 || flush || !reading(rc))
		bw_loop_timer_stop(loop, &rc->pause_t);
	else if (bw_loop_timer_start(loop, &rc->pause_t, rs->cfg.pause_ms,
				     on_pause, rc) != 0)
		bw_conn_close_later(c, "out of memory for a timer");
}

static void
on_pause(void *arg)
{
	take_lines(arg, 1);
}

static void
on_rate(void *arg)
{
	struct rconn *rc = arg;

	rc->throttled = 0;
	if (rc->c == NULL) {
		take_lines(rc, 1);
		return;
	}
	rc_resume(rc);
}

void
rc_resume(struct rconn *rc)
{
	struct bw_conn *c = rc->c;

	if (!reading(rc) || bw_conn_dead(c))
		return;
	bw_conn_pause(c, 0);
	take_lines(rc, bw_conn_eof(c));
}

/* The member's connection is going with lines it sent still held back by
 * the rate limit: it stays in the room as a ghost that says them at its
 * rate (a script's last lines are not lost, and a member that resets with
 * 64 KiB held cannot make the room relay them all at once), then leaves. */
static int
ghost_start(struct rconn *rc)
{
	struct bw_conn *c = rc->c;

	struct bw_rooms *rs = rc->rs;
	struct bw_addr *a = c->addr;
	unsigned share = bw_conn_addr_share(c);

	/* it leaves now, its held lines unsaid: the ghosts are as many as
	 * connections, or its address has as many as it may have
	 * connections (one host resetting members in a loop would else
	 * take every ghost's place, and the last lines of everyone else) */
	if (rs->ghosts >= rs->cfg.max_ghosts)
		return BW_EBUSY;
	if (a != NULL && share > 0 && a->held[rs->ghost_slot] >= share)
		return BW_ETOOBIG;
	bw_buf_init(&rc->ghost_in, c->in.len);
	if (bw_buf_append(&rc->ghost_in, bw_buf_head(&c->in), c->in.len) != 0)
		return BW_ENOMEM;
	rc->c = NULL;
	rc->st = R_GHOST;
	rs->ghosts++;
	if ((rc->ghost_addr = a) != NULL)
		a->held[rs->ghost_slot]++; /* keeps a in the table */
	c->state = NULL;
	take_lines(rc, 1);
	return 0;
}

void
ghost_free(struct rconn *rc)
{
	struct bw_loop *loop = rc->rs->eng->loop;

	bw_loop_timer_stop(loop, &rc->rate_t);
	bw_loop_timer_stop(loop, &rc->pause_t);
	bw_buf_fini_wipe(&rc->ghost_in);
	rc->rs->ghosts--;
	if (rc->ghost_addr != NULL)
		rc->ghost_addr->held[rc->rs->ghost_slot]--;
	free(rc->key);
	free(rc);
}

/* --- the service -------------------------------------------------------- */

static int
rooms_open(struct bw_conn *c)
{
	struct bw_rooms *rs = bw_conn_inst(c);
	struct rconn *rc;

	if ((rc = calloc(1, sizeof(*rc))) == NULL)
		return BW_ENOMEM;
	rc->rs = rs;
	rc->c = c;
	rc->conn_id = c->id;
	c->state = rc;
	bw_buf_secure(&c->in);	       /* passwords are typed into it */
	bw_conn_output_is_activity(c); /* reading the room is activity */
	/* a whole line and its CR LF; more waits in the socket */
	c->want = rs->cfg.line_max + 2u;
	rs->at_menu++;
	rc->at_menu = 1;
	rc->step = R_GONE; /* none yet */
	rc->menu_end_ms =
		bw_now_ms() + (uint64_t)MENU_STEPS * rs->cfg.limits.request_ms;
	rc_prompt(rc, R_MENU);
	return 0;
}

static int
rooms_input(struct bw_conn *c)
{
	struct rconn *rc = RC(c);

	if (rc == NULL)
		return 0; /* its member is a ghost now */
	take_lines(rc, bw_conn_eof(c));
	/* the member has closed its side with lines still held back: they
	 * are said at its rate by a ghost; the connection winds down now */
	if (bw_conn_eof(c) && !bw_conn_dead(c) && rc->st == R_ROOM &&
	    rc->room != NULL && c->in.len > 0 && !rc->overflow &&
	    !bw_conn_overflowed(c) && ghost_start(rc) == 0)
		bw_conn_finish(c);
	return 0;
}

static uint64_t ghost_warned_ms; /* the last warning of lines not said */

static void
rooms_close(struct bw_conn *c)
{
	struct rconn *rc = RC(c);
	struct bw_loop *loop = c->eng->loop;

	if (rc == NULL)
		return;
	bw_loop_timer_stop(loop, &rc->pause_t);
	bw_loop_timer_stop(loop, &rc->delay_t);
	pass_detach(rc);
	if (rc->overflow || bw_conn_overflowed(c)) {
		rc->overflow = 1;
		rc->rs->cut_off++;
	}
	if (rc->room != NULL && rc->st == R_ROOM && c->in.len > 0 &&
	    !rc->overflow) {
		int grc = ghost_start(rc);

		if (grc == 0)
			return; /* the ghost leaves once its lines are said */
		/* as many ghosts as connections already, or as its address
		 * may have (a flood of members that reset): this one's lines
		 * are not said; the operator is told, there is no one else
		 * to tell */
		rc->rs->ghost_dropped++;
		if (bw_now_ms() - ghost_warned_ms >= 5000) {
			ghost_warned_ms = bw_now_ms();
			if (grc == BW_ETOOBIG)
				bw_warn("rooms: a member from %s left with "
					"lines held back: not said, its "
					"address has its share of members "
					"gone saying theirs "
					"(--rooms-max-conns-per-addr)",
					c->addr != NULL ? c->addr->addr
							: c->peer);
			else
				bw_warn("rooms: a member left with lines held "
					"back: not said, %u members gone are "
					"saying theirs (--rooms-max-conns)",
					rc->rs->cfg.max_ghosts);
		}
	}
	bw_loop_timer_stop(loop, &rc->rate_t);
	if (rc->room != NULL) {
		room_leave(rc, rc->overflow ? " was disconnected: not reading\n"
					    : " has removed from the group\n");
	}
	if (rc->at_menu)
		rc->rs->at_menu--;
	free(rc->key);
	bw_wipe(rc, sizeof(*rc));
	free(rc);
	c->state = NULL;
}

static int
rooms_busy(const struct bw_conn *c)
{
	(void)c;
	return 0; /* a chat can stop at any time; on_stop says goodbye */
}

static void
rooms_stop(struct bw_conn *c)
{
	struct rconn *rc = RC(c);

	if (rc == NULL)
		return;
	rc->rs->stopping = 1;
	rc_bye(rc, "The server is shutting down, goodbye.\n");
}

static const struct bw_service rooms_service = {
	.name = "rooms",
	.on_open = rooms_open,
	.on_input = rooms_input,
	.on_close = rooms_close,
	.busy = rooms_busy,
	.on_stop = rooms_stop,
};

/* --- the instance ------------------------------------------------------- */

static void rooms_fini(void *inst);

static int
rooms_init(const struct bw_host *h, const void *cfg, void **out)
{
	struct bw_rooms *rs;
	int rc;

	*out = NULL;
	if ((rs = calloc(1, sizeof(*rs))) == NULL)
		return BW_ENOMEM;
	rs->cfg = *(const struct bw_rooms_cfg *)cfg;
	rs->eng = h->eng;
	rs->next_id = 1;
	rs->bus = h->bus;
	rs->node = h->node != NULL ? h->node : "node";
	/* every worker, but no more than HASH_MAX: each hash holds 16 MiB,
	 * and a daemon on S3 has 16 workers for the store's round trips */
	rs->hash_max = h->eng->cfg.workers == 0		? 1
		       : h->eng->cfg.workers > HASH_MAX ? HASH_MAX
							: h->eng->cfg.workers;
	if ((rs->addr_slot = bw_addrtab_slot(&h->eng->addrs)) < 0 ||
	    (rs->ghost_slot = bw_addrtab_slot(&h->eng->addrs)) < 0) {
		free(rs);
		return BW_ETOOBIG;
	}
	if (rs->cfg.line_max == 0 || rs->cfg.line_max > 1024u * 1024u ||
	    rs->cfg.limits.in_max < (size_t)rs->cfg.line_max + 2) {
		free(rs);
		return BW_ECONFIG;
	}
	if ((rs->line = malloc(rs->cfg.line_max + 1u)) == NULL ||
	    (rs->out = malloc(rs->out_cap = NAME_CAP + 4 +
					    BW_TEXT_CAP(rs->cfg.line_max))) ==
		    NULL ||
	    (rc = bw_hash_init(&rs->map)) != 0 ||
	    (rc = bw_hash_init(&rs->hash_addrs)) != 0 ||
	    (rs->bus != NULL && rbus_start(rs) != 0)) {
		rooms_fini(rs);
		return BW_ENOMEM;
	}
	*out = rs;
	return 0;
}

static void
rooms_fini(void *inst)
{
	struct bw_rooms *rs = inst;

	if (rs == NULL)
		return;
	rbus_stop(rs);
	rooms_free_all(rs);
	pass_fini(rs);
	free(rs->line);
	free(rs->out);
	free(rs);
}

static void
rooms_stats(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_rooms *rs = inst;

	emit(arg, "rooms", "rooms", rs->map.n);
	emit(arg, "rooms_members", "room members", rs->members_n);
	emit(arg, "rooms_at_menu", "chat connections at the menu", rs->at_menu);
	emit(arg, "rooms_hashing", "room passwords being checked", rs->hashing);
	emit(arg, "rooms_lines_total", "chat lines relayed since start",
	     rs->lines_relayed);
	emit(arg, "rooms_deliveries_total", "chat deliveries since start",
	     rs->deliveries);
	emit(arg, "rooms_wrong_attempts_total",
	     "wrong room ids and passwords since start", rs->refused);
	emit(arg, "rooms_cut_off_total", "members cut off for not reading",
	     rs->cut_off);
	if (rs->bus != NULL) {
		emit(arg, "rooms_bus_published_total",
		     "chat lines and notices published to the other nodes",
		     rs->bus_published);
		emit(arg, "rooms_bus_received_total",
		     "chat lines and notices from the bus for rooms with "
		     "members here",
		     rs->bus_received);
		emit(arg, "rooms_cluster", "rooms of the whole cluster (Redis)",
		     rs->cluster_rooms);
		emit(arg, "rooms_cluster_members",
		     "room members of the whole cluster (Redis)",
		     rs->cluster_members);
		bw_bus_stats(rs->bus, emit, arg);
	}
}

/* (A member cut off for not reading is the engine's output_overflow, and
 * bulwark_rooms_cut_off_total: not counted here a second time.) */
static void
rooms_errors(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_rooms *rs = inst;

	emit(arg, "rooms_line_too_long", "connections closed for a long line",
	     rs->too_long);
	emit(arg, "rooms_wrong_attempt", "wrong room ids and passwords",
	     rs->refused);
	emit(arg, "rooms_ghost_dropped",
	     "members gone whose held lines were dropped unsaid",
	     rs->ghost_dropped);
}

/* Limits are read as they are used: a lower cap holds from the next
 * member, room or line on; nobody already in is put out. */
static void
rooms_reload(void *inst, const void *cfg)
{
	struct bw_rooms *rs = inst;

	rs->cfg = *(const struct bw_rooms_cfg *)cfg;
}

const struct bw_module bw_rooms_module = {
	.name = "rooms",
	.init = rooms_init,
	.fini = rooms_fini,
	.reload = rooms_reload,
	.stats = rooms_stats,
	.errors = rooms_errors,
	.service = &rooms_service,
};
