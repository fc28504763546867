/* bulwark msg, receiving: a 2104 read record by record from the socket in
 * bounded memory. Keys and texts are decrypted in memory (their size is
 * capped), files stream through AES into a new private file in the
 * temporary directory; each message is shown once, as the protocol's
 * client prints it, even when the server delivers it again. Nothing is
 * confirmed to the server (the orderly close that is its evidence of
 * delivery) before what was received is kept: shown on a standard output
 * that took it (and synced, if it is a file), files written and synced,
 * keys saved in contacts.info. A local failure resets the connection
 * instead: the messages stay queued.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "cli/msg_cli_int.h"

#define TEXT_MAX (16u * 1024u * 1024u) /* a text shown from memory */
#define CHUNK	 (64u * 1024u)
#define CANT	 "can't decrypt message"

#define NEW_SENDERS_MAX 1024u
#define NEW_SENDERS_WHY                                                        \
	"more than 1024 new senders in one pull (pull again for the rest)"

struct rx {
	struct msg_ctx *x;
	struct bw_session s;
	uint64_t left; /* payload bytes still to read */
	int unknown;   /* a sender not in the contacts: refresh names after */
	unsigned new_senders; /* contacts made for keys from unknown ids */
	unsigned fresh;	      /* messages shown (not shown before) */
	/* a local failure (the message could not be kept): what, and why */
	const char *local;
	int local_rc;
};

/* Something received could not be kept here: the pull stops and is not
 * confirmed. Returns BW_EIO-like rc for the caller to pass up. */
static int
local_failure(struct rx *r, const char *what, int rc)
{
	if (r->local == NULL) {
		r->local = what;
		r->local_rc = rc;
	}
	return rc != 0 ? rc : -EIO;
}

static int
take(struct rx *r, void *p, size_t n)
{
	int rc = bw_session_read(&r->s, p, n);

	if (rc == 0)
		r->left -= n;
	return rc;
}

/* Reads and drops n bytes. */
static int
skip(struct rx *r, uint64_t n)
{
	uint8_t buf[CHUNK];
	size_t k;
	int rc;

	while (n > 0) {
		k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		if ((rc = take(r, buf, k)) != 0)
			return rc;
		n -= k;
	}
	return 0;
}

/* Shows text with every control character but newline and tab escaped:
 * a sender must not drive the reader's terminal. */
static void
show_text(const uint8_t *p, size_t n)
{
	char *line, *esc;
	size_t i, k, start = 0;

	if ((esc = malloc(4 * n + 2)) == NULL ||
	    (line = malloc(n + 1)) == NULL) {
		free(esc);
		printf("%s\n", CANT);
		return;
	}
	for (i = 0; i <= n; i++) {
		if (i < n && p[i] != '\n')
			continue;
		memcpy(line, p + start, i - start);
		line[i - start] = '\0';
		/* a NUL would end the line early: it is shown as '?' */
		for (k = 0; k < i - start; k++) {
			if (line[k] == '\0')
				line[k] = '?';
		}
		printf("%s\n", bw_escape_display(line, esc, 4 * n + 2));
		start = i + 1;
	}
	free(line);
	free(esc);
}

static int
read_small(struct rx *r, uint32_t size, uint8_t **out)
{
	int rc;

	if ((*out = malloc(size ? size : 1)) == NULL)
		return BW_ENOMEM;
	if (size > 0 && (rc = take(r, *out, size)) != 0) {
		free(*out);
		*out = NULL;
		return rc;
	}
	return 0;
}

/* Type 2: the key wrapped with our public key becomes the pair's key. */
/* A key received replaces another shared with c: the protocol signs
 * nothing, so the one who sent it may be anyone able to send as c. */
static void
replaced_notice(const struct bw_contact *c)
{
	char shown[BW_ESC_CAP];

	bw_escape_display(c->name, shown, sizeof(shown));
	fprintf(stderr,
		"bulwark msg: the key shared with %s is replaced by the one "
		"just received; if %s did not send it, send-key %s again\n",
		shown, shown, shown);
}

