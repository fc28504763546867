/* Wire codecs of the messenger (docs/messenger-protocol.md, requests 600-604):
 * pure functions from bytes to structs and back, no I/O, no allocation. The
 * framing is proto/wire.h, shared with the vault. Decoders take pointer +
 * length, never read past it, and set their outputs only on success.
 */
#ifndef BULWARK_PROTO_MSG_WIRE_H
#define BULWARK_PROTO_MSG_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/ids.h"
#include "proto/wire.h"

#define BW_MSG_VERSION 2

enum bw_msg_req {
	BW_MSG_REQ_REGISTER = 600,
	BW_MSG_REQ_LIST = 601,
	BW_MSG_REQ_PUBKEY = 602,
	BW_MSG_REQ_SEND = 603,
	BW_MSG_REQ_PULL = 604,
};

enum bw_msg_resp {
	BW_MSG_RESP_REGISTERED = 2100,
	BW_MSG_RESP_LIST = 2101,
	BW_MSG_RESP_PUBKEY = 2102,
	BW_MSG_RESP_STORED = 2103,
	BW_MSG_RESP_WAITING = 2104,
	BW_MSG_RESP_ERROR = 9000,
};

enum bw_msg_type {
	BW_MSG_KEY_REQUEST = 1, /* content empty */
	BW_MSG_KEY = 2,		/* RSA-OAEP(AES key), 128 bytes */
	BW_MSG_TEXT = 3,	/* AES-128-CBC, zero IV, PKCS#7 */
	BW_MSG_FILE = 4,	/* the same, a file's bytes */
};

#define BW_MSG_REGISTER_LEN   (BW_NAME_FIELD + BW_RSA_PUB_LEN) /* 415 */
#define BW_MSG_SEND_PREFIX    (BW_ID_LEN + 1 + 4)	       /* 21 */
#define BW_MSG_LIST_ENTRY_LEN (BW_ID_LEN + BW_NAME_FIELD)      /* 271 */
#define BW_MSG_PUBKEY_LEN     (BW_ID_LEN + BW_RSA_PUB_LEN)     /* 176 */
#define BW_MSG_STORED_LEN     (BW_ID_LEN + 4)		       /* 20 */
#define BW_MSG_RECORD_HDR     (BW_ID_LEN + 4 + 1 + 4)	       /* 25 */
/* Largest content: 603's payload_size = 21 + content_size fits a u32. */
#define BW_MSG_CONTENT_MAX (UINT32_MAX - BW_MSG_SEND_PREFIX)

/* 1 for the four types of the spec, else 0. */
int bw_msg_type_known(unsigned type);

/* 600: name field then the 160-byte public key field (*key points into
 * p). Exactly BW_MSG_REGISTER_LEN bytes. */
int bw_msg_register_decode(const uint8_t *p, size_t len, char name[BW_NAME_CAP],
			   const uint8_t **key) BW_WUR;
int bw_msg_register_encode(const char *name, const uint8_t key[BW_RSA_PUB_LEN],
			   uint8_t out[BW_MSG_REGISTER_LEN]) BW_WUR;

/* 603's fixed part: recipient, type, content size. */
struct bw_msg_send {
	uint8_t to[BW_ID_LEN];
	uint8_t type;
	uint32_t content_size;
};
/* Exactly BW_MSG_SEND_PREFIX bytes; the type is not checked here. */
int bw_msg_send_decode(const uint8_t *p, size_t len,
		       struct bw_msg_send *s) BW_WUR;
void bw_msg_send_encode(const struct bw_msg_send *s,
			uint8_t out[BW_MSG_SEND_PREFIX]);

/* One 2101 entry: id and name. */
void bw_msg_list_entry_encode(const uint8_t id[BW_ID_LEN], const char *name,
			      uint8_t out[BW_MSG_LIST_ENTRY_LEN]);
int bw_msg_list_entry_decode(const uint8_t *p, size_t len,
			     uint8_t id[BW_ID_LEN],
			     char name[BW_NAME_CAP]) BW_WUR;
/* 2102: id and the 160-byte key field (*key points into p). */
int bw_msg_pubkey_decode(const uint8_t *p, size_t len, uint8_t id[BW_ID_LEN],
			 const uint8_t **key) BW_WUR;
/* 2103: recipient and message id. */
void bw_msg_stored_encode(const uint8_t to[BW_ID_LEN], uint32_t msg_id,
			  uint8_t out[BW_MSG_STORED_LEN]);
int bw_msg_stored_decode(const uint8_t *p, size_t len, uint8_t to[BW_ID_LEN],
			 uint32_t *msg_id) BW_WUR;

/* The header of one 2104 record; its content (size bytes) follows. */
struct bw_msg_record {
	uint8_t from[BW_ID_LEN];
	uint32_t id;
	uint8_t type;
	uint32_t size;
};
void bw_msg_record_encode(const struct bw_msg_record *r,
			  uint8_t out[BW_MSG_RECORD_HDR]);
/* Reads a record header from the start of a 2104 payload of which left
 * bytes remain (this header included): BW_MSG_RECORD_HDR consumed, BW_EMORE
 * (feed more), or BW_EPROTO when the header or its content would overrun
 * the payload. */
int bw_msg_record_decode(const uint8_t *p, size_t len, uint64_t left,
			 struct bw_msg_record *r) BW_WUR;

#endif
