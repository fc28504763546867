/* The streaming send file requests (1028; 1106, in clear inside TLS): the
 * ciphertext is decrypted (a clear file copied) chunk by chunk out of the
 * connection's input into one of its aligned write buffers, CRC'd on the
 * loop thread and written by a worker into a new object of the blob store,
 * which vault_commit.c then puts in place.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

/* An upload is decrypted and written in chunks: 1 MiB while few uploads run
 * (large writes are cheapest), 256 KiB each past BIG_CHUNK_UPLOADS, so that
 * memory stays bounded however many clients upload at once. An upload holds
 * its input buffer and two write buffers of one chunk each, or
 * UPLOAD_WBUFS_MAX of 1 MiB while fewer than MANY_WBUF_UPLOADS run.
 *
 * Why more than two: decrypting into a buffer that a worker has just
 * written with O_DIRECT can cost twice the CPU. On the development
 * machine (a VM whose disk reads the buffer from the host), AES-CBC
 * decryption of 1 GiB into two buffers in turn took 0.37-0.44 s of the
 * loop thread in four uploads of eight, 0.21-0.27 s in the others; with
 * four to sixteen buffers, 0.21-0.27 s in 17 of 18 and 0.31 s once
 * (docs/performance.md, twenty-first round). */
#define BIG_CHUNK	  (1024u * 1024u)
#define SMALL_CHUNK	  (256u * 1024u)
#define BIG_CHUNK_UPLOADS 16u
#define MANY_WBUF_UPLOADS 4u
#define DIRECT_ALIGN	  4096u

struct wjob {
	struct upload *u;
	unsigned idx;
	uint64_t off;
	size_t len;
	int rc;
};

void
vault_upload_done(struct upload *u)
{
	struct bw_vault *v = u->v;

	bw_slots_release(&v->slots, &u->slot);
	if (!u->counted)
		return; /* already uncounted */
	u->counted = 0;
	v->uploads_active--;
	v->upload_bytes_active -= u->plain_len;
}

void
vault_upload_free(struct upload *u)
{
	int i;

	if (u == NULL)
		return;
	vault_upload_done(u);
	/* an unlink frees the file's blocks: not on the loop */
	bw_blobs_abort_later(u->v->blobs, u->v->eng->loop, u->w);
	for (i = 0; i < UPLOAD_WBUFS_MAX; i++) {
		if (u->wbuf[i] != NULL)
			bw_wipe(u->wbuf[i], u->chunk);
		free(u->wbuf[i]);
	}
	bw_aes_free(u->aes);
	bw_wipe(u->key, sizeof(u->key));
	free(u);
}

/* The connection gives up on its upload; write jobs still in flight keep it
 * alive and the last one frees it (removing the temporary file). */
void
vault_upload_abort(struct bw_conn *c, const char *why)
{
	struct vault_conn *vc = VC(c);
	struct upload *u = vc->up;
	char shown[BW_ESC_CAP], val[BW_ESC_CAP], w[256];
	unsigned i;

	if (u == NULL)
		return;
	bw_escape_display(u->stored, shown, sizeof(shown));
	bw_conn_event(c, BW_LOG_INFO, "upload_aborted",
		      "file=%s bytes=%llu reason=%s",
		      bw_log_value(val, sizeof(val), shown), ULL(u->plain_len),
		      bw_log_value(w, sizeof(w), why));
	bw_conn_expect(c, 0);
	vault_upload_done(u);
	vc->up = NULL;
	u->conn = NULL;
	if (u->refs == 0) {
		vault_upload_free(u);
		return;
	}
	/* uncounted now: the buffers no write holds go at once, so that
	 * uploads begun and dropped while the store is slow hold no more
	 * than their writes in flight */
	for (i = 0; i < UPLOAD_WBUFS_MAX; i++) {
		if (u->wbuf[i] != NULL && !u->wbusy[i]) {
			bw_wipe(u->wbuf[i], u->chunk);
			free(u->wbuf[i]);
			u->wbuf[i] = NULL;
		}
	}
}

/* A newcomer needs the slot of this upload, whose body trickles: it ends
 * with a general error (2107) and a close. */
static void
evict_upload(struct bw_slot *s)
{
	struct upload *u =
		(struct upload *)((char *)s - offsetof(struct upload, slot));
	struct bw_conn *c = u->conn;

	vault_upload_abort(c, "too slow while others wait for a slot");
	VC(c)->st = V_IDLE;
	(void)bw_frame_fail(c, "upload too slow for a busy server");
}

