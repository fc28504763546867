/* Unit tests for the vault codecs (src/proto/vault_wire.c, src/proto/wire.c):
 * headers fed one byte at a time, every payload decoder at its exact size and
 * one byte either side, name fields, the file-name sanitiser, and every
 * decoder on input that ends right before an unmapped page.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "proto/vault_wire.h"
#include "support/guard.h"

#define PUBKEY_PAYLOAD (BW_NAME_FIELD + BW_RSA_PUB_LEN)
#define AES_PAYLOAD    (BW_ID_LEN + BW_RSA_CT_LEN)

static const uint8_t client_id[BW_ID_LEN] = {
	0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
	0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
};

static const uint16_t name_codes[] = {
	BW_VAULT_REQ_REGISTER,	BW_VAULT_REQ_RECONNECT, BW_VAULT_REQ_CRC_OK,
	BW_VAULT_REQ_CRC_RETRY, BW_VAULT_REQ_CRC_FAIL,
};

/* A name field holding s, zero-padded (s may be up to 255 bytes long and
 * then has no NUL). */
static void
make_field(uint8_t field[BW_NAME_FIELD], const char *s, size_t n)
{
	memset(field, 0, BW_NAME_FIELD);
	memcpy(field, s, n);
}

static void
make_name_field(uint8_t field[BW_NAME_FIELD], const char *s)
{
	make_field(field, s, strlen(s));
}

/* Heap copy of exactly n bytes, so ASan catches a read past the end. */
static uint8_t *
exact_copy(const void *p, size_t n)
{
	uint8_t *c = malloc(n > 0 ? n : 1);

	assert_non_null(c);
	if (n > 0)
		memcpy(c, p, n);
	return c;
}

/* Headers */

static void
request_header_round_trips(void **state)
{
	struct bw_req_hdr h, d;
	uint8_t out[BW_REQ_HDR_LEN];

	(void)state;
	memset(&h, 0, sizeof(h));
	memcpy(h.client_id, client_id, BW_ID_LEN);
	h.version = 3;
	h.code = BW_VAULT_REQ_PUBKEY;
	h.payload_size = 0x01020304;
	bw_req_hdr_encode(&h, out);
	assert_memory_equal(out, client_id, BW_ID_LEN);
	assert_int_equal(out[16], 3);
	/* Little-endian on the wire: 1026 = 0x0402. */
	assert_int_equal(out[17], 0x02);
	assert_int_equal(out[18], 0x04);
	assert_int_equal(out[19], 0x04);
	assert_int_equal(out[20], 0x03);
	assert_int_equal(out[21], 0x02);
	assert_int_equal(out[22], 0x01);
	assert_int_equal(bw_req_hdr_decode(out, sizeof(out), &d),
			 BW_REQ_HDR_LEN);
	assert_memory_equal(d.client_id, client_id, BW_ID_LEN);
	assert_int_equal(d.version, 3);
	assert_int_equal(d.code, BW_VAULT_REQ_PUBKEY);
	assert_int_equal(d.payload_size, 0x01020304);
}

static void
request_header_extremes_round_trip(void **state)
{
	struct bw_req_hdr h, d;
	uint8_t out[BW_REQ_HDR_LEN];

	(void)state;
	memset(&h, 0xff, sizeof(h));
	h.version = 255;
	h.code = 0xffff;
	h.payload_size = 0xffffffffu;
	bw_req_hdr_encode(&h, out);
	assert_int_equal(bw_req_hdr_decode(out, sizeof(out), &d),
			 BW_REQ_HDR_LEN);
	assert_memory_equal(d.client_id, h.client_id, BW_ID_LEN);
	assert_int_equal(d.version, 255);
	assert_int_equal(d.code, 0xffff);
	assert_int_equal(d.payload_size, 0xffffffffu);
}

static void
request_header_leaves_the_payload_alone(void **state)
{
	uint8_t in[BW_REQ_HDR_LEN + 5];
	struct bw_req_hdr d;

	(void)state;
	memset(in, 0, sizeof(in));
	bw_put_u16le(in + 17, BW_VAULT_REQ_REGISTER);
	bw_put_u32le(in + 19, 5);
	memset(in + BW_REQ_HDR_LEN, 'x', 5);
	assert_int_equal(bw_req_hdr_decode(in, sizeof(in), &d), BW_REQ_HDR_LEN);
	assert_int_equal(d.code, BW_VAULT_REQ_REGISTER);
	assert_int_equal(d.payload_size, 5);
}

