/* Identity files (me.info and priv.key): read, and written for a first
 * registration so that nothing is in place before the server has answered
 * (cli/common.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "cli/common.h"

#define IDENTITY_MAX (64u * 1024u)

/* Returns the next line of text (without \r\n) and advances *pos. */
static char *
next_line(char *text, size_t len, size_t *pos)
{
	char *start;
	size_t i;

	if (*pos >= len)
		return NULL;
	start = text + *pos;
	for (i = *pos; i < len && text[i] != '\n'; i++)
		;
	text[i] = '\0';
	if (i > *pos && text[i - 1] == '\r')
		text[i - 1] = '\0';
	*pos = i + 1;
	return start;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

static int
has_control(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	}
	return 0;
}

static int
key_from_b64(struct bw_identity *me, const char *b64, size_t n)
{
	uint8_t *der = NULL;
	size_t der_len = 0;
	int rc;

	if ((rc = bw_b64_decode(b64, n, &der, &der_len)) != 0)
		return rc;
	rc = bw_rsa_from_pkcs8(&me->key, der, der_len);
	bw_secure_free(der, der_len);
	return rc;
}

int
bw_identity_load(struct bw_identity *me, const char *path,
		 const char *priv_path, const char **why)
{
	char *text = NULL, *priv = NULL, *line, *rest;
	size_t len = 0, plen = 0, pos = 0;
	int rc;

	memset(me, 0, sizeof(*me));
	*why = NULL;
	if ((rc = bw_read_small_file(path, IDENTITY_MAX, &text, &len)) != 0) {
		*why = "cannot be read";
		return rc;
	}
	rc = BW_EPROTO;
	if ((line = next_line(text, len, &pos)) == NULL ||
	    *(line = trim(line)) == '\0' || strlen(line) > 254 ||
	    has_control(line)) {
		*why = "line 1 must be the name";
		goto out;
	}
	snprintf(me->name, sizeof(me->name), "%s", line);
	if ((line = next_line(text, len, &pos)) == NULL ||
	    bw_hex_decode(trim(line), strlen(trim(line)), me->id, BW_ID_LEN) !=
		    0) {
		*why = "line 2 must be the client id as 32 hex digits";
		goto out;
	}
	rest = pos < len ? text + pos : text + len;
	if (strspn(rest, " \t\r\n") != strlen(rest)) {
		if (key_from_b64(me, rest, strlen(rest)) != 0) {
			*why = "line 3 is not a base64 PKCS#8 RSA private key";
			goto out;
		}
	} else {
		if (bw_read_small_file(priv_path, IDENTITY_MAX, &priv, &plen) !=
			    0 ||
		    key_from_b64(me, priv, plen) != 0) {
			*why = "has no private key and priv.key is missing or "
			       "invalid";
			goto out;
		}
	}
	rc = 0;
out:
	bw_secure_free(text, len);
	bw_secure_free(priv, plen);
	if (rc != 0)
		bw_identity_fini(me);
	return rc;
}

/* The temporary files of the identity staged and not yet committed, kept
 * or abandoned: a process that ends at once (a tls:// server whose key is
 * in doubt) removes them first. */
static char pending_tmp[2][4096 + 32];

static void
pending_note(const struct bw_identity_stage *st)
{
	snprintf(pending_tmp[0], sizeof(pending_tmp[0]), "%s",
		 st != NULL ? st->tmp : "");
	snprintf(pending_tmp[1], sizeof(pending_tmp[1]), "%s",
		 st != NULL ? st->priv_tmp : "");
}

void
bw_identity_drop_staged(void)
{
	unsigned i;

	for (i = 0; i < 2; i++)
		if (pending_tmp[i][0] != '\0')
			(void)unlink(pending_tmp[i]);
	pending_note(NULL);
}

