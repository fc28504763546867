/* TLS 1.3 for the authenticated listeners and the client that talks to them,
 * behind one header; tls.c and tls_key.c are the only files that use
 * OpenSSL's TLS. A connection works on memory: the caller feeds it the
 * bytes read from the socket and writes out what it produced, so the
 * daemon's loop keeps its own reads, writes, caps and deadlines, and a
 * PROXY header read before the handshake costs nothing.
 *
 * TLS 1.3 only (no compression, renegotiation or 0-RTT data exist there;
 * early data is refused besides). The server's key is modern (P-256 when
 * Bulwark makes it); the peer's may be RSA-1024, the seeds' identities, so
 * the security level is 0 for the peer and checked by hand for our own.
 */
#ifndef BULWARK_TLS_H
#define BULWARK_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"

/* "SHA256:" + 43 characters of unpadded base64, as OpenSSH prints it */
#define BW_TLS_FP_CAP 64

struct bw_tls_ctx; /* a server's or a client's settings */
struct bw_tls;	   /* one connection */

/* The server's settings from a PEM certificate (chain allowed) and its PEM
 * key. why gets a sentence on failure (BW_ECONFIG or BW_ECRYPTO). */
int bw_tls_server_ctx(struct bw_tls_ctx **out, const char *cert_file,
		      const char *key_file, char *why, size_t cap) BW_WUR;
/* The client's: server certificates checked against ca_file if given
 * (bw_tls_verified tells how it went: the handshake itself never fails on
 * it, so that a client can pin instead), else against nothing until
 * bw_tls_ctx_system_store loads the system's store into it. */
int bw_tls_client_ctx(struct bw_tls_ctx **out, const char *ca_file, char *why,
		      size_t cap) BW_WUR;
/* The system's store for the handshakes to come: parsing its bundle costs
 * 34 ms of a command, which a client whose server is pinned need not pay
 * (bw_tls_verify_system asks the store later, if ever). A system without
 * one leaves every key to be pinned. */
void bw_tls_ctx_system_store(struct bw_tls_ctx *x);
/* A client's identity for the servers that ask (the vault's or the
 * messenger's RSA key, PKCS#8 DER): shown as a certificate made from it,
 * self-signed; the handshake proves the client holds the key. */
int bw_tls_ctx_identity(struct bw_tls_ctx *x, const uint8_t *pkcs8, size_t len,
			char *why, size_t cap) BW_WUR;
void bw_tls_ctx_free(struct bw_tls_ctx *x);
/* The fingerprint of the server key in x. */
const char *bw_tls_ctx_fingerprint(const struct bw_tls_ctx *x);

/* Makes key_file (a P-256 key, mode 0600) and cert_file (a self-signed
 * certificate for it, named cn, valid for 100 years) if key_file does not
 * exist; an existing pair is kept as it is. *made: 1 if they were made. */
int bw_tls_make_key(const char *key_file, const char *cert_file, const char *cn,
		    int *made, char *why, size_t cap) BW_WUR;
/* The fingerprint of the public key in a PEM file (a certificate, a
 * private key or a public key). */
int bw_tls_file_fingerprint(const char *pem_file, char fp[BW_TLS_FP_CAP],
			    char *why, size_t cap) BW_WUR;

enum bw_tls_rc {
	BW_TLS_OK = 0,
	BW_TLS_WANT = 1,  /* needs more input from the peer */
	BW_TLS_EOF = 2,	  /* the peer's close_notify */
	BW_TLS_ERROR = 3, /* a protocol error: bw_tls_why says which */
};

/* A connection on x; server: 1 for the accepting side. host (a client's)
 * is the name sent and checked, or NULL. NULL for want of memory. */
struct bw_tls *bw_tls_new(struct bw_tls_ctx *x, int server, const char *host);
void bw_tls_free(struct bw_tls *t);
/* Bytes read from the socket. BW_ENOMEM, else 0. */
int bw_tls_feed(struct bw_tls *t, const void *p, size_t n) BW_WUR;
/* Or read in place: room for n bytes at the end of the input (NULL for want
 * of memory), then how many of them the socket gave. */