static void
response_header_round_trips(void **state)
{
	struct bw_resp_hdr h, d;
	uint8_t out[BW_RESP_HDR_LEN];

	(void)state;
	h.version = 3;
	h.code = BW_VAULT_RESP_FILE_OK;
	h.payload_size = BW_FILE_ACK_LEN;
	bw_resp_hdr_encode(&h, out);
	assert_int_equal(out[0], 3);
	/* 2103 = 0x0837 */
	assert_int_equal(out[1], 0x37);
	assert_int_equal(out[2], 0x08);
	assert_int_equal(bw_get_u32le(out + 3), BW_FILE_ACK_LEN);
	assert_int_equal(bw_resp_hdr_decode(out, sizeof(out), &d),
			 BW_RESP_HDR_LEN);
	assert_int_equal(d.version, 3);
	assert_int_equal(d.code, BW_VAULT_RESP_FILE_OK);
	assert_int_equal(d.payload_size, BW_FILE_ACK_LEN);
}

/* The header arrives one byte at a time: every prefix is "need more", read
 * from a buffer exactly as long as what has arrived. */
static void
short_request_header_is_need_more(void **state)
{
	struct bw_req_hdr h;
	uint8_t full[BW_REQ_HDR_LEN], *buf;
	size_t n;

	(void)state;
	memset(&h, 0, sizeof(h));
	memcpy(h.client_id, client_id, BW_ID_LEN);
	h.version = 3;
	h.code = BW_VAULT_REQ_SEND_FILE;
	h.payload_size = 1000;
	bw_req_hdr_encode(&h, full);
	for (n = 0; n < BW_REQ_HDR_LEN; n++) {
		buf = exact_copy(full, n);
		assert_int_equal(bw_req_hdr_decode(buf, n, &h), BW_EMORE);
		free(buf);
	}
	buf = exact_copy(full, BW_REQ_HDR_LEN);
	memset(&h, 0, sizeof(h));
	assert_int_equal(bw_req_hdr_decode(buf, BW_REQ_HDR_LEN, &h),
			 BW_REQ_HDR_LEN);
	assert_int_equal(h.code, BW_VAULT_REQ_SEND_FILE);
	assert_int_equal(h.payload_size, 1000);
	free(buf);
}

static void
short_response_header_is_need_more(void **state)
{
	struct bw_resp_hdr h = {3, BW_VAULT_RESP_ACK, 16};
	uint8_t full[BW_RESP_HDR_LEN], *buf;
	size_t n;

	(void)state;
	bw_resp_hdr_encode(&h, full);
	for (n = 0; n < BW_RESP_HDR_LEN; n++) {
		buf = exact_copy(full, n);
		assert_int_equal(bw_resp_hdr_decode(buf, n, &h), BW_EMORE);
		free(buf);
	}
	buf = exact_copy(full, BW_RESP_HDR_LEN);
	assert_int_equal(bw_resp_hdr_decode(buf, BW_RESP_HDR_LEN, &h),
			 BW_RESP_HDR_LEN);
	assert_int_equal(h.code, BW_VAULT_RESP_ACK);
	free(buf);
}

/* Payload sizes */

static void
payload_size_of_each_request_code(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(name_codes) / sizeof(name_codes[0]); i++)
		assert_int_equal(bw_vault_req_payload_size(name_codes[i]), 255);
	assert_int_equal(bw_vault_req_payload_size(BW_VAULT_REQ_PUBKEY), 415);
	assert_int_equal(bw_vault_req_payload_size(BW_VAULT_REQ_SEND_FILE), 0);
}

static void
payload_size_of_unknown_code_is_minus_one(void **state)
{
	static const uint16_t unknown[] = {0,	 1,    1024, 1032,  2100,
					   2107, 1100, 9999, 0xffff};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		assert_int_equal(bw_vault_req_payload_size(unknown[i]), -1);
}

/* Name payloads (1025, 1027, 1029-1031) */

static void
name_payload_of_exact_size_is_decoded(void **state)
{
	uint8_t field[BW_NAME_FIELD], *p;
	char name[BW_NAME_CAP];

	(void)state;
	make_name_field(field, "alice");
	p = exact_copy(field, sizeof(field));
	assert_int_equal(bw_vault_name_payload_decode(p, BW_NAME_FIELD, name),
			 0);
	assert_string_equal(name, "alice");
	free(p);
}

static void
name_payload_one_byte_short_or_long_is_rejected(void **state)
{
	uint8_t field[BW_NAME_FIELD + 1], *p;
	char name[BW_NAME_CAP];

	(void)state;
	memset(field, 0, sizeof(field));
	memcpy(field, "alice", 5);
	p = exact_copy(field, BW_NAME_FIELD - 1);
	snprintf(name, sizeof(name), "%s", "junk");
	assert_int_equal(
		bw_vault_name_payload_decode(p, BW_NAME_FIELD - 1, name),
		BW_EPROTO);
	assert_string_equal(name, "");
	free(p);
	p = exact_copy(field, BW_NAME_FIELD + 1);
	assert_int_equal(
		bw_vault_name_payload_decode(p, BW_NAME_FIELD + 1, name),
		BW_EPROTO);
	free(p);
	assert_int_equal(bw_vault_name_payload_decode(field, 0, name),
			 BW_EPROTO);
}

