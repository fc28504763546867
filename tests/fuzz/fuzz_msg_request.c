/* libFuzzer harness for the messenger's request codecs as the server reads
 * them: the first byte picks the decoder (600's name and key, 603's fixed
 * part, a request header with the padding rule after it). Whatever decodes
 * must encode back to the same bytes; invariants abort().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "proto/wire.h"
#include "proto/msg_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

/* What the spec calls a valid name field: a NUL, after 1 to 254 printable
 * bytes. */
static int
valid_name(const uint8_t *f)
{
	const uint8_t *nul = memchr(f, 0, BW_NAME_FIELD), *q;

	if (nul == NULL || nul == f)
		return 0;
	for (q = f; q < nul; q++) {
		if (*q < 0x20 || *q == 0x7f)
			return 0;
	}
	return 1;
}

static void
fuzz_register(const uint8_t *p, size_t len)
{
	char name[BW_NAME_CAP];
	const uint8_t *key = NULL;
	uint8_t again[BW_MSG_REGISTER_LEN];
	int rc = bw_msg_register_decode(p, len, name, &key);

	check((rc == 0) == (len == BW_MSG_REGISTER_LEN && valid_name(p)));
	if (rc != 0)
		return;
	check(key == p + BW_NAME_FIELD);
	check(strlen(name) > 0 && strlen(name) < BW_NAME_FIELD);
	check(bw_msg_register_encode(name, key, again) == 0);
	check(memcmp(again, p, strlen(name) + 1) == 0);
	check(memcmp(again + BW_NAME_FIELD, key, BW_RSA_PUB_LEN) == 0);
}

static void
fuzz_send(const uint8_t *p, size_t len)
{
	struct bw_msg_send s;
	uint8_t again[BW_MSG_SEND_PREFIX];

	if (bw_msg_send_decode(p, len, &s) != 0) {
		check(len != BW_MSG_SEND_PREFIX);
		return;
	}
	check(len == BW_MSG_SEND_PREFIX);
	bw_msg_send_encode(&s, again);
	check(memcmp(again, p, sizeof(again)) == 0);
	check(bw_msg_type_known(s.type) == (s.type >= 1 && s.type <= 4));
}

static void
fuzz_header(const uint8_t *p, size_t len)
{
	struct bw_req_hdr h;
	uint8_t again[BW_REQ_HDR_LEN];
	int rc = bw_req_hdr_decode(p, len, &h), pad;

	if (len < BW_REQ_HDR_LEN) {
		check(rc == BW_EMORE);
		return;
	}
	check(rc == BW_REQ_HDR_LEN);
	bw_req_hdr_encode(&h, again);
	check(memcmp(again, p, sizeof(again)) == 0);
	pad = bw_frame_padding(p + BW_REQ_HDR_LEN, len - BW_REQ_HDR_LEN,
			       BW_REQ_HDR_LEN, 0);
	check(pad >= -1 && pad <= 1);
	check(bw_frame_pad_len(len) < BW_PAD_UNIT);
	check((len + bw_frame_pad_len(len)) % BW_PAD_UNIT == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_register(data + 1, size - 1);
		break;
	case 1:
		fuzz_send(data + 1, size - 1);
		break;
	default:
		fuzz_header(data + 1, size - 1);
		break;
	}
	return 0;
}
