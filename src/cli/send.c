/* bulwark send: reads transfer.info / me.info / priv.key, registers or
 * reconnects, receives the AES key, streams the file encrypted while
 * computing its cksum, and confirms or resends as the server's CRC says.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/crc.h"
#include "bulwark/cur.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/progress.h"
#include "cli/send.h"
#include "proto/vault.h"

#define CHUNK	    (1024u * 1024u)
#define MAX_RETRIES 3 /* resends of one request after an error reply */
#define MAX_SENDS   4 /* 1028s of one file: the first and 3 resends */
#define RESP_CAP    1024u
/* Largest file whose ciphertext fits the protocol's u32 sizes. */
#define MAX_PLAIN (BW_MAX_CONTENT_SIZE - 1u)
/* Pause before the first resend; it doubles for each further one (0.5 s,
 * 1 s, 2 s: at most 3.5 s in all for one request). */
#define BACKOFF_MS 500u
/* After a failed write, how long to look for a reply already on its way
 * (a server that refuses an upload answers 2107 and closes mid-body). */
#define WAITING_REPLY_MS 1000u
/* Bytes per second a file body must average, on top of --timeout. */
#define BODY_MIN_RATE 1024u

struct send_ctx {
	struct bw_session sess;
	struct bw_identity me;
	uint8_t aes_key[BW_AES_KEY_LEN];
	int need_rekey; /* a 1028 failed and its connection is gone: 1027 */
	int final;	/* 0, or the exit status of a failure not to retry */
	int replied;	/* the last failure came with a reply from the server */
	char why[600];	/* what the last failure was, for the user */
	const char *path;	      /* file to send */
	char file_field[BW_NAME_CAP]; /* name sent in 1028 */
	uint64_t plain_len;
	uint32_t cipher_len;
	uint32_t local_crc;
	int quiet;
};

/* One request: how it is sent, what the user calls it, which replies end
 * it. */
struct req {
	const char *what; /* "registration", "upload", ... */
	int (*send)(struct send_ctx *x, const struct req *rq);
	uint16_t code;
	const uint8_t *id; /* header client id; NULL sends zeros */
	const uint8_t *payload;
	uint32_t len;
	const uint16_t *ok;
	size_t ok_n;
	int fd; /* the file, for 1028 */
};

static int
send_plain(struct send_ctx *x, const struct req *rq)
{
	return bw_session_send(&x->sess, rq->id, rq->code, rq->payload,
			       rq->len);
}

static int
is_expected(uint16_t code, const uint16_t *ok, size_t ok_n)
{
	size_t i;

	for (i = 0; i < ok_n; i++) {
		if (ok[i] == code)
			return 1;
	}
	return 0;
}

/* What a network error means to the user; never the bare errno text of a
 * write to a closed connection ("Broken pipe"). */
static const char *
net_text(int rc)
{
	switch (rc) {
	case BW_ECLOSED:
	case -EPIPE:
	case -ECONNRESET:
		return "the server closed the connection";
	case BW_ETIMEDOUT:
		return "timed out";
	case BW_ETOOBIG:
		return "the server's reply is too large";
	case BW_EPROTO:
		return "the server's reply is malformed";
	default:
		return bw_strerror(rc);
	}
}

/* Sets x->why for a failed try: wrc is the send's error, rc the receive's,
 * code the reply's when rc is 0. */
static void
explain(struct send_ctx *x, const struct req *rq, int wrc, int rc,
	uint16_t code)
{
	unsigned s = x->sess.timeout_ms / 1000u;

	x->replied = rc == 0;
	if (rc == 0 && code == BW_VAULT_RESP_ERROR)
		snprintf(x->why, sizeof(x->why),
			 "the server refused the %s (2107 general error)",
			 rq->what);
	else if (rc == 0)
		snprintf(x->why, sizeof(x->why),
			 "the server answered %u, which is not a reply to %u "
			 "(%s)",
			 code, rq->code, rq->what);
	else if (wrc == BW_ETIMEDOUT)
		snprintf(x->why, sizeof(x->why),
			 "timed out sending the %s (no progress for %u s)",
			 rq->what, s);
	else if (wrc == 0 && rc == BW_ETIMEDOUT)
		snprintf(x->why, sizeof(x->why),
			 "timed out: no complete reply to the %s within %u s",
			 rq->what, s);
	else
		snprintf(x->why, sizeof(x->why), "%s during the %s",
			 net_text(wrc != 0 ? wrc : rc), rq->what);
}

static int rekey(struct send_ctx *x);

/* One try: connects, first asks for a fresh key if a 1028 needs one, sends
 * the request and reads the reply. 0 with *code one of rq->ok; otherwise an
 * error with x->why set. A reply waiting after a failed send is read, so
 * that a refusal shows as what it is. */