static void
name_without_nul_is_rejected(void **state)
{
	uint8_t field[BW_NAME_FIELD], *p;
	char name[BW_NAME_CAP];

	(void)state;
	memset(field, 'a', sizeof(field));
	p = exact_copy(field, sizeof(field));
	assert_int_equal(bw_vault_name_payload_decode(p, BW_NAME_FIELD, name),
			 BW_EPROTO);
	assert_string_equal(name, "");
	free(p);
}

static void
empty_name_is_rejected(void **state)
{
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP];

	(void)state;
	memset(field, 0, sizeof(field));
	assert_int_equal(
		bw_vault_name_payload_decode(field, BW_NAME_FIELD, name),
		BW_EPROTO);
	/* Even with text after the leading NUL. */
	memcpy(field + 1, "alice", 5);
	assert_int_equal(
		bw_vault_name_payload_decode(field, BW_NAME_FIELD, name),
		BW_EPROTO);
}

static void
name_with_control_char_is_rejected(void **state)
{
	static const uint8_t bad[] = {0x01, 0x09, 0x0a, 0x1b, 0x1f, 0x7f};
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP];
	size_t i, at;

	(void)state;
	for (i = 0; i < sizeof(bad); i++) {
		for (at = 0; at < 3; at++) {
			make_name_field(field, "abc");
			field[at] = bad[i];
			assert_int_equal(bw_vault_name_payload_decode(
						 field, BW_NAME_FIELD, name),
					 BW_EPROTO);
		}
		/* The last character before the NUL of a 254-char name. */
		memset(field, 'n', BW_NAME_FIELD - 1);
		field[BW_NAME_FIELD - 1] = 0;
		field[BW_NAME_FIELD - 2] = bad[i];
		assert_int_equal(bw_vault_name_payload_decode(
					 field, BW_NAME_FIELD, name),
				 BW_EPROTO);
	}
}

static void
printable_edges_are_accepted(void **state)
{
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP];

	(void)state;
	make_name_field(field, " ~ x");
	assert_int_equal(
		bw_vault_name_payload_decode(field, BW_NAME_FIELD, name), 0);
	assert_string_equal(name, " ~ x");
}

static void
bytes_after_the_nul_are_ignored(void **state)
{
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP];

	(void)state;
	memset(field, 0x01, sizeof(field));
	memcpy(field, "bob", 4);
	field[100] = 0x7f;
	field[BW_NAME_FIELD - 1] = 0xff;
	assert_int_equal(
		bw_vault_name_payload_decode(field, BW_NAME_FIELD, name), 0);
	assert_string_equal(name, "bob");
}

static void
name_of_254_chars_is_accepted(void **state)
{
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP], want[BW_NAME_CAP];

	(void)state;
	memset(want, 'n', 254);
	want[254] = '\0';
	make_name_field(field, want);
	assert_int_equal(field[254], 0);
	assert_int_equal(
		bw_vault_name_payload_decode(field, BW_NAME_FIELD, name), 0);
	assert_int_equal(strlen(name), 254);
	assert_string_equal(name, want);
}

static void
name_decode_needs_exactly_one_field(void **state)
{
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP];

	(void)state;
	make_name_field(field, "alice");
	assert_int_equal(bw_name_decode(field, BW_NAME_FIELD, name), 0);
	assert_string_equal(name, "alice");
	assert_int_equal(bw_name_decode(field, BW_NAME_FIELD - 1, name),
			 BW_EPROTO);
	assert_string_equal(name, "");
}

/* Public-key payload (1026) */

static void
pubkey_payload_of_exact_size_is_decoded(void **state)
{
	uint8_t in[PUBKEY_PAYLOAD], *p;
	const uint8_t *key = NULL;
	char name[BW_NAME_CAP];

	(void)state;
	make_name_field(in, "alice");
	memset(in + BW_NAME_FIELD, 0xab, BW_RSA_PUB_LEN);
	p = exact_copy(in, sizeof(in));
	assert_int_equal(
		bw_vault_pubkey_payload_decode(p, PUBKEY_PAYLOAD, name, &key),
		0);
	assert_string_equal(name, "alice");
	assert_ptr_equal(key, p + BW_NAME_FIELD);
	free(p);
}

