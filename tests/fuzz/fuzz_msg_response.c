/* libFuzzer harness for the messenger's responses as the client reads
 * them: 2101 entries, 2102, 2103, and the 2104 record stream walked to its
 * end (every record header and content must stay inside the payload).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "proto/msg_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

static void
fuzz_records(const uint8_t *p, size_t len)
{
	struct bw_msg_record r;
	uint8_t again[BW_MSG_RECORD_HDR];
	uint64_t left = len;
	size_t off = 0;
	int rc;

	while (left > 0) {
		rc = bw_msg_record_decode(p + off, len - off, left, &r);
		if (rc < 0) {
			check(rc == BW_EPROTO);
			return;
		}
		check(rc == BW_MSG_RECORD_HDR && (uint64_t)rc <= left);
		bw_msg_record_encode(&r, again);
		check(memcmp(again, p + off, sizeof(again)) == 0);
		check((uint64_t)r.size <= left - BW_MSG_RECORD_HDR);
		off += BW_MSG_RECORD_HDR + r.size;
		left -= BW_MSG_RECORD_HDR + (uint64_t)r.size;
		check(off <= len);
	}
	check(off == len);
}

static void
fuzz_small(const uint8_t *p, size_t len)
{
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP];
	const uint8_t *key;
	uint32_t mid;

	if (bw_msg_list_entry_decode(p, len, id, name) == 0)
		check(len == BW_MSG_LIST_ENTRY_LEN && strlen(name) > 0 &&
		      memcmp(id, p, BW_ID_LEN) == 0);
	if (bw_msg_pubkey_decode(p, len, id, &key) == 0)
		check(len == BW_MSG_PUBKEY_LEN && key == p + BW_ID_LEN);
	if (bw_msg_stored_decode(p, len, id, &mid) == 0)
		check(len == BW_MSG_STORED_LEN);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_records(data + 1, size - 1);
	else
		fuzz_small(data + 1, size - 1);
	return 0;
}
