/* libFuzzer harness for the response side of the vault codecs, as the client
 * reads them: the 7-byte header, then the payload decoder its code selects.
 * The input is a header followed by the payload; invariants are checked with
 * abort() so the fuzzer reports their violation as a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static void
fuzz_id(const uint8_t *p, size_t len)
{
	uint8_t id[BW_ID_LEN];
	int rc;

	rc = bw_vault_id_payload_decode(p, len, id);
	if (len != BW_ID_LEN) {
		check(rc == BW_EPROTO);
		return;
	}
	check(rc == 0 && memcmp(id, p, BW_ID_LEN) == 0);
}

static void
fuzz_aes(const uint8_t *p, size_t len)
{
	uint8_t id[BW_ID_LEN];
	const uint8_t *wrapped = NULL;
	int rc;

	rc = bw_vault_aes_payload_decode(p, len, id, &wrapped);
	if (len != BW_ID_LEN + BW_RSA_CT_LEN) {
		check(rc == BW_EPROTO);
		return;
	}
	check(rc == 0 && memcmp(id, p, BW_ID_LEN) == 0);
	check(wrapped == p + BW_ID_LEN);
}

static void
fuzz_file_ack(const uint8_t *p, size_t len)
{
	struct bw_file_ack a;
	uint8_t field[BW_NAME_FIELD], again[BW_FILE_ACK_LEN];
	size_t n, i;
	int rc;

	rc = bw_vault_file_ack_decode(p, len, &a);
	if (rc != 0) {
		check(rc == BW_EPROTO && a.file_name[0] == '\0');
		return;
	}
	check(len == BW_FILE_ACK_LEN);
	n = strnlen(a.file_name, BW_NAME_CAP);
	check(n > 0 && n < BW_NAME_FIELD);
	for (i = 0; i < n; i++)
		check((uint8_t)a.file_name[i] >= 0x20 &&
		      (uint8_t)a.file_name[i] != 0x7f);
	/* Encoding it again gives the same bytes up to the name's NUL. */
	check(bw_name_encode(a.file_name, field) == 0);
	bw_vault_file_ack_encode(&a, field, again);
	check(memcmp(again, p, BW_ID_LEN + 4 + n + 1) == 0);
	check(memcmp(again + BW_ID_LEN + 4 + BW_NAME_FIELD,
		     p + BW_ID_LEN + 4 + BW_NAME_FIELD, 4) == 0);
}

/* The extensions' 2110 listing (each entry decoded, encoded again to the
 * same bytes when its name is well formed) and 2111's head. */
static void
fuzz_ext(const uint8_t *p, size_t len)
{
	struct bw_vault_entry e;
	uint8_t again[BW_VAULT_LIST_ENTRY];
	uint64_t size, off, mark;
	uint32_t n, i;
	int ver, more;

	if (bw_vault_list_decode(p, len, &n, &more, &mark) == 0) {
		check(len == 4 + (size_t)n * BW_VAULT_LIST_ENTRY +
				     BW_VAULT_LIST_TRAILER);
		check(n <= BW_VAULT_LIST_PAGE && (more == 0 || more == 1));
		check(!more || n > 0);
		check(mark == bw_get_u64le(p + len - 8));
		for (i = 0; i < n; i++) {
			const uint8_t *q =
				p + 4 + (size_t)i * BW_VAULT_LIST_ENTRY;

			if (bw_vault_entry_decode(p, i, &e) != 0)
				continue;
			check(strlen(e.name) < BW_NAME_FIELD);
			check(bw_vault_entry_encode(&e, again) == 0);
			/* flags come back as 0/1: the rest is the same */
			check(memcmp(again + BW_NAME_FIELD, q + BW_NAME_FIELD,
				     8) == 0);
			check(memcmp(again + BW_NAME_FIELD + 9,
				     q + BW_NAME_FIELD + 9, 8) == 0);
			check(again[BW_NAME_FIELD + 8] ==
			      (q[BW_NAME_FIELD + 8] != 0));
		}
	} else {
		check(len < 4 + BW_VAULT_LIST_TRAILER ||
		      (len - 4 - BW_VAULT_LIST_TRAILER) % BW_VAULT_LIST_ENTRY !=
			      0 ||
		      (len - 4 - BW_VAULT_LIST_TRAILER) / BW_VAULT_LIST_ENTRY !=
			      bw_get_u32le(p) ||
		      bw_get_u32le(p) > BW_VAULT_LIST_PAGE ||
		      p[len - BW_VAULT_LIST_TRAILER] > 1 ||
		      (p[len - BW_VAULT_LIST_TRAILER] == 1 &&
		       bw_get_u32le(p) == 0));
	}
	if (bw_vault_file_head_decode(p, len, &size, &off, &ver) == 0)
		check(len >= BW_VAULT_FILE_HEAD && off <= size &&
		      size == bw_get_u64le(p) && (ver == 0 || ver == 1));
	else
		check(len < BW_VAULT_FILE_HEAD ||
		      bw_get_u64le(p + 8) > bw_get_u64le(p));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bw_resp_hdr h;
	uint8_t again[BW_RESP_HDR_LEN];
	const uint8_t *p;
	size_t len;
	int rc;

	rc = bw_resp_hdr_decode(data, size, &h);
	if (size < BW_RESP_HDR_LEN) {
		check(rc == BW_EMORE);
		return 0;
	}
	check(rc == BW_RESP_HDR_LEN);
	bw_resp_hdr_encode(&h, again);
	check(memcmp(again, data, BW_RESP_HDR_LEN) == 0);

	p = data + BW_RESP_HDR_LEN;
	len = size - BW_RESP_HDR_LEN;
	switch (h.code) {
	case BW_VAULT_RESP_LIST:
	case BW_VAULT_RESP_FILE:
		fuzz_ext(p, len);
		break;
	case BW_VAULT_RESP_REGISTERED:
	case BW_VAULT_RESP_ACK:
	case BW_VAULT_RESP_RECONNECT_DENIED:
		fuzz_id(p, len);
		break;
	case BW_VAULT_RESP_PUBKEY_AES:
	case BW_VAULT_RESP_RECONNECT_AES:
		fuzz_aes(p, len);
		break;
	case BW_VAULT_RESP_FILE_OK:
		fuzz_file_ack(p, len);
		break;
	default:
		/* Other codes carry nothing to decode; run every decoder
		 * anyway so the input is not wasted. */
		fuzz_id(p, len);
		fuzz_aes(p, len);
		fuzz_file_ack(p, len);
		fuzz_ext(p, len);
		break;
	}
	return 0;
}
