/* The file vault service (requests 1025-1031): a per-connection state
 * machine that reads a header, then its payload, and for 1028 streams the
 * ciphertext through AES-CBC decryption and the cksum CRC into a temporary
 * file that a worker fsyncs and renames into place before 2103 is sent.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/crc.h"
#include "bulwark/cur.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "proto/vault.h"
#include "svc/server.h"

#define CTRL_WANT 2048u
/* An upload is decrypted and written in chunks: 1 MiB while few uploads run
 * (large writes are cheapest), 256 KiB each past BIG_CHUNK_UPLOADS, so that
 * memory stays bounded however many clients upload at once. An upload holds
 * its input buffer and two write buffers of one chunk each. */
#define BIG_CHUNK	  (1024u * 1024u)
#define SMALL_CHUNK	  (256u * 1024u)
#define BIG_CHUNK_UPLOADS 16u
#define DIRECT_ALIGN	  4096u

enum vstate {
	V_HDR,	   /* waiting for a 23-byte header */
	V_PAYLOAD, /* waiting for the fixed part of the payload */
	V_BODY,	   /* streaming a 1028 ciphertext into a file */
	V_SWALLOW, /* discarding a 1028 ciphertext that will get 2107 */
	V_COMMIT,  /* a worker is fsyncing and renaming the upload */
};

struct upload {
	struct bw_server *srv;
	struct bw_conn *conn; /* NULL once aborted */
	uint8_t client_id[BW_ID_LEN];
	uint8_t name_field[BW_NAME_FIELD]; /* echoed in 2103 */
	char file_name[BW_NAME_CAP];
	char rel_path[BW_PATH_CAP];
	char tmp_path[PATH_MAX];
	char dst_path[PATH_MAX];
	char old_path[PATH_MAX + 8]; /* the replaced file, until unlinked */
	int fd;	     /* the temporary file, O_DIRECT when allowed */
	int fd_tail; /* a buffered descriptor for an unaligned tail */
	struct bw_aes *aes;
	struct bw_cksum crc;
	uint32_t content_size;
	uint64_t left;	    /* ciphertext bytes still to come */
	uint64_t plain_len; /* plaintext bytes decrypted */
	/* Plaintext chunks go to a worker to be written while the next one
	 * is received: two aligned buffers alternate. */
	size_t chunk; /* bytes decrypted and written at a time */
	uint8_t *wbuf[2];
	int wbusy[2];
	unsigned wnext;
	unsigned refs;		    /* write jobs in flight */
	int werr;		    /* the first write error */
	int padded;		    /* reply in course-sample style */
	uint64_t start_ms, body_ms; /* when it started, when the body ended */
	int rc;			    /* result of the commit */
};

struct wjob {
	struct upload *u;
	unsigned idx;
	uint64_t off;
	size_t len;
	int rc;
};

struct vault_conn {
	enum vstate st;
	struct bw_req_hdr hdr;
	size_t need; /* payload bytes V_PAYLOAD waits for */
	int padded;  /* course-sample style: pad replies, then close */
	struct upload *up;
	uint64_t swallow_left;
	uint64_t body_start_ms; /* when the current 1028 body began */
	uint64_t body_size;	/* its size */
};

#define VC(c)  ((struct vault_conn *)(c)->state)
#define ULL(x) ((unsigned long long)(x))

/* --- replies -------------------------------------------------------------
 */

static int
reply(struct bw_conn *c, uint16_t code, const void *payload, size_t len)
{
	uint8_t msg[BW_PAD_UNIT];
	struct bw_resp_hdr h = {BW_VAULT_VERSION, code, (uint32_t)len};
	size_t total = BW_RESP_HDR_LEN + len;
	int rc;

	/* every vault reply fits one pad unit */
	if (total > sizeof(msg))
		return BW_ETOOBIG;
	bw_resp_hdr_encode(&h, msg);
	if (len > 0)
		memcpy(msg + BW_RESP_HDR_LEN, payload, len);
	if (VC(c)->padded) {
		memset(msg + total, 0, sizeof(msg) - total);
		total = sizeof(msg);
	}
	rc = bw_conn_send(c, msg, total);
	bw_wipe(msg, sizeof(msg));
	if (rc == 0 && VC(c)->padded)
		bw_conn_finish(c);
	return rc;
}

