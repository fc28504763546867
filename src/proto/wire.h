/* The framing shared by the vault and the messenger on one port: the
 * 23-byte request header, the 7-byte response header, 255-byte name fields
 * and the 1024-byte pad unit of course-sample clients. Pure functions, no
 * I/O, no allocation; decoders take pointer + length and never read past it.
 */
#ifndef BULWARK_PROTO_WIRE_H
#define BULWARK_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"
#include "bulwark/ids.h"

#define BW_REQ_HDR_LEN	23
#define BW_RESP_HDR_LEN 7
#define BW_NAME_FIELD	255
/* Course-sample clients pad every message to a multiple of this. */
#define BW_PAD_UNIT 1024

struct bw_req_hdr {
	uint8_t client_id[BW_ID_LEN];
	uint8_t version;
	uint16_t code;
	uint32_t payload_size;
};

struct bw_resp_hdr {
	uint8_t version;
	uint16_t code;
	uint32_t payload_size;
};

/* Returns BW_REQ_HDR_LEN (bytes consumed) or BW_EMORE. */
int bw_req_hdr_decode(const uint8_t *p, size_t len,
		      struct bw_req_hdr *h) BW_WUR;
void bw_req_hdr_encode(const struct bw_req_hdr *h, uint8_t out[BW_REQ_HDR_LEN]);
/* Returns BW_RESP_HDR_LEN or BW_EMORE. */
int bw_resp_hdr_decode(const uint8_t *p, size_t len,
		       struct bw_resp_hdr *h) BW_WUR;
void bw_resp_hdr_encode(const struct bw_resp_hdr *h,
			uint8_t out[BW_RESP_HDR_LEN]);

/* A 255-byte name field: printable text up to the first NUL (bytes after it
 * are ignored). BW_EPROTO if there is no NUL, the name is empty, or it holds a
 * control character (< 0x20 or 0x7f). out receives the NUL-terminated name. */
int bw_name_decode(const uint8_t *field, size_t len,
		   char out[BW_NAME_CAP]) BW_WUR;
/* Writes name into a zero-padded 255-byte field; BW_ETOOBIG if longer than
 * 254 bytes, BW_EPROTO if it would not decode. */
int bw_name_encode(const char *name, uint8_t field[BW_NAME_FIELD]) BW_WUR;

/* Whether the n bytes at p, which follow a request of req_len bytes on the
 * wire, are a course-sample client's padding: 1 yes, 0 no (a byte is not
 * zero), -1 cannot tell yet. Only evidence that cannot start a request
 * counts: at least a header's worth of zeros (code 0 is no request), or
 * zeros that end the request exactly on a pad unit, or zeros followed by the
 * peer's end of stream (eof set). Fewer zeros may be the start of a
 * pipelined request whose client id is zeros. n == 0 is 0. */
int bw_frame_padding(const uint8_t *p, size_t n, uint64_t req_len, int eof);

/* Bytes of zeros that pad a message of len bytes to a multiple of
 * BW_PAD_UNIT (0 when it is one already). */
size_t bw_frame_pad_len(uint64_t len);

#endif
