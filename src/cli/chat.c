/* bulwark chat: the group chat client (docs/rooms.md). Shows the server's
 * text as it arrives and sends what the user types. On a terminal it edits
 * the line itself, so text arriving meanwhile is printed above the line
 * being typed and the line redrawn; from a pipe it sends each line of
 * input. The end of input leaves the room (/exit) and waits for the
 * server's goodbye.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/chat.h"
#include "cli/chat_int.h"
#include "cli/tlsclient.h"
#include "cli/common.h"
#include "cli/termtext.h"
#include "proto/line.h"
#include "proto/rooms_text.h"
#include "proto/text.h"

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark chat [OPTION]... [HOST:PORT]\n"
		"Join the group chat of a bulwarkd (default " DEFAULT_SERVER
		").\n\n"
		"Shows what the server says and sends each line you type: "
		"the menu's\nchoices (1 join, 2 create, 3 exit), then your "
		"messages. In a room, /who\nlists the members, /help the "
		"commands, /exit (or Exit) leaves. Works from\na pipe too: "
		"one line of input per line sent; the end of input leaves\n"
		"the room.\n\n"
		"  -s, --server H:P      the server (or HOST:PORT after the "
		"options)\n"
		"  -t, --timeout SEC     connect timeout (default "
		"10)\n" BW_CLI_CA_FILE_HELP
		"      --no-newline      send each line as one write without a "
		"newline, a\n"
		"                        moment apart (the seed's own server "
		"reads that way)\n"
		"      --gap MS          with --no-newline, the moment "
		"(default 300)\n"
		"  -h, --help            this help\n\n"
		"Exit status: 0 the session ended (you left or the server "
		"closed it);\n1 the server could not be reached or the "
		"connection failed; 2 bad usage;\n3 the server turned you away "
		"(too many wrong ids or passwords).\n");
}

/* --- input -------------------------------------------------------------- */

