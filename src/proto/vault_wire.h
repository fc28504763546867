/* Wire codecs of the file vault (the framing is proto/wire.h): pure
 * functions from bytes to structs and back, no I/O, no allocation.
 * Decoders take pointer + length and never read past it.
 */
#ifndef BULWARK_PROTO_VAULT_WIRE_H
#define BULWARK_PROTO_VAULT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/ids.h"
#include "proto/wire.h"

#define BW_VAULT_VERSION   3
#define BW_FILE_PREFIX_LEN (4 + BW_NAME_FIELD) /* 1028 before ciphertext */
/* Largest 1028 ciphertext: payload_size = 259 + content_size must fit a u32
 * and content_size is a multiple of 16. */
#define BW_MAX_CONTENT_SIZE 0xFFFFFEF0u

enum bw_vault_req {
	BW_VAULT_REQ_REGISTER = 1025,
	BW_VAULT_REQ_PUBKEY = 1026,
	BW_VAULT_REQ_RECONNECT = 1027,
	BW_VAULT_REQ_SEND_FILE = 1028,
	BW_VAULT_REQ_CRC_OK = 1029,
	BW_VAULT_REQ_CRC_RETRY = 1030,
	BW_VAULT_REQ_CRC_FAIL = 1031,
};

enum bw_vault_resp {
	BW_VAULT_RESP_REGISTERED = 2100,
	BW_VAULT_RESP_REG_FAILED = 2101,
	BW_VAULT_RESP_PUBKEY_AES = 2102,
	BW_VAULT_RESP_FILE_OK = 2103,
	BW_VAULT_RESP_ACK = 2104,
	BW_VAULT_RESP_RECONNECT_AES = 2105,
	BW_VAULT_RESP_RECONNECT_DENIED = 2106,
	BW_VAULT_RESP_ERROR = 2107,
};

/* Bulwark's extensions (docs/vault-protocol.md, "Bulwark extensions"),
 * served on the TLS listeners to the proven owner only: requests
 * 1100-1103, 1105 and 1106, replies 2110-2114, codes no seed uses; and
 * 1104, the server's limits, on every listener to anyone (2115). */
enum bw_vault_ext {
	BW_VAULT_REQ_LIST = 1100,	   /* payload empty */
	BW_VAULT_REQ_GET = 1101,	   /* name field, u64 offset */
	BW_VAULT_REQ_DELETE = 1102,	   /* name field */
	BW_VAULT_REQ_TLS_ONLY = 1103,	   /* payload empty */
	BW_VAULT_REQ_LIMITS = 1104,	   /* payload empty */
	BW_VAULT_REQ_LIST_AFTER = 1105,	   /* name field, u64 mark */
	BW_VAULT_REQ_SEND_CLEAR = 1106,	   /* a 1028 whose content is the
					    * file as it is: TLS's cipher is
					    * the only one */
	BW_VAULT_RESP_LIST = 2110,	   /* u32 count, count entries, u8 more,
					    * u64 mark */
	BW_VAULT_RESP_FILE = 2111,	   /* u64 size, u64 offset, u8 verified,
					    * the bytes from offset, SHA-256 */
	BW_VAULT_RESP_DELETED = 2112,	   /* name field */
	BW_VAULT_RESP_NO_SUCH_FILE = 2113, /* name field */
	BW_VAULT_RESP_TLS_ONLY = 2114,	   /* payload empty */
	BW_VAULT_RESP_LIMITS = 2115,	   /* u64 most content a 1028 may
					    * carry, u32 features; later
					    * fields may follow */
};
#define BW_VAULT_EXT_LO		     1100
#define BW_VAULT_EXT_HI		     1103 /* the owner's; 1104 names nobody */
#define BW_VAULT_LIMITS_LEN	     8	  /* what a client needs of a 2115 */
#define BW_VAULT_LIMITS_FEATURES_LEN 12
#define BW_VAULT_FEATURE_CLEAR	     1u /* 1106 on the TLS listeners */
#define BW_VAULT_GET_LEN	     (BW_NAME_FIELD + 8)
/* a listing comes a page at a time: 1100 the first, 1105 (the last entry's
 * name field and the page's mark) the next, while a page says more */
