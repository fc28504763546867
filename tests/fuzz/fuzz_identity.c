/* libFuzzer harness for the client's identity files: the base64 decoder
 * (checked against a plain reference decoder written here), the PKCS#8 key
 * parser on whatever decodes, and the me.info reader bw_identity_load.
 *
 * Input: the bytes of me.info, optionally followed by a NUL and the bytes of
 * priv.key (without a NUL, priv.key does not exist). Both are written to a
 * private directory made once per process (on /dev/shm when there is one,
 * as a disk file system makes the runs I/O bound) and overwritten each run.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "cli/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256], me_path[300], priv_path[300], missing_path[300];

static void
check(int ok)
{
	if (!ok)
		abort();
}

static void
cleanup(void)
{
	unlink(me_path);
	unlink(priv_path);
	rmdir(dir);
}

static void
setup_once(void)
{
	const char *tmp = getenv("TMPDIR");

	if (dir[0] != '\0')
		return;
	if (access("/dev/shm", W_OK) == 0)
		tmp = "/dev/shm";
	else if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	if (snprintf(dir, sizeof(dir), "%s/bw_fuzz_identity_XXXXXX", tmp) >=
		    (int)sizeof(dir) ||
	    mkdtemp(dir) == NULL) {
		perror("fuzz_identity: mkdtemp");
		abort();
	}
	snprintf(me_path, sizeof(me_path), "%s/me.info", dir);
	snprintf(priv_path, sizeof(priv_path), "%s/priv.key", dir);
	snprintf(missing_path, sizeof(missing_path), "%s/missing.key", dir);
	atexit(cleanup);
}

static void
write_file(const char *path, const uint8_t *p, size_t n)
{
	ssize_t w;
	int fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) <
	    0) {
		perror("fuzz_identity: open");
		abort();
	}
	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			perror("fuzz_identity: write");
			abort();
		}
		p += w;
		n -= (size_t)w;
	}
	close(fd);
}

static int
ref_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
	       c == '\r';
}

static int
ref_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Reference base64: drop white space; what is left is whole quanta of four,
 * where only the last may end in "=" or "==". Returns the decoded length or
 * -1; out has room for size bytes. */
static long
ref_b64(const uint8_t *in, size_t n, uint8_t *sym, uint8_t *out)
{
	size_t m = 0, i, o = 0, pad = 0;
	int v[4], k;

	for (i = 0; i < n; i++) {
		if (!ref_space(in[i]))
			sym[m++] = in[i];
	}
	if (m % 4 != 0)
		return -1;
	if (m > 0 && sym[m - 1] == '=')
		pad = m > 1 && sym[m - 2] == '=' ? 2 : 1;
	for (i = 0; i < m; i += 4) {
		for (k = 0; k < 4; k++) {
			if (i + (size_t)k >= m - pad) {
				v[k] = 0;
				continue;
			}
			if ((v[k] = ref_value(sym[i + (size_t)k])) < 0)
				return -1;
		}
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (i + 4 < m || pad < 2)
			out[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
		if (i + 4 < m || pad < 1)
			out[o++] = (uint8_t)((v[2] & 3) << 6 | v[3]);
	}
	return (long)o;
}

static void
fuzz_pkcs8(const uint8_t *der, size_t len)
{
	struct bw_rsa *k = NULL, *k2 = NULL;
	uint8_t *again = NULL;
	size_t again_len = 0;
	int rc;

	rc = bw_rsa_from_pkcs8(&k, der, len);
	if (rc != 0) {
		check(k == NULL);
		return;
	}
	/* An accepted key writes out and reads back. */
	check(bw_rsa_to_pkcs8(k, &again, &again_len) == 0);
	check(bw_rsa_from_pkcs8(&k2, again, again_len) == 0);
	bw_secure_free(again, again_len);
	bw_rsa_free(k2);
	bw_rsa_free(k);
}

static void
fuzz_b64(const uint8_t *data, size_t size)
{
	uint8_t *out = NULL, *sym = NULL, *ref = NULL;
	size_t out_len = 0;
	long ref_len;
	int rc;

	rc = bw_b64_decode((const char *)data, size, &out, &out_len);
	if ((sym = malloc(size + 1)) == NULL ||
	    (ref = malloc(size + 1)) == NULL)
		abort();
	ref_len = ref_b64(data, size, sym, ref);
	if (rc != 0) {
		check(rc == BW_EPROTO && out == NULL && out_len == 0);
		check(ref_len < 0);
	} else {
		check(ref_len >= 0 && (size_t)ref_len == out_len);
		check(out_len == 0 || memcmp(out, ref, out_len) == 0);
		fuzz_pkcs8(out, out_len);
	}
	free(sym);
	free(ref);
	bw_secure_free(out, out_len);
}

static void
fuzz_load(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t me_len = nul != NULL ? (size_t)(nul - data) : size;
	struct bw_identity me;
	const char *why = NULL;
	size_t n, i;
	int rc;

	write_file(me_path, data, me_len);
	if (nul != NULL)
		write_file(priv_path, nul + 1, size - me_len - 1);

	rc = bw_identity_load(&me, me_path,
			      nul != NULL ? priv_path : missing_path, &why);
	if (rc != 0) {
		/* Only a too-big file fails other than as malformed. */
		check(rc == BW_EPROTO || rc == BW_ETOOBIG);
		check(why != NULL && me.key == NULL);
		return;
	}
	n = strnlen(me.name, sizeof(me.name));
	check(n > 0 && n <= 254 && me.key != NULL && why == NULL);
	for (i = 0; i < n; i++)
		check(me.name[i] != '\n' && me.name[i] != '\r');
	check(me.name[0] != ' ' && me.name[0] != '\t');
	bw_identity_fini(&me);
	check(me.key == NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_once();
	fuzz_b64(data, size);
	fuzz_load(data, size);
	return 0;
}