int
vault_upload_start(struct bw_conn *c, struct bw_vault *v, struct bw_client *cl,
		   const uint8_t *key, const uint8_t *prefix,
		   uint32_t content_size, const char *file_name,
		   const char **why)
{
	struct vault_conn *vc = VC(c);
	char hex[2 * BW_ID_LEN + 1], shown[BW_ESC_CAP], file[BW_ESC_CAP];
	char cval[BW_ESC_CAP], fval[BW_ESC_CAP];
	const struct vfile *f;
	struct upload *u;
	unsigned i;
	int rc;

	if ((u = calloc(1, sizeof(*u))) == NULL)
		return BW_ENOMEM;
	u->v = v;
	u->conn = c;
	if ((rc = bw_file_name_sanitize(file_name, u->stored)) != 0)
		goto fail;
	if ((rc = bw_slots_take(&v->slots, &u->slot, c, content_size,
				evict_upload, why)) != 0) {
		free(u);
		return rc;
	}
	memcpy(u->client_id, cl->id, BW_ID_LEN);
	u->code =
		key != NULL ? BW_VAULT_REQ_SEND_FILE : BW_VAULT_REQ_SEND_CLEAR;
	u->proven = bw_conn_tls(c);
	if (key != NULL)
		memcpy(u->key, key, BW_AES_KEY_LEN);
	memcpy(u->name_field, prefix + 4, BW_NAME_FIELD);
	snprintf(u->file_name, sizeof(u->file_name), "%s", file_name);
	u->content_size = content_size;
	u->left = content_size;
	bw_cksum_init(&u->crc);
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	rc = BW_ETOOBIG;
	if (snprintf(u->rel_path, sizeof(u->rel_path), FILES_SPACE "%s/%s", hex,
		     u->stored) >= (int)sizeof(u->rel_path))
		goto fail;
	f = vfile_at(v, cl->id, u->rel_path);
	if (f != NULL && f->verified) { /* a replacement waits for its CRC ok */
		vault_pending_key(cl->id, u->pend_hint, sizeof(u->pend_hint));
	}
	/* no key: a clear upload (1106), the file as it is */
	if (key != NULL && (rc = bw_aes_new(&u->aes, key, 0)) != 0)
		goto fail;
	rc = BW_ENOMEM;
	u->chunk =
		v->uploads_active < BIG_CHUNK_UPLOADS ? BIG_CHUNK : SMALL_CHUNK;
	if (u->chunk > content_size) /* small files, small buffers */
		u->chunk = (content_size + DIRECT_ALIGN - 1) &
			   ~(size_t)(DIRECT_ALIGN - 1);
	/* more buffers than chunks would only take memory */
	u->nwbuf = u->chunk == BIG_CHUNK &&
				   v->uploads_active < MANY_WBUF_UPLOADS &&
				   content_size / BIG_CHUNK >= UPLOAD_WBUFS_MAX
			   ? UPLOAD_WBUFS_MAX
			   : 2;
	for (i = 0; i < u->nwbuf; i++)
		if (posix_memalign((void **)&u->wbuf[i], DIRECT_ALIGN,
				   u->chunk) != 0)
			goto fail;
	vc->up = u;
	u->counted = 1;
	v->uploads_active++;
	u->start_ms = bw_now_ms();
	bw_escape_display(cl->name, shown, sizeof(shown));
	bw_escape_display(u->stored, file, sizeof(file));
	bw_conn_event(c, BW_LOG_INFO, "upload_started",
		      "client=%s file=%s bytes=%u%s",
		      bw_log_value(cval, sizeof(cval), shown),
		      bw_log_value(fval, sizeof(fval), file), content_size,
		      key == NULL ? " clear=1" : "");
	return 0;
fail:
	vault_upload_free(u);
	return rc;
}

/* On a worker: the upload's object, made the first time. Only one job
 * at a time may make it: vault_body_step submits no second write before
 * the first has ended. */
int
vault_upload_w(struct upload *u)
{
	const struct bw_blobs *b = u->v->blobs;

	if (u->w != NULL)
		return 0;
	return bw_blob_create(
		b, FILES_SPACE,
		u->pend_hint[0] != '\0' ? u->pend_hint : u->rel_path, &u->w);
}

static void
write_work(void *arg)
{
	struct wjob *j = arg;
	struct upload *u = j->u;
	const struct bw_blobs *b = u->v->blobs;

	if ((j->rc = vault_upload_w(u)) == 0)
		j->rc = bw_blob_write(b, u->w, j->off, u->wbuf[j->idx], j->len);
}

static void
write_done(void *arg)
{
	struct wjob *j = arg;
	struct upload *u = j->u;
	struct bw_conn *c = u->conn;

	u->refs--;
	u->wbusy[j->idx] = 0;
	u->w_tried = 1;
	if (j->rc != 0 && u->werr == 0)
		u->werr = j->rc;
	free(j);
	if (c == NULL) {
		if (u->refs == 0)
			vault_upload_free(u); /* aborted while we wrote */
		return;
	}
	/* a buffer is free, or the body may be ready to commit */
	bw_frame_kick(c);
}

static int
submit_write(struct upload *u, unsigned idx, size_t len)
{
	struct wjob *j;
	int rc;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return BW_ENOMEM;
	j->u = u;
	j->idx = idx;
	j->off = u->plain_len;
	j->len = len;
	if ((rc = bw_loop_submit(u->v->eng->loop, write_work, write_done, j)) !=
	    0) {
		free(j);
		return rc;
	}
	u->wbusy[idx] = 1;
	u->refs++;
	return 0;
}

/* A decryption failure closes the connection (no oracle to query at
 * leisure) and counts against the key. */
