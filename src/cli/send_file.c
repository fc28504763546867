/* bulwark send, the file: read, CRC'd and encrypted a chunk at a time from
 * a mapping while a sender thread writes the previous chunk, then the
 * server's CRC confirmed (1029) or the file resent (1030, 1031).
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
#include "proto/vault_wire.h"

#include "cli/send_int.h"

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

void
send_guard_sigbus(void)
{
	signal(SIGBUS, on_sigbus);
}

/* The file as the encrypting thread reads it: windows of WINDOW bytes,
 * mapped one after another over one reserved range that starts on a 2 MiB
 * boundary, the file offsets of windows too. The page cache holds a file
 * written or read in large pieces in large folios (up to 2 MiB), which a
 * window so aligned maps whole: for a GiB written 4 MiB at a time, 670
 * page faults and 13 ms where 1 MiB windows at any address took 17,400
 * and 130 ms (bench figures in docs/performance.md). A file that cannot
 * be mapped is read into the chunk's buffer instead. */
#define WINDOW	  (4u * 1024u * 1024u) /* a multiple of CHUNK */
#define WIN_ALIGN (2u * 1024u * 1024u)

struct src {
	int fd;
	uint8_t *area; /* the reserved range (area_len bytes), or NULL */
	size_t area_len;
	uint8_t *win;	  /* its aligned start: the window */
	uint64_t win_off; /* the file offset mapped there */
	size_t win_len;	  /* 0: nothing mapped */
};

static void
src_init(struct src *s, int fd)
{
	uint8_t *a;

	memset(s, 0, sizeof(*s));
	s->fd = fd;
	a = mmap(NULL, WINDOW + WIN_ALIGN, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (a == MAP_FAILED)
		return; /* read, not mapped */
	s->area = a;
	s->area_len = WINDOW + WIN_ALIGN;
	s->win = (uint8_t *)(((uintptr_t)a + WIN_ALIGN - 1) &
			     ~(uintptr_t)(WIN_ALIGN - 1));
}

static void
src_fini(struct src *s)
{
	if (s->area != NULL)
		munmap(s->area, s->area_len);
	s->area = NULL;
}

/* The mapped bytes [off, off + n) of the file (n <= CHUNK, within one
 * window), or NULL if it cannot be mapped (then it is read). */
static const uint8_t *
src_map(struct src *s, uint64_t off, size_t n, uint64_t size)
{
	uint64_t start = off - off % WINDOW;
	size_t len;
	void *m;

	if (s->area == NULL || n == 0)
		return NULL;
	if (s->win_len == 0 || start != s->win_off) {
		len = size - start < WINDOW ? (size_t)(size - start) : WINDOW;
		/* over the previous window, which goes in the same call */
		m = mmap(s->win, len, PROT_READ,
			 MAP_PRIVATE | MAP_FIXED | MAP_POPULATE, s->fd,
			 (off_t)start);
		if (m == MAP_FAILED) {
			src_fini(s); /* the rest is read */
			return NULL;
		}
		s->win_off = start;
		s->win_len = len;
	}
	return s->win + (off - start);
}

/* Puts the file's bytes [off, off + n) into buf, whole blocks encrypted and
 * the last n % 16 bytes in clear for the caller to pad, and adds them to the
 * CRC. AES reads the mapped page cache directly instead of through a copy
 * when the file can be mapped; otherwise it is read. */
static int
take_chunk(struct src *s, uint64_t size, uint64_t off, size_t n, uint8_t *buf,
	   struct bw_cksum *crc, struct bw_aes *aes)
{
	size_t whole = n & ~(size_t)(BW_AES_BLOCK - 1);
	const uint8_t *map = src_map(s, off, n, size);
	sigjmp_buf jb;
	int rc;

	if (map == NULL) {
		if ((rc = pread_full(s->fd, buf, n, off)) != 0)
			return rc;
		bw_cksum_update(crc, buf, n);
		return bw_aes_cbc(aes, buf, whole);
	}
	if (sigsetjmp(jb, 1) != 0) {
		bus_jmp = NULL;
		return BW_ESIZE; /* the file shrank while we read it */
	}
	bus_jmp = &jb;
	bw_cksum_update(crc, map, n);
	rc = bw_aes_cbc_to(aes, map, buf, whole);
	memcpy(buf + whole, map + whole, n - whole);
	bus_jmp = NULL;
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
	struct src src;
	pthread_t sender;
	struct stat st;
	int started = 0, rc, i;
	uint64_t done = 0;
	size_t n, want;
	/* small files need small buffers */
	size_t buf_cap =
		(x->cipher_len < CHUNK ? x->cipher_len : CHUNK) + BW_AES_BLOCK;

	memset(&pp, 0, sizeof(pp));
	src_init(&src, rq->fd);
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
		if ((rc = take_chunk(&src, x->plain_len, done, want, buf, &crc,
				     aes)) != 0) {
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
	src_fini(&src);
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
			 .code = BW_VAULT_REQ_SEND_FILE,
			 .ok = file_ok,
			 .ok_n = 1,
			 .fd = fd};
	struct bw_file_ack ack;
	uint16_t code = 0;
	size_t len = 0;
	int sends, rc;

	for (sends = 1; sends <= MAX_SENDS; sends++) {
		rc = send_exchange(x, &rq, &code, out, &len);
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