static int
reply_error(struct bw_conn *c, const char *why)
{
	bw_info("c%llu %u -> 2107: %s", ULL(c->id), VC(c)->hdr.code, why);
	return reply(c, BW_RESP_ERROR, NULL, 0);
}

/* A framing error: the stream cannot be trusted any more. */
static int
reply_error_close(struct bw_conn *c, const char *why)
{
	int rc = reply_error(c, why);

	bw_conn_finish(c);
	return rc;
}

/* --- requests with a fixed payload ---------------------------------------
 */

static struct bw_client *
header_client(struct bw_conn *c)
{
	struct bw_client *cl =
		bw_registry_by_id(&c->srv->reg, VC(c)->hdr.client_id);

	if (cl != NULL)
		bw_registry_touch(&c->srv->reg, cl);
	return cl;
}

static int
on_register(struct bw_conn *c, const uint8_t *p, size_t n)
{
	char name[BW_NAME_CAP], hex[2 * BW_ID_LEN + 1];
	struct bw_client *cl;
	int rc;

	if (bw_vault_name_payload_decode(p, n, name) != 0)
		return reply_error(c, "malformed name");
	rc = bw_registry_add(&c->srv->reg, name, NULL, &cl);
	if (rc == BW_EEXIST) {
		bw_info("c%llu 1025 register '%s' -> 2101: name taken",
			ULL(c->id), name);
		return reply(c, BW_RESP_REG_FAILED, NULL, 0);
	}
	if (rc != 0)
		return reply_error(c, bw_strerror(rc));
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	bw_info("c%llu 1025 register '%s' -> 2100 id %s", ULL(c->id), name,
		hex);
	return reply(c, BW_RESP_REGISTERED, cl->id, BW_ID_LEN);
}

/* Makes a fresh AES key for cl, stores it (and pubkey if not NULL) and sends
 * it wrapped with the client's public key in a 2102/2105. */
static int
send_new_key(struct bw_conn *c, struct bw_client *cl, struct bw_rsa *rsa,
	     const uint8_t *pubkey, uint16_t code)
{
	uint8_t aes[BW_AES_KEY_LEN], out[BW_ID_LEN + BW_RSA_CT_LEN];
	int rc;

	if ((rc = bw_random(aes, sizeof(aes))) != 0 ||
	    (rc = bw_rsa_oaep_encrypt(rsa, aes, sizeof(aes),
				      out + BW_ID_LEN)) != 0 ||
	    (rc = bw_registry_set_keys(&c->srv->reg, cl, pubkey, aes)) != 0) {
		bw_wipe(aes, sizeof(aes));
		return reply_error(c, bw_strerror(rc));
	}
	bw_wipe(aes, sizeof(aes));
	memcpy(out, cl->id, BW_ID_LEN);
	bw_info("c%llu %u '%s' -> %u: new AES key sent", ULL(c->id),
		VC(c)->hdr.code, cl->name, code);
	return reply(c, code, out, sizeof(out));
}

static int
on_pubkey(struct bw_conn *c, const uint8_t *p, size_t n)
{
	char name[BW_NAME_CAP];
	const uint8_t *key;
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	int rc;

	if (bw_vault_pubkey_payload_decode(p, n, name, &key) != 0)
		return reply_error(c, "malformed name");
	cl = header_client(c);
	if (cl == NULL || strcmp(cl->name, name) != 0)
		return reply_error(c, "header id and name are not one client");
	if (bw_rsa_from_spki(&rsa, key, BW_RSA_PUB_LEN) != 0)
		return reply_error(c, "not an RSA-1024 public key");
	rc = send_new_key(c, cl, rsa, key, BW_RESP_PUBKEY_AES);
	bw_rsa_free(rsa);
	return rc;
}

