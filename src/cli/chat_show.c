/* bulwark chat's output: the server's text as it arrives, cleaned, with
 * the line being typed redrawn below it on a terminal, and the menu's
 * questions and the room's greeting watched for.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bulwark/util.h"
#include "cli/chat_int.h"
#include "cli/termtext.h"
#include "proto/rooms_text.h"
#include "proto/text.h"

static const char *const questions[] = {
	BW_ROOMS_MENU_LAST, BW_ROOMS_ASK_NAME, BW_ROOMS_ASK_ROOM_PASS,
	BW_ROOMS_ASK_ID,    BW_ROOMS_ASK_PASS,
};

/* --- output ------------------------------------------------------------- */

/* The line being typed, on the terminal's last row and on one row only
 * (a longer one scrolls sideways), after the server's unfinished line or
 * the prompt: text arriving meanwhile is printed above it, then it is
 * drawn again. */
void
chat_redraw(struct chat *ch)
{
	char pre[BW_TEXT_CAP(PART_CAP)];
	size_t cols = bw_tt_term_cols(), pre_n, from, room;

	if (!ch->tty)
		return;
	if (ch->part_len > 0) {
		pre_n = bw_text_clean(ch->part, ch->part_len, pre, sizeof(pre),
				      NULL);
		from = bw_tt_tail(pre, pre_n, cols / 2);
	} else {
		pre_n = strlen(PROMPT);
		memcpy(pre, PROMPT, pre_n);
		from = 0;
	}
	bw_tt_write("\r\033[K", 4);
	bw_tt_write_untabbed(pre + from, pre_n - from);
	room = cols - 1 - bw_tt_cols(pre + from, pre_n - from);
	if (bw_tt_cols(ch->line, ch->len) <= room) {
		bw_tt_write_untabbed(ch->line, ch->len);
		return;
	}
	from = bw_tt_tail(ch->line, ch->len, room - 1);
	bw_tt_write("<", 1);
	bw_tt_write_untabbed(ch->line + from, ch->len - from);
}

/* Prints what of the server's unfinished line has not been shown, up to
 * its last whole character (all of it with end set: the line ends). */
static void
part_out(struct chat *ch, int end)
{
	size_t upto = end ? ch->part_len : bw_tt_whole(ch->part, ch->part_len);

	if (upto > ch->part_shown)
		bw_tt_text(&ch->o, ch->part + ch->part_shown,
			   upto - ch->part_shown);
	ch->part_shown = upto;
}

static int
is_question(const uint8_t *line, size_t n)
{
	size_t i;

	for (i = 0; i < sizeof(questions) / sizeof(questions[0]); i++)
		if (n == strlen(questions[i]) &&
		    memcmp(line, questions[i], n) == 0)
			return 1;
	return 0;
}

/* The server's text, as it arrives: each line cleaned; a line is watched
 * for the one that says we are in a room, and for the menu's questions. */
void
chat_show(struct chat *ch, const uint8_t *p, size_t n)
{
	const uint8_t *nl;
	size_t k, t;

	if (ch->tty)
		bw_tt_write("\r\033[K", 4);
	while (n > 0) {
		nl = memchr(p, '\n', n);
		k = nl != NULL ? (size_t)(nl - p) : n;
		if (ch->part_len + k > PART_CAP) {
			/* a very long line: out with what we have of it */
			part_out(ch, 0);
			t = ch->part_len - ch->part_shown;
			memmove(ch->part, ch->part + ch->part_shown, t);
			ch->part_len = t;
			ch->part_shown = 0;
		}
		if (ch->part_len + k > PART_CAP) {
			bw_tt_text(&ch->o, p,
				   k); /* cannot happen with 4 KiB reads */
		} else {
			memcpy(ch->part + ch->part_len, p, k);
			ch->part_len += k;
		}
		if (nl != NULL) {
			t = ch->part_len > 0 &&
					    ch->part[ch->part_len - 1] == '\r'
				    ? ch->part_len - 1
				    : ch->part_len;
			if ((t == sizeof(BW_ROOMS_IN_ROOM) - 1 &&
			     memcmp(ch->part, BW_ROOMS_IN_ROOM, t) == 0) ||
			    (t > sizeof(BW_ROOMS_JOINED) - 1 &&
			     memcmp(ch->part, BW_ROOMS_JOINED,
				    sizeof(BW_ROOMS_JOINED) - 1) == 0))
				ch->in_room = 1;
			else if (t == sizeof(BW_ROOMS_TOO_MANY) - 1 &&
				 memcmp(ch->part, BW_ROOMS_TOO_MANY, t) == 0)
				ch->refused = 1;
			else if (!ch->in_room && is_question(ch->part, t)) {
				ch->asked++;
				ch->asked_ms = bw_now_ms();
				ch->name_asked =
					t == sizeof(BW_ROOMS_ASK_NAME) - 1 &&
					memcmp(ch->part, BW_ROOMS_ASK_NAME,
					       t) == 0;
			}
			part_out(ch, 1);
			bw_tt_newline(&ch->o);
			ch->part_len = ch->part_shown = 0;
			k++;
		}
		p += k;
		n -= k;
	}
	/* elsewhere than on a terminal a prompt without a newline is shown
	 * now, but for a character cut in two */
	if (!ch->tty)
		part_out(ch, 0);
	chat_redraw(ch);
}

void
chat_echo(struct chat *ch, const char *p, size_t n)
{
	size_t m = strlen(ch->me);

	if (!ch->tty || !ch->in_room || n == 0 || p[0] == '/' || m == 0)
		return;
	bw_tt_write("\r\033[K", 4);
	bw_tt_text(&ch->o, (const uint8_t *)ch->me, m);
	bw_tt_text(&ch->o, (const uint8_t *)": ", 2);
	bw_tt_text(&ch->o, (const uint8_t *)p, n);
	bw_tt_newline(&ch->o);
}