/* Type 2: the key kept for c, or for a contact made for the unknown id
 * from (a key must have an owner to be kept) once the key opens: a
 * server's garbage makes no contact, and a pull makes at most
 * NEW_SENDERS_MAX (past that it stops unconfirmed: the next pull, with
 * those known, goes on), so neither memory nor contacts.info grows
 * without bound in one pull. */
static int
got_key(struct rx *r, struct bw_contact *c, const uint8_t *from, uint32_t size,
	const char **what)
{
	uint8_t *ct = NULL, aes[64];
	char hex[2 * BW_ID_LEN + 1];
	size_t n = 0;
	int rc = 0;

	*what = CANT;
	if (size > 4096)
		return skip(r, size);
	if ((rc = read_small(r, size, &ct)) != 0)
		return rc;
	if ((c != NULL || from != NULL) &&
	    bw_rsa_oaep_decrypt(r->x->me.key, ct, size, aes, sizeof(aes), &n) ==
		    0 &&
	    n == BW_AES_KEY_LEN) {
		if (c == NULL && r->new_senders >= NEW_SENDERS_MAX) {
			rc = local_failure(r, NEW_SENDERS_WHY, BW_ETOOBIG);
		} else if (c == NULL) {
			bw_hex_encode(from, BW_ID_LEN, hex);
			if ((c = bw_contacts_add(&r->x->cs, from, hex)) != NULL)
				r->new_senders++;
		}
		if (rc == 0 && c != NULL) {
			if (c->has_aes &&
			    !bw_ct_equal(c->aes, aes, BW_AES_KEY_LEN))
				replaced_notice(c);
			memcpy(c->aes, aes, BW_AES_KEY_LEN);
			c->has_aes = 1;
			*what = "symmetric key received";
		}
	}
	bw_wipe(aes, sizeof(aes));
	free(ct);
	return rc;
}

/* Type 3: *pt (the caller frees it with bw_secure_free) if it decrypts. */
static int
got_text(struct rx *r, struct bw_contact *c, uint32_t size, uint8_t **pt,
	 size_t *n)
{
	uint8_t *ct = NULL;
	int rc;

	*pt = NULL;
	*n = 0;
	if (size > TEXT_MAX || c == NULL || !c->has_aes)
		return skip(r, size);
	if ((rc = read_small(r, size, &ct)) != 0)
		return rc;
	if (bw_aes_open(c->aes, ct, size, pt, n) != 0)
		*pt = NULL;
	free(ct);
	return 0;
}

/* Type 4: decrypted into a new file in the directory for received files
 * (msg_land.c), named by us after the sender (never by the peer's say),
 * written and synced before it is shown; path
 * gets its name, or "" if it does not decrypt. A file that cannot be
 * written is a local failure (r->local): nothing of it is left. */