static int
attempt(struct send_ctx *x, const struct req *rq, uint16_t *code, uint8_t *out,
	size_t *len)
{
	unsigned wait = x->sess.timeout_ms;
	int rc, wrc;

	x->replied = 0;
	if ((rc = bw_session_connect(&x->sess)) != 0) {
		snprintf(x->why, sizeof(x->why), "cannot connect to %s:%u: %s",
			 x->sess.host, x->sess.port, net_text(rc));
		return rc;
	}
	if (rq->code == BW_VAULT_REQ_SEND_FILE && x->need_rekey &&
	    (rc = rekey(x)) != 0)
		return rc;
	bw_session_deadline(&x->sess, x->sess.timeout_ms);
	if ((wrc = rq->send(x, rq)) != 0 && x->final != 0) {
		bw_session_close(&x->sess);
		return wrc; /* a local failure; x->why says which */
	}
	if (wrc != 0)
		bw_session_deadline(&x->sess, WAITING_REPLY_MS < wait
						      ? WAITING_REPLY_MS
						      : wait);
	rc = bw_session_recv(&x->sess, code, out, RESP_CAP, len);
	if (wrc == 0 && rc == 0 && is_expected(*code, rq->ok, rq->ok_n))
		return 0;
	explain(x, rq, wrc, rc, *code);
	if (wrc != 0 || rc != 0 || *code != BW_VAULT_RESP_ERROR)
		bw_session_close(&x->sess); /* broken or out of step */
	return rc == 0 ? BW_ESERVER : rc;
}

/* Sends rq and reads its reply, resending at most MAX_RETRIES times after
 * an error reply, an unexpected reply or a lost connection, with a pause
 * that doubles each time. A 1028 whose connection was lost gets a fresh key
 * (1027) on the next connection before it is resent. Returns 0 with *code
 * one of rq->ok, or a negative error after the last try (x->why says what
 * happened, x->final the exit status if it was not worth retrying). */
static int
exchange(struct send_ctx *x, const struct req *rq, uint16_t *code, uint8_t *out,
	 size_t *len)
{
	unsigned pause = BACKOFF_MS;
	int tries, rc = BW_ESERVER;

	x->final = 0;
	for (tries = 1; tries <= MAX_RETRIES + 1; tries++) {
		if ((rc = attempt(x, rq, code, out, len)) == 0)
			return 0;
		fprintf(stderr, "%s%s",
			x->replied ? "server responded with an error: " : "",
			x->why);
		if (x->final != 0 || tries > MAX_RETRIES) {
			fputc('\n', stderr);
			break;
		}
		fprintf(stderr, "; trying again in %u.%u s\n", pause / 1000u,
			pause % 1000u / 100u);
		if (bw_session_idle(&x->sess, pause) &&
		    rq->code == BW_VAULT_REQ_SEND_FILE)
			x->need_rekey = 1;
		pause *= 2;
	}
	return rc;
}

/* --- identity ------------------------------------------------------------
 */

/* Takes the AES key out of a 2102/2105 payload meant for who. */
static int
unwrap_key(struct send_ctx *x, const struct bw_identity *who,
	   const uint8_t *payload, size_t len)
{
	uint8_t id[BW_ID_LEN];
	const uint8_t *wrapped;
	size_t n = 0;

	if (bw_vault_aes_payload_decode(payload, len, id, &wrapped) != 0 ||
	    memcmp(id, who->id, BW_ID_LEN) != 0)
		return BW_EPROTO;
	if (bw_rsa_oaep_decrypt(who->key, wrapped, BW_RSA_CT_LEN, x->aes_key,
				sizeof(x->aes_key), &n) != 0 ||
	    n != BW_AES_KEY_LEN) {
		bw_wipe(x->aes_key, sizeof(x->aes_key));
		return BW_EBADKEY;
	}
	return 0;
}

/* 1027 on the current connection, one try, for a fresh AES key before a
 * 1028 is resent. 2106 or a key that cannot be unwrapped is final. */
static int
rekey(struct send_ctx *x)
{
	static const uint16_t ok[] = {BW_VAULT_RESP_RECONNECT_AES,
				      BW_VAULT_RESP_RECONNECT_DENIED};
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct req rq = {.what = "reconnect",
			 .send = send_plain,
			 .code = BW_VAULT_REQ_RECONNECT,
			 .id = x->me.id,
			 .payload = field,
			 .len = BW_NAME_FIELD,
			 .ok = ok,
			 .ok_n = 2,
			 .fd = -1};
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	if (bw_name_encode(x->me.name, field) != 0) {
		snprintf(x->why, sizeof(x->why), "our name cannot be sent");
		x->final = BW_EXIT_USAGE;
		return BW_ECONFIG;
	}
	if ((rc = attempt(x, &rq, &code, out, &len)) != 0)
		goto out;
	if (code == BW_VAULT_RESP_RECONNECT_DENIED) {
		snprintf(x->why, sizeof(x->why),
			 "the server no longer knows '%s' (2106 to the "
			 "reconnect for a fresh key)",
			 x->me.name);
		rc = BW_ENOTFOUND;
	} else if ((rc = unwrap_key(x, &x->me, out, len)) != 0) {
		snprintf(x->why, sizeof(x->why),
			 "the server's fresh AES key cannot be decrypted with "
			 "our private key: %s",
			 bw_strerror(rc));
	}
	if (rc != 0) {
		x->replied = 1;
		x->final = BW_EXIT_FATAL;
		bw_session_close(&x->sess);
	} else {
		x->need_rekey = 0;
	}
out:
	bw_wipe(out, sizeof(out));
	return rc;
}