/* Every byte to the server, in TLS records on a tls:// chat. */
static int
chat_write(struct chat *ch, const char *p, size_t n)
{
	ssize_t r;

	if (ch->ctls == NULL)
		return bw_net_write_full(ch->fd, p, n);
	while (n > 0) {
		if ((r = bw_ctls_send(ch->ctls, p, n)) < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int
send_line(struct chat *ch, const char *p, size_t n)
{
	char buf[LINE_CAP + 2];
	int rc;

	memcpy(buf, p, n);
	if (ch->newline)
		buf[n++] = '\n';
	if (n == 0)
		return 0;
	rc = chat_write(ch, buf, n);
	if (!ch->in_room && ch->name_asked) {
		/* the name we go by, should the room take it */
		snprintf(ch->me, sizeof(ch->me), "%.*s",
			 (int)(n - (ch->newline ? 1 : 0)), buf);
		ch->name_asked = 0;
	}
	if (!ch->in_room)
		ch->sent++;
	ch->next_send_ms = bw_now_ms() + (ch->newline ? 0 : ch->gap_ms);
	return rc;
}

static int
say_bye(struct chat *ch)
{
	int rc = 0;

	if (ch->sent_bye)
		return 0;
	ch->sent_bye = 1;
	/* in a room: leave it, and read the server's goodbye; at the menu a
	 * word would be taken as a name or a password, so the end of input
	 * is only said by closing our side (the seed's server does not read
	 * that: it gets its "Exit") */
	if (!ch->newline)
		rc = send_line(ch, "Exit", 4);
	else if (ch->in_room)
		rc = send_line(ch, "/exit", 5);
	bw_ctls_end(ch->ctls);
	(void)shutdown(ch->fd, SHUT_WR);
	return rc;
}

/* A terminal's keys: the line is edited here (echo is off). */
static int
key(struct chat *ch, unsigned char k)
{
	int rc;

	if (ch->esc == 1) { /* after ESC: a CSI or SS3 sequence, or one key */
		ch->esc = k == '[' || k == 'O' ? 2 : 0;
		return 0;
	}
	if (ch->esc == 2) { /* arrows and function keys are not text */
		if (k >= 0x40 && k <= 0x7e)
			ch->esc = 0;
		return 0;
	}
	if (k == 0x1b) {
		ch->esc = 1;
		return 0;
	}
	if (k == '\r' || k == '\n') {
		bw_tt_write("\r\033[K", 4);
		rc = send_line(ch, ch->line, ch->len);
		chat_echo(ch, ch->line, ch->len);
		ch->len = 0;
		chat_redraw(ch);
		return rc;
	}
	if (k == 4 && ch->len == 0) { /* ^D on an empty line */
		ch->in_eof = 1;
		return 0;
	}
	if (k == 0x7f || k == 8) { /* erase one character (UTF-8) */
		while (ch->len > 0 &&
		       ((unsigned char)ch->line[ch->len - 1] & 0xC0) == 0x80)
			ch->len--;
		if (ch->len > 0)
			ch->len--;
	} else if (k == 21) { /* ^U */
		ch->len = 0;
	} else if ((k >= 0x20 || k == '\t') && ch->len < LINE_CAP) {
		ch->line[ch->len++] = (char)k;
	}
	chat_redraw(ch);
	return 0;
}

/* A pipe's bytes: one line of input is one line sent (with --no-newline,
 * a gap apart). */
static int
piped(struct chat *ch, const uint8_t *p, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if (p[i] != '\n') {
			if (ch->len < LINE_CAP && p[i] != '\r')
				ch->line[ch->len++] = (char)p[i];
			else if (p[i] != '\r' && !ch->cut_warned) {
				ch->cut_warned = 1;
				fprintf(stderr,
					"bulwark chat: a line over %u bytes "
					"was cut\n",
					(unsigned)LINE_CAP);
			}
			continue;
		}
		if (ch->newline) {
			if ((rc = send_line(ch, ch->line, ch->len)) != 0)
				return rc;
		} else {
			memcpy(ch->pending + ch->pending_len, ch->line,
			       ch->len);
			/* queued lines wait for their gap (see run) */
			ch->pending_len += ch->len;
			ch->pending[ch->pending_len++] = '\n';
		}
		ch->len = 0;
	}
	return 0;
}

static void
raw_on(struct chat *ch)
{
	struct termios t;

	if (tcgetattr(STDIN_FILENO, &ch->saved) != 0)
		return;
	t = ch->saved;
	t.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
		ch->raw = 1;
}

static void
raw_off(struct chat *ch)
{
	if (ch->raw)
		(void)tcsetattr(STDIN_FILENO, TCSANOW, &ch->saved);
	ch->raw = 0;
}

/* The next line queued by a --no-newline pipe, once its gap passed. */
static int
send_pending(struct chat *ch)
{
	char *nl;
	size_t n;
	int rc;

	if (ch->pending_len == 0 || bw_now_ms() < ch->next_send_ms)
		return 0;
	nl = memchr(ch->pending, '\n', ch->pending_len);
	n = (size_t)(nl - ch->pending);
	rc = send_line(ch, ch->pending, n);
	memmove(ch->pending, nl + 1, ch->pending_len - n - 1);
	ch->pending_len -= n + 1;
	return rc;
}

/* At the end of input: 0 once the server has answered the lines we sent
 * (see QUIET_MS), else how many ms until time alone could say it has.
 * Each answer gets DECIDE_MS: lines sent at once may each be delayed. */
static uint64_t
answered(const struct chat *ch, uint64_t now)
{
	uint64_t from = ch->asked_ms > ch->eof_ms ? ch->asked_ms : ch->eof_ms;
	uint64_t waited = now > from ? now - from : 0, quiet = now - ch->rx_ms;

	if (ch->in_room || waited >= DECIDE_MS)
		return 0;
	if (ch->newline && ch->asked > 0) /* it asks as we know: count */
		return ch->asked > ch->sent ? 0 : DECIDE_MS - waited;
	if (quiet >= QUIET_MS)
		return 0;
	return QUIET_MS - quiet < DECIDE_MS - waited ? QUIET_MS - quiet
						     : DECIDE_MS - waited;
}

static int
run(struct chat *ch)
{
	struct pollfd pfd[2];
	uint8_t buf[4096];
	uint64_t bye_until = 0, now;
	int timeout, held, rc = 0;
	ssize_t r, i;

	while (!ch->srv_eof && !stop_signal) {
		now = bw_now_ms();
		if (ch->in_eof && ch->pending_len == 0 && !ch->sent_bye) {
			if (ch->len > 0 && !ch->tty)
				(void)piped(ch, (const uint8_t *)"\n", 1);
			if (ch->eof_ms == 0)
				ch->eof_ms = now;
			/* the goodbye too waits for its gap, and for the
			 * server to have answered our last lines */
			if (ch->pending_len == 0 && now >= ch->next_send_ms &&
			    answered(ch, now) == 0) {
				if ((rc = say_bye(ch)) != 0)
					return rc;
				bye_until = now + BYE_WAIT_MS;
			}
		}
		if (bye_until != 0 && now >= bye_until)
			return 0; /* the server did not close: we are done */
		if ((rc = send_pending(ch)) != 0)
			return rc;
		pfd[0] = (struct pollfd){.fd = ch->fd, .events = POLLIN};
		pfd[1] = (struct pollfd){
			/* a read adds at most its bytes to pending */
			.fd = ch->in_eof || ch->pending_len + sizeof(buf) +
							      LINE_CAP + 2 >
						      PENDING_CAP
				      ? -1
				      : STDIN_FILENO,
			.events = POLLIN};
		timeout = -1;
		if (ch->pending_len > 0 || (ch->in_eof && !ch->sent_bye))
			timeout = ch->next_send_ms > now
					  ? (int)(ch->next_send_ms - now)
					  : 0;
		if (ch->in_eof && !ch->sent_bye && ch->pending_len == 0 &&
		    timeout == 0)
			timeout = (int)answered(ch, now);
		if (bye_until != 0)
			timeout = (int)(bye_until - now);
		held = bw_ctls_pending(ch->ctls);
		if (held)
			timeout = 0; /* TLS holds what the socket no more */
		if (poll(pfd, 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pfd[0].revents || held) {
			r = ch->ctls != NULL
				    ? bw_ctls_recv(ch->ctls, buf, sizeof(buf))
				    : recv(ch->fd, buf, sizeof(buf), 0);
			if (r < 0 && errno != EINTR && errno != EAGAIN)
				return -errno;
			if (r == 0)
				ch->srv_eof = 1;
			if (r > 0) {
				ch->rx_ms = bw_now_ms();
				chat_show(ch, buf, (size_t)r);
			}
		}
		if (pfd[1].revents) {
			r = read(STDIN_FILENO, buf, sizeof(buf));
			if (r < 0 && errno != EINTR && errno != EAGAIN)
				return -errno;
			if (r <= 0) {
				ch->in_eof = r == 0;
				continue;
			}
			for (i = 0; i < r && ch->tty && rc == 0; i++)
				rc = key(ch, buf[i]);
			if (!ch->tty)
				rc = piped(ch, buf, (size_t)r);
			if (rc != 0)
				return rc;
		}
	}
	return 0;
}

int
bw_cli_chat(int argc, char **argv)
{
	static const struct option opts[] = {
		{"server", required_argument, NULL, 's'},
		{"timeout", required_argument, NULL, 't'},
		BW_CLI_CA_FILE_OPTION,
		{"no-newline", no_argument, NULL, 'n'},
		{"gap", required_argument, NULL, 'g'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static struct chat ch;
	char host[256];
	const char *server = NULL;
	uint16_t port;
	unsigned timeout_ms = 10000;
	const char *name;
	char why[512];
	uint64_t gap;
	struct sigaction sa;
	int c, rc, tls;

	memset(&ch, 0, sizeof(ch));
	ch.fd = -1;
	ch.newline = 1;
	ch.gap_ms = 300;
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			server = optarg;
			break;
		case 'n':
			ch.newline = 0;
			break;
		case 'g':
			if (bw_parse_u64(optarg, 0, 60000, &gap) != 0) {
				fprintf(stderr, "bulwark chat: --gap needs "
						"0..60000 ms\n");
				return BW_EXIT_USAGE;
			}
			ch.gap_ms = (unsigned)gap;
			break;
		default:
			if ((rc = bw_cli_common_opt("bulwark chat", c, optarg,
						    &timeout_ms, usage)) !=
			    BW_CLI_GO_ON)
				return rc;
		}
	}
	if ((rc = bw_cli_server_arg("bulwark chat", DEFAULT_SERVER, server,
				    argc, argv, usage, host, sizeof(host),
				    &port)) != 0)
		return rc;
	tls = bw_tls_addr(host, &name);
	if ((rc = bw_net_connect(name, port, timeout_ms, &ch.fd)) != 0) {
		bw_cli_fatal("%s", bw_cli_connect_error(why, sizeof(why), name,
							port, rc));
		return BW_EXIT_FATAL;
	}
	if (tls &&
	    (rc = bw_ctls_open(&ch.ctls, ch.fd, "bulwark chat", name, port,
			       timeout_ms, 1, NULL, why, sizeof(why))) != 0) {
		fprintf(stderr, "bulwark chat: %s\n", why);
		close(ch.fd);
		return rc;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	ch.rx_ms = bw_now_ms(); /* quiet is counted from the connection */
	ch.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
	/* on a terminal the client wraps the server's lines itself, rows
	 * after a line's first indented: the terminal's own wrapping would
	 * let a member's text start a row that reads as another member's */
	ch.o.tty = isatty(STDOUT_FILENO);
	if (ch.o.tty)
		bw_tt_autowrap(0);
	if (ch.tty)
		raw_on(&ch);
	rc = run(&ch);
	if (ch.tty) {
		bw_tt_write("\r\033[K", 4);
		raw_off(&ch);
	}
	if (ch.o.tty)
		bw_tt_autowrap(1);
	bw_ctls_free(ch.ctls);
	close(ch.fd);
	if (stop_signal)
		return 128 + stop_signal;
	if (rc != 0) {
		bw_cli_fatal("%s:%u: %s", host, port, bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	if (ch.refused) /* a script must not take it for a session held */
		bw_cli_fatal("%s:%u turned you away (too many wrong tries)",
			     host, port);
	return ch.refused ? BW_EXIT_TAKEN : BW_EXIT_OK;
}
