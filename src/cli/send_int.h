/* Between the files of `bulwark send`: send.c (exchanges, identity,
 * registration and reconnection), send_file.c (the streaming upload and its
 * verdicts) and send_main.c (options, transfer.info, the session).
 */
#ifndef BULWARK_CLI_SEND_INT_H
#define BULWARK_CLI_SEND_INT_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/crypto.h"
#include "cli/common.h"
#include "proto/vault_wire.h"

#define CHUNK	    (1024u * 1024u)
#define MAX_RETRIES 3 /* resends of one request after an error reply */
#define MAX_SENDS   4 /* 1028s of one file: the first and 3 resends */
#define RESP_CAP    1024u
/* Largest file whose ciphertext fits the protocol's u32 sizes. */
#define MAX_PLAIN (BW_MAX_CONTENT_SIZE - 1u)
/* Pause before the first resend; it doubles for each further one (0.5 s,
 * 1 s, 2 s: at most 3.5 s in all for one request). */
#define BACKOFF_MS 500u
/* After a failed write, how long to look for a reply already on its way
 * (a server that refuses an upload answers 2107 and closes mid-body). */
#define WAITING_REPLY_MS 1000u
/* Bytes per second a file body must average, on top of --timeout. */
#define BODY_MIN_RATE 1024u

struct send_ctx {
	struct bw_session sess;
	struct bw_identity me;
	uint8_t aes_key[BW_AES_KEY_LEN];
	int need_rekey; /* a 1028 failed and its connection is gone: 1027 */
	int final;	/* 0, or the exit status of a failure not to retry */
	int replied;	/* the last failure came with a reply from the server */
	int unanswered; /* an attempt of the last exchange got no reply */
	int early;	/* 1028s refused before their content was read */
	int limit_asked;  /* the server's size limit was asked (1104) */
	int seed_upload;  /* --seed-upload: a 1028 over TLS too */
	int clear;	  /* this upload is a 1106: the file as it is */
	char why[600];	  /* what the last failure was, for the user */
	const char *path; /* file to send */
	char file_field[BW_NAME_CAP]; /* name sent in 1028 */
	uint64_t plain_len;
	uint32_t cipher_len;
	uint32_t local_crc;
	int quiet;
};

/* One request: how it is sent, what the user calls it, which replies end
 * it. */
struct req {
	const char *what; /* "registration", "upload", ... */
	int (*send)(struct send_ctx *x, const struct req *rq);
	uint16_t code;
	const uint8_t *id; /* header client id; NULL sends zeros */
	const uint8_t *payload;
	uint32_t len;
	const uint16_t *ok;
	size_t ok_n;
	int fd; /* the file, for 1028 */
};

/* What the upload's request announces: the ciphertext of a 1028, or the
 * file itself in a 1106. */
static inline uint32_t
send_content_len(const struct send_ctx *x)
{
	return x->clear ? (uint32_t)x->plain_len : x->cipher_len;
}

static inline uint16_t
send_upload_code(const struct send_ctx *x)
{
	return x->clear ? BW_VAULT_REQ_SEND_CLEAR : BW_VAULT_REQ_SEND_FILE;
}

/* send.c */
/* Over TLS, a 1106 when the server's 2115 says it takes one: x->clear. */
void send_choose_upload(struct send_ctx *x);
/* Sends rq as it is: header and payload. */
int send_plain(struct send_ctx *x, const struct req *rq);
const char *send_net_text(int rc);
int send_exchange(struct send_ctx *x, const struct req *rq, uint16_t *code,
		  uint8_t *out, size_t *len);
/* 1025 then 1026: a new identity, saved once the key has arrived. */
int send_register(struct send_ctx *x, const char *name);
/* 1027 with the identity of me.info; *denied on 2106. */
int send_reconnect(struct send_ctx *x, int *denied);

/* send_file.c */
/* A file that shrinks while mapped reports an error instead of killing
 * the process with SIGBUS. */
void send_guard_sigbus(void);

/* The file's bytes for the encryption (send_src.c): a reader thread maps
 * the file a window at a time, ahead of the encryption, which CRCs what
 * it encrypts. */
struct send_src;
int send_src_start(struct send_src **out, int fd, uint64_t size) BW_WUR;
/* Encrypts the file's bytes [off, off + n) into out: whole blocks through
 * aes, the last n % 16 bytes copied in clear for the caller to pad; without
 * aes (a 1106) all copied as they are. Chunks come in order, of CHUNK bytes
 * but the last. BW_ESIZE if the file shrank. */
int send_src_encrypt(struct send_src *s, uint64_t off, size_t n, uint8_t *out,
		     struct bw_aes *aes) BW_WUR;
/* After the last chunk: the file's cksum, or the reader's error. The
 * cksum covers the bytes encrypted: the caller has encrypted them all. */
int send_src_finish(struct send_src *s, uint32_t *crc) BW_WUR;
void send_src_free(struct send_src *s);
/* Uploads fd (1028) and settles the CRC (1029, or 1030/1031 and resends);
 * returns an exit status. */
int send_upload(struct send_ctx *x, int fd);

#endif