/* A new identity: 1025 then 1026. me.info and priv.key are written only
 * once the server's AES key has been unwrapped, so a failure on the way
 * leaves the old ones (or none) untouched. */
static int
register_new(struct send_ctx *x, const char *name)
{
	static const uint16_t reg_ok[] = {BW_VAULT_RESP_REGISTERED,
					  BW_VAULT_RESP_REG_FAILED};
	static const uint16_t key_ok[] = {BW_VAULT_RESP_PUBKEY_AES};
	uint8_t field[BW_NAME_FIELD], pk[BW_NAME_FIELD + BW_RSA_PUB_LEN];
	uint8_t out[RESP_CAP];
	char hex[2 * BW_ID_LEN + 1];
	struct bw_identity nu;
	struct req rq;
	uint16_t code = 0;
	size_t len = 0;
	int rc, ret = BW_EXIT_FATAL;

	/* name may point into x->me, which stays until nu is complete */
	memset(&nu, 0, sizeof(nu));
	snprintf(nu.name, sizeof(nu.name), "%s", name);
	if (bw_name_encode(nu.name, field) != 0) {
		bw_cli_fatal("the name '%s' cannot be sent", nu.name);
		ret = BW_EXIT_USAGE;
		goto out;
	}
	if ((rc = bw_rsa_generate(&nu.key)) != 0 ||
	    (rc = bw_rsa_to_spki(nu.key, pk + BW_NAME_FIELD)) != 0) {
		bw_cli_fatal("cannot generate an RSA key: %s", bw_strerror(rc));
		goto out;
	}
	rq = (struct req){.what = "registration",
			  .send = send_plain,
			  .code = BW_VAULT_REQ_REGISTER,
			  .payload = field,
			  .len = BW_NAME_FIELD,
			  .ok = reg_ok,
			  .ok_n = 2,
			  .fd = -1};
	if (exchange(x, &rq, &code, out, &len) != 0) {
		bw_cli_fatal("registration of '%s' failed: %s", nu.name,
			     x->why);
		goto out;
	}
	if (code == BW_VAULT_RESP_REG_FAILED) {
		bw_cli_fatal("the name '%s' is already registered on the "
			     "server (2101)",
			     nu.name);
		ret = BW_EXIT_TAKEN;
		goto out;
	}
	if (bw_vault_id_payload_decode(out, len, nu.id) != 0) {
		bw_cli_fatal("the server's registration reply is malformed");
		goto out;
	}
	memcpy(pk, field, BW_NAME_FIELD);
	rq = (struct req){.what = "public key",
			  .send = send_plain,
			  .code = BW_VAULT_REQ_PUBKEY,
			  .id = nu.id,
			  .payload = pk,
			  .len = sizeof(pk),
			  .ok = key_ok,
			  .ok_n = 1,
			  .fd = -1};
	if (exchange(x, &rq, &code, out, &len) != 0) {
		bw_cli_fatal("the key exchange failed: %s", x->why);
		goto out;
	}
	if ((rc = unwrap_key(x, &nu, out, len)) != 0) {
		bw_cli_fatal("the key exchange failed: the server's AES key "
			     "cannot be decrypted with our private key: %s",
			     bw_strerror(rc));
		goto out;
	}
	if ((rc = bw_identity_save(&nu, "me.info", "priv.key")) != 0) {
		bw_cli_fatal("cannot write me.info: %s", bw_strerror(rc));
		ret = BW_EXIT_USAGE;
		goto out;
	}
	bw_hex_encode(nu.id, BW_ID_LEN, hex);
	printf("registered as '%s' (id %s)\n", nu.name, hex);
	bw_identity_fini(&x->me);
	x->me = nu;
	nu.key = NULL; /* x->me owns it now */
	ret = BW_EXIT_OK;
out:
	bw_wipe(out, sizeof(out));
	bw_identity_fini(&nu);
	return ret;
}

