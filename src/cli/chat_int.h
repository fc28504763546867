/* What the chat client's files share: its state, and the output side
 * (chat_show.c) that the input side (chat.c) calls.
 */
#ifndef BULWARK_CLI_CHAT_INT_H
#define BULWARK_CLI_CHAT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "cli/termtext.h"
#include "proto/line.h"

#define DEFAULT_SERVER "127.0.0.1:5555"
#define PROMPT	       "> "
#define LINE_CAP       BW_LINE_MAX
#define BYE_WAIT_MS    5000u
#define PENDING_CAP    (64u * 1024u)
#define PART_CAP       (8u * 1024u) /* a line from the server being received */
#define CHUNK	       1024u	    /* bytes cleaned at a time */
/* At the end of piped input we must know whether our last lines put us
 * in a room before we leave. Our server (and any that words the menu as
 * the seed does) answers every line at the menu with exactly one question,
 * or the room, or a goodbye: once it has asked more questions than we sent
 * lines, it waits for us. A server whose questions we do not know is
 * taken to have answered after QUIET_MS of quiet. DECIDE_MS is the
 * longest we wait either way: a password is hashed, and a wrong one from
 * an address with recent failures is answered up to 4 s later, so it must
 * be well over 4 s plus a hash on a busy machine. */
#define QUIET_MS  300u
#define DECIDE_MS 10000u

struct chat {
	int fd;
	struct bw_ctls *ctls; /* tls:// chat: its session */
	int tty;	      /* standard input and output are a terminal */
	int newline;	      /* lines end with "\n" (0: the seed's server) */
	unsigned gap_ms;
	uint64_t next_send_ms;
	char line[LINE_CAP + 2];
	size_t len; /* bytes of the line being typed */
	char pending[PENDING_CAP];
	size_t pending_len; /* a line from a pipe waiting for the gap */
	int have_pending;
	int in_eof, sent_bye, srv_eof;
	/* the server's line being received: on a terminal kept whole (shown
	 * as the prompt of the line being typed until it ends); elsewhere
	 * printed at once but for a UTF-8 character cut short */
	uint8_t part[PART_CAP];
	size_t part_len, part_shown;
	int in_room;		/* the server said IN_ROOM: /exit leaves */
	int refused;		/* it said TOO_MANY: the menu turned us away */
	unsigned asked;		/* questions the server asked at the menu */
	int name_asked;		/* its last question was our name */
	char me[256];		/* the name we answered it (for chat_echo) */
	unsigned sent;		/* lines we sent before it said IN_ROOM */
	uint64_t rx_ms, eof_ms; /* the server's last bytes; our input's end */
	uint64_t asked_ms;	/* its last question */
	int esc;		/* inside a terminal escape sequence (a key) */
	int cut_warned;
	struct termios saved;
	int raw;
	struct bw_tt_out o; /* the server's text, wrapped on a terminal */
};

/* The line being typed, redrawn on the terminal's last row. */
void chat_redraw(struct chat *ch);
/* The server's text as it arrives (see chat_show.c). */
void chat_show(struct chat *ch, const uint8_t *p, size_t n);
/* A line of ours just sent from a room, shown on a terminal as the others'
 * lines are ("NAME: text"), as an IRC client echoes its own. */
void chat_echo(struct chat *ch, const char *p, size_t n);

#endif