static void
pubkey_payload_one_byte_short_or_long_is_rejected(void **state)
{
	uint8_t in[PUBKEY_PAYLOAD + 1], *p;
	const uint8_t *key = in;
	char name[BW_NAME_CAP];

	(void)state;
	memset(in, 0, sizeof(in));
	memcpy(in, "alice", 5);
	p = exact_copy(in, PUBKEY_PAYLOAD - 1);
	assert_int_equal(bw_vault_pubkey_payload_decode(p, PUBKEY_PAYLOAD - 1,
							name, &key),
			 BW_EPROTO);
	assert_null(key);
	free(p);
	key = in;
	p = exact_copy(in, PUBKEY_PAYLOAD + 1);
	assert_int_equal(bw_vault_pubkey_payload_decode(p, PUBKEY_PAYLOAD + 1,
							name, &key),
			 BW_EPROTO);
	assert_null(key);
	free(p);
	/* A name field alone is not a 1026 payload. */
	assert_int_equal(
		bw_vault_pubkey_payload_decode(in, BW_NAME_FIELD, name, &key),
		BW_EPROTO);
}

static void
pubkey_payload_with_bad_name_is_rejected(void **state)
{
	uint8_t in[PUBKEY_PAYLOAD];
	const uint8_t *key = in;
	char name[BW_NAME_CAP];

	(void)state;
	memset(in, 'a', sizeof(in)); /* no NUL in the name field */
	assert_int_equal(
		bw_vault_pubkey_payload_decode(in, sizeof(in), name, &key),
		BW_EPROTO);
	assert_null(key);
	memset(in, 0, BW_NAME_FIELD); /* empty */
	assert_int_equal(
		bw_vault_pubkey_payload_decode(in, sizeof(in), name, &key),
		BW_EPROTO);
	make_name_field(in, "al\x1f");
	assert_int_equal(
		bw_vault_pubkey_payload_decode(in, sizeof(in), name, &key),
		BW_EPROTO);
	assert_null(key);
}

/* File prefix (1028) */

static void
file_prefix_is_decoded(void **state)
{
	uint8_t in[BW_FILE_PREFIX_LEN], *p;
	uint32_t size = 0;
	char name[BW_NAME_CAP];

	(void)state;
	bw_put_u32le(in, 0x00012340);
	make_name_field(in + 4, "report.pdf");
	p = exact_copy(in, sizeof(in));
	assert_int_equal(
		bw_vault_file_prefix_decode(p, sizeof(in), &size, name), 0);
	assert_int_equal(size, 0x00012340);
	assert_string_equal(name, "report.pdf");
	free(p);
	/* The largest content size is only a number to the decoder. */
	bw_put_u32le(in, 0xffffffffu);
	assert_int_equal(
		bw_vault_file_prefix_decode(in, sizeof(in), &size, name), 0);
	assert_int_equal(size, 0xffffffffu);
}

static void
file_prefix_one_byte_short_or_long_is_rejected(void **state)
{
	uint8_t in[BW_FILE_PREFIX_LEN + 1], *p;
	uint32_t size;
	char name[BW_NAME_CAP];

	(void)state;
	memset(in, 0, sizeof(in));
	bw_put_u32le(in, 16);
	memcpy(in + 4, "a.txt", 5);
	p = exact_copy(in, BW_FILE_PREFIX_LEN - 1);
	assert_int_equal(bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN - 1,
						     &size, name),
			 BW_EPROTO);
	free(p);
	p = exact_copy(in, BW_FILE_PREFIX_LEN + 1);
	assert_int_equal(bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN + 1,
						     &size, name),
			 BW_EPROTO);
	free(p);
	assert_int_equal(bw_vault_file_prefix_decode(in, 4, &size, name),
			 BW_EPROTO);
	assert_int_equal(bw_vault_file_prefix_decode(in, 0, &size, name),
			 BW_EPROTO);
}

static void
file_prefix_with_bad_name_is_rejected(void **state)
{
	uint8_t in[BW_FILE_PREFIX_LEN];
	uint32_t size;
	char name[BW_NAME_CAP];

	(void)state;
	bw_put_u32le(in, 16);
	memset(in + 4, 'f', BW_NAME_FIELD);
	assert_int_equal(
		bw_vault_file_prefix_decode(in, sizeof(in), &size, name),
		BW_EPROTO);
	make_name_field(in + 4, "");
	assert_int_equal(
		bw_vault_file_prefix_decode(in, sizeof(in), &size, name),
		BW_EPROTO);
	make_name_field(in + 4, "a\x7f");
	assert_int_equal(
		bw_vault_file_prefix_decode(in, sizeof(in), &size, name),
		BW_EPROTO);
}

/* File-name sanitiser */

static void
sanitize_ok(const char *in, const char *want)
{
	char out[BW_NAME_CAP];

	memset(out, 0x5a, sizeof(out));
	assert_int_equal(bw_file_name_sanitize(in, out), 0);
	assert_string_equal(out, want);
}

static void
sanitize_rejects(const char *in)
{
	char out[BW_NAME_CAP];

	assert_int_equal(bw_file_name_sanitize(in, out), BW_EPROTO);
}

