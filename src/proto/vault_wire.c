/* Vault payload codecs, decoded through the bounded cursor and required to
 * be consumed exactly, and the sanitiser that turns a received file name
 * into a safe base name.
 */
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "proto/vault_wire.h"

long
bw_vault_req_payload_size(uint16_t code)
{
	switch (code) {
	case BW_VAULT_REQ_REGISTER:
	case BW_VAULT_REQ_RECONNECT:
	case BW_VAULT_REQ_CRC_OK:
	case BW_VAULT_REQ_CRC_RETRY:
	case BW_VAULT_REQ_CRC_FAIL:
		return BW_NAME_FIELD;
	case BW_VAULT_REQ_PUBKEY:
		return BW_NAME_FIELD + BW_RSA_PUB_LEN;
	case BW_VAULT_REQ_SEND_FILE:
		return 0;
	default:
		return -1;
	}
}

int
bw_vault_name_payload_decode(const uint8_t *p, size_t len,
			     char name[BW_NAME_CAP])
{
	struct bw_cur c;
	const uint8_t *f;
	int rc;

	name[0] = '\0';
	bw_cur_init(&c, p, len);
	f = bw_cur_take(&c, BW_NAME_FIELD);
	if ((rc = bw_cur_end(&c)) != 0)
		return rc == BW_EMORE ? BW_EPROTO : rc;
	return bw_name_decode(f, BW_NAME_FIELD, name);
}

int
bw_vault_pubkey_payload_decode(const uint8_t *p, size_t len,
			       char name[BW_NAME_CAP], const uint8_t **key)
{
	struct bw_cur c;
	const uint8_t *f, *k;
	int rc;

	name[0] = '\0';
	*key = NULL;
	bw_cur_init(&c, p, len);
	f = bw_cur_take(&c, BW_NAME_FIELD);
	k = bw_cur_take(&c, BW_RSA_PUB_LEN);
	if ((rc = bw_cur_end(&c)) != 0)
		return rc == BW_EMORE ? BW_EPROTO : rc;
	if ((rc = bw_name_decode(f, BW_NAME_FIELD, name)) != 0)
		return rc;
	*key = k;
	return 0;
}

int
bw_vault_file_prefix_decode(const uint8_t *p, size_t len,
			    uint32_t *content_size, char name[BW_NAME_CAP])
{
	struct bw_cur c;
	const uint8_t *f;
	int rc;

	name[0] = '\0';
	bw_cur_init(&c, p, len);
	*content_size = bw_cur_u32le(&c);
	f = bw_cur_take(&c, BW_NAME_FIELD);
	if ((rc = bw_cur_end(&c)) != 0)
		return rc == BW_EMORE ? BW_EPROTO : rc;
	return bw_name_decode(f, BW_NAME_FIELD, name);
}

int
bw_vault_id_payload_decode(const uint8_t *p, size_t len, uint8_t id[BW_ID_LEN])
{
	struct bw_cur c;

	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, id, BW_ID_LEN);
	return bw_cur_end(&c) == 0 ? 0 : BW_EPROTO;
}

int
bw_vault_aes_payload_decode(const uint8_t *p, size_t len, uint8_t id[BW_ID_LEN],
			    const uint8_t **wrapped)
{
	struct bw_cur c;

	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, id, BW_ID_LEN);
	*wrapped = bw_cur_take(&c, BW_RSA_CT_LEN);
	return bw_cur_end(&c) == 0 ? 0 : BW_EPROTO;
}

int
bw_vault_file_ack_decode(const uint8_t *p, size_t len, struct bw_file_ack *a)
{
	struct bw_cur c;
	const uint8_t *f;

	memset(a, 0, sizeof(*a));
	bw_cur_init(&c, p, len);
	bw_cur_copy(&c, a->client_id, BW_ID_LEN);
	a->content_size = bw_cur_u32le(&c);
	f = bw_cur_take(&c, BW_NAME_FIELD);
	a->cksum = bw_cur_u32le(&c);
	if (bw_cur_end(&c) != 0)
		return BW_EPROTO;
	return bw_name_decode(f, BW_NAME_FIELD, a->file_name);
}

