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

struct send_ctx {
	struct bw_session sess;
	struct bw_identity me;
	uint8_t aes_key[BW_AES_KEY_LEN];
	int have_key;
	const char *path;	      /* file to send */
	char file_field[BW_NAME_CAP]; /* name sent in 1028 */
	uint64_t plain_len;
	uint32_t cipher_len;
	uint32_t local_crc;
	int quiet;
};

/* One attempt at a request: send it, read the reply into out. */
typedef int (*send_fn)(struct send_ctx *x, const void *arg);

struct plain_req {
	uint16_t code;
	const uint8_t *payload;
	uint32_t len;
};

static int
send_plain(struct send_ctx *x, const void *arg)
{
	const struct plain_req *r = arg;

	return bw_session_send(&x->sess, x->me.id, r->code, r->payload, r->len);
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

/* Sends a request and reads its reply, resending at most MAX_RETRIES times
 * after an error reply, an unexpected reply or a lost connection. Returns 0
 * with *code one of ok[], or a negative error after the last try. */
static int
exchange(struct send_ctx *x, const char *what, send_fn fn, const void *arg,
	 const uint16_t *ok, size_t ok_n, uint16_t *code, uint8_t *out,
	 size_t *len)
{
	int attempt, rc = BW_ESERVER;

	for (attempt = 0; attempt <= MAX_RETRIES; attempt++) {
		if ((rc = bw_session_connect(&x->sess)) != 0) {
			fprintf(stderr, "cannot connect to %s:%u: %s\n",
				x->sess.host, x->sess.port, bw_strerror(rc));
			continue;
		}
		if ((rc = fn(x, arg)) == 0 &&
		    (rc = bw_session_recv(&x->sess, code, out, RESP_CAP,
					  len)) == 0 &&
		    is_expected(*code, ok, ok_n))
			return 0;
		if (rc == 0) {
			rc = BW_ESERVER;
			fprintf(stderr, "server responded with an error\n");
			if (*code != BW_RESP_ERROR)
				bw_session_close(&x->sess); /* out of step */
		} else {
			fprintf(stderr,
				"server responded with an error (%s: %s)\n",
				what, bw_strerror(rc));
			bw_session_close(&x->sess);
		}
	}
	return rc;
}

/* --- identity ------------------------------------------------------------
 */

static int
unwrap_key(struct send_ctx *x, const uint8_t *payload, size_t len)
{
	uint8_t id[BW_ID_LEN];
	const uint8_t *wrapped;
	size_t n = 0;

	if (bw_vault_aes_payload_decode(payload, len, id, &wrapped) != 0 ||
	    memcmp(id, x->me.id, BW_ID_LEN) != 0)
		return BW_EPROTO;
	if (bw_rsa_oaep_decrypt(x->me.key, wrapped, BW_RSA_CT_LEN, x->aes_key,
				sizeof(x->aes_key), &n) != 0 ||
	    n != BW_AES_KEY_LEN)
		return BW_EBADKEY;
	x->have_key = 1;
	return 0;
}

/* 1025 then 1026; writes me.info as soon as the id is known. */
static int
register_new(struct send_ctx *x, const char *name)
{
	static const uint16_t reg_ok[] = {BW_RESP_REGISTERED,
					  BW_RESP_REG_FAILED};
	static const uint16_t key_ok[] = {BW_RESP_PUBKEY_AES};
	uint8_t field[BW_NAME_FIELD], pk[BW_NAME_FIELD + BW_RSA_PUB_LEN];
	uint8_t out[RESP_CAP];
	char hex[2 * BW_ID_LEN + 1], field_name[BW_NAME_CAP];
	struct plain_req r;
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	/* name may point into x->me, which is about to be replaced */
	snprintf(field_name, sizeof(field_name), "%s", name);
	name = field_name;
	bw_identity_fini(&x->me);
	memset(&x->me, 0, sizeof(x->me));
	snprintf(x->me.name, sizeof(x->me.name), "%s", name);
	if (bw_name_encode(name, field) != 0) {
		bw_cli_fatal("the name '%s' cannot be sent", name);
		return BW_EXIT_USAGE;
	}
	if ((rc = bw_rsa_generate(&x->me.key)) != 0 ||
	    (rc = bw_rsa_to_spki(x->me.key, pk + BW_NAME_FIELD)) != 0) {
		bw_cli_fatal("cannot generate an RSA key: %s", bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	r = (struct plain_req){BW_REQ_REGISTER, field, BW_NAME_FIELD};
	if ((rc = exchange(x, "register", send_plain, &r, reg_ok, 2, &code, out,
			   &len)) != 0) {
		bw_cli_fatal("registration of '%s' failed: %s", name,
			     bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	if (code == BW_RESP_REG_FAILED) {
		bw_cli_fatal("the name '%s' is already registered on the "
			     "server (2101)",
			     name);
		return BW_EXIT_TAKEN;
	}
	if (bw_vault_id_payload_decode(out, len, x->me.id) != 0) {
		bw_cli_fatal("the server's registration reply is malformed");
		return BW_EXIT_FATAL;
	}
	if ((rc = bw_identity_save(&x->me, "me.info", "priv.key")) != 0) {
		bw_cli_fatal("cannot write me.info: %s", bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	bw_hex_encode(x->me.id, BW_ID_LEN, hex);
	printf("registered as '%s' (id %s)\n", name, hex);
	memcpy(pk, field, BW_NAME_FIELD);
	r = (struct plain_req){BW_REQ_PUBKEY, pk, sizeof(pk)};
	if ((rc = exchange(x, "public key", send_plain, &r, key_ok, 1, &code,
			   out, &len)) != 0 ||
	    (rc = unwrap_key(x, out, len)) != 0) {
		bw_wipe(out, sizeof(out));
		bw_cli_fatal("the key exchange failed: %s", bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	bw_wipe(out, sizeof(out));
	return BW_EXIT_OK;
}

/* 1027 with the id from me.info; 2106 means register again. */
static int
reconnect(struct send_ctx *x, int *denied)
{
	static const uint16_t ok[] = {BW_RESP_RECONNECT_AES,
				      BW_RESP_RECONNECT_DENIED};
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct plain_req r = {BW_REQ_RECONNECT, field, BW_NAME_FIELD};
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	*denied = 0;
	if (bw_name_encode(x->me.name, field) != 0) {
		bw_cli_fatal("the name in me.info cannot be sent");
		return BW_EXIT_USAGE;
	}
	if ((rc = exchange(x, "reconnect", send_plain, &r, ok, 2, &code, out,
			   &len)) != 0) {
		bw_cli_fatal("reconnecting as '%s' failed: %s", x->me.name,
			     bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	if (code == BW_RESP_RECONNECT_DENIED) {
		*denied = 1;
		return BW_EXIT_OK;
	}
	rc = unwrap_key(x, out, len);
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

struct file_req {
	int fd;
};

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
	int fd;
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
		rc = bw_net_write_full(pp->fd, buf, len);
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

/* Streams header + prefix + ciphertext; computes the cksum on the way. */
static int
send_file(struct send_ctx *x, const void *arg)
{
	const struct file_req *fr = arg;
	uint8_t *bufs[2] = {NULL, NULL}, *buf, prefix[BW_FILE_PREFIX_LEN];
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
	pp.fd = x->sess.fd;
	bw_put_u32le(prefix, x->cipher_len);
	if ((rc = bw_name_encode(x->file_field, prefix + 4)) != 0)
		return rc;
	rc = BW_ENOMEM;
	for (i = 0; i < 2; i++) {
		if ((bufs[i] = malloc(buf_cap)) == NULL)
			goto out;
	}
	if ((rc = bw_aes_new(&aes, x->aes_key, 1)) != 0)
		goto out;
	if ((rc = bw_session_send_hdr(&x->sess, x->me.id, BW_REQ_SEND_FILE,
				      BW_FILE_PREFIX_LEN + x->cipher_len)) !=
		    0 ||
	    (rc = bw_net_write_full(x->sess.fd, prefix, sizeof(prefix))) != 0)
		goto out;
	if ((rc = -pthread_create(&sender, NULL, sender_main, &pp)) != 0)
		goto out;
	started = 1;
	pp.empty = bufs[1];
	buf = bufs[0];
	bw_cksum_init(&crc);
	bw_progress_start(&prog, x->file_field, x->plain_len, !x->quiet);
	for (;;) {
		want = x->plain_len - done < CHUNK
			       ? (size_t)(x->plain_len - done)
			       : CHUNK;
		if ((rc = take_chunk(fr->fd, done, want, buf, &crc, aes)) != 0)
			goto out;
		done += want;
		n = want & ~(size_t)(BW_AES_BLOCK - 1);
		if (done == x->plain_len) {
			/* last chunk: pad and encrypt the final block */
			bw_pkcs7_pad(buf + n, want - n);
			if ((rc = bw_aes_cbc(aes, buf + n, BW_AES_BLOCK)) != 0)
				goto out;
			n += BW_AES_BLOCK;
		}
		if ((buf = pipe_swap(&pp, buf, n, &rc)) == NULL)
			goto out;
		bw_progress_update(&prog, done);
		if (done == x->plain_len)
			break;
	}
	/* the file must not have grown while we read it */
	if (fstat(fr->fd, &st) != 0 || (uint64_t)st.st_size != x->plain_len) {
		rc = BW_ESIZE;
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
		if (rc != 0)
			shutdown(x->sess.fd,
				 SHUT_RDWR); /* unblock the sender */
		pthread_join(sender, NULL);
		if (rc == 0 && pp.err != 0)
			rc = pp.err;
		if (rc == 0)
			bw_progress_end(&prog);
	}
	pthread_mutex_destroy(&pp.mu);
	pthread_cond_destroy(&pp.cv);
	bw_aes_free(aes);
	for (i = 0; i < 2; i++)
		bw_secure_free(bufs[i], buf_cap);
	return rc;
}

static int
upload(struct send_ctx *x, int fd)
{
	static const uint16_t file_ok[] = {BW_RESP_FILE_OK};
	static const uint16_t ack_ok[] = {BW_RESP_ACK};
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct plain_req r = {0, field, BW_NAME_FIELD};
	struct file_req fr = {fd};
	struct bw_file_ack ack;
	uint16_t code = 0;
	size_t len = 0;
	int sends, rc;

	if (bw_name_encode(x->file_field, field) != 0)
		return BW_EXIT_USAGE;
	for (sends = 1; sends <= MAX_SENDS; sends++) {
		rc = exchange(x, "send file", send_file, &fr, file_ok, 1, &code,
			      out, &len);
		if (rc == 0 && (bw_vault_file_ack_decode(out, len, &ack) != 0 ||
				ack.content_size != x->cipher_len))
			rc = BW_EPROTO;
		if (rc != 0) {
			bw_cli_fatal("sending '%s' failed: %s", x->path,
				     bw_strerror(rc));
			return rc == BW_ESIZE ? BW_EXIT_USAGE : BW_EXIT_FATAL;
		}
		if (ack.cksum == x->local_crc) {
			r.code = BW_REQ_CRC_OK;
			if ((rc = exchange(x, "CRC ok", send_plain, &r, ack_ok,
					   1, &code, out, &len)) != 0) {
				bw_cli_fatal("the server did not acknowledge "
					     "the verified file: %s",
					     bw_strerror(rc));
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
		r.code = BW_REQ_CRC_RETRY;
		if ((rc = bw_session_connect(&x->sess)) != 0 ||
		    (rc = send_plain(x, &r)) != 0) {
			bw_cli_fatal("cannot ask for a resend: %s",
				     bw_strerror(rc));
			return BW_EXIT_FATAL;
		}
	}
	r.code = BW_REQ_CRC_FAIL;
	if (exchange(x, "give up", send_plain, &r, ack_ok, 1, &code, out,
		     &len) != 0)
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
		"and priv.key (written on first\nregistration, mode 0600).\n\n"
		"  -C, --dir DIR         work in DIR instead of the current "
		"directory\n"
		"  -s, --server H:P      server (overrides transfer.info line "
		"1)\n"
		"  -n, --name NAME       name to register (overrides line 2)\n"
		"  -f, --file PATH       file to send (overrides line 3)\n"
		"  -q, --quiet           no progress bar\n"
		"  -t, --timeout SEC     network timeout (default 30)\n"
		"  -h, --help            this help\n\n"
		"Exit status: 0 stored and verified; 1 the server or network "
		"failed (Fatal:);\n2 bad usage or local files; 3 the name is "
		"taken; 4 the CRC still\ndisagreed after the last resend.\n");
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

int
bw_cli_send(int argc, char **argv)
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
	struct transfer t;
	struct send_ctx x;
	struct stat st;
	char host[256];
	const char *why, *base, *p;
	unsigned timeout_ms = 30u * 1000u;
	uint16_t port;
	int ch, rc, fd = -1, denied = 0, have_me;

	memset(&t, 0, sizeof(t));
	memset(&x, 0, sizeof(x));
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
			snprintf(t.server, sizeof(t.server), "%s", optarg);
			break;
		case 'n':
			snprintf(t.name, sizeof(t.name), "%s", optarg);
			break;
		case 'f':
			snprintf(t.file, sizeof(t.file), "%s", optarg);
			break;
		case 'q':
			x.quiet = 1;
			break;
		case 't':
			if (bw_cli_timeout_arg("bulwark send", optarg,
					       &timeout_ms) != 0)
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
	if ((t.server[0] == '\0' || t.name[0] == '\0' || t.file[0] == '\0') &&
	    (rc = read_transfer(&t)) != 0) {
		bw_cli_fatal("cannot read transfer.info: %s", bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	if (bw_parse_hostport(t.server, host, sizeof(host), &port) != 0) {
		bw_cli_fatal("'%s' is not host:port (transfer.info line 1)",
			     t.server);
		return BW_EXIT_USAGE;
	}
	if (strlen(t.name) == 0 || strlen(t.name) > BW_CLI_NAME_MAX) {
		bw_cli_fatal("the name must be 1 to %d characters "
			     "(transfer.info line 2)",
			     BW_CLI_NAME_MAX);
		return BW_EXIT_USAGE;
	}
	x.path = t.file;
	if ((fd = open(t.file, O_RDONLY | O_CLOEXEC)) < 0 ||
	    fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		bw_cli_fatal("cannot read the file '%s': %s", t.file,
			     fd < 0 ? strerror(errno) : "not a regular file");
		rc = BW_EXIT_USAGE;
		goto out;
	}
	if ((uint64_t)st.st_size > MAX_PLAIN) {
		bw_cli_fatal("'%s' is %llu bytes; the protocol carries at most "
			     "%u",
			     t.file, (unsigned long long)st.st_size, MAX_PLAIN);
		rc = BW_EXIT_USAGE;
		goto out;
	}
	x.plain_len = (uint64_t)st.st_size;
	x.cipher_len = (uint32_t)bw_aes_cipher_len(x.plain_len);
	for (base = p = t.file; *p != '\0'; p++) {
		if (*p == '/')
			base = p + 1;
	}
	if (strlen(base) == 0 || strlen(base) > 254) {
		bw_cli_fatal("the file name '%s' cannot be sent", base);
		rc = BW_EXIT_USAGE;
		goto out;
	}
	memcpy(x.file_field, base, strlen(base) + 1);
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	signal(SIGBUS, on_sigbus);
	bw_session_init(&x.sess, host, port, timeout_ms, BW_VAULT_VERSION);

	rc = bw_identity_load(&x.me, "me.info", "priv.key", &why);
	have_me = rc == 0;
	if (rc != 0 && rc != -ENOENT) {
		bw_cli_fatal("me.info %s", why != NULL ? why : bw_strerror(rc));
		rc = BW_EXIT_USAGE;
		goto out;
	}
	if (have_me) {
		if ((rc = reconnect(&x, &denied)) != BW_EXIT_OK)
			goto out;
		if (denied)
			printf("the server does not know '%s' with this id; "
			       "registering again\n",
			       x.me.name);
	}
	if (!have_me || denied) {
		if ((rc = register_new(&x, have_me ? x.me.name : t.name)) !=
		    BW_EXIT_OK)
			goto out;
	}
	rc = upload(&x, fd);
out:
	if (fd >= 0)
		close(fd);
	bw_session_close(&x.sess);
	bw_identity_fini(&x.me);
	bw_wipe(x.aes_key, sizeof(x.aes_key));
	return rc;
}