/* 1027 with the id from me.info; 2106 means register again. */
static int
reconnect(struct send_ctx *x, int *denied)
{
	static const uint16_t ok[] = {BW_VAULT_RESP_RECONNECT_AES,
				      BW_VAULT_RESP_RECONNECT_DENIED};
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct req rq = {.what = "reconnect",
			 .send = send_plain,
			 .code = BW_VAULT_REQ_RECONNECT,
			 .id = x->me.id,
			 .payload = field,
			 .len = BW_NAME_FIELD,
			 .ok = ok,
			 .ok_n = 2,
			 .fd = -1};
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	*denied = 0;
	if (bw_name_encode(x->me.name, field) != 0) {
		bw_cli_fatal("the name in me.info cannot be sent");
		return BW_EXIT_USAGE;
	}
	if (exchange(x, &rq, &code, out, &len) != 0) {
		bw_cli_fatal("reconnecting as '%s' failed: %s", x->me.name,
			     x->why);
		return BW_EXIT_FATAL;
	}
	if (code == BW_VAULT_RESP_RECONNECT_DENIED) {
		*denied = 1;
		return BW_EXIT_OK;
	}
	rc = unwrap_key(x, &x->me, out, len);
	bw_wipe(out, sizeof(out));
	if (rc != 0) {
		bw_cli_fatal("the server's AES key cannot be decrypted with "
			     "our private key: %s",
			     bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	printf("reconnected as '%s'\n", x->me.name);
	return BW_EXIT_OK;
}

/* --- the upload ----------------------------------------------------------
 */
/* The upload pipeline: this thread reads, CRCs and encrypts one chunk while
 * a sender thread writes the previous one to the socket, so encryption (the
 * slowest step, serial in CBC mode) overlaps the network. Two buffers go back
 * and forth through a one-slot hand-over. */
struct pipe {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *full; /* encrypted chunk waiting for the sender */
	size_t full_len;
	uint8_t *empty; /* buffer the sender has finished with */
	int done;	/* no more chunks */
	int err;	/* the sender's error, if any */
	const struct bw_session *sess;
};

static void *
sender_main(void *arg)
{
	struct pipe *pp = arg;
	uint8_t *buf;
	size_t len;
	int rc = 0;

	for (;;) {
		pthread_mutex_lock(&pp->mu);
		while (pp->full == NULL && !pp->done)
			pthread_cond_wait(&pp->cv, &pp->mu);
		if (pp->full == NULL) {
			pthread_mutex_unlock(&pp->mu);
			break;
		}
		buf = pp->full;
		len = pp->full_len;
		pp->full = NULL;
		pthread_mutex_unlock(&pp->mu);
		rc = bw_session_write(pp->sess, buf, len);
		pthread_mutex_lock(&pp->mu);
		pp->empty = buf;
		if (rc != 0)
			pp->err = rc;
		pthread_cond_broadcast(&pp->cv);
		pthread_mutex_unlock(&pp->mu);
		if (rc != 0)
			break;
	}
	return NULL;
}

/* Hands buf to the sender and takes back a free buffer (or NULL on a
 * sender error, with *rc set). */
static uint8_t *
pipe_swap(struct pipe *pp, uint8_t *buf, size_t len, int *rc)
{
	uint8_t *back;

	pthread_mutex_lock(&pp->mu);
	while (pp->full != NULL && pp->err == 0)
		pthread_cond_wait(&pp->cv, &pp->mu);
	if (pp->err != 0) {
		*rc = pp->err;
		pthread_mutex_unlock(&pp->mu);
		return NULL;
	}
	pp->full = buf;
	pp->full_len = len;
	pthread_cond_broadcast(&pp->cv);
	while (pp->empty == NULL && pp->err == 0)
		pthread_cond_wait(&pp->cv, &pp->mu);
	back = pp->empty;
	pp->empty = NULL;
	if (back == NULL)
		*rc = pp->err;
	pthread_mutex_unlock(&pp->mu);
	return back;
}

/* Reads exactly n bytes at off; BW_ESIZE if the file ends first. */
static int
pread_full(int fd, uint8_t *buf, size_t n, uint64_t off)
{
	ssize_t r;

	while (n > 0) {
		r = pread(fd, buf, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return BW_ESIZE; /* the file shrank while we read it */
		buf += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* A mapped file that shrinks under us raises SIGBUS on the missing pages;
 * while a chunk is being read from a mapping, that jumps back to report it
 * instead of killing the process. */
static __thread sigjmp_buf *bus_jmp;

static void
on_sigbus(int sig)
{
	if (bus_jmp != NULL)
		siglongjmp(*bus_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Puts the file's bytes [off, off + n) into buf, whole blocks encrypted and
 * the last n % 16 bytes in clear for the caller to pad, and adds them to the
 * CRC. The file is mapped when possible, so AES reads the page cache
 * directly instead of through a copy; otherwise it is read. */
static int
take_chunk(int fd, uint64_t off, size_t n, uint8_t *buf, struct bw_cksum *crc,
	   struct bw_aes *aes)
{
	size_t whole = n & ~(size_t)(BW_AES_BLOCK - 1);
	sigjmp_buf jb;
	uint8_t *map;
	int rc;

	map = n > 0 ? mmap(NULL, n, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd,
			   (off_t)off)
		    : MAP_FAILED;
	if (map == MAP_FAILED) {
		if ((rc = pread_full(fd, buf, n, off)) != 0)
			return rc;
		bw_cksum_update(crc, buf, n);
		return bw_aes_cbc(aes, buf, whole);
	}
	if (sigsetjmp(jb, 1) != 0) {
		bus_jmp = NULL;
		munmap(map, n);
		return BW_ESIZE; /* the file shrank while we read it */
	}
	bus_jmp = &jb;
	bw_cksum_update(crc, map, n);
	rc = bw_aes_cbc_to(aes, map, buf, whole);
	memcpy(buf + whole, map + whole, n - whole);
	bus_jmp = NULL;
	munmap(map, n);
	return rc;
}

/* Ends the upload with a local failure (the file, memory, crypto): not a
 * thing a resend can mend. */
static int
local_failure(struct send_ctx *x, int rc)
{
	if (rc == BW_ESIZE)
		snprintf(x->why, sizeof(x->why),
			 "the file changed size while it was being sent");
	else
		snprintf(x->why, sizeof(x->why), "%s", bw_strerror(rc));
	x->final = rc == BW_ESIZE || rc == -EIO ? BW_EXIT_USAGE : BW_EXIT_FATAL;
	return rc;
}

/* Header and prefix within the exchange's deadline, then the body, which
 * must keep moving (no stall of --timeout) and average BODY_MIN_RATE. */
static int
send_head(struct send_ctx *x)
{
	uint8_t prefix[BW_FILE_PREFIX_LEN];
	int rc;

	bw_put_u32le(prefix, x->cipher_len);
	if ((rc = bw_name_encode(x->file_field, prefix + 4)) != 0)
		return local_failure(x, rc);
	if ((rc = bw_session_send_hdr(
		     &x->sess, x->me.id, BW_VAULT_REQ_SEND_FILE,
		     BW_FILE_PREFIX_LEN + x->cipher_len)) != 0 ||
	    (rc = bw_session_write(&x->sess, prefix, sizeof(prefix))) != 0)
		return rc;
	bw_session_deadline(&x->sess,
			    x->sess.timeout_ms + (uint64_t)x->cipher_len *
							 1000u / BODY_MIN_RATE);
	return 0;
}

/* Streams header + prefix + ciphertext; computes the cksum on the way. A
 * local failure sets x->final; a network one does not. */
static int
send_file(struct send_ctx *x, const struct req *rq)
{
	uint8_t *bufs[2] = {NULL, NULL}, *buf;
	struct pipe pp;
	struct bw_aes *aes = NULL;
	struct bw_cksum crc;
	struct bw_progress prog;
	pthread_t sender;
	struct stat st;
	int started = 0, rc, i;
	uint64_t done = 0;
	size_t n, want;
	/* small files need small buffers */
	size_t buf_cap =
		(x->cipher_len < CHUNK ? x->cipher_len : CHUNK) + BW_AES_BLOCK;

	memset(&pp, 0, sizeof(pp));
	pthread_mutex_init(&pp.mu, NULL);
	pthread_cond_init(&pp.cv, NULL);
	pp.sess = &x->sess;
	for (i = 0; i < 2; i++) {
		if ((bufs[i] = malloc(buf_cap)) == NULL) {
			rc = local_failure(x, BW_ENOMEM);
			goto out;
		}
	}
	if ((rc = bw_aes_new(&aes, x->aes_key, 1)) != 0) {
		rc = local_failure(x, rc);
		goto out;
	}
	if ((rc = send_head(x)) != 0)
		goto out;
	if ((rc = -pthread_create(&sender, NULL, sender_main, &pp)) != 0) {
		rc = local_failure(x, rc);
		goto out;
	}
	started = 1;
	pp.empty = bufs[1];
	buf = bufs[0];
	bw_cksum_init(&crc);
	bw_progress_start(&prog, x->file_field, x->plain_len, !x->quiet);
	for (;;) {
		want = x->plain_len - done < CHUNK
			       ? (size_t)(x->plain_len - done)
			       : CHUNK;
		if ((rc = take_chunk(rq->fd, done, want, buf, &crc, aes)) !=
		    0) {
			rc = local_failure(x, rc);
			goto out;
		}
		done += want;
		n = want & ~(size_t)(BW_AES_BLOCK - 1);
		if (done == x->plain_len) {
			/* last chunk: pad and encrypt the final block */
			bw_pkcs7_pad(buf + n, want - n);
			if ((rc = bw_aes_cbc(aes, buf + n, BW_AES_BLOCK)) !=
			    0) {
				rc = local_failure(x, rc);
				goto out;
			}
			n += BW_AES_BLOCK;
		}
		if ((buf = pipe_swap(&pp, buf, n, &rc)) == NULL)
			goto out; /* the sender's (network) error */
		bw_progress_update(&prog, done);
		if (done == x->plain_len)
			break;
	}
	/* the file must not have grown while we read it */
	if (fstat(rq->fd, &st) != 0 || (uint64_t)st.st_size != x->plain_len) {
		rc = local_failure(x, BW_ESIZE);
		goto out;
	}
	x->local_crc = bw_cksum_final(&crc);
	rc = 0;
out:
	if (started) {
		pthread_mutex_lock(&pp.mu);
		pp.done = 1;
		pthread_cond_broadcast(&pp.cv);
		pthread_mutex_unlock(&pp.mu);
		if (x->final != 0) /* unblock the sender */
			shutdown(x->sess.fd, SHUT_RDWR);
		pthread_join(sender, NULL);
		if (rc == 0 && pp.err != 0)
			rc = pp.err;
		if (rc == 0)
			bw_progress_end(&prog);
	}
	/* the reply must follow the last byte within --timeout */
	bw_session_deadline(&x->sess, x->sess.timeout_ms);
	pthread_mutex_destroy(&pp.mu);
	pthread_cond_destroy(&pp.cv);
	bw_aes_free(aes);
	for (i = 0; i < 2; i++)
		bw_secure_free(bufs[i], buf_cap);
	return rc;
}

/* 1029 after a match, 1031 after the last mismatch: both want 2104. */
static int
confirm(struct send_ctx *x, uint16_t req_code, const char *what)
{
	static const uint16_t ack_ok[] = {BW_VAULT_RESP_ACK};
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct req rq = {.what = what,
			 .send = send_plain,
			 .code = req_code,
			 .id = x->me.id,
			 .payload = field,
			 .len = BW_NAME_FIELD,
			 .ok = ack_ok,
			 .ok_n = 1,
			 .fd = -1};
	uint16_t code = 0;
	size_t len = 0;

	if (bw_name_encode(x->file_field, field) != 0)
		return BW_ECONFIG;
	return exchange(x, &rq, &code, out, &len);
}

/* 1030: no reply; the 1028 that follows is the resend. */
static int
ask_resend(struct send_ctx *x)
{
	uint8_t field[BW_NAME_FIELD];
	struct req rq = {.what = "resend request",
			 .send = send_plain,
			 .code = BW_VAULT_REQ_CRC_RETRY,
			 .id = x->me.id,
			 .payload = field,
			 .len = BW_NAME_FIELD,
			 .fd = -1};
	int rc;

	if ((rc = bw_name_encode(x->file_field, field)) != 0 ||
	    (rc = bw_session_connect(&x->sess)) != 0)
		return rc;
	bw_session_deadline(&x->sess, x->sess.timeout_ms);
	return send_plain(x, &rq);
}

static int
upload(struct send_ctx *x, int fd)
{
	static const uint16_t file_ok[] = {BW_VAULT_RESP_FILE_OK};
	uint8_t out[RESP_CAP];
	struct req rq = {.what = "upload",
			 .send = send_file,
			 .code = BW_VAULT_REQ_SEND_FILE,
			 .ok = file_ok,
			 .ok_n = 1,
			 .fd = fd};
	struct bw_file_ack ack;
	uint16_t code = 0;
	size_t len = 0;
	int sends, rc;

	for (sends = 1; sends <= MAX_SENDS; sends++) {
		rc = exchange(x, &rq, &code, out, &len);
		if (rc == 0 && (bw_vault_file_ack_decode(out, len, &ack) != 0 ||
				ack.content_size != x->cipher_len)) {
			rc = BW_EPROTO;
			snprintf(x->why, sizeof(x->why),
				 "the server's 2103 does not match the upload");
		}
		if (rc != 0) {
			bw_cli_fatal("sending '%s' failed: %s", x->path,
				     x->why);
			return x->final != 0 ? x->final : BW_EXIT_FATAL;
		}
		if (ack.cksum == x->local_crc) {
			if (confirm(x, BW_VAULT_REQ_CRC_OK, "confirmation") !=
			    0) {
				bw_cli_fatal("the server did not acknowledge "
					     "the verified file: %s",
					     x->why);
				return BW_EXIT_FATAL;
			}
			printf("sent '%s' (%llu bytes): CRC %u verified by the "
			       "server\n",
			       x->file_field, (unsigned long long)x->plain_len,
			       x->local_crc);
			return BW_EXIT_OK;
		}
		fprintf(stderr,
			"CRC mismatch on send %d of %d: server %u, ours %u\n",
			sends, MAX_SENDS, ack.cksum, x->local_crc);
		if (sends == MAX_SENDS)
			break;
		if ((rc = ask_resend(x)) != 0) {
			bw_cli_fatal("cannot ask for a resend: %s",
				     net_text(rc));
			return BW_EXIT_FATAL;
		}
	}
	if (confirm(x, BW_VAULT_REQ_CRC_FAIL, "give-up notice") != 0)
		fprintf(stderr, "the server did not acknowledge 1031\n");
	bw_cli_fatal("the server's CRC of '%s' did not match ours after %d "
		     "sends; gave up",
		     x->path, MAX_SENDS);
	return BW_EXIT_CRC;
}

/* --- options and files ---------------------------------------------------
 */

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark send [OPTION]...\n"
		"Send one file to the vault, encrypted, and check that the "
		"server got it\nintact (cksum), resending up to 3 times.\n\n"
		"Reads from the working directory: transfer.info (line 1 "
		"host:port, line 2\nyour name, line 3 the file), me.info "
		"and priv.key (written once a\nregistration's key exchange "
		"has succeeded, mode 0600). With me.info the\nname is "
		"me.info's and line 2 may be empty.\n\n"
		"  -C, --dir DIR         work in DIR instead of the current "
		"directory\n"
		"  -s, --server H:P      server (overrides transfer.info line "
		"1)\n"
		"  -n, --name NAME       name to register (overrides line 2)\n"
		"  -f, --file PATH       file to send (overrides line 3; a "
		"regular file)\n"
		"  -q, --quiet           no progress bar\n"
		"  -t, --timeout SEC     limit on connecting and on each "
		"request with its\n"
		"                        whole reply (default 30); a file's "
		"bytes must keep\n"
		"                        moving (no stall of SEC) and average "
		"1 KiB/s\n"
		"  -h, --help            this help\n\n"
		"A request that gets an error reply, times out or loses the "
		"connection is\nsent again up to 3 times, after pauses of "
		"0.5, 1 and 2 s; an upload whose\nconnection was lost first "
		"asks for a fresh key (1027).\n\n"
		"Exit status: 0 stored and verified; 1 the server or network "
		"failed (Fatal:);\n2 bad usage or local files (missing, not "
		"a regular file, changed while\nsent); 3 the name is taken; "
		"4 the CRC still disagreed after the last\nresend.\n");
}

struct transfer {
	char server[300];
	char name[BW_NAME_CAP];
	char file[4096];
};

static int
read_transfer(struct transfer *t)
{
	char *text = NULL, *lines[3] = {NULL, NULL, NULL}, *p;
	size_t len = 0;
	int i, rc;

	if ((rc = bw_read_small_file("transfer.info", 16384, &text, &len)) != 0)
		return rc;
	p = text;
	for (i = 0; i < 3 && p != NULL; i++) {
		lines[i] = p;
		if ((p = strchr(p, '\n')) != NULL)
			*p++ = '\0';
		lines[i][strcspn(lines[i], "\r")] = '\0';
	}
	if (t->server[0] == '\0' && lines[0] != NULL)
		snprintf(t->server, sizeof(t->server), "%s", lines[0]);
	if (t->name[0] == '\0' && lines[1] != NULL)
		snprintf(t->name, sizeof(t->name), "%s", lines[1]);
	if (t->file[0] == '\0' && lines[2] != NULL)
		snprintf(t->file, sizeof(t->file), "%s", lines[2]);
	free(text);
	return 0;
}

/* Parses the options into t, x and *timeout_ms: -1 to go on, or the exit
 * status. */
static int
parse_args(int argc, char **argv, struct transfer *t, struct send_ctx *x,
	   unsigned *timeout_ms)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, 'C'},
		{"server", required_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},
		{"file", required_argument, NULL, 'f'},
		{"quiet", no_argument, NULL, 'q'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "C:s:n:f:qt:h", opts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'C':
			if (chdir(optarg) != 0) {
				bw_cli_fatal("cannot enter %s: %s", optarg,
					     strerror(errno));
				return BW_EXIT_USAGE;
			}
			break;
		case 's':
			snprintf(t->server, sizeof(t->server), "%s", optarg);
			break;
		case 'n':
			snprintf(t->name, sizeof(t->name), "%s", optarg);
			break;
		case 'f':
			snprintf(t->file, sizeof(t->file), "%s", optarg);
			break;
		case 'q':
			x->quiet = 1;
			break;
		case 't':
			if (bw_cli_timeout_arg("bulwark send", optarg,
					       timeout_ms) != 0)
				return BW_EXIT_USAGE;
			break;
		case 'h':
			usage(stdout);
			return BW_EXIT_OK;
		default:
			usage(stderr);
			return BW_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return BW_EXIT_USAGE;
	}
	return -1;
}

/* Opens the file to send without blocking (a FIFO or a device would wait
 * for a writer forever) and refuses anything but a regular file. */
static int
open_file(struct send_ctx *x, const char *path, int *fd)
{
	struct stat st;
	const char *why = NULL;
	int flags;

	if ((*fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) <
	    0)
		why = strerror(errno);
	else if (fstat(*fd, &st) != 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = S_ISFIFO(st.st_mode)  ? "a FIFO, not a regular file"
		      : S_ISDIR(st.st_mode) ? "a directory, not a regular file"
					    : "not a regular file";
	else if ((flags = fcntl(*fd, F_GETFL)) < 0 ||
		 fcntl(*fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
		why = strerror(errno);
	if (why != NULL) {
		bw_cli_fatal("cannot read the file '%s': %s", path, why);
		return BW_EXIT_USAGE;
	}
	if ((uint64_t)st.st_size > MAX_PLAIN) {
		bw_cli_fatal("'%s' is %llu bytes; the protocol carries at most "
			     "%u",
			     path, (unsigned long long)st.st_size, MAX_PLAIN);
		return BW_EXIT_USAGE;
	}
	x->plain_len = (uint64_t)st.st_size;
	x->cipher_len = (uint32_t)bw_aes_cipher_len(x->plain_len);
	return BW_EXIT_OK;
}

/* The base name of the file, which travels in the 1028. */
static int
set_file_field(struct send_ctx *x, const char *path)
{
	const char *base, *p;

	for (base = p = path; *p != '\0'; p++) {
		if (*p == '/')
			base = p + 1;
	}
	if (strlen(base) == 0 || strlen(base) > 254) {
		bw_cli_fatal("the file name '%s' cannot be sent", base);
		return BW_EXIT_USAGE;
	}
	memcpy(x->file_field, base, strlen(base) + 1);
	return BW_EXIT_OK;
}

/* Fills what the options left out from transfer.info and checks it. A name
 * is needed only without me.info (have_me): with it, me.info's is used. */
static int
resolve_transfer(struct transfer *t, int have_me)
{
	int rc;

	if ((t->server[0] == '\0' || t->file[0] == '\0' ||
	     (t->name[0] == '\0' && !have_me)) &&
	    (rc = read_transfer(t)) != 0) {
		bw_cli_fatal("cannot read transfer.info: %s", bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	if (!have_me &&
	    (strlen(t->name) == 0 || strlen(t->name) > BW_CLI_NAME_MAX)) {
		bw_cli_fatal("the name must be 1 to %d characters "
			     "(transfer.info line 2)",
			     BW_CLI_NAME_MAX);
		return BW_EXIT_USAGE;
	}
	if (t->file[0] == '\0') {
		bw_cli_fatal("no file to send (transfer.info line 3 or "
			     "--file)");
		return BW_EXIT_USAGE;
	}
	return BW_EXIT_OK;
}

/* Reconnects with me.info or registers, then uploads. */
static int
run_session(struct send_ctx *x, const char *name, int have_me, int fd)
{
	int rc, denied = 0;

	if (have_me) {
		if ((rc = reconnect(x, &denied)) != BW_EXIT_OK)
			return rc;
		if (denied)
			printf("the server does not know '%s' with this id; "
			       "registering again\n",
			       x->me.name);
	}
	if (!have_me || denied) {
		if ((rc = register_new(x, have_me ? x->me.name : name)) !=
		    BW_EXIT_OK)
			return rc;
	}
	return upload(x, fd);
}

int
bw_cli_send(int argc, char **argv)
{
	struct transfer t;
	struct send_ctx x;
	char host[256];
	const char *why = NULL;
	unsigned timeout_ms = 30u * 1000u;
	uint16_t port;
	int rc, fd = -1, have_me;

	memset(&t, 0, sizeof(t));
	memset(&x, 0, sizeof(x));
	x.sess.fd = -1;
	if ((rc = parse_args(argc, argv, &t, &x, &timeout_ms)) >= 0)
		return rc;
	rc = bw_identity_load(&x.me, "me.info", "priv.key", &why);
	have_me = rc == 0;
	if (rc != 0 && rc != -ENOENT) {
		bw_cli_fatal("me.info %s", why != NULL ? why : bw_strerror(rc));
		rc = BW_EXIT_USAGE;
		goto out;
	}
	if ((rc = resolve_transfer(&t, have_me)) != BW_EXIT_OK)
		goto out;
	if (bw_parse_hostport(t.server, host, sizeof(host), &port) != 0) {
		bw_cli_fatal("'%s' is not host:port (transfer.info line 1)",
			     t.server);
		rc = BW_EXIT_USAGE;
		goto out;
	}
	x.path = t.file;
	if ((rc = open_file(&x, t.file, &fd)) != BW_EXIT_OK ||
	    (rc = set_file_field(&x, t.file)) != BW_EXIT_OK)
		goto out;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	signal(SIGBUS, on_sigbus);
	bw_session_init(&x.sess, host, port, timeout_ms, BW_VAULT_VERSION);
	rc = run_session(&x, t.name, have_me, fd);
out:
	if (fd >= 0)
		close(fd);
	bw_session_close(&x.sess);
	bw_identity_fini(&x.me);
	bw_wipe(x.aes_key, sizeof(x.aes_key));
	return rc;
}