uint8_t *bw_tls_in_room(struct bw_tls *t, size_t n);
void bw_tls_in_fed(struct bw_tls *t, size_t n);
/* For a connection gone quiet: frees the input's and the output's buffers
 * where they are empty, and shrinks a large one that holds only part of a
 * record (the buffers stay while data flows, since freeing and making a
 * large one again costs page faults). */
void bw_tls_trim(struct bw_tls *t);
/* The output's alone: for a connection that has just sent all it had. */
void bw_tls_trim_out(struct bw_tls *t);
/* The bytes the input's buffer takes now (held or not), and those it
 * holds. */
size_t bw_tls_in_size(const struct bw_tls *t);
size_t bw_tls_in_len(const struct bw_tls *t);
/* Runs the handshake as far as the input allows. */
enum bw_tls_rc bw_tls_handshake(struct bw_tls *t);
int bw_tls_done(const struct bw_tls *t);
/* Plaintext, up to cap bytes, into p (*got): OK with *got > 0, WANT, EOF
 * or ERROR. Runs the handshake first if it is not done. */
enum bw_tls_rc bw_tls_read(struct bw_tls *t, void *p, size_t cap, size_t *got);
/* Encrypts up to n bytes of p (*took); OK or ERROR. The records wait in
 * the connection's output. */
enum bw_tls_rc bw_tls_write(struct bw_tls *t, const void *p, size_t n,
			    size_t *took);
/* Queues the close_notify alert in the output. */
void bw_tls_close_notify(struct bw_tls *t);
/* The output for the socket: its start and length; then what was sent. */
const uint8_t *bw_tls_out(struct bw_tls *t, size_t *len);
void bw_tls_out_consume(struct bw_tls *t, size_t n);
/* Input fed and not yet turned into plaintext by a read, or plaintext
 * decrypted and not yet read: a read can make progress without the
 * socket. */
int bw_tls_buffered(const struct bw_tls *t);
/* What went wrong last (a protocol error, an alert), or "". */
const char *bw_tls_why(const struct bw_tls *t);
/* After the handshake: the peer's key's fingerprint (BW_ENOTFOUND if it
 * showed none); its chain checked against the client's store and its
 * name (1), or not (0). */
int bw_tls_peer_fingerprint(const struct bw_tls *t, char fp[BW_TLS_FP_CAP]);
int bw_tls_verified(const struct bw_tls *t);
/* After a handshake made without the system's store: the peer's chain (its
 * certificate alone on a resumed session) checked against that store and
 * the name now (1), or not (0). */
int bw_tls_verify_system(const struct bw_tls *t);
/* After the handshake: the DER SubjectPublicKeyInfo of the key the peer
 * proved it holds (its certificate's, whose chain is not judged), at most
 * cap bytes, into out (*len; 0 if it showed none). 0, BW_ETOOBIG or
 * BW_ECRYPTO. */
int bw_tls_peer_key(const struct bw_tls *t, uint8_t *out, size_t cap,
		    size_t *len) BW_WUR;
/* Resumption (TLS 1.3 tickets; tls_resume.c). A server gives one ticket
 * after a full handshake and none after a resumption. Before a client's
 * handshake: resume the session in der (from bw_tls_ticket); 0, or
 * BW_EPROTO for one that cannot be used (a full handshake then). */
int bw_tls_resume(struct bw_tls *t, const uint8_t *der, size_t len) BW_WUR;
/* After the handshake: 1 if it resumed a session. */
int bw_tls_resumed(const struct bw_tls *t);
/* The newest ticket the server gave a client's t, as DER (malloc'd, into
 * *der) and when it ends (Unix seconds): 0, BW_ENOTFOUND (none given),
 * BW_ENOMEM or BW_ECRYPTO. It proves the client's identity to that server
 * as the key did: keep it as the key is kept. */
int bw_tls_ticket(const struct bw_tls *t, uint8_t **der, size_t *len,
		  int64_t *ends) BW_WUR;
/* The negotiated protocol and cipher, for a log line. */
const char *bw_tls_version(const struct bw_tls *t);
const char *bw_tls_cipher(const struct bw_tls *t);

#endif