void
bw_vault_file_ack_encode(const struct bw_file_ack *a,
			 const uint8_t name_field[BW_NAME_FIELD],
			 uint8_t out[BW_FILE_ACK_LEN])
{
	memcpy(out, a->client_id, BW_ID_LEN);
	bw_put_u32le(out + BW_ID_LEN, a->content_size);
	memcpy(out + BW_ID_LEN + 4, name_field, BW_NAME_FIELD);
	bw_put_u32le(out + BW_ID_LEN + 4 + BW_NAME_FIELD, a->cksum);
}

int
bw_file_name_sanitize(const char *name, char out[BW_NAME_CAP])
{
	const char *base = name, *p;
	size_t n;

	for (p = name; *p != '\0'; p++) {
		if (*p == '/' || *p == '\\')
			base = p + 1;
	}
	n = strlen(base);
	if (n == 0 || n >= BW_NAME_CAP || strcmp(base, ".") == 0 ||
	    strcmp(base, "..") == 0)
		return BW_EPROTO;
	for (p = base; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return BW_EPROTO;
	}
	memcpy(out, base, n + 1);
	return 0;
}

/* --- the extensions' listings and file heads -------------------------------
 */

int
bw_vault_list_decode(const uint8_t *p, size_t len, uint32_t *n, int *more,
		     uint64_t *mark)
{
	const uint8_t *t;
	uint32_t count;

	*n = 0;
	*more = 0;
	*mark = 0;
	if (len < 4 + BW_VAULT_LIST_TRAILER)
		return BW_EPROTO;
	count = bw_get_u32le(p);
	if (count > BW_VAULT_LIST_PAGE ||
	    len != 4 + (size_t)count * BW_VAULT_LIST_ENTRY +
			    BW_VAULT_LIST_TRAILER)
		return BW_EPROTO;
	t = p + len - BW_VAULT_LIST_TRAILER;
	if (t[0] > 1 || (t[0] == 1 && count == 0))
		return BW_EPROTO; /* "more" after nothing would never end */
	*n = count;
	*more = t[0];
	*mark = bw_get_u64le(t + 1);
	return 0;
}

int
bw_vault_entry_decode(const uint8_t *p, uint32_t i, struct bw_vault_entry *e)
{
	const uint8_t *q = p + 4 + (size_t)i * BW_VAULT_LIST_ENTRY;

	memset(e, 0, sizeof(*e));
	if (bw_name_decode(q, BW_NAME_FIELD, e->name) != 0)
		return BW_EPROTO;
	q += BW_NAME_FIELD;
	e->size = bw_get_u64le(q);
	e->verified = q[8] != 0;
	e->stored = (int64_t)bw_get_u64le(q + 9);
	e->pending = q[17] != 0;
	return 0;
}

int
bw_vault_entry_encode(const struct bw_vault_entry *e,
		      uint8_t out[BW_VAULT_LIST_ENTRY])
{
	if (bw_name_encode(e->name, out) != 0)
		return BW_EPROTO;
	out += BW_NAME_FIELD;
	bw_put_u64le(out, e->size);
	out[8] = e->verified ? 1 : 0;
	bw_put_u64le(out + 9, (uint64_t)e->stored);
	out[17] = e->pending ? 1 : 0;
	return 0;
}

int
bw_vault_file_head_decode(const uint8_t *p, size_t len, uint64_t *size,
			  uint64_t *offset, int *verified)
{
	if (len < BW_VAULT_FILE_HEAD)
		return BW_EPROTO;
	*size = bw_get_u64le(p);
	*offset = bw_get_u64le(p + 8);
	*verified = p[16] != 0;
	return *offset <= *size ? 0 : BW_EPROTO;
}
