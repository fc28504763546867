/* The engine's listeners and lifecycle: accepting under the connection
 * cap and the descriptor limit, the tick that enforces deadlines, and the
 * graceful drain on SIGTERM/SIGINT. Connections themselves are conn.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/notify.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "engine/engine_int.h"

#define ACCEPT_BATCH	64
#define ADDRS_CAP	65536u /* source addresses tracked at once */
#define EMFILE_PAUSE_MS 100u
#define EMFILE_WARN_MS	10000u

/* Out of descriptors: the pending connection would make epoll report the
 * listener ready for ever (a busy loop). Give up the reserve descriptor to
 * accept it and close it at once, so the peer is told, and pause accepting
 * for a moment; warn once in a while with the count. */
static void
accept_exhausted(struct bw_listener *l)
{
	struct bw_engine *e = l->eng;
	uint64_t now = bw_now_ms();
	int fd;

	if (e->reserve_fd >= 0) {
		close(e->reserve_fd);
		e->reserve_fd = -1;
		if (bw_net_accept(l->fd, &fd, NULL, 0) == 0) {
			close(fd);
			l->refused++;
		}
		e->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	e->emfile_dropped++;
	e->closed_emfile++;
	l->paused_until_ms = now + EMFILE_PAUSE_MS;
	(void)bw_loop_update(e->loop, &l->w, 0);
	if (now - e->emfile_warn_ms >= EMFILE_WARN_MS) {
		e->emfile_warn_ms = now;
		bw_warn("%s: out of file descriptors (%llu open connections): "
			"refused %llu connection(s), accepting paused",
			l->name, (unsigned long long)e->conns_n,
			(unsigned long long)e->emfile_dropped);
		e->emfile_dropped = 0;
	}
}

/* Whom a full BW_EVICT_UNPROVEN listener closes for a newcomer: its oldest
 * connection that has not proven itself (a peer that connects and trickles
 * or waits holds a slot only until someone needs it), else its proven one
 * idle longest (no input for over a second); NULL if none may go. */
static struct bw_conn *
evict_victim(struct bw_listener *l)
{
	struct bw_conn *c, *unproven = NULL, *idle = NULL;
	uint64_t now = bw_now_ms();

	/* its own connections only: a full console port is not a reason to
	 * walk every chat member */
	for (c = l->conns; c != NULL; c = c->own->lnext) {
		if (c->own->refs > 0 ||
		    (c->flags & (BW_CONN_DEAD | BW_CONN_FAILED)))
			continue;
		if (!(c->flags & BW_CONN_PROVEN)) {
			/* ids grow with time: the lowest is the oldest */
			if (unproven == NULL || c->id < unproven->id)
				unproven = c;
		} else if (now - c->own->last_read_ms >= 1000 &&
			   (idle == NULL ||
			    c->own->last_read_ms < idle->own->last_read_ms)) {
			idle = c;
		}
	}
	return unproven != NULL ? unproven : idle;
}

/* A newcomer from peer may be served by l: its address's share (unless
 * it is a proxy's: its header names the client, counted then), and the
 * listener's cap (after closing a victim if the listener evicts). */
static int
admit(struct bw_listener *l, const char *peer, int proxied,
      struct bw_addr **addr)
{
	struct bw_engine *e = l->eng;
	struct bw_conn *victim;

	*addr = NULL;
	if (!proxied && engine_addr_full(l, peer, addr))
		return 0;
	if (!e->stopping && l->conns_n >= l->cfg.max_conns &&
	    l->cfg.evict == BW_EVICT_UNPROVEN &&
	    (victim = evict_victim(l)) != NULL)
		engine_conn_kill(victim, "closed to admit a new connection");
	return l->conns_n < l->cfg.max_conns;
}

static void
refused(struct bw_listener *l, int fd, const char *peer, const char *why)
{
	static uint64_t last_warn_ms;

	l->refused++;
	close(fd);
	if (bw_now_ms() - last_warn_ms > 5000) {
		last_warn_ms = bw_now_ms();
		bw_warn("%s: %s, refusing %s", l->name, why, peer);
	}
}

static void
on_accept(void *arg, unsigned events)
{
	struct bw_listener *l = arg;
	struct bw_engine *e = l->eng;
	struct bw_addr *addr;
	char peer[64], why[96], text[BW_ADDR_TEXT];
	int fd, i, rc, proxied;

	(void)events;
	for (i = 0; i < ACCEPT_BATCH; i++) {
		if (l->cfg.tls && !engine_tls_budget(l))
			return;
		rc = bw_net_accept(l->fd, &fd, peer, sizeof(peer));
		if (rc == -EAGAIN || rc == -EWOULDBLOCK)
			return;
		if (rc == -EMFILE || rc == -ENFILE) {
			accept_exhausted(l);
			return;
		}
		if (rc != 0)
			return;
		proxied = 0;
		if (l->cfg.proxy && e->cfg.proxy_from.n > 0) {
			/* the balancer's own address, not the /64 it counts
			 * under */
			bw_addr_host(peer, text);
			proxied = bw_proxy_nets_has(&e->cfg.proxy_from, text);
		}
		if (!admit(l, peer, proxied, &addr)) {
			if (l->conns_n >= l->cfg.max_conns)
				snprintf(why, sizeof(why),
					 "connection limit %u reached",
					 l->cfg.max_conns);
			else
				snprintf(why, sizeof(why),
					 "connections from one address at the "
					 "limit (%u)",
					 l->cfg.max_conns_per_addr);
			refused(l, fd, peer, why);
			continue;
		}
		/* past its handshakes a second: closed before it costs a
		 * connection's state (quietly: engine_tls_addr_ok tells). A
		 * balancer's connection names its client only in its PROXY
		 * header, judged then; the global count takes it now, so that
		 * a burst through the balancer pauses the port as one from
		 * the clients would */
		if (l->cfg.tls && !proxied && !engine_tls_addr_ok(l, addr, 0)) {
			close(fd);
			continue;
		}
		if (l->cfg.tls && proxied)
			engine_tls_begun(e);
		engine_conn_open(l, fd, peer, proxied);
	}
}

/* --- lifecycle -----------------------------------------------------------
 */

/* Closes every listener (all = 1), or those whose service expects no more
 * requests on new connections. Returns how many stay open. */
static unsigned
close_listeners(struct bw_engine *e, int all)
{
	struct bw_listener *l;
	unsigned i, open_n = 0;

	for (i = 0; i < e->lis_n; i++) {
		l = &e->lis[i];
		if (l->fd < 0)
			continue;
		if (!all && l->svc->draining != NULL &&
		    l->svc->draining(l->inst)) {
			open_n++;
			continue;
		}
		bw_loop_unwatch(e->loop, &l->w);
		close(l->fd);
		l->fd = -1;
	}
	return open_n;
}

/* Resumes listeners paused for lack of descriptors. */
static void
resume_listeners(struct bw_engine *e, uint64_t now)
{
	unsigned i;

	for (i = 0; i < e->lis_n; i++) {
		if (e->lis[i].fd < 0 || e->lis[i].paused_until_ms == 0 ||
		    now < e->lis[i].paused_until_ms)
			continue;
		e->lis[i].paused_until_ms = 0;
		(void)bw_loop_update(e->loop, &e->lis[i].w, BW_EV_READ);
	}
}

static void
drain_idle(struct bw_engine *e)
{
	struct bw_conn *c, *next;

	for (c = e->conns; c != NULL; c = next) {
		next = c->own->next;
		if (c->own->refs > 0 || (c->flags & BW_CONN_LINGER))
			continue;
		if (c->lis->svc->busy != NULL &&
		    !(c->flags & BW_CONN_PROXY_WAIT) && c->lis->svc->busy(c))
			continue;
		if (c->out.len > 0)
			bw_conn_finish(c);
		else
			engine_conn_kill(c, NULL);
	}
}

static void
on_tick(void *arg)
{
	struct bw_engine *e = arg;
	struct bw_conn *c, *next;
	uint64_t now = bw_now_ms();
	unsigned listening = 0;

	resume_listeners(e, now);
	for (c = e->conns; c != NULL; c = next) {
		next = c->own->next;
		engine_conn_lowat_lapse(c, now);
		/* output the peer does not take, whether or not a job holds
		 * the connection or it is paused (a pull streaming, a list
		 * waiting for room): its deadline moves only when the peer
		 * takes some */
		if ((c->flags & (BW_CONN_BLOCKED | BW_CONN_LINGER |
				 BW_CONN_FAILED)) == BW_CONN_BLOCKED &&
		    now > c->own->deadline_ms &&
		    !engine_conn_still_reading(c, now)) {
			e->closed_idle++;
			engine_conn_kill(c, "the peer does not read");
			continue;
		}
		if (c->own->refs > 0)
			continue;
		/* a paused connection is not read by our choice (a write of
		 * ours in flight, a rate or a delay): its peer is not idle,
		 * and what it sends waits for us in the kernel. One that is
		 * closing or failed waits for nothing of ours: its deadline
		 * holds even if it was paused when it ended. */
		if (now > c->own->deadline_ms &&
		    ((c->flags & (BW_CONN_LINGER | BW_CONN_FAILED)) ||
		     (!bw_conn_paused(c) &&
		      !engine_conn_still_reading(c, now)))) {
			if (!(c->flags & (BW_CONN_LINGER | BW_CONN_FAILED)))
				e->closed_idle++;
			engine_conn_kill(c, (c->flags &
					     (BW_CONN_LINGER | BW_CONN_FAILED))
						    ? NULL
						    : "timeout");
		} else if (c->req_deadline_ms && now > c->req_deadline_ms) {
			e->closed_deadline++;
			engine_conn_kill(c, "request deadline passed");
		} else if (c->own->over_since_ms != 0) {
			engine_conn_measure(c, now);
		} else {
			engine_conn_trim(c, now);
		}
	}
	if (!e->stopping) {
		bw_addrtab_sweep(&e->addrs, now);
		return;
	}
	if (now > e->stop_deadline_ms) {
		close_listeners(e, 1);
		for (c = e->conns; c != NULL; c = next) {
			next = c->own->next;
			engine_conn_kill(c, "shutting down");
		}
	} else {
		listening = close_listeners(e, 0);
		drain_idle(e);
	}
	if (e->conns_n == 0 && listening == 0 && bw_loop_jobs(e->loop) == 0)
		bw_loop_stop(e->loop);
}

void
bw_engine_stop(struct bw_engine *e)
{
	struct bw_conn *c;

	if (e->stopping) {
		bw_info("second signal: closing every connection now");
		e->stop_deadline_ms = 0;
		return;
	}
	bw_info("shutting down (%llu connections, %u ms grace)",
		(unsigned long long)e->conns_n, e->cfg.shutdown_grace_ms);
	(void)bw_notify("STOPPING=1\nSTATUS=shutting down");
	e->stopping = 1;
	e->stop_deadline_ms = bw_now_ms() + e->cfg.shutdown_grace_ms;
	for (c = e->conns; c != NULL; c = c->own->next) {
		if (c->lis->svc->on_stop != NULL &&
		    !(c->flags &
		      (BW_CONN_DEAD | BW_CONN_FAILED | BW_CONN_PROXY_WAIT)))
			c->lis->svc->on_stop(c);
	}
	close_listeners(e, 0);
	drain_idle(e);
}

static void
on_signal(void *arg, unsigned events)
{
	struct bw_engine *e = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(e->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	bw_info("signal %u", si.ssi_signo);
	if (si.ssi_signo == SIGHUP) {
		if (e->cfg.on_hup != NULL)
			e->cfg.on_hup(e->cfg.hup_arg);
		return;
	}
	bw_engine_stop(e);
}

int
bw_engine_listen(struct bw_engine *e, const struct bw_service *svc, void *inst,
		 const struct bw_listen_cfg *cfg, struct bw_listener **out)
{
	struct bw_listener *l = &e->lis[e->lis_n];
	int rc;

	if (e->lis_n >= BW_MAX_LISTENERS || cfg->lim.in_max == 0 ||
	    cfg->lim.out_max == 0 || cfg->max_conns == 0)
		return BW_ECONFIG;
	memset(l, 0, sizeof(*l));
	l->svc = svc;
	l->inst = inst;
	l->cfg = *cfg;
	l->name = l->cfg.name[0] != '\0' ? l->cfg.name : svc->name;
	l->eng = e;
	l->addr_slot = -1;
	if (cfg->max_conns_per_addr > 0 &&
	    (l->addr_slot = bw_addrtab_slot(&e->addrs)) < 0)
		return BW_ETOOBIG;
	if ((rc = bw_net_listen(cfg->addr, cfg->port, 1024, &l->fd,
				&l->port)) != 0) {
		bw_error("%s: cannot listen on %s:%u: %s", l->name, cfg->addr,
			 cfg->port, bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_loop_watch(e->loop, &l->w, l->fd, BW_EV_READ, on_accept,
				l)) != 0) {
		close(l->fd);
		return rc;
	}
	e->lis_n++;
	bw_info("%s listening on %s:%u", l->name, cfg->addr, l->port);
	if (out != NULL)
		*out = l;
	return 0;
}

/* Many idle connections need many descriptors: use all the hard limit
 * allows. */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		bw_warn("cannot raise the open-file limit: %s",
			strerror(errno));
}

int
bw_engine_open(struct bw_engine *e, const struct bw_engine_cfg *cfg,
	       int signals)
{
	sigset_t mask;
	int rc;

	memset(e, 0, sizeof(*e));
	e->cfg = *cfg;
	e->sigfd = -1;
	e->reserve_fd = -1;
	raise_nofile();
	if ((rc = bw_addrtab_init(&e->addrs, ADDRS_CAP)) != 0 ||
	    (rc = bw_hash_init(&e->by_id)) != 0)
		return rc;
	e->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (signals) {
		/* Block the signals before the workers start: threads
		 * inherit the mask, and one without it would take SIGTERM's
		 * default action. */
		sigemptyset(&mask);
		sigaddset(&mask, SIGTERM);
		sigaddset(&mask, SIGINT);
		sigaddset(&mask, SIGHUP);
		if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
		    (e->sigfd = signalfd(-1, &mask,
					 SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
			return -errno;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((rc = bw_loop_new(&e->loop, cfg->workers)) != 0)
		return rc;
	bw_loop_prepoll(e->loop, bw_engine_flush, e);
	if (e->sigfd >= 0 &&
	    (rc = bw_loop_watch(e->loop, &e->sig_w, e->sigfd, BW_EV_READ,
				on_signal, e)) != 0)
		return rc;
	return bw_loop_every(e->loop, ENGINE_TICK_MS, on_tick, e);
}

struct bw_conn *
bw_engine_conn(const struct bw_engine *e, uint64_t id)
{
	return bw_hash_get(&e->by_id, &id, sizeof(id));
}

int
bw_engine_run(struct bw_engine *e)
{
	int rc = bw_loop_run(e->loop);

	bw_info("stopped");
	return rc;
}

void
bw_engine_shut(struct bw_engine *e)
{
	struct bw_conn *c, *next;

	if (e->loop == NULL)
		return;
	close_listeners(e, 1);
	for (c = e->conns; c != NULL; c = next) {
		next = c->own->next;
		engine_conn_kill(c, NULL);
	}
	bw_loop_drain(e->loop); /* finishes queued jobs and deferred frees */
}

void
bw_engine_close(struct bw_engine *e)
{
	bw_engine_shut(e);
	bw_loop_free(e->loop);
	e->loop = NULL;
	if (e->sigfd >= 0)
		close(e->sigfd);
	e->sigfd = -1;
	bw_addrtab_fini(&e->addrs);
	bw_hash_fini(&e->by_id);
	if (e->reserve_fd >= 0)
		close(e->reserve_fd);
	e->reserve_fd = -1;
}

void
bw_engine_set_tls(struct bw_engine *e, struct bw_tls_ctx *x)
{
	e->tls = x;
}
