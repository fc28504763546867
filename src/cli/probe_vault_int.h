/* What the vault's conformance cases share across their two files: the
 * codes, the run's users and session, and the requests they build.
 */
#ifndef BULWARK_CLI_PROBE_VAULT_INT_H
#define BULWARK_CLI_PROBE_VAULT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/crypto.h"
#include "cli/probe_int.h"

#define V 3 /* the client version the spec names */
enum {
	REGISTER = 1025,
	PUBKEY,
	RECONNECT,
	SEND_FILE,
	CRC_OK,
	CRC_RETRY,
	CRC_GIVEUP
};
enum {
	R_REGISTERED = 2100,
	R_TAKEN,
	R_KEY,
	R_FILE,
	R_ACK,
	R_RECONNECT,
	R_REFUSED,
	R_ERROR
};
#define FILE_ACK_LEN 279u
#define NAME_KEY_LEN (255u + 160u)

struct vrun {
	struct probe *p;
	struct puser a, b; /* a carries the flow; b is a second user */
	struct pconn c;	   /* a's session */
	uint8_t aes[BW_AES_KEY_LEN];
	int keyed, filed;
};

#define S_REG	  "1025 register"
#define S_KEY	  "1026 public key"
#define S_FILE	  "1028 send file"
#define S_CRC	  "1029-1031 CRC"
#define S_REC	  "1027 reconnect"
#define S_FRAME	  "Framing"
#define S_HOSTILE "Hostile input"
#define S_RESTART "Restart"

/* 1025 for u on c: 0 with u->id set, else -1 (the reply in *r). */
int vp_reg(struct pconn *c, struct puser *u, struct presp *r);
/* The AES key in a 2102/2105 payload, unwrapped with u's key: 0 or -1. */
int vp_unwrap(const struct presp *r, const struct puser *u, uint8_t aes[16]);
/* name[255] + public key[160], as 1026 carries them. */
void vp_name_key(uint8_t out[NAME_KEY_LEN], const char *name,
		 const uint8_t pub[160]);
/* A 1028 of plain (n bytes) encrypted with key, named fname; its reply in
 * *r (rc PC_ERROR when it could not be sent). */
void vp_send_file(struct pconn *c, const uint8_t id[16], const uint8_t key[16],
		  const char *fname, const void *plain, size_t n,
		  struct presp *r);

/* v's session connection for the case that has begun, opened again with
 * a 1027 (and its fresh AES key) when the server has closed it or the case
 * before failed: 0, or -1. */
int vp_session(struct vrun *v);
/* Ends a received file's session with a verdict (1029 or 1031) on v's
 * connection, so that no server keeps waiting for it: 0 when 2104 came. */
int vp_verdict(struct vrun *v, uint16_t code, const char *fname);

void vp_register_cases(struct vrun *v);
void vp_key_cases(struct vrun *v);
void vp_file_cases(struct vrun *v);

#endif