static int
got_file(struct rx *r, struct bw_contact *c, uint32_t size, char *path,
	 size_t cap)
{
	uint8_t buf[CHUNK + BW_AES_BLOCK];
	struct bw_aes *aes = NULL;
	uint64_t left = size;
	size_t k, held = 0, pad;
	int fd = -1, rc = 0, bad = 0, werr = 0, unnamed;
	char stem[MSG_STEM_CAP];

	path[0] = '\0';
	if (c == NULL || !c->has_aes || size == 0 || size % BW_AES_BLOCK != 0)
		return skip(r, size);
	msg_land_stem(c->name, time(NULL), stem, sizeof(stem));
	if ((fd = msg_plain_open(r->x->tmpdir, stem, path, cap, &unnamed)) <
	    0) {
		werr = -errno;
		fprintf(stderr, "bulwark msg: cannot create %s: %s\n", path,
			strerror(errno));
		path[0] = '\0';
		return local_failure(r, "a received file", werr);
	}
	if (bw_aes_new(&aes, c->aes, 0) != 0)
		bad = 1;
	while (left > 0) {
		/* the last block stays held back until the end: its padding
		 * is not the file's */
		k = left < CHUNK ? (size_t)left : CHUNK;
		if ((rc = take(r, buf + held, k)) != 0)
			break;
		left -= k;
		if (bad)
			continue;
		if (bw_aes_cbc(aes, buf + held, k) != 0) {
			bad = 1;
			continue;
		}
		k += held;
		held = left > 0 ? BW_AES_BLOCK : 0;
		if (left == 0) {
			if (bw_pkcs7_unpad(buf + k - BW_AES_BLOCK, &pad) != 0) {
				bad = 1;
				continue;
			}
			k -= pad;
		} else {
			k -= BW_AES_BLOCK;
		}
		if ((werr = msg_write_full(fd, buf, k)) != 0)
			break;
		if (held)
			memcpy(buf, buf + k, BW_AES_BLOCK);
	}
	bw_aes_free(aes);
	bw_wipe(buf, sizeof(buf));
	/* kept only once on disk: the server forgets it after this pull */
	if (werr == 0 && rc == 0 && !bad && fsync(fd) != 0)
		werr = -errno;
	if (unnamed) {
		/* named only whole; a name not had is nothing to remove */
		if (werr == 0 && rc == 0 && !bad &&
		    (werr = msg_plain_name(fd, r->x->tmpdir, stem, path,
					   cap)) != 0 &&
		    werr != -EEXIST)
			werr = msg_plain_copy(fd, r->x->tmpdir, stem, path,
					      cap);
		unnamed = werr == 0 && rc == 0 && !bad ? 0 : 2;
	}
	if (close(fd) != 0 && werr == 0 && rc == 0 && !bad)
		werr = -errno;
	/* and its name, before the close that tells the server it arrived */
	if (werr == 0 && rc == 0 && !bad)
		werr = bw_fs_sync_dir(path);
	if (bad || rc != 0 || werr != 0) {
		if (unnamed != 2)
			(void)unlink(path);
		if (werr != 0)
			fprintf(stderr, "bulwark msg: cannot write %s: %s\n",
				path, strerror(-werr));
		path[0] = '\0';
	}
	if (werr != 0)
		return local_failure(r, "a received file", werr);
	return rc;
}

