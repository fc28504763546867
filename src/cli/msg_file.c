/* bulwark msg, sending a file (153): streamed from disk through AES, the
 * header, prefix and first chunk in one write; a server that refuses the
 * content while it arrives (over its size limit) has its answer read and
 * reported.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/msg_cli_int.h"
#include "cli/progress.h"

#define FILE_CHUNK (64u * 1024u)

/* Reads up to n bytes at the file's current offset: whole reads unless it
 * ends. */
static ssize_t
read_some(int fd, uint8_t *p, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = read(fd, p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* Streams the file: header, prefix and the first chunk in one write, the
 * rest encrypted a chunk at a time, with a progress bar on a terminal
 * (labelled with the file's path) as bulwark send draws. */
static int
stream_file(struct msg_ctx *x, struct bw_session *s, struct bw_contact *c,
	    int fd, uint64_t size, const char *label)
{
	struct bw_progress prog;
	uint8_t buf[BW_MSG_SEND_PREFIX + FILE_CHUNK + BW_AES_BLOCK];
	struct bw_msg_send m;
	struct bw_aes *aes = NULL;
	uint64_t ct = bw_aes_cipher_len(size), done = 0;
	size_t off = BW_MSG_SEND_PREFIX, k;
	ssize_t r;
	int rc, first = 1;

	memcpy(m.to, c->id, BW_ID_LEN);
	m.type = BW_MSG_FILE;
	m.content_size = (uint32_t)ct;
	bw_msg_send_encode(&m, buf);
	if ((rc = bw_aes_new(&aes, c->aes, 1)) != 0)
		return rc;
	bw_progress_start(&prog, label, size, 1);
	for (;;) {
		r = read_some(fd, buf + off, FILE_CHUNK);
		if (r < 0) {
			rc = -errno;
			break;
		}
		k = (size_t)r;
		done += k;
		if (done == size) { /* the last chunk: pad it */
			bw_pkcs7_pad(buf + off + k - k % BW_AES_BLOCK,
				     k % BW_AES_BLOCK);
			k += BW_AES_BLOCK - k % BW_AES_BLOCK;
		} else if (k == 0 || k % BW_AES_BLOCK != 0 || done > size) {
			rc = BW_ESIZE; /* the file changed under us */
			break;
		}
		if ((rc = bw_aes_cbc(aes, buf + off, k)) != 0)
			break;
		if (first)
			rc = msg_open_request(
				x, s, BW_MSG_REQ_SEND, buf, off + k,
				(uint32_t)(BW_MSG_SEND_PREFIX + ct));
		else
			rc = bw_session_write(s, buf, k);
		first = 0;
		off = 0;
		if (rc == 0)
			bw_progress_update(&prog, done);
		if (rc != 0 || done == size)
			break;
	}
	if (rc == 0)
		bw_progress_end(&prog);
	bw_aes_free(aes);
	bw_wipe(buf, sizeof(buf));
	return rc;
}

int
msg_send_file(struct msg_ctx *x, struct bw_contact *c, const char *path)
{
	struct bw_session s;
	struct stat st;
	uint8_t ack[BW_MSG_STORED_LEN], to[BW_ID_LEN];
	uint32_t size = 0, msg_id;
	int fd, rc, why;

	/* not blocked by a FIFO while the directory is locked */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	why = fd < 0		     ? errno
	      : fstat(fd, &st) != 0  ? errno
	      : !S_ISREG(st.st_mode) ? EINVAL
				     : 0;
	if (why != 0) {
		if (fd >= 0)
			close(fd);
		printf("file not found\n"); /* the seed client's words */
		if (!x->menu)
			fprintf(stderr, "bulwark msg: %s: %s\n", path,
				why == EINVAL ? "not a regular file"
					      : strerror(why));
		return BW_EXIT_USAGE;
	}
	if ((rc = msg_may_seal_for(x, c)) != 0) {
		close(fd);
		return rc;
	}
	if (bw_aes_cipher_len((uint64_t)st.st_size) > BW_MSG_CONTENT_MAX) {
		close(fd);
		fprintf(stderr, "bulwark msg: %s is too large to send\n", path);
		return BW_EXIT_USAGE;
	}
	s.fd = -1;
	rc = stream_file(x, &s, c, fd, (uint64_t)st.st_size, path);
	close(fd);
	if ((rc == -EPIPE || rc == -ECONNRESET) && s.fd >= 0) {
		/* the server answered before the content was all sent (a
		 * 9000 to a content over its limit) and closed: its answer
		 * is what to report, not the write that failed */
		rc = msg_response_head(x, &s, BW_MSG_RESP_STORED, &size);
		bw_session_close(&s);
		return rc != 0 ? rc : msg_net_failure(x, BW_EPROTO);
	}
	if (rc != 0) {
		bw_session_close(&s);
		return rc == BW_ESIZE ? (fprintf(stderr,
						 "bulwark msg: %s changed "
						 "while it was sent\n",
						 path),
					 BW_EXIT_USAGE)
				      : msg_net_failure(x, rc);
	}
	rc = msg_response_head(x, &s, BW_MSG_RESP_STORED, &size);
	if (rc == 0 && size != sizeof(ack))
		rc = msg_net_failure(x, BW_EPROTO);
	if (rc == 0 && (rc = bw_session_read(&s, ack, sizeof(ack))) != 0)
		rc = msg_net_failure(x, rc);
	bw_session_close(&s);
	if (rc != 0)
		return rc;
	if (bw_msg_stored_decode(ack, sizeof(ack), to, &msg_id) != 0)
		return msg_net_failure(x, BW_EPROTO);
	printf("message %u stored\n", msg_id);
	return 0;
}

const struct bw_rsa *
msg_tls_key(const struct msg_ctx *x)
{
	if (x->reg_key != NULL)
		return x->reg_key;
	return x->have_me ? x->me.key : NULL;
}