int
bw_identity_stage(const struct bw_identity *me, const char *path,
		  const char *priv_path, struct bw_identity_stage *st)
{
	uint8_t *der = NULL;
	size_t der_len = 0, n = 0;
	char *b64 = NULL, *text = NULL;
	int rc, w;

	memset(st, 0, sizeof(*st));
	st->fd = st->priv_fd = -1;
	st->first = access(path, F_OK) != 0 && errno == ENOENT;
	snprintf(st->path, sizeof(st->path), "%s", path);
	if (priv_path != NULL)
		snprintf(st->priv_path, sizeof(st->priv_path), "%s", priv_path);
	if ((rc = bw_rsa_to_pkcs8(me->key, &der, &der_len)) != 0 ||
	    (rc = bw_b64_encode(der, der_len, &b64)) != 0)
		goto out;
	n = strlen(me->name) + 2 * BW_ID_LEN + strlen(b64) + 4;
	if ((text = malloc(n)) == NULL) {
		rc = BW_ENOMEM;
		goto out;
	}
	/* the id's place, filled in by bw_identity_commit */
	w = snprintf(text, n, "%s\n%0*d\n%s\n", me->name, 2 * BW_ID_LEN, 0,
		     b64);
	if (w < 0 || (size_t)w >= n) {
		rc = BW_ETOOBIG;
		goto out;
	}
	st->id_off = (long)strlen(me->name) + 1;
	if ((rc = bw_fs_stage(path, text, (size_t)w, 0600, st->tmp,
			      sizeof(st->tmp), &st->fd)) != 0)
		goto out;
	if (priv_path != NULL &&
	    (rc = bw_fs_stage(priv_path, b64, strlen(b64), 0600, st->priv_tmp,
			      sizeof(st->priv_tmp), &st->priv_fd)) != 0)
		bw_identity_abandon(st);
	else
		pending_note(st);
out:
	bw_secure_free(der, der_len);
	if (b64 != NULL)
		bw_secure_free(b64, strlen(b64));
	bw_secure_free(text, n);
	return rc;
}

/* tmp renamed to path unless path exists (-EEXIST): renameat2's
 * RENAME_NOREPLACE, or a link and an unlink where the file system has no
 * such rename, or, with no links either (vfat), a look then a rename,
 * which narrows the race to that moment. */
static int
rename_new(const char *tmp, const char *path)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (link(tmp, path) == 0) {
		(void)unlink(tmp);
		return 0;
	}
	if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	if (access(path, F_OK) == 0)
		return -EEXIST;
	return rename(tmp, path) == 0 ? 0 : -errno;
}

/* Puts a staged file in place (only if path is not there, when fresh);
 * on failure it stays where it is (it holds a private key the server now
 * knows). */
static int
publish(int *fd, char *tmp, const char *path, int fresh)
{
	int rc = fsync(*fd) != 0 ? -errno : 0;

	if (close(*fd) != 0 && rc == 0)
		rc = -errno;
	*fd = -1;
	if (rc == 0 && fresh)
		rc = rename_new(tmp, path);
	else if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc == 0)
		tmp[0] = '\0';
	return rc;
}

int
bw_identity_commit(struct bw_identity_stage *st, const uint8_t id[BW_ID_LEN])
{
	char hex[2 * BW_ID_LEN + 1];
	int rc;

	bw_hex_encode(id, BW_ID_LEN, hex);
	if (pwrite(st->fd, hex, 2 * BW_ID_LEN, st->id_off) != 2 * BW_ID_LEN)
		return errno ? -errno : -EIO;
	if ((rc = publish(&st->fd, st->tmp, st->path, st->first)) != 0)
		return rc;
	if (st->priv_fd >= 0 &&
	    (rc = publish(&st->priv_fd, st->priv_tmp, st->priv_path, 0)) != 0)
		return rc;
	pending_note(NULL);
	return bw_fs_sync_dir(st->path);
}

void
bw_identity_keep(struct bw_identity_stage *st)
{
	pending_note(NULL);
	if (st->fd >= 0)
		close(st->fd);
	if (st->priv_fd >= 0)
		close(st->priv_fd);
	st->fd = st->priv_fd = -1;
}

void
bw_identity_abandon(struct bw_identity_stage *st)
{
	bw_identity_keep(st);
	if (st->tmp[0] != '\0')
		(void)unlink(st->tmp);
	if (st->priv_tmp[0] != '\0')
		(void)unlink(st->priv_tmp);
	st->tmp[0] = st->priv_tmp[0] = '\0';
}

void
bw_identity_fini(struct bw_identity *me)
{
	bw_rsa_free(me->key);
	me->key = NULL;
}