static void
sanitize_keeps_only_the_base_name(void **state)
{
	(void)state;
	sanitize_ok("report.pdf", "report.pdf");
	sanitize_ok("../../x", "x");
	sanitize_ok("/abs/x", "x");
	sanitize_ok("a/b", "b");
	sanitize_ok("a\\b", "b");
	sanitize_ok("..\\..\\windows\\win.ini", "win.ini");
	sanitize_ok("a/b\\c/d", "d");
	sanitize_ok("//x", "x");
	sanitize_ok("...", "...");
	sanitize_ok("../...", "...");
	sanitize_ok(".hidden", ".hidden");
	sanitize_ok("x..", "x..");
}

static void
sanitize_rejects_names_without_a_base(void **state)
{
	(void)state;
	sanitize_rejects("..");
	sanitize_rejects(".");
	sanitize_rejects("");
	sanitize_rejects("dir/");
	sanitize_rejects("dir\\");
	sanitize_rejects("/");
	sanitize_rejects("a/..");
	sanitize_rejects("a\\.");
	sanitize_rejects("../..");
}

static void
sanitize_rejects_control_chars(void **state)
{
	(void)state;
	sanitize_rejects("a\x01");
	sanitize_rejects("dir/a\x1f");
	sanitize_rejects("a\x7f");
	/* Only the base name counts. */
	sanitize_ok("a\x01/b", "b");
}

static void
sanitize_accepts_254_chars(void **state)
{
	char in[BW_NAME_CAP];

	(void)state;
	memset(in, 'n', 254);
	in[254] = '\0';
	sanitize_ok(in, in);
}

/* Name encoding */

static void
name_encode_pads_with_zeros(void **state)
{
	uint8_t field[BW_NAME_FIELD];
	char name[BW_NAME_CAP];
	size_t i;

	(void)state;
	memset(field, 0xff, sizeof(field));
	assert_int_equal(bw_name_encode("alice", field), 0);
	assert_memory_equal(field, "alice", 5);
	for (i = 5; i < BW_NAME_FIELD; i++)
		assert_int_equal(field[i], 0);
	assert_int_equal(bw_name_decode(field, BW_NAME_FIELD, name), 0);
	assert_string_equal(name, "alice");
}

static void
name_encode_of_255_chars_is_too_big(void **state)
{
	char name[BW_NAME_CAP + 1];
	uint8_t field[BW_NAME_FIELD];

	(void)state;
	memset(name, 'n', 255);
	name[255] = '\0';
	assert_int_equal(bw_name_encode(name, field), BW_ETOOBIG);
	name[254] = '\0';
	assert_int_equal(bw_name_encode(name, field), 0);
	assert_int_equal(field[254], 0);
}

static void
name_encode_rejects_what_would_not_decode(void **state)
{
	uint8_t field[BW_NAME_FIELD];

	(void)state;
	assert_int_equal(bw_name_encode("", field), BW_EPROTO);
	assert_int_equal(bw_name_encode("a\x01", field), BW_EPROTO);
	assert_int_equal(bw_name_encode("\x1f", field), BW_EPROTO);
	assert_int_equal(bw_name_encode("a\x7f", field), BW_EPROTO);
}

/* Response payloads */

static void
id_payload_needs_exactly_16_bytes(void **state)
{
	uint8_t in[BW_ID_LEN + 1], id[BW_ID_LEN], *p;

	(void)state;
	memcpy(in, client_id, BW_ID_LEN);
	in[BW_ID_LEN] = 0;
	p = exact_copy(in, BW_ID_LEN);
	assert_int_equal(bw_vault_id_payload_decode(p, BW_ID_LEN, id), 0);
	assert_memory_equal(id, client_id, BW_ID_LEN);
	free(p);
	p = exact_copy(in, BW_ID_LEN - 1);
	assert_int_equal(bw_vault_id_payload_decode(p, BW_ID_LEN - 1, id),
			 BW_EPROTO);
	free(p);
	p = exact_copy(in, BW_ID_LEN + 1);
	assert_int_equal(bw_vault_id_payload_decode(p, BW_ID_LEN + 1, id),
			 BW_EPROTO);
	free(p);
	assert_int_equal(bw_vault_id_payload_decode(in, 0, id), BW_EPROTO);
}

