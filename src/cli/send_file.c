/* bulwark send, the file: encrypted and CRC'd a chunk at a time from the
 * windows a reader thread maps ahead, while a sender thread writes the
 * previous chunk, then the server's CRC confirmed (1029) or the file resent
 * (1030, 1031).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/cur.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/progress.h"
#include "cli/send.h"
#include "proto/vault_wire.h"

#include "cli/send_int.h"

/* --- the upload ----------------------------------------------------------
 */
/* The upload pipeline: a reader thread maps the file ahead (send_src.c),
 * this thread encrypts (and CRCs), and a sender thread writes the
 * encrypted chunks to the socket, so the encryption (the slowest step,
 * serial in CBC mode) overlaps the file and the network. PIPE_BUFS buffers
 * go round: a queue of encrypted chunks for the sender, and the ones it has
 * finished with. With two, the encryption waited for the sender at every
 * chunk, and a client alone (into a server that only reads) took 0.88-1.2 s
 * a GiB; with four and the reader, 0.78-0.83 s, at the encryption's own
 * 0.76 s (docs/performance.md, twenty-second round). */
#define PIPE_BUFS 4
struct pipe {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *full[PIPE_BUFS]; /* encrypted chunks, oldest at head */
	size_t full_len[PIPE_BUFS];
	unsigned head, nfull;
	uint8_t *empty[PIPE_BUFS]; /* buffers free to encrypt into */
	unsigned nempty;
	int done; /* no more chunks */
	int err;  /* the sender's error, if any */
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
		while (pp->nfull == 0 && !pp->done)
			pthread_cond_wait(&pp->cv, &pp->mu);
		if (pp->nfull == 0) {
			pthread_mutex_unlock(&pp->mu);
			break;
		}
		buf = pp->full[pp->head];
		len = pp->full_len[pp->head];
		pp->head = (pp->head + 1) % PIPE_BUFS;
		pp->nfull--;
		pthread_mutex_unlock(&pp->mu);
		rc = bw_session_write(pp->sess, buf, len);
		pthread_mutex_lock(&pp->mu);
		pp->empty[pp->nempty++] = buf;
		if (rc != 0)
			pp->err = rc;
		pthread_cond_broadcast(&pp->cv);
		pthread_mutex_unlock(&pp->mu);
		if (rc != 0)
			break;
	}
	return NULL;
}

/* Queues buf for the sender and takes back a free buffer (or NULL on a
 * sender error, with *rc set). */
static uint8_t *
pipe_swap(struct pipe *pp, uint8_t *buf, size_t len, int *rc)
{
	uint8_t *back = NULL;
	unsigned tail;

	pthread_mutex_lock(&pp->mu);
	if (pp->err == 0) {
		tail = (pp->head + pp->nfull) % PIPE_BUFS;
		pp->full[tail] = buf;
		pp->full_len[tail] = len;
		pp->nfull++;
		pthread_cond_broadcast(&pp->cv);
		while (pp->nempty == 0 && pp->err == 0)
			pthread_cond_wait(&pp->cv, &pp->mu);
		if (pp->err == 0)
			back = pp->empty[--pp->nempty];
	}
	if (back == NULL)
		*rc = pp->err;
	pthread_mutex_unlock(&pp->mu);
	return back;
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

	bw_put_u32le(prefix, send_content_len(x));
	if ((rc = bw_name_encode(x->file_field, prefix + 4)) != 0)
		return local_failure(x, rc);
	/* the header, prefix and body leave in as few segments as they fit
	 * (uncorked once the body is written) */
	bw_session_cork(&x->sess, 1);
	if ((rc = bw_session_send_hdr(&x->sess, x->me.id, send_upload_code(x),
				      BW_FILE_PREFIX_LEN +
					      send_content_len(x))) != 0 ||
	    (rc = bw_session_write(&x->sess, prefix, sizeof(prefix))) != 0)
		return rc;
	bw_session_deadline(&x->sess,
			    x->sess.timeout_ms + (uint64_t)send_content_len(x) *
							 1000u / BODY_MIN_RATE);
	return 0;
}