/* One record: shown unless its id was shown before. */
static int
one_record(struct rx *r)
{
	struct msg_ctx *x = r->x;
	uint8_t hdr[BW_MSG_RECORD_HDR];
	struct bw_msg_record m;
	struct bw_contact *c;
	char who[BW_CLI_NAME_CAP], hex[2 * BW_ID_LEN + 1], path[4200];
	const char *what = NULL;
	uint8_t *pt = NULL;
	size_t pt_n = 0;
	int rc;

	if (r->left < sizeof(hdr))
		return BW_EPROTO; /* not even a record's header is left */
	if ((rc = bw_session_read(&r->s, hdr, sizeof(hdr))) != 0)
		return rc;
	if (bw_msg_record_decode(hdr, sizeof(hdr), r->left, &m) < 0)
		return BW_EPROTO;
	r->left -= sizeof(hdr);
	if (bw_contacts_seen(&x->cs, m.id)) {
		/* shown before: a repeat is still part of this pull */
		if ((rc = skip(r, m.size)) != 0)
			return rc;
		return bw_contacts_got(&x->cs, m.id);
	}
	/* an unknown sender is shown by id; the names are fetched once the
	 * pull is over (not on a second connection in the middle of it:
	 * some servers serve one connection at a time) */
	if ((c = bw_contacts_by_id(&x->cs, m.from)) == NULL)
		r->unknown = 1;
	if (c != NULL) {
		bw_cli_name_shown(c->name, who, sizeof(who));
	} else {
		bw_hex_encode(m.from, BW_ID_LEN, hex);
		snprintf(who, sizeof(who), "%s", hex);
	}
	/* the content is taken whole before anything is shown: a message
	 * cut short shows nothing, and is shown when it comes again */
	switch (m.type) {
	case BW_MSG_KEY_REQUEST:
		what = "Request for symmetric key";
		rc = skip(r, m.size);
		break;
	case BW_MSG_KEY:
		rc = got_key(r, c, c == NULL ? m.from : NULL, m.size, &what);
		break;
	case BW_MSG_TEXT:
		rc = got_text(r, c, m.size, &pt, &pt_n);
		if (pt == NULL)
			what = CANT;
		break;
	case BW_MSG_FILE:
		rc = got_file(r, c, m.size, path, sizeof(path));
		what = path[0] != '\0' ? path : CANT;
		break;
	default:
		what = CANT;
		rc = skip(r, m.size);
		break;
	}
	if (rc != 0) {
		if (pt != NULL)
			bw_secure_free(pt, pt_n);
		if (what == path && path[0] != '\0')
			(void)unlink(path);
		return rc;
	}
	printf("From: %s\nContent:\n", who);
	r->fresh++;
	if (pt != NULL) {
		show_text(pt, pt_n);
		bw_secure_free(pt, pt_n);
	} else {
		printf("%s\n", what);
	}
	printf("-----<EOM>-----\n\n");
	if (fflush(stdout) != 0 || ferror(stdout)) {
		rc = -errno;
		if (what == path && path[0] != '\0')
			(void)unlink(path); /* its path was never shown */
		return local_failure(r, "standard output", rc ? rc : -EIO);
	}
	/* remembered only once all of it was read and shown: a message cut
	 * short is shown again when the server delivers it again */
	return bw_contacts_got(&x->cs, m.id);
}

/* What was shown reached the disk, if standard output is a file. */
static int
sync_stdout(void)
{
	struct stat st;

	if (fflush(stdout) != 0 || ferror(stdout))
		return errno ? -errno : -EIO;
	if (fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode) &&
	    fsync(STDOUT_FILENO) != 0)
		return -errno;
	return 0;
}

/* One 604 on a connection of its own: what it brought is shown and kept,
 * then the connection ends in order (the server's evidence of delivery).
 * *fresh: the messages shown that were not shown before; *records: all. */