static void
aes_payload_needs_exactly_144_bytes(void **state)
{
	uint8_t in[AES_PAYLOAD + 1], id[BW_ID_LEN], *p;
	const uint8_t *wrapped = NULL;

	(void)state;
	memcpy(in, client_id, BW_ID_LEN);
	memset(in + BW_ID_LEN, 0xc3, sizeof(in) - BW_ID_LEN);
	p = exact_copy(in, AES_PAYLOAD);
	assert_int_equal(
		bw_vault_aes_payload_decode(p, AES_PAYLOAD, id, &wrapped), 0);
	assert_memory_equal(id, client_id, BW_ID_LEN);
	assert_ptr_equal(wrapped, p + BW_ID_LEN);
	free(p);
	p = exact_copy(in, AES_PAYLOAD - 1);
	assert_int_equal(
		bw_vault_aes_payload_decode(p, AES_PAYLOAD - 1, id, &wrapped),
		BW_EPROTO);
	free(p);
	p = exact_copy(in, AES_PAYLOAD + 1);
	assert_int_equal(
		bw_vault_aes_payload_decode(p, AES_PAYLOAD + 1, id, &wrapped),
		BW_EPROTO);
	free(p);
	assert_int_equal(
		bw_vault_aes_payload_decode(in, BW_ID_LEN, id, &wrapped),
		BW_EPROTO);
}

static void
file_ack_round_trips(void **state)
{
	struct bw_file_ack a, d;
	uint8_t field[BW_NAME_FIELD], out[BW_FILE_ACK_LEN], *p;

	(void)state;
	memset(&a, 0, sizeof(a));
	memcpy(a.client_id, client_id, BW_ID_LEN);
	a.content_size = 48;
	snprintf(a.file_name, sizeof(a.file_name), "%s", "notes.txt");
	a.cksum = 930766865;
	assert_int_equal(bw_name_encode(a.file_name, field), 0);
	bw_vault_file_ack_encode(&a, field, out);
	assert_int_equal(bw_get_u32le(out + BW_ID_LEN), 48);
	assert_int_equal(bw_get_u32le(out + BW_FILE_ACK_LEN - 4), 930766865);
	p = exact_copy(out, sizeof(out));
	assert_int_equal(bw_vault_file_ack_decode(p, BW_FILE_ACK_LEN, &d), 0);
	assert_memory_equal(d.client_id, client_id, BW_ID_LEN);
	assert_int_equal(d.content_size, 48);
	assert_string_equal(d.file_name, "notes.txt");
	assert_int_equal(d.cksum, 930766865);
	free(p);
}

static void
file_ack_one_byte_short_or_long_is_rejected(void **state)
{
	struct bw_file_ack a, d;
	uint8_t field[BW_NAME_FIELD], out[BW_FILE_ACK_LEN + 1], *p;

	(void)state;
	memset(&a, 0, sizeof(a));
	snprintf(a.file_name, sizeof(a.file_name), "%s", "x");
	assert_int_equal(bw_name_encode(a.file_name, field), 0);
	bw_vault_file_ack_encode(&a, field, out);
	out[BW_FILE_ACK_LEN] = 0;
	p = exact_copy(out, BW_FILE_ACK_LEN - 1);
	assert_int_equal(bw_vault_file_ack_decode(p, BW_FILE_ACK_LEN - 1, &d),
			 BW_EPROTO);
	free(p);
	p = exact_copy(out, BW_FILE_ACK_LEN + 1);
	assert_int_equal(bw_vault_file_ack_decode(p, BW_FILE_ACK_LEN + 1, &d),
			 BW_EPROTO);
	free(p);
}

static void
file_ack_with_bad_name_is_rejected(void **state)
{
	uint8_t out[BW_FILE_ACK_LEN];
	struct bw_file_ack d;

	(void)state;
	memset(out, 0, sizeof(out));
	assert_int_equal(bw_vault_file_ack_decode(out, sizeof(out), &d),
			 BW_EPROTO); /* empty name */
	memset(out + BW_ID_LEN + 4, 'z', BW_NAME_FIELD);
	assert_int_equal(bw_vault_file_ack_decode(out, sizeof(out), &d),
			 BW_EPROTO); /* no NUL */
	make_name_field(out + BW_ID_LEN + 4, "a\x01");
	assert_int_equal(bw_vault_file_ack_decode(out, sizeof(out), &d),
			 BW_EPROTO);
}

static int
expect(int ok)
{
	return ok ? 0 : BW_EPROTO;
}

/* Every decoder on input that ends right before an unmapped page: a read of
 * even one byte too many faults. */
/* A 2110 page: the count agrees with the length, at most a page, and
 * "more" only after entries; its trailer read back. */