static int
on_reconnect(struct bw_conn *c, const uint8_t *p, size_t n)
{
	char name[BW_NAME_CAP];
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	const char *why = NULL;
	int rc;

	if (bw_vault_name_payload_decode(p, n, name) != 0)
		return reply_error(c, "malformed name");
	cl = header_client(c);
	if (cl == NULL)
		why = "unknown client id";
	else if (strcmp(cl->name, name) != 0)
		why = "name is not the id's";
	else if (!cl->has_pubkey)
		why = "no public key on record";
	else if (bw_rsa_from_spki(&rsa, cl->pubkey, BW_RSA_PUB_LEN) != 0)
		why = "stored public key unusable";
	if (why != NULL) {
		bw_info("c%llu 1027 '%s' -> 2106: %s", ULL(c->id), name, why);
		return reply(c, BW_RESP_RECONNECT_DENIED, VC(c)->hdr.client_id,
			     BW_ID_LEN);
	}
	rc = send_new_key(c, cl, rsa, NULL, BW_RESP_RECONNECT_AES);
	bw_rsa_free(rsa);
	return rc;
}

static int
on_crc(struct bw_conn *c, const uint8_t *p, size_t n)
{
	uint16_t code = VC(c)->hdr.code;
	char name[BW_NAME_CAP];
	struct bw_client *cl;
	struct bw_file *f;
	int rc;

	if (bw_vault_name_payload_decode(p, n, name) != 0)
		return code == BW_REQ_CRC_RETRY
			       ? 0
			       : reply_error(c, "malformed name");
	cl = header_client(c);
	if (cl == NULL)
		return code == BW_REQ_CRC_RETRY
			       ? 0
			       : reply_error(c, "unknown client id");
	f = bw_registry_file(&c->srv->reg, cl, name);
	switch (code) {
	case BW_REQ_CRC_OK:
		if (f == NULL)
			return reply_error(c, "no such file");
		if ((rc = bw_registry_set_verified(&c->srv->reg, f)) != 0)
			return reply_error(c, bw_strerror(rc));
		bw_info("c%llu 1029 '%s' '%s' verified", ULL(c->id), cl->name,
			name);
		return reply(c, BW_RESP_ACK, cl->id, BW_ID_LEN);
	case BW_REQ_CRC_RETRY:
		bw_info("c%llu 1030 '%s' '%s' CRC mismatch, resend follows",
			ULL(c->id), cl->name, name);
		if (VC(c)->padded)
			bw_conn_finish(c);
		return 0;
	default:
		bw_info("c%llu 1031 '%s' '%s' CRC mismatch, client gave up",
			ULL(c->id), cl->name, name);
		return reply(c, BW_RESP_ACK, cl->id, BW_ID_LEN);
	}
}

/* --- 1028: streaming upload ----------------------------------------------
 */

static void
upload_free(struct upload *u)
{
	int i;

	if (u == NULL)
		return;
	if (u->fd_tail >= 0 && u->fd_tail != u->fd)
		close(u->fd_tail);
	if (u->fd >= 0) {
		close(u->fd);
		unlink(u->tmp_path);
	}
	for (i = 0; i < 2; i++) {
		if (u->wbuf[i] != NULL)
			bw_wipe(u->wbuf[i], u->chunk);
		free(u->wbuf[i]);
	}
	bw_aes_free(u->aes);
	free(u);
}

/* The connection gives up on its upload; write jobs still in flight keep it
 * alive and the last one frees it (removing the temporary file). */
static void
upload_abort(struct bw_conn *c, const char *why)
{
	struct vault_conn *vc = VC(c);
	struct upload *u = vc->up;

	if (u == NULL)
		return;
	bw_info("c%llu 1028 '%s' aborted after %llu bytes: %s", ULL(c->id),
		u->file_name, ULL(u->plain_len), why);
	c->srv->uploads_active--;
	c->srv->upload_bytes_active -= u->plain_len;
	vc->up = NULL;
	u->conn = NULL;
	if (u->refs == 0)
		upload_free(u);
}