static int
pull_once(struct msg_ctx *x, unsigned *fresh, unsigned *records)
{
	struct rx r;
	uint8_t hdr[BW_RESP_HDR_LEN], req[BW_REQ_HDR_LEN];
	struct bw_resp_hdr h;
	struct bw_req_hdr q;
	unsigned shown = 0;
	int rc;

	/* senders are shown by name: the names are fetched first, once a
	 * run (a sender that registered since is shown by id, and its name
	 * fetched after the pull). A list that cannot be had (one too large
	 * for this client: anyone can register names) does not keep the
	 * messages from being pulled: their senders are shown by id. */
	if (!x->listed && msg_list(x, 0) != 0)
		fprintf(stderr, "bulwark msg: senders are shown by id\n");
	memset(&r, 0, sizeof(r));
	r.x = x;
	bw_session_init(&r.s, x->host, x->port, x->timeout_ms, BW_MSG_VERSION);
	r.s.key = msg_tls_key(x);
	memset(&q, 0, sizeof(q));
	memcpy(q.client_id, x->me.id, BW_ID_LEN);
	q.version = BW_MSG_VERSION;
	q.code = BW_MSG_REQ_PULL;
	bw_req_hdr_encode(&q, req);
	/* until what came is kept, any end of ours is a reset (set before
	 * a byte is read): a FIN after the whole reply is the server's
	 * evidence of delivery, and a client killed while it shows the last
	 * message (Ctrl-C on `pull | less`) would send one */
	if ((rc = bw_session_connect(&r.s)) != 0 ||
	    (rc = bw_session_reset_on_close(&r.s)) != 0 ||
	    (rc = bw_session_write(&r.s, req, sizeof(req))) != 0 ||
	    (rc = bw_session_read(&r.s, hdr, sizeof(hdr))) != 0)
		goto fail;
	if (bw_resp_hdr_decode(hdr, sizeof(hdr), &h) < 0 ||
	    h.code != BW_MSG_RESP_WAITING) {
		bw_session_close(&r.s);
		printf("%s\n", MSG_ERR_TEXT);
		return BW_EXIT_FATAL;
	}
	r.left = h.payload_size;
	while (r.left > 0) {
		if ((rc = one_record(&r)) != 0)
			goto fail;
		shown++;
	}
	*fresh = r.fresh;
	*records = shown;
	/* all of it is here: kept before the server is told (what was shown
	 * on disk if it went to a file; keys received in contacts.info,
	 * with the ids shown) */
	if ((rc = sync_stdout()) != 0) {
		local_failure(&r, "standard output", rc);
		x->cs.got_n = 0; /* not kept: to be shown again */
		goto fail;
	}
	bw_contacts_pull_end(&x->cs, 1);
	if ((rc = bw_contacts_save(x->contacts_path, &x->cs)) != 0) {
		local_failure(&r, x->contacts_path, rc);
		goto fail_saved;
	}
	/* ended in order after the whole reply, and kept: the server may
	 * now forget them (a FIN, not a reset, is its evidence) */
	bw_session_end(&r.s);
	if (r.unknown)
		(void)msg_list(x, 0); /* names for the next time */
	return 0;
fail:
	*fresh = r.fresh;
	*records = shown;
	if (r.local != NULL) {
		bw_contacts_pull_end(&x->cs, 0);
		(void)msg_save(x); /* what was shown stays shown once */
	}
fail_saved:
	if (r.local != NULL) {
		/* a reset, not a FIN: nothing was confirmed, the messages
		 * stay queued for the next pull */
		bw_session_abort(&r.s);
		fprintf(stderr,
			"bulwark msg: cannot keep what was received (%s: %s); "
			"the messages stay on the server\n",
			r.local, bw_strerror(r.local_rc));
		return BW_EXIT_USAGE;
	}
	bw_session_close(&r.s);
	bw_contacts_pull_end(&x->cs, 0);
	fprintf(stderr, "bulwark msg: pull from %s:%u cut short: %s\n", x->host,
		x->port, bw_strerror(rc));
	(void)msg_save(x); /* what was shown stays shown once */
	return BW_EXIT_FATAL;
}

/* A pull is bounded by the server (a large message travels alone), so
 * the queue is pulled until a reply brings nothing: at most PULLS_MAX
 * replies a run. A reply of messages shown before only (the server had
 * not yet deleted what the last one delivered: its evidence is our FIN,
 * which it may read after our next request arrives) is asked again a
 * few times, a little later; a server that never deletes ends there. */
#define PULLS_MAX   100
#define REPEATS_MAX 4

int
msg_pull(struct msg_ctx *x)
{
	const struct timespec pause = {0, 100 * 1000 * 1000};
	unsigned fresh = 0, records = 0, total = 0, pulls, repeats = 0;
	int rc;

	for (pulls = 0; pulls < PULLS_MAX; pulls++) {
		if ((rc = pull_once(x, &fresh, &records)) != 0)
			return rc;
		total += fresh;
		if (records == 0)
			break; /* the queue is empty */
		if (fresh > 0) {
			repeats = 0;
			continue;
		}
		if (++repeats > REPEATS_MAX)
			break;
		(void)nanosleep(&pause, NULL);
	}
	if (total == 0)
		printf("no waiting messages\n");
	else if (pulls == PULLS_MAX)
		printf("more messages may be waiting: pull again\n");
	return 0;
}