/* Streams header + prefix + ciphertext; the reader computes the cksum on
 * the way. A local failure sets x->final; a network one does not. */
static int
send_file(struct send_ctx *x, const struct req *rq)
{
	uint8_t *bufs[PIPE_BUFS] = {NULL}, *buf;
	struct pipe pp;
	struct bw_aes *aes = NULL;
	struct send_src *src = NULL;
	struct bw_progress prog;
	pthread_t sender;
	struct stat st;
	int started = 0, rc;
	uint64_t done = 0;
	uint64_t chunks = x->plain_len ? (x->plain_len + CHUNK - 1) / CHUNK : 1;
	size_t n, want, i;
	/* small files need small buffers, and no more than they fill */
	size_t buf_cap =
		(x->cipher_len < CHUNK ? x->cipher_len : CHUNK) + BW_AES_BLOCK;
	size_t nbuf = chunks < 2 ? 2 : chunks < PIPE_BUFS ? chunks : PIPE_BUFS;

	memset(&pp, 0, sizeof(pp));
	pthread_mutex_init(&pp.mu, NULL);
	pthread_cond_init(&pp.cv, NULL);
	pp.sess = &x->sess;
	for (i = 0; i < nbuf; i++) {
		if ((bufs[i] = malloc(buf_cap)) == NULL) {
			rc = local_failure(x, BW_ENOMEM);
			goto out;
		}
	}
	if (!x->clear && (rc = bw_aes_new(&aes, x->aes_key, 1)) != 0) {
		rc = local_failure(x, rc);
		goto out;
	}
	if ((rc = send_src_start(&src, rq->fd, x->plain_len)) != 0) {
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
	for (i = 1; i < nbuf; i++)
		pp.empty[pp.nempty++] = bufs[i];
	buf = bufs[0];
	bw_progress_start(&prog, x->file_field, x->plain_len, !x->quiet);
	for (;;) {
		want = x->plain_len - done < CHUNK
			       ? (size_t)(x->plain_len - done)
			       : CHUNK;
		if ((rc = send_src_encrypt(src, done, want, buf, aes)) != 0) {
			rc = local_failure(x, rc);
			goto out;
		}
		done += want;
		n = x->clear ? want : want & ~(size_t)(BW_AES_BLOCK - 1);
		if (done == x->plain_len && !x->clear) {
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
	if ((rc = send_src_finish(src, &x->local_crc)) != 0)
		rc = local_failure(x, rc);
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
	bw_session_cork(&x->sess, 0); /* what is held goes now */
	/* the reply must follow the last byte within --timeout */
	bw_session_deadline(&x->sess, x->sess.timeout_ms);
	pthread_mutex_destroy(&pp.mu);
	pthread_cond_destroy(&pp.cv);
	bw_aes_free(aes);
	send_src_free(src);
	for (i = 0; i < nbuf; i++)
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
	return send_exchange(x, &rq, &code, out, &len);
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

int
send_upload(struct send_ctx *x, int fd)
{
	static const uint16_t file_ok[] = {BW_VAULT_RESP_FILE_OK};
	uint8_t out[RESP_CAP];
	struct req rq = {.what = "upload",
			 .send = send_file,
			 /* the upload: a 1106 on the wire when x->clear */
			 .code = BW_VAULT_REQ_SEND_FILE,
			 .ok = file_ok,
			 .ok_n = 1,
			 .fd = fd};
	struct bw_file_ack ack;
	uint16_t code = 0;
	size_t len = 0;
	int sends, rc;

	send_choose_upload(x);
	for (sends = 1; sends <= MAX_SENDS; sends++) {
		rc = send_exchange(x, &rq, &code, out, &len);
		if (rc == 0 && (bw_vault_file_ack_decode(out, len, &ack) != 0 ||
				ack.content_size != send_content_len(x))) {
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
			if (!x->quiet)
				printf("sent '%s' (%llu bytes): CRC %u "
				       "verified "
				       "by the server\n",
				       x->file_field,
				       (unsigned long long)x->plain_len,
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
				     send_net_text(rc));
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
