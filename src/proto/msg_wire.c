/* Messenger payload codecs, decoded through the bounded cursor and
 * required to be consumed exactly.
 */
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "proto/msg_wire.h"

int
bw_msg_type_known(unsigned type)
{
	return type >= BW_MSG_KEY_REQUEST && type <= BW_MSG_FILE;
}

int
bw_msg_register_decode(const uint8_t *p, size_t len, char name[BW_NAME_CAP],
		       const uint8_t **key)
{
	char tmp[BW_NAME_CAP];
	struct bw_cur c;
	const uint8_t *f, *k;

	bw_cur_init(&c, p, len);
	f = bw_cur_take(&c, BW_NAME_FIELD);
	k = bw_cur_take(&c, BW_RSA_PUB_LEN);
	if (bw_cur_end(&c) != 0 || bw_name_decode(f, BW_NAME_FIELD, tmp) != 0)
		return BW_EPROTO;
	memcpy(name, tmp, sizeof(tmp));
	*key = k;
	return 0;
}

int
bw_msg_register_encode(const char *name, const uint8_t key[BW_RSA_PUB_LEN],
		       uint8_t out[BW_MSG_REGISTER_LEN])
{
	int rc;

	if ((rc = bw_name_encode(name, out)) != 0)
		return rc;
	memcpy(out + BW_NAME_FIELD, key, BW_RSA_PUB_LEN);
	return 0;
}

int
bw_msg_send_decode(const uint8_t *p, size_t len, struct bw_msg_send *s)
{
	struct bw_msg_send t;
	struct bw_cur c;

	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, t.to, BW_ID_LEN);
	t.type = bw_cur_u8(&c);
	t.content_size = bw_cur_u32le(&c);
	if (bw_cur_end(&c) != 0)
		return BW_EPROTO;
	*s = t;
	return 0;
}

void
bw_msg_send_encode(const struct bw_msg_send *s, uint8_t out[BW_MSG_SEND_PREFIX])
{
	memcpy(out, s->to, BW_ID_LEN);
	out[BW_ID_LEN] = s->type;
	bw_put_u32le(out + BW_ID_LEN + 1, s->content_size);
}

void
bw_msg_list_entry_encode(const uint8_t id[BW_ID_LEN], const char *name,
			 uint8_t out[BW_MSG_LIST_ENTRY_LEN])
{
	size_t n = strnlen(name, BW_NAME_FIELD - 1);

	memcpy(out, id, BW_ID_LEN);
	memset(out + BW_ID_LEN, 0, BW_NAME_FIELD);
	memcpy(out + BW_ID_LEN, name, n);
}

int
bw_msg_list_entry_decode(const uint8_t *p, size_t len, uint8_t id[BW_ID_LEN],
			 char name[BW_NAME_CAP])
{
	char tmp[BW_NAME_CAP];
	uint8_t i[BW_ID_LEN];
	struct bw_cur c;
	const uint8_t *f;

	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, i, BW_ID_LEN);
	f = bw_cur_take(&c, BW_NAME_FIELD);
	if (bw_cur_end(&c) != 0 || bw_name_decode(f, BW_NAME_FIELD, tmp) != 0)
		return BW_EPROTO;
	memcpy(id, i, BW_ID_LEN);
	memcpy(name, tmp, sizeof(tmp));
	return 0;
}

int
bw_msg_pubkey_decode(const uint8_t *p, size_t len, uint8_t id[BW_ID_LEN],
		     const uint8_t **key)
{
	uint8_t i[BW_ID_LEN];
	struct bw_cur c;
	const uint8_t *k;

	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, i, BW_ID_LEN);
	k = bw_cur_take(&c, BW_RSA_PUB_LEN);
	if (bw_cur_end(&c) != 0)
		return BW_EPROTO;
	memcpy(id, i, BW_ID_LEN);
	*key = k;
	return 0;
}

void
bw_msg_stored_encode(const uint8_t to[BW_ID_LEN], uint32_t msg_id,
		     uint8_t out[BW_MSG_STORED_LEN])
{
	memcpy(out, to, BW_ID_LEN);
	bw_put_u32le(out + BW_ID_LEN, msg_id);
}

int
bw_msg_stored_decode(const uint8_t *p, size_t len, uint8_t to[BW_ID_LEN],
		     uint32_t *msg_id)
{
	uint8_t t[BW_ID_LEN];
	struct bw_cur c;
	uint32_t id;

	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, t, BW_ID_LEN);
	id = bw_cur_u32le(&c);
	if (bw_cur_end(&c) != 0)
		return BW_EPROTO;
	memcpy(to, t, BW_ID_LEN);
	*msg_id = id;
	return 0;
}

void
bw_msg_record_encode(const struct bw_msg_record *r,
		     uint8_t out[BW_MSG_RECORD_HDR])
{
	memcpy(out, r->from, BW_ID_LEN);
	bw_put_u32le(out + BW_ID_LEN, r->id);
	out[BW_ID_LEN + 4] = r->type;
	bw_put_u32le(out + BW_ID_LEN + 5, r->size);
}

int
bw_msg_record_decode(const uint8_t *p, size_t len, uint64_t left,
		     struct bw_msg_record *r)
{
	struct bw_msg_record t;
	struct bw_cur c;

	if (left < BW_MSG_RECORD_HDR)
		return BW_EPROTO; /* a partial record ends the payload */
	if (len < BW_MSG_RECORD_HDR)
		return BW_EMORE;
	bw_cur_init(&c, p, BW_MSG_RECORD_HDR);
	bw_cur_copy(&c, t.from, BW_ID_LEN);
	t.id = bw_cur_u32le(&c);
	t.type = bw_cur_u8(&c);
	t.size = bw_cur_u32le(&c);
	if (bw_cur_end(&c) != 0)
		return BW_EPROTO;
	if ((uint64_t)t.size > left - BW_MSG_RECORD_HDR)
		return BW_EPROTO;
	*r = t;
	return BW_MSG_RECORD_HDR;
}
