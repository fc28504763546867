/* libFuzzer harness for the request side of the vault codecs: the 23-byte
 * header, then the payload decoder its code selects, the file-name sanitiser
 * on every decoded name and the SPKI parser on the 160-byte key field. The
 * input is a header followed by the payload; invariants are checked with
 * abort() so the fuzzer reports their violation as a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "proto/vault_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

/* A decoded name: 1..254 printable characters, and exactly the bytes of the
 * field up to its first NUL. */
static void
check_name(const char *name, const uint8_t *field)
{
	uint8_t again[BW_NAME_FIELD];
	size_t n = strnlen(name, BW_NAME_CAP), i;

	check(n > 0 && n < BW_NAME_FIELD);
	for (i = 0; i < n; i++)
		check((uint8_t)name[i] >= 0x20 && (uint8_t)name[i] != 0x7f);
	check(memcmp(name, field, n) == 0 && field[n] == 0);
	/* Encoding it again gives the same text, zero-padded. */
	check(bw_name_encode(name, again) == 0);
	check(memcmp(again, field, n + 1) == 0);
	for (i = n; i < BW_NAME_FIELD; i++)
		check(again[i] == 0);
}

/* The sanitised name is a non-empty suffix of the name with no separator,
 * control character, "." or "..": never usable to leave the directory. */
static void
check_sanitize(const char *name)
{
	char out[BW_NAME_CAP];
	size_t n, in_n = strlen(name), i;
	int rc;

	memset(out, 0x5a, sizeof(out));
	rc = bw_file_name_sanitize(name, out);
	if (rc != 0) {
		check(rc == BW_EPROTO);
		return;
	}
	n = strnlen(out, BW_NAME_CAP);
	check(n > 0 && n < BW_NAME_CAP && n <= in_n);
	check(strcmp(out, ".") != 0 && strcmp(out, "..") != 0);
	for (i = 0; i < n; i++) {
		check(out[i] != '/' && out[i] != '\\');
		check((uint8_t)out[i] >= 0x20 && (uint8_t)out[i] != 0x7f);
	}
	check(memcmp(name + in_n - n, out, n) == 0);
	/* Sanitising is idempotent. */
	{
		char twice[BW_NAME_CAP];

		check(bw_file_name_sanitize(out, twice) == 0);
		check(strcmp(out, twice) == 0);
	}
}

static void
fuzz_spki(const uint8_t *key)
{
	struct bw_rsa *k = NULL, *k2 = NULL;
	uint8_t der[BW_RSA_PUB_LEN];
	int rc;

	rc = bw_rsa_from_spki(&k, key, BW_RSA_PUB_LEN);
	if (rc != 0) {
		check(k == NULL && rc == BW_EBADKEY);
		return;
	}
	check(k != NULL);
	/* An accepted key re-encodes into the field and parses again. */
	if (bw_rsa_to_spki(k, der) == 0) {
		check(bw_rsa_from_spki(&k2, der, sizeof(der)) == 0);
		bw_rsa_free(k2);
	}
	bw_rsa_free(k);
}

static void
fuzz_name_payload(const uint8_t *p, size_t len)
{
	char name[BW_NAME_CAP];
	int rc;

	rc = bw_vault_name_payload_decode(p, len, name);
	if (len != BW_NAME_FIELD) {
		check(rc == BW_EPROTO && name[0] == '\0');
		/* The first 255 bytes, as the server sees them once the
		 * header's payload_size has been checked. */
		if (len < BW_NAME_FIELD)
			return;
		rc = bw_vault_name_payload_decode(p, BW_NAME_FIELD, name);
	}
	if (rc != 0) {
		check(rc == BW_EPROTO && name[0] == '\0');
		return;
	}
	check_name(name, p);
	check_sanitize(name);
}

static void
fuzz_pubkey_payload(const uint8_t *p, size_t len)
{
	const size_t want = BW_NAME_FIELD + BW_RSA_PUB_LEN;
	const uint8_t *key = p;
	char name[BW_NAME_CAP];
	int rc;

	rc = bw_vault_pubkey_payload_decode(p, len, name, &key);
	if (len != want) {
		check(rc == BW_EPROTO && key == NULL && name[0] == '\0');
		if (len < want)
			return;
		rc = bw_vault_pubkey_payload_decode(p, want, name, &key);
	}
	if (rc != 0) {
		check(rc == BW_EPROTO && key == NULL && name[0] == '\0');
		return;
	}
	check(key == p + BW_NAME_FIELD);
	check_name(name, p);
	check_sanitize(name);
	fuzz_spki(key);
}

static void
fuzz_file_prefix(const uint8_t *p, size_t len)
{
	char name[BW_NAME_CAP];
	uint32_t content_size = 0;
	int rc;

	rc = bw_vault_file_prefix_decode(p, len, &content_size, name);
	if (len != BW_FILE_PREFIX_LEN) {
		check(rc == BW_EPROTO && name[0] == '\0');
		if (len < BW_FILE_PREFIX_LEN)
			return;
		/* The prefix of a longer payload: the ciphertext follows. */
		rc = bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN,
						 &content_size, name);
	}
	if (rc != 0) {
		check(rc == BW_EPROTO && name[0] == '\0');
		return;
	}
	check(content_size == bw_get_u32le(p));
	check_name(name, p + 4);
	check_sanitize(name);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bw_req_hdr h;
	uint8_t again[BW_REQ_HDR_LEN];
	const uint8_t *p;
	size_t len;
	long want;
	int rc;

	rc = bw_req_hdr_decode(data, size, &h);
	if (size < BW_REQ_HDR_LEN) {
		check(rc == BW_EMORE);
		/* The sanitiser on the raw bytes as a C string. */
		if (size > 0 && memchr(data, 0, size) != NULL)
			check_sanitize((const char *)data);
		return 0;
	}
	check(rc == BW_REQ_HDR_LEN);
	bw_req_hdr_encode(&h, again);
	check(memcmp(again, data, BW_REQ_HDR_LEN) == 0);
	check(h.code == bw_get_u16le(data + 17));
	check(h.payload_size == bw_get_u32le(data + 19));

	p = data + BW_REQ_HDR_LEN;
	len = size - BW_REQ_HDR_LEN;
	want = bw_vault_req_payload_size(h.code);
	switch (h.code) {
	case BW_VAULT_REQ_REGISTER:
	case BW_VAULT_REQ_RECONNECT:
	case BW_VAULT_REQ_CRC_OK:
	case BW_VAULT_REQ_CRC_RETRY:
	case BW_VAULT_REQ_CRC_FAIL:
		check(want == BW_NAME_FIELD);
		fuzz_name_payload(p, len);
		break;
	case BW_VAULT_REQ_PUBKEY:
		check(want == BW_NAME_FIELD + BW_RSA_PUB_LEN);
		fuzz_pubkey_payload(p, len);
		break;
	case BW_VAULT_REQ_SEND_FILE:
		check(want == 0);
		fuzz_file_prefix(p, len);
		break;
	default:
		check(want == -1);
		/* Still run the decoders on whatever follows, so inputs
		 * with other codes are not wasted. */
		fuzz_name_payload(p, len);
		fuzz_file_prefix(p, len);
		break;
	}
	return 0;
}