static int
decrypt_failed(struct bw_conn *c, struct upload *u, const char *why)
{
	uint8_t id[BW_ID_LEN], key[BW_AES_KEY_LEN];
	struct bw_vault *v = u->v;

	memcpy(id, u->client_id, BW_ID_LEN);
	memcpy(key, u->key, BW_AES_KEY_LEN);
	vault_upload_abort(c, why);
	if (vault_key_failed(c, v, id, key, why)) {
		bw_wipe(key, sizeof(key));
		bw_frame_wait(c); /* the count, then the general error (2107) */
		return 0;
	}
	bw_wipe(key, sizeof(key));
	return bw_frame_fail(c, why);
}

/* Decrypts k bytes of ciphertext from in into out and adds the plaintext to
 * the CRC, PIECE bytes at a time: each piece is CRC'd while the decryption
 * has just left it in the core's cache, not after a whole chunk has pushed
 * it out (0.279 -> 0.228 s of CPU per GiB for the two together). The
 * last block of the body is left out of the CRC: its padding is known
 * only once it is decrypted. */
#define PIECE (64u * 1024u)
static int
decrypt_and_crc(struct upload *u, const uint8_t *in, uint8_t *out, size_t k,
		int last)
{
	size_t off, n, sum;

	for (off = 0; off < k; off += n) {
		n = k - off < PIECE ? k - off : PIECE;
		if (u->aes == NULL) { /* a clear upload: no cipher, no pad */
			memcpy(out + off, in + off, n);
			bw_cksum_update(&u->crc, out + off, n);
			continue;
		}
		/* n is a whole number of blocks, or this fails */
		if (bw_aes_cbc_to(u->aes, in + off, out + off, n) != 0)
			return -1;
		sum = last && off + n == k ? n - BW_AES_BLOCK : n;
		bw_cksum_update(&u->crc, out + off, sum);
	}
	return 0;
}

/* Decrypts whole chunks out of the input buffer into a free write buffer,
 * CRCs them and hands them to a worker; when the body is complete and
 * written, hands the upload to the commit. */
int
vault_body_step(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	struct upload *u = vc->up;
	uint8_t *out;
	size_t k, plain, unpad = 0;
	int rc;

	while (u->left > 0 && u->werr == 0) {
		k = u->left < u->chunk ? (size_t)u->left : u->chunk;
		if (c->in.len < k) {
			/* a client that sends in bulk wakes us once a chunk */
			bw_conn_expect(c, k - c->in.len);
			return 0;
		}
		/* the second write waits for the first, which makes the
		 * object (the last chunk is written by the commit's job);
		 * at most two are in flight, however many buffers turn */
		if (u->wbusy[u->wnext] || u->refs >= 2 ||
		    (k < u->left && u->refs > 0 && !u->w_tried)) {
			bw_conn_pause(c, 1); /* write_done resumes us */
			return 0;
		}
		out = u->wbuf[u->wnext];
		if (decrypt_and_crc(u, bw_buf_head(&c->in), out, k,
				    k == u->left) != 0)
			return decrypt_failed(c, u, "decryption failed");
		bw_buf_consume(&c->in, k);
		plain = k;
		if (k == u->left && u->aes != NULL) {
			if (bw_pkcs7_unpad(out + k - BW_AES_BLOCK, &unpad) != 0)
				return decrypt_failed(c, u,
						      "bad padding (wrong key "
						      "or corrupt data)");
			plain -= unpad;
			/* the last block's bytes before its padding */
			bw_cksum_update(&u->crc, out + k - BW_AES_BLOCK,
					BW_AES_BLOCK - unpad);
		}
		if (k == u->left) {
			u->last_held = 1; /* vault_commit.c's commit_take_w */
			u->last_idx = u->wnext;
			u->last_len = plain;
		} else if ((rc = submit_write(u, u->wnext, plain)) != 0) {
			vault_upload_abort(c, bw_strerror(rc));
			return bw_frame_fail(c, "cannot write the file");
		}
		u->wnext = (u->wnext + 1) % u->nwbuf;
		u->left -= k;
		u->plain_len += plain;
		u->v->upload_bytes_active += plain;
	}
	/* the body is all read: what follows (padding, requests) is read
	 * as it comes */
	if (u->left == 0)
		bw_conn_expect(c, 0);
	if (u->werr != 0) {
		bw_error("c%llu cannot write the upload of %s: %s", ULL(c->id),
			 u->rel_path, bw_strerror(u->werr));
		vault_upload_abort(c, "write failed");
		return bw_frame_fail(c, "cannot write the file");
	}
	if (u->refs > 0) {
		bw_conn_pause(c, 1); /* the last writes are still running */
		return 0;
	}
	/* padding after the body decides how the reply is sent: wait until
	 * the bytes that follow say */
	if (!bw_frame_body_end(c))
		return 0;
	vault_key_used(u->v, u->client_id);
	u->body_ms = bw_now_ms();
	vc->up = NULL;
	vc->st = V_COMMIT;
	bw_frame_wait(c);
	vault_commit(c, u);
	return 0;
}
