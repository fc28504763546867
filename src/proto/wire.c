/* Request/response headers, name fields and the padding rules of the shared
 * port, decoded through the bounded cursor.
 */
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "proto/wire.h"

int
bw_req_hdr_decode(const uint8_t *p, size_t len, struct bw_req_hdr *h)
{
	struct bw_cur c;

	if (len < BW_REQ_HDR_LEN)
		return BW_EMORE;
	bw_cur_init(&c, p, BW_REQ_HDR_LEN);
	bw_cur_copy(&c, h->client_id, BW_ID_LEN);
	h->version = bw_cur_u8(&c);
	h->code = bw_cur_u16le(&c);
	h->payload_size = bw_cur_u32le(&c);
	if (bw_cur_end(&c) != 0)
		return BW_EMORE;
	return BW_REQ_HDR_LEN;
}

void
bw_req_hdr_encode(const struct bw_req_hdr *h, uint8_t out[BW_REQ_HDR_LEN])
{
	memcpy(out, h->client_id, BW_ID_LEN);
	out[16] = h->version;
	bw_put_u16le(out + 17, h->code);
	bw_put_u32le(out + 19, h->payload_size);
}

int
bw_resp_hdr_decode(const uint8_t *p, size_t len, struct bw_resp_hdr *h)
{
	if (len < BW_RESP_HDR_LEN)
		return BW_EMORE;
	h->version = p[0];
	h->code = bw_get_u16le(p + 1);
	h->payload_size = bw_get_u32le(p + 3);
	return BW_RESP_HDR_LEN;
}

void
bw_resp_hdr_encode(const struct bw_resp_hdr *h, uint8_t out[BW_RESP_HDR_LEN])
{
	out[0] = h->version;
	bw_put_u16le(out + 1, h->code);
	bw_put_u32le(out + 3, h->payload_size);
}

int
bw_name_decode(const uint8_t *field, size_t len, char out[BW_NAME_CAP])
{
	size_t i;

	out[0] = '\0';
	if (len != BW_NAME_FIELD)
		return BW_EPROTO;
	for (i = 0; i < len && field[i] != 0; i++) {
		if (field[i] < 0x20 || field[i] == 0x7f)
			return BW_EPROTO;
	}
	if (i == len || i == 0)
		return BW_EPROTO;
	memcpy(out, field, i);
	out[i] = '\0';
	return 0;
}

int
bw_name_encode(const char *name, uint8_t field[BW_NAME_FIELD])
{
	size_t n = strlen(name), i;

	if (n >= BW_NAME_FIELD)
		return BW_ETOOBIG;
	if (n == 0)
		return BW_EPROTO;
	for (i = 0; i < n; i++) {
		if ((uint8_t)name[i] < 0x20 || name[i] == 0x7f)
			return BW_EPROTO;
	}
	memset(field, 0, BW_NAME_FIELD);
	memcpy(field, name, n);
	return 0;
}

int
bw_frame_padding(const uint8_t *p, size_t n, uint64_t req_len, int eof)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		if (p[i] != 0)
			return 0;
	}
	if (n >= BW_REQ_HDR_LEN || (req_len + n) % BW_PAD_UNIT == 0 || eof)
		return 1;
	return -1;
}

size_t
bw_frame_pad_len(uint64_t len)
{
	return (size_t)((BW_PAD_UNIT - len % BW_PAD_UNIT) % BW_PAD_UNIT);
}
