/* Between the files of `bulwark msg`: msg.c (options, the menu, the
 * one-shot commands), msg_ops.c (one request per connection, registering,
 * lists, keys, sending) and msg_pull.c (receiving and showing messages).
 */
#ifndef BULWARK_CLI_MSG_INT_H
#define BULWARK_CLI_MSG_INT_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "cli/common.h"
#include "cli/contacts.h"
#include "proto/msg_wire.h"

/* Exit codes beyond common.h's. */
enum {
	BW_EXIT_KEY_CHANGED = 5, /* a contact's key changed: not used */
	BW_EXIT_NO_KEY = 6,	 /* no shared key with the contact yet */
};

#define MSG_ERR_TEXT "server responded with an error"

struct msg_ctx {
	char me_path[4096], contacts_path[4096], lock_path[4096];
	const char *dir;
	char host[256];
	uint16_t port;
	unsigned timeout_ms;
	int have_me;
	struct bw_identity me;
	/* the key being registered (msg_register), proven over TLS instead
	 * of me's while it is not NULL */
	const struct bw_rsa *reg_key;
	struct bw_contacts cs;
	FILE *in;   /* the user's answers (menu mode) */
	int menu;   /* 1: interactive menu; 0: a one-shot command */
	int listed; /* the names were fetched (601) in this run */
	int loaded; /* me.info and contacts.info were read */
	/* the change the trust prompt showed, while its answer is acted on */
	const struct bw_contact *shown;
	/* set by the calls, cleared by a caller that needs to know: the whole
	 * request was written (sent), and the server answered it with 9000
	 * or another code than the one asked for (refused). A failure with
	 * sent and not refused leaves the request's outcome unknown. */
	int sent, refused;
	int error_reply; /* the last answer was the protocol's error (9000) */
	char tmpdir[4096];
};

/* msg_ops.c. Results: 0, or an exit status (BW_EXIT_*) after a message on
 * stderr (MSG_ERR_TEXT for a 9000). */
/* Says what failed with the server and returns BW_EXIT_FATAL. */
int msg_net_failure(const struct msg_ctx *x, int rc);
/* The key a TLS handshake proves: the one being registered, else me's,
 * else none. */
const struct bw_rsa *msg_tls_key(const struct msg_ctx *x);
/* A fresh connection with the request's header (announcing announced
 * payload bytes) and payload in one write. */
int msg_open_request(struct msg_ctx *x, struct bw_session *s, uint16_t code,
		     const uint8_t *payload, size_t len, uint32_t announced);
/* The response's header: 0 with its payload size if it is want, else an
 * exit status after saying what came. */
int msg_response_head(struct msg_ctx *x, struct bw_session *s, uint16_t want,
		      uint32_t *size);
/* One exchange on its own connection: the request in one write, the
 * response's header; *body (heap, caller frees) gets at most cap payload
 * bytes. */
int msg_exchange(struct msg_ctx *x, uint16_t code, const uint8_t *payload,
		 size_t len, uint16_t want, uint8_t **body, size_t *body_len,
		 size_t cap);
/* msg_land.c: a received file's landing (see there) */
int msg_write_full(int fd, const uint8_t *p, size_t n);
/* "from-<sender>-<UTC time>", the sender's name made safe for a file */
#define MSG_STEM_CAP 96
void msg_land_stem(const char *sender, time_t when, char *out, size_t cap);
int msg_plain_open(const char *dir, const char *stem, char *path, size_t cap,
		   int *unnamed);
int msg_plain_name(int fd, const char *dir, const char *stem, char *path,
		   size_t cap);
int msg_plain_copy(int fd, const char *dir, const char *stem, char *path,
		   size_t cap);
int msg_register(struct msg_ctx *x, const char *name);
/* This client's key fingerprint (what its contacts pin, to be compared
 * out of band, as Signal's safety numbers), after its name and id if
 * who: 0, or BW_EXIT_USAGE if the key cannot be read. */
int msg_show_mine(const struct msg_ctx *x, int who);
/* 601: updates the contacts' names; prints the names if show. */
int msg_list(struct msg_ctx *x, int show);
/* The contact called name, from the contacts or a fresh 601. */
int msg_resolve(struct msg_ctx *x, const char *name, struct bw_contact **c);
/* 602: pins the key on first use; a different key is kept aside, the user
 * warned, and BW_EXIT_KEY_CHANGED returned until accepted. */
int msg_fetch_key(struct msg_ctx *x, struct bw_contact *c);
/* Accepts the key the server now offers for c. */
int msg_trust(struct msg_ctx *x, struct bw_contact *c);
int msg_send_key_request(struct msg_ctx *x, struct bw_contact *c);
int msg_send_sym_key(struct msg_ctx *x, struct bw_contact *c);
int msg_send_text(struct msg_ctx *x, struct bw_contact *c, const char *text);
/* 0 if what is sealed for c may go: its key is not in question (its name
 * did not move to it from a pinned contact, the server offers no other
 * key: BW_EXIT_KEY_CHANGED after a warning) and a symmetric key is shared
 * with it (BW_EXIT_NO_KEY after saying so). */
int msg_may_seal_for(struct msg_ctx *x, struct bw_contact *c);
/* msg_file.c */
int msg_send_file(struct msg_ctx *x, struct bw_contact *c, const char *path);
/* Saves contacts.info; a failure is reported and returned. */
int msg_save(struct msg_ctx *x);

/* msg_pull.c: 604, each new message shown as the spec prints it. */
int msg_pull(struct msg_ctx *x);

#endif