static void
a_listing_page_is_decoded_with_its_trailer(void **state)
{
	static uint8_t p[4 + (BW_VAULT_LIST_PAGE + 1) * BW_VAULT_LIST_ENTRY +
			 BW_VAULT_LIST_TRAILER];
	struct bw_vault_entry e = {.size = 7, .verified = 1, .stored = 42};
	uint64_t mark = 0;
	uint32_t n = 9;
	int more = 9;
	size_t len;

	(void)state;
	snprintf(e.name, sizeof(e.name), "a.bin");
	/* two entries, more, mark 77 */
	bw_put_u32le(p, 2);
	assert_int_equal(bw_vault_entry_encode(&e, p + 4), 0);
	assert_int_equal(bw_vault_entry_encode(&e, p + 4 + BW_VAULT_LIST_ENTRY),
			 0);
	len = 4 + 2 * BW_VAULT_LIST_ENTRY + BW_VAULT_LIST_TRAILER;
	p[len - 9] = 1;
	bw_put_u64le(p + len - 8, 77);
	assert_int_equal(bw_vault_list_decode(p, len, &n, &more, &mark), 0);
	assert_int_equal(n, 2);
	assert_int_equal(more, 1);
	assert_int_equal(mark, 77);
	/* without the trailer, or a byte short or long */
	assert_int_equal(bw_vault_list_decode(p, len - BW_VAULT_LIST_TRAILER,
					      &n, &more, &mark),
			 BW_EPROTO);
	assert_int_equal(n, 0);
	assert_int_equal(bw_vault_list_decode(p, len - 1, &n, &more, &mark),
			 BW_EPROTO);
	assert_int_equal(bw_vault_list_decode(p, len + 1, &n, &more, &mark),
			 BW_EPROTO);
	/* "more" is 0 or 1 */
	p[len - 9] = 2;
	assert_int_equal(bw_vault_list_decode(p, len, &n, &more, &mark),
			 BW_EPROTO);
	/* an empty page cannot say more (a client would ask forever) */
	bw_put_u32le(p, 0);
	p[4] = 1;
	assert_int_equal(bw_vault_list_decode(p, 4 + BW_VAULT_LIST_TRAILER, &n,
					      &more, &mark),
			 BW_EPROTO);
	p[4] = 0;
	assert_int_equal(bw_vault_list_decode(p, 4 + BW_VAULT_LIST_TRAILER, &n,
					      &more, &mark),
			 0);
	assert_int_equal(n, 0);
	/* more than a page, even with the length that agrees */
	bw_put_u32le(p, BW_VAULT_LIST_PAGE + 1);
	len = sizeof(p);
	p[len - 9] = 0;
	assert_int_equal(bw_vault_list_decode(p, len, &n, &more, &mark),
			 BW_EPROTO);
}