#define BW_VAULT_LIST_PAGE	2048u
#define BW_VAULT_LIST_AFTER_LEN (BW_NAME_FIELD + 8)
#define BW_VAULT_LIST_TRAILER	(1 + 8)
/* a listing's entry: name field, u64 size, u8 verified, i64 stored (Unix
 * s, 0 if not known), u8 a replacement waits for its verdict */
#define BW_VAULT_LIST_ENTRY   (BW_NAME_FIELD + 8 + 1 + 8 + 1)
#define BW_VAULT_FILE_HEAD    (8 + 8 + 1)
#define BW_VAULT_FILE_TRAILER 32

/* One entry of a 2110 listing. */
struct bw_vault_entry {
	char name[BW_NAME_CAP];
	uint64_t size;
	int verified, pending;
	int64_t stored; /* Unix s; 0: not known */
};
/* A 2110 payload: *n entries (the count agrees with the length and is at
 * most a page), *more (1: ask 1105 for the next page) and *mark (for
 * it), or BW_EPROTO. */
int bw_vault_list_decode(const uint8_t *p, size_t len, uint32_t *n, int *more,
			 uint64_t *mark) BW_WUR;
/* Entry i of a payload bw_vault_list_decode accepted; BW_EPROTO if its
 * name field is malformed. */
int bw_vault_entry_decode(const uint8_t *p, uint32_t i,
			  struct bw_vault_entry *e) BW_WUR;
/* One entry: BW_EPROTO if the name does not fit a field. */
int bw_vault_entry_encode(const struct bw_vault_entry *e,
			  uint8_t out[BW_VAULT_LIST_ENTRY]) BW_WUR;
/* A 2111's head: size, offset (<= size), verified. BW_EPROTO if it is
 * short or the offset is past the size. */
int bw_vault_file_head_decode(const uint8_t *p, size_t len, uint64_t *size,
			      uint64_t *offset, int *verified) BW_WUR;

/* The payload size a vault request code requires: 255, 415, or 0 for 1028
 * (variable: at least BW_FILE_PREFIX_LEN); -1 for a code that is not a vault
 * request. */
long bw_vault_req_payload_size(uint16_t code);

/* The stored name of an uploaded file: the part after the last '/' or '\\';
 * BW_EPROTO if that is empty, "." or "..". */
int bw_file_name_sanitize(const char *name, char out[BW_NAME_CAP]) BW_WUR;

/* 1025, 1027, 1029, 1030, 1031 payload: one name field (exactly 255 bytes). */
int bw_vault_name_payload_decode(const uint8_t *p, size_t len,
				 char name[BW_NAME_CAP]) BW_WUR;
/* 1026 payload (exactly 415 bytes): name, then the 160-byte key field, whose
 * address is returned in *key (it points into p). */
int bw_vault_pubkey_payload_decode(const uint8_t *p, size_t len,
				   char name[BW_NAME_CAP],
				   const uint8_t **key) BW_WUR;
/* The first 259 bytes of a 1028 payload. */
int bw_vault_file_prefix_decode(const uint8_t *p, size_t len,
				uint32_t *content_size,
				char name[BW_NAME_CAP]) BW_WUR;

/* Response payloads, as the client reads them. */
/* 2100, 2104, 2106: exactly a client id. */
int bw_vault_id_payload_decode(const uint8_t *p, size_t len,
			       uint8_t id[BW_ID_LEN]) BW_WUR;
/* 2102, 2105: client id + 128-byte RSA ciphertext (pointer into p). */
int bw_vault_aes_payload_decode(const uint8_t *p, size_t len,
				uint8_t id[BW_ID_LEN],
				const uint8_t **wrapped) BW_WUR;
/* 2103: client id, content size, file name, cksum. */
struct bw_file_ack {
	uint8_t client_id[BW_ID_LEN];
	uint32_t content_size;
	char file_name[BW_NAME_CAP];
	uint32_t cksum;
};
int bw_vault_file_ack_decode(const uint8_t *p, size_t len,
			     struct bw_file_ack *a) BW_WUR;
/* Encodes a 2103 payload into out[279]. */
#define BW_FILE_ACK_LEN (BW_ID_LEN + 4 + BW_NAME_FIELD + 4)
void bw_vault_file_ack_encode(const struct bw_file_ack *a,
			      const uint8_t name_field[BW_NAME_FIELD],
			      uint8_t out[BW_FILE_ACK_LEN]);

#endif
