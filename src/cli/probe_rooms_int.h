/* What the rooms' conformance cases share across their two files: a line
 * connection that keeps what it was sent (searched with a cursor), the
 * menu's walks (create, join), the spec's own words, and the run: its
 * rooms, members and the wrong guesses it has made from this address.
 */
#ifndef BULWARK_CLI_PROBE_ROOMS_INT_H
#define BULWARK_CLI_PROBE_ROOMS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "cli/probe_int.h"

/* The spec's words (spec/rooms.md), and the seed's menu it keeps. */
#define T_INVALID "You chose an invalid option..."
#define T_CREATED "The id of the group is:"
#define T_JOINED  "You're connected to group chat #"
#define T_TALK	  "You can start to talk!"
#define T_NO_ID	  "There is no group id like this,try again"
#define T_NO_PASS "There is no group password like this,try again"
#define T_JOINS	  " has joined the group"
#define T_LEAVES  " has removed from the group"
#define T_EXIT	  "You chose exit so you removed from the group."
#define T_MENU                                                                 \
	"Hello client, please choose an option:\n"                             \
	"1. Connect to a group chat.\n"                                        \
	"2. Create a group chat.\n"                                            \
	"3. Exit the server.\n"

#define S_MENU	"Menu"
#define S_LINES "Lines"
#define S_TEXT	"Text"
#define S_PASS	"Passwords"
#define S_IDS	"Room ids"
#define S_NAMES "Names"
#define S_ROOM	"In a room"
#define S_HOST	"Hostile input"

#define RL_CAP	   16384u /* what a connection keeps of what it was sent */
#define QUIET_MS   120u	  /* a reply has ended: this long without a byte */
#define NOTHING_MS 300u	  /* "nothing (more) arrives" */
#define DELAY_MS   4000u  /* the longest wait the spec puts on a guess */
#define LINE_MAX_B 4096u  /* the spec's longest line */

/* A rooms connection: what it was sent, buf[0..len) (NUL-terminated),
 * searched from at. */
struct rline {
	struct pconn c;
	char buf[RL_CAP + 1];
	size_t len, at, mark; /* mark: rl_number's, kept when buf moves */
	int eof;
	char name[64];
};

struct rrun {
	struct probe *p;
	/* a made room N with password pa (members a, y); b made room nb */
	struct rline a, b, y, x;
	char pa[40], pb[40];
	uint32_t na, nb;
	int a_in, b_in, y_in;
	char menu[512]; /* the menu as it came on connect */
	/* the questions as they came: after 1, after a name, after an id */
	char q_name[128], q_id[128], q_pass[128];
	/* and on creating: after 2, after the name */
	char q_cname[128], q_cpass[128];
	unsigned fails;	     /* wrong ids and passwords answered this run */
	uint64_t first_fail; /* when the first was (ms) */
	/* rooms.guess.limit's wrong ids: how long each answer took, and how
	 * many failures this run had had before it */
	unsigned guess_ms[4], guess_before[4], guesses;
	/* and the fifth's, answered with a notice */
	unsigned notice_ms, notice_before;
	int noticed;
};

/* A connection not yet open. */
void rl_init(struct rline *l);
/* Opens l and reads what the server says first: 0, or -1 (no connection,
 * or nothing within the timeout). l is zeroed first. */
int rl_open(struct probe *p, struct rline *l);
/* Closes (when open) and forgets what l was sent. */
void rl_close(struct rline *l);
/* Sends n bytes as they are, or line and "\n" in one write: 0 or -1. */
int rl_send(struct rline *l, const void *b, size_t n);
int rl_say(struct rline *l, const char *line);
/* Waits (ms at most) for s after the cursor: 1 with the cursor after it,
 * else 0. */
int rl_expect(struct rline *l, const char *s, unsigned ms);
/* Waits for the answer to what was just sent: the cursor moves to the end
 * of what came before, then whole lines are read until QUIET_MS pass
 * without a byte (ms at most). Returns how many bytes came; they are at
 * l->buf + l->at. */
size_t rl_reply(struct rline *l, unsigned ms);
/* Reads for ms: how many bytes came. */
size_t rl_quiet(struct rline *l, unsigned ms);
/* Whether the server closes within ms (what it sends meanwhile is kept). */
int rl_closes(struct rline *l, unsigned ms);
/* Whether s came after the cursor (in the last reply, after rl_reply);
 * rl_asks: whether the question q (a line learned earlier; "" unknown)
 * did. */
int rl_has(const struct rline *l, const char *s);
int rl_asks(const struct rline *l, const char *q);
/* Waits for prefix, then for the end of its line: 1 with the bytes
 * between (a '\r' before the '\n' kept) in out, NUL-terminated and cut to
 * cap - 1, else 0. */
int rl_line_after(struct rline *l, const char *prefix, unsigned ms, char *out,
		  size_t cap);
/* Waits for prefix, then the digits up to the end of its line: 1 with
 * *id (1 to 2^32 - 1), else 0. */
int rl_number(struct rline *l, const char *prefix, unsigned ms, uint32_t *id);

/* Creates a room on a new connection as name with pass: 0 with *id and
 * the creator in it, else -1 with why. */
int rr_create(struct rrun *r, struct rline *l, const char *name,
	      const char *pass, uint32_t *id, char *why, size_t cap);
/* Walks a new connection through 1, name and id, up to the password:
 * 0, or -1 with why. The questions are learned on the first walk. */
int rr_to_pass(struct rrun *r, struct rline *l, const char *name,
	       const char *id, char *why, size_t cap);
/* rr_to_pass, then the password: 0 once joined to room id. */
int rr_join(struct rrun *r, struct rline *l, const char *name, uint32_t id,
	    const char *pass, char *why, size_t cap);
/* Leaves l's room with Exit and closes l. */
void rr_leave(struct rline *l);
/* Keeps the last line of l's last reply as the question q, the first
 * time (q is "" until then). */
void rr_learn(char *q, size_t cap, const struct rline *l);
/* Counts a wrong id or password the server has answered. */
void rr_failed(struct rrun *r);
/* How long the answer to a wrong guess may take: the timeout and the
 * spec's longest delay. */
unsigned rr_wrong_ms(const struct rrun *r);

/* The cases, in the suite's order (each file's part). */
void rr_menu_cases(struct rrun *r);
void rr_create_cases(struct rrun *r);
void rr_join_cases(struct rrun *r);
void rr_room_cases(struct rrun *r);
void rr_id_cases(struct rrun *r);
void rr_hostile_cases(struct rrun *r);
void rr_guess_cases(struct rrun *r);

#endif