static void
decoders_do_not_read_past_the_end(void **state)
{
	uint8_t buf[BW_FILE_ACK_LEN + PUBKEY_PAYLOAD], id[BW_ID_LEN];
	const uint8_t *p, *key, *wrapped;
	struct bw_req_hdr rh;
	struct bw_resp_hdr sh;
	struct bw_file_ack ack;
	char name[BW_NAME_CAP];
	uint32_t size;
	struct guard g;
	size_t n;
	int fill;

	(void)state;
	guard_init(&g);
	/* Every length from 0 up, first with valid names where a decoder
	 * expects one, then with 'a' everywhere: name fields without a NUL,
	 * the worst case for a scan. */
	for (fill = 0; fill < 2; fill++) {
		memset(buf, fill ? 'a' : 0, sizeof(buf));
		if (!fill) {
			memcpy(buf, "name", 4);
			memcpy(buf + 4, "file", 4);
			memcpy(buf + BW_ID_LEN + 4, "ack", 3);
		}
		for (n = 0; n <= sizeof(buf); n++) {
			p = place(&g, buf, n);
			assert_int_equal(bw_req_hdr_decode(p, n, &rh),
					 n >= BW_REQ_HDR_LEN ? BW_REQ_HDR_LEN
							     : BW_EMORE);
			assert_int_equal(bw_resp_hdr_decode(p, n, &sh),
					 n >= BW_RESP_HDR_LEN ? BW_RESP_HDR_LEN
							      : BW_EMORE);
			assert_int_equal(
				bw_vault_name_payload_decode(p, n, name),
				expect(!fill && n == BW_NAME_FIELD));
			assert_int_equal(bw_vault_pubkey_payload_decode(
						 p, n, name, &key),
					 expect(!fill && n == PUBKEY_PAYLOAD));
			assert_int_equal(
				bw_vault_file_prefix_decode(p, n, &size, name),
				expect(!fill && n == BW_FILE_PREFIX_LEN));
			assert_int_equal(bw_vault_id_payload_decode(p, n, id),
					 expect(n == BW_ID_LEN));
			assert_int_equal(
				bw_vault_aes_payload_decode(p, n, id, &wrapped),
				expect(n == AES_PAYLOAD));
			assert_int_equal(bw_vault_file_ack_decode(p, n, &ack),
					 expect(!fill && n == BW_FILE_ACK_LEN));
			if (fill && n >= BW_NAME_FIELD)
				assert_int_equal(
					bw_name_decode(p + n - BW_NAME_FIELD,
						       BW_NAME_FIELD, name),
					BW_EPROTO);
		}
	}
	/* Exact sizes are accepted there too. */
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "edge", 4);
	p = place(&g, buf, BW_NAME_FIELD);
	assert_int_equal(bw_vault_name_payload_decode(p, BW_NAME_FIELD, name),
			 0);
	assert_string_equal(name, "edge");
	p = place(&g, buf, PUBKEY_PAYLOAD);
	assert_int_equal(
		bw_vault_pubkey_payload_decode(p, PUBKEY_PAYLOAD, name, &key),
		0);
	assert_ptr_equal(key, p + BW_NAME_FIELD);
	memset(buf, 0, sizeof(buf));
	memcpy(buf + 4, "edge", 4);
	p = place(&g, buf, BW_FILE_PREFIX_LEN);
	assert_int_equal(
		bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN, &size, name),
		0);
	memset(buf, 0, sizeof(buf));
	memcpy(buf + BW_ID_LEN + 4, "edge", 4);
	p = place(&g, buf, BW_FILE_ACK_LEN);
	assert_int_equal(bw_vault_file_ack_decode(p, BW_FILE_ACK_LEN, &ack), 0);
	p = place(&g, buf, AES_PAYLOAD);
	assert_int_equal(
		bw_vault_aes_payload_decode(p, AES_PAYLOAD, id, &wrapped), 0);
	p = place(&g, buf, BW_ID_LEN);
	assert_int_equal(bw_vault_id_payload_decode(p, BW_ID_LEN, id), 0);
	p = place(&g, buf, BW_REQ_HDR_LEN);
	assert_int_equal(bw_req_hdr_decode(p, BW_REQ_HDR_LEN, &rh),
			 BW_REQ_HDR_LEN);
	p = place(&g, buf, BW_RESP_HDR_LEN);
	assert_int_equal(bw_resp_hdr_decode(p, BW_RESP_HDR_LEN, &sh),
			 BW_RESP_HDR_LEN);
	/* The sanitiser reads a C string: its NUL is the last mapped byte. */
	p = place(&g, "../../x", 8);
	sanitize_ok((const char *)p, "x");
	p = place(&g, "..", 3);
	sanitize_rejects((const char *)p);
	guard_fini(&g);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(request_header_round_trips),
		cmocka_unit_test(a_listing_page_is_decoded_with_its_trailer),
		cmocka_unit_test(request_header_extremes_round_trip),
		cmocka_unit_test(request_header_leaves_the_payload_alone),
		cmocka_unit_test(response_header_round_trips),
		cmocka_unit_test(short_request_header_is_need_more),
		cmocka_unit_test(short_response_header_is_need_more),
		cmocka_unit_test(payload_size_of_each_request_code),
		cmocka_unit_test(payload_size_of_unknown_code_is_minus_one),
		cmocka_unit_test(name_payload_of_exact_size_is_decoded),
		cmocka_unit_test(
			name_payload_one_byte_short_or_long_is_rejected),
		cmocka_unit_test(name_without_nul_is_rejected),
		cmocka_unit_test(empty_name_is_rejected),
		cmocka_unit_test(name_with_control_char_is_rejected),
		cmocka_unit_test(printable_edges_are_accepted),
		cmocka_unit_test(bytes_after_the_nul_are_ignored),
		cmocka_unit_test(name_of_254_chars_is_accepted),
		cmocka_unit_test(name_decode_needs_exactly_one_field),
		cmocka_unit_test(pubkey_payload_of_exact_size_is_decoded),
		cmocka_unit_test(
			pubkey_payload_one_byte_short_or_long_is_rejected),
		cmocka_unit_test(pubkey_payload_with_bad_name_is_rejected),
		cmocka_unit_test(file_prefix_is_decoded),
		cmocka_unit_test(
			file_prefix_one_byte_short_or_long_is_rejected),
		cmocka_unit_test(file_prefix_with_bad_name_is_rejected),
		cmocka_unit_test(sanitize_keeps_only_the_base_name),
		cmocka_unit_test(sanitize_rejects_names_without_a_base),
		cmocka_unit_test(sanitize_rejects_control_chars),
		cmocka_unit_test(sanitize_accepts_254_chars),
		cmocka_unit_test(name_encode_pads_with_zeros),
		cmocka_unit_test(name_encode_of_255_chars_is_too_big),
		cmocka_unit_test(name_encode_rejects_what_would_not_decode),
		cmocka_unit_test(id_payload_needs_exactly_16_bytes),
		cmocka_unit_test(aes_payload_needs_exactly_144_bytes),
		cmocka_unit_test(file_ack_round_trips),
		cmocka_unit_test(file_ack_one_byte_short_or_long_is_rejected),
		cmocka_unit_test(file_ack_with_bad_name_is_rejected),
		cmocka_unit_test(decoders_do_not_read_past_the_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