static int
start_upload(struct bw_conn *c, struct bw_client *cl, const uint8_t *p,
	     uint32_t content_size, const char *file_name)
{
	struct vault_conn *vc = VC(c);
	const char *dd = c->srv->cfg.data_dir;
	char stored[BW_NAME_CAP], hex[2 * BW_ID_LEN + 1], dir[PATH_MAX];
	struct upload *u;
	int rc;

	if (bw_file_name_sanitize(file_name, stored) != 0)
		return BW_EPROTO;
	if ((u = calloc(1, sizeof(*u))) == NULL)
		return BW_ENOMEM;
	u->fd = u->fd_tail = -1;
	u->srv = c->srv;
	u->conn = c;
	memcpy(u->client_id, cl->id, BW_ID_LEN);
	memcpy(u->name_field, p + 4, BW_NAME_FIELD);
	snprintf(u->file_name, sizeof(u->file_name), "%s", file_name);
	u->content_size = content_size;
	u->left = content_size;
	bw_cksum_init(&u->crc);
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	rc = BW_ETOOBIG;
	if (snprintf(u->rel_path, sizeof(u->rel_path), "files/%s/%s", hex,
		     stored) >= (int)sizeof(u->rel_path) ||
	    snprintf(u->dst_path, sizeof(u->dst_path), "%s/%s", dd,
		     u->rel_path) >= (int)sizeof(u->dst_path) ||
	    snprintf(dir, sizeof(dir), "%s/files/%s", dd, hex) >=
		    (int)sizeof(dir))
		goto fail;
	if ((rc = bw_fs_mkdirs(dir, 0700)) != 0)
		goto fail;
	if (snprintf(dir, sizeof(dir), "%s/files/.incoming", dd) >=
	    (int)sizeof(dir))
		goto fail;
	if ((rc = bw_fs_tmpfile(dir, &u->fd, u->tmp_path,
				sizeof(u->tmp_path))) != 0)
		goto fail;
	if ((rc = bw_aes_new(&u->aes, cl->aes_key, 0)) != 0)
		goto fail;
	rc = BW_ENOMEM;
	u->chunk = c->srv->uploads_active < BIG_CHUNK_UPLOADS ? BIG_CHUNK
							      : SMALL_CHUNK;
	if (u->chunk > content_size) /* small files, small buffers */
		u->chunk = (content_size + DIRECT_ALIGN - 1) &
			   ~(size_t)(DIRECT_ALIGN - 1);
	if (posix_memalign((void **)&u->wbuf[0], DIRECT_ALIGN, u->chunk) != 0 ||
	    posix_memalign((void **)&u->wbuf[1], DIRECT_ALIGN, u->chunk) != 0)
		goto fail;
	/* Whole chunks bypass the page cache (O_DIRECT): no copy, and the
	 * final fsync has little left to do. A file system without it, or the
	 * last unaligned bytes, go through a buffered descriptor. */
	u->fd_tail = u->fd;
	if (fcntl(u->fd, F_SETFL, O_DIRECT) == 0 &&
	    (u->fd_tail = open(u->tmp_path, O_WRONLY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	vc->up = u;
	c->srv->uploads_active++;
	u->start_ms = bw_now_ms();
	bw_info("c%llu 1028 '%s' '%s' upload of %u bytes started", ULL(c->id),
		cl->name, file_name, content_size);
	return 0;
fail:
	upload_free(u);
	return rc;
}

/* The fixed part of a 1028 is in: check sizes (a failure closes: the body
 * is not worth reading), then identity (a failure swallows the body and
 * answers 2107, keeping the connection). */
static int
on_file_prefix(struct bw_conn *c, const uint8_t *p)
{
	struct vault_conn *vc = VC(c);
	uint32_t content_size = bw_get_u32le(p);
	char name[BW_NAME_CAP];
	struct bw_client *cl;
	const char *why = NULL;
	int rc;

	if ((uint64_t)vc->hdr.payload_size !=
	    (uint64_t)BW_FILE_PREFIX_LEN + content_size)
		return reply_error_close(c, "payload size and content size "
					    "disagree");
	if (content_size == 0 || content_size % BW_AES_BLOCK != 0)
		return reply_error_close(c, "content size is not a positive "
					    "multiple of 16");
	if (content_size > c->srv->cfg.max_file_size)
		return reply_error_close(c, "file over the size limit");
	if (c->srv->uploads_active >= c->srv->cfg.max_uploads)
		return reply_error_close(c, "too many uploads in progress");
	if (bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN, &content_size,
					name) != 0)
		why = "malformed file name";
	else if ((cl = header_client(c)) == NULL)
		why = "unknown client id";
	else if (!cl->has_aes)
		why = "no AES key yet (send 1026 or 1027 first)";
	else if ((rc = start_upload(c, cl, p, content_size, name)) != 0)
		why = rc == BW_EPROTO ? "file name has no usable base name"
				      : bw_strerror(rc);
	if (why != NULL) {
		bw_info("c%llu 1028 refused, discarding %u bytes: %s",
			ULL(c->id), content_size, why);
		vc->st = V_SWALLOW;
		vc->swallow_left = content_size;
		return 0;
	}
	vc->st = V_BODY;
	return 0;
}

static void
commit_work(void *arg)
{
	struct upload *u = arg;
	int n;

	if (u->fd_tail != u->fd)
		close(u->fd_tail);
	u->fd_tail = -1;
	/* A file being replaced is kept alive under a second name so that the
	 * rename does not pay for freeing its blocks (about 200 ms per GiB
	 * here); it is removed after the reply (start-up clears leftovers). */
	n = snprintf(u->old_path, sizeof(u->old_path), "%s.old", u->tmp_path);
	if (n < 0 || (size_t)n >= sizeof(u->old_path) ||
	    link(u->dst_path, u->old_path) != 0)
		u->old_path[0] = '\0';
	u->rc = bw_fs_commit(u->fd, u->tmp_path, u->dst_path);
	u->fd = -1;
	if (u->rc != 0 && u->old_path[0] != '\0') {
		unlink(u->old_path);
		u->old_path[0] = '\0';
	}
}

static void
unlink_work(void *arg)
{
	unlink(arg);
}

static void
commit_done(void *arg)
{
	struct upload *u = arg;
	struct bw_conn *c = u->conn;
	struct bw_server *s = u->srv;
	struct bw_client *cl = bw_registry_by_id(&s->reg, u->client_id);
	struct bw_file_ack ack;
	uint8_t out[BW_FILE_ACK_LEN];
	int rc = u->rc, dead = bw_conn_dead(c);

	s->uploads_active--;
	s->upload_bytes_active -= u->plain_len;
	if (rc == 0 && cl != NULL)
		rc = bw_registry_put_file(&s->reg, cl, u->file_name,
					  u->rel_path, u->plain_len);
	memset(&ack, 0, sizeof(ack));
	memcpy(ack.client_id, u->client_id, BW_ID_LEN);
	ack.content_size = u->content_size;
	ack.cksum = bw_cksum_final(&u->crc);
	if (rc == 0)
		bw_info("c%llu 1028 '%s' stored as %s: %llu bytes, cksum %u, "
			"%llu ms (fsync+rename %llu ms)%s",
			ULL(c->id), u->file_name, u->rel_path,
			ULL(u->plain_len), ack.cksum,
			ULL(bw_now_ms() - u->start_ms),
			ULL(bw_now_ms() - u->body_ms),
			dead ? " (client gone)" : "");
	else
		bw_error("c%llu 1028 '%s' not stored: %s", ULL(c->id),
			 u->file_name, bw_strerror(rc));
	if (!dead) {
		struct vault_conn *vc = VC(c);

		vc->st = V_HDR;
		vc->up = NULL;
		bw_conn_pause(c, 0);
		if (rc == 0) {
			bw_vault_file_ack_encode(&ack, u->name_field, out);
			rc = reply(c, BW_RESP_FILE_OK, out, sizeof(out));
		} else {
			rc = reply_error(c, "upload could not be stored");
		}
	}
	if (u->old_path[0] != '\0') {
		char *old = strdup(u->old_path);

		if (old == NULL ||
		    bw_loop_submit(s->loop, unlink_work, free, old) != 0) {
			unlink(u->old_path); /* pay for it here instead */
			free(old);
		}
	}
	upload_free(u);
	bw_conn_release(c);
	if (!dead && !bw_conn_dead(c))
		bw_conn_kick(c);
}

/* True if the input holds bytes after the first skip and all of them are
 * zero: the request came from a client that pads to 1024-byte units. */
static int
followed_by_padding(const struct bw_conn *c, size_t skip)
{
	const uint8_t *p = bw_buf_head(&c->in);
	size_t i;

	if (c->in.len <= skip)
		return 0;
	for (i = skip; i < c->in.len; i++) {
		if (p[i] != 0)
			return 0;
	}
	return 1;
}

static int
pwrite_full(int fd, const uint8_t *p, size_t n, uint64_t off)
{
	ssize_t w;

	while (n > 0) {
		w = pwrite(fd, p, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

static void
write_work(void *arg)
{
	struct wjob *j = arg;
	struct upload *u = j->u;
	const uint8_t *p = u->wbuf[j->idx];
	size_t whole = u->fd_tail != u->fd ? j->len & ~(DIRECT_ALIGN - 1) : 0;

	j->rc = pwrite_full(u->fd, p, whole, j->off);
	if (j->rc == -EINVAL) {
		/* O_DIRECT accepted at open but not our alignment: write
		 * this chunk through the page cache instead */
		whole = 0;
		j->rc = 0;
	}
	if (j->rc == 0 && whole < j->len)
		j->rc = pwrite_full(u->fd_tail, p + whole, j->len - whole,
				    j->off + whole);
}

static void
write_done(void *arg)
{
	struct wjob *j = arg;
	struct upload *u = j->u;
	struct bw_conn *c = u->conn;

	u->refs--;
	u->wbusy[j->idx] = 0;
	if (j->rc != 0 && u->werr == 0)
		u->werr = j->rc;
	free(j);
	if (c == NULL) {
		if (u->refs == 0)
			upload_free(u); /* aborted while we wrote */
		return;
	}
	/* let the connection go on: a buffer is free, or the body may be
	 * ready to commit */
	bw_conn_pause(c, 0);
	bw_conn_kick(c);
}

static int
submit_write(struct bw_conn *c, struct upload *u, unsigned idx, size_t len)
{
	struct wjob *j;
	int rc;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return BW_ENOMEM;
	j->u = u;
	j->idx = idx;
	j->off = u->plain_len;
	j->len = len;
	if ((rc = bw_loop_submit(c->srv->loop, write_work, write_done, j)) !=
	    0) {
		free(j);
		return rc;
	}
	u->wbusy[idx] = 1;
	u->refs++;
	return 0;
}

/* Decrypts whole chunks out of the input buffer into a free write buffer,
 * CRCs them and hands them to a worker; when the body is complete and
 * written, submits the commit. */
static int
body_step(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	struct upload *u = vc->up;
	uint8_t *out;
	size_t k, plain, pad = 0;
	int rc;

	while (u->left > 0 && u->werr == 0) {
		/* Whole chunks (or the end of the body): large writes are
		 * several times cheaper for the page cache and the disk. */
		k = u->left < u->chunk ? (size_t)u->left : u->chunk;
		if (c->in.len < k)
			return 0;
		if (u->wbusy[u->wnext]) {
			bw_conn_pause(c, 1); /* write_done resumes us */
			return 0;
		}
		out = u->wbuf[u->wnext];
		if ((rc = bw_aes_cbc_to(u->aes, bw_buf_head(&c->in), out, k)) !=
		    0) {
			upload_abort(c, "decryption failed");
			return reply_error_close(c, "decryption failed");
		}
		bw_buf_consume(&c->in, k);
		plain = k;
		if (k == u->left) {
			if (bw_pkcs7_unpad(out + k - BW_AES_BLOCK, &pad) != 0) {
				upload_abort(c, "bad padding");
				vc->st = V_HDR;
				return reply_error(c, "bad padding (wrong key "
						      "or corrupt data)");
			}
			plain -= pad;
		}
		bw_cksum_update(&u->crc, out, plain);
		if ((rc = submit_write(c, u, u->wnext, plain)) != 0) {
			upload_abort(c, bw_strerror(rc));
			return reply_error_close(c, "cannot write the file");
		}
		u->wnext ^= 1;
		u->left -= k;
		u->plain_len += plain;
		c->srv->upload_bytes_active += plain;
	}
	if (u->werr != 0) {
		bw_error("c%llu cannot write %s: %s", ULL(c->id), u->tmp_path,
			 bw_strerror(u->werr));
		upload_abort(c, "write failed");
		return reply_error_close(c, "cannot write the file");
	}
	if (u->refs > 0) {
		bw_conn_pause(c, 1); /* the last writes are still running */
		return 0;
	}
	/* the whole body is in and written: commit it off the loop thread */
	if (followed_by_padding(c, 0))
		vc->padded = 1;
	u->padded = vc->padded;
	u->body_ms = bw_now_ms();
	vc->up = NULL;
	vc->st = V_COMMIT;
	c->want = CTRL_WANT;
	bw_conn_pause(c, 1);
	bw_conn_hold(c);
	if ((rc = bw_loop_submit(c->srv->loop, commit_work, commit_done, u)) !=
	    0) {
		bw_conn_release(c);
		bw_conn_pause(c, 0);
		vc->up = u;
		vc->st = V_HDR;
		upload_abort(c, bw_strerror(rc));
		return reply_error(c, "cannot commit the file");
	}
	return 0;
}

static int
swallow_step(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	size_t k = c->in.len < vc->swallow_left ? c->in.len
						: (size_t)vc->swallow_left;

	bw_buf_consume(&c->in, k);
	vc->swallow_left -= k;
	if (vc->swallow_left > 0)
		return 0;
	vc->st = V_HDR;
	c->want = CTRL_WANT;
	if (followed_by_padding(c, 0))
		vc->padded = 1;
	return reply_error(c, "file refused");
}

/* --- the state machine ---------------------------------------------------
 */

static int
on_header(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	long fixed;

	if (bw_req_hdr_decode(bw_buf_head(&c->in), c->in.len, &vc->hdr) < 0)
		return 0;
	bw_buf_consume(&c->in, BW_REQ_HDR_LEN);
	fixed = bw_vault_req_payload_size(vc->hdr.code);
	if (fixed < 0)
		return reply_error_close(c, "unknown request code");
	if (vc->hdr.code == BW_REQ_SEND_FILE) {
		if (vc->hdr.payload_size < BW_FILE_PREFIX_LEN)
			return reply_error_close(c, "1028 payload too short");
		vc->need = BW_FILE_PREFIX_LEN;
	} else {
		if (vc->hdr.payload_size != (uint32_t)fixed)
			return reply_error_close(c, "payload size is wrong "
						    "for the request code");
		vc->need = (size_t)fixed;
	}
	vc->st = V_PAYLOAD;
	return 0;
}

static int
on_payload(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	const uint8_t *p = bw_buf_head(&c->in);
	size_t n = vc->need;
	int rc;

	/* Course-sample clients pad the request with zeros: decide before
	 * replying, so the reply is padded too. */
	if (followed_by_padding(c, n))
		vc->padded = 1;
	vc->st = V_HDR;
	bw_conn_request_deadline(c, 0);
	switch (vc->hdr.code) {
	case BW_REQ_REGISTER:
		rc = on_register(c, p, n);
		break;
	case BW_REQ_PUBKEY:
		rc = on_pubkey(c, p, n);
		break;
	case BW_REQ_RECONNECT:
		rc = on_reconnect(c, p, n);
		break;
	case BW_REQ_SEND_FILE:
		vc->padded = 0; /* the body follows, not padding */
		vc->body_start_ms = bw_now_ms();
		vc->body_size = bw_get_u32le(p);
		rc = on_file_prefix(c, p);
		if (vc->st == V_BODY || vc->st == V_SWALLOW)
			c->want = vc->up != NULL ? vc->up->chunk : SMALL_CHUNK;
		break;
	default:
		rc = on_crc(c, p, n);
		break;
	}
	if (!bw_conn_dead(c))
		bw_buf_consume(&c->in, n);
	return rc;
}

/* A body must average at least --min-rate bytes a second once it has run
 * for --timeout: otherwise a peer trickling a byte now and then would hold
 * an upload slot (and its buffers) for ever without ever being idle. */
static int
body_too_slow(const struct bw_conn *c)
{
	const struct vault_conn *vc = VC(c);
	const struct bw_server_cfg *cfg = &c->srv->cfg;
	uint64_t elapsed = bw_now_ms() - vc->body_start_ms, got;

	if (cfg->min_rate == 0 || elapsed <= cfg->timeout_ms)
		return 0;
	if (vc->st == V_BODY)
		got = vc->body_size - vc->up->left + c->in.len;
	else
		got = vc->body_size - vc->swallow_left + c->in.len;
	return got * 1000u < (uint64_t)cfg->min_rate * elapsed;
}

static int
vault_input(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	int rc = 0;

	if ((vc->st == V_BODY || vc->st == V_SWALLOW) && body_too_slow(c)) {
		bw_info("c%llu 1028 body slower than %u bytes/s", ULL(c->id),
			c->srv->cfg.min_rate);
		return BW_ETIMEDOUT;
	}

	while (rc == 0 && !bw_conn_dead(c) &&
	       !(c->flags & BW_CONN_CLOSING && vc->st == V_HDR &&
		 c->in.len < BW_REQ_HDR_LEN)) {
		switch (vc->st) {
		case V_HDR:
			if (c->in.len == 0)
				return 0;
			if (c->req_deadline_ms == 0)
				bw_conn_request_deadline(
					c, c->srv->cfg.request_timeout_ms);
			if (c->in.len < BW_REQ_HDR_LEN)
				return 0;
			if (vc->padded)
				return 0; /* the rest is padding */
			rc = on_header(c);
			break;
		case V_PAYLOAD:
			if (c->in.len < vc->need)
				return 0;
			rc = on_payload(c);
			break;
		case V_BODY:
			rc = body_step(c);
			if (vc->st == V_BODY)
				return rc;
			break;
		case V_SWALLOW:
			rc = swallow_step(c);
			if (vc->st == V_SWALLOW)
				return rc;
			break;
		case V_COMMIT:
			return 0;
		}
		if (c->flags & BW_CONN_CLOSING)
			break;
	}
	return rc;
}

static int
vault_open(struct bw_conn *c)
{
	if ((c->state = calloc(1, sizeof(struct vault_conn))) == NULL)
		return BW_ENOMEM;
	c->want = CTRL_WANT;
	return 0;
}

static void
vault_close(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);

	if (vc == NULL)
		return;
	upload_abort(c, "connection closed");
	free(vc);
}

static int
vault_busy(const struct bw_conn *c)
{
	const struct vault_conn *vc = c->state;

	return vc != NULL && (vc->st != V_HDR || c->in.len > 0);
}

const struct bw_service bw_vault_service = {
	.name = "vault",
	.on_open = vault_open,
	.on_input = vault_input,
	.on_drained = NULL,
	.on_close = vault_close,
	.busy = vault_busy,
};
