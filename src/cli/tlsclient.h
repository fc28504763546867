/* A tls:// server address: the handshake, the server's key judged (signed
 * for its name by a CA, else pinned on first use in known_servers), and
 * reads and writes in the manner of recv() and send().
 */
#ifndef BULWARK_CLI_TLSCLIENT_H
#define BULWARK_CLI_TLSCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bulwark/crypto.h"
#include "bulwark/tls.h"

#define BW_TLS_SCHEME "tls://"

struct bw_ctls;

/* --ca-file: server certificates must be signed by this CA for their name
 * (no pinning then); NULL: the system's store, else pinning. */
extern const char *bw_cli_ca_file;

/* 1 if text starts with tls:// (*rest: what follows), else 0 (*rest:
 * text). */
int bw_tls_addr(const char *text, const char **rest);
/* The known_servers file: $BULWARK_KNOWN_SERVERS, else
 * $XDG_CONFIG_HOME/bulwark/known_servers, else
 * ~/.config/bulwark/known_servers. */
int bw_known_servers_path(char *out, size_t cap);
/* Pins fp for name (HOST:PORT), replacing its line; the file and its
 * directory made (0600, 0700) if missing. */
int bw_known_servers_pin(const char *path, const char *name, const char *fp);
/* known_servers for name ("HOST:PORT"): the file's path, and the key
 * pinned there (line 0 and old "" for none). 0 (a missing file pins
 * nothing), BW_ECONFIG (no place for the file) or -errno (unreadable). */
struct bw_known {
	char path[4096];
	char old[BW_TLS_FP_CAP];
	unsigned line;
};
int bw_known_lookup(const char *name, struct bw_known *k);

/* The directories above path made (0700) where missing. */
int bw_cli_mkdirs_for(const char *path);

/* The sessions kept for resumption (tlsresume.c): the file
 * ($BULWARK_TLS_SESSIONS, empty for none: BW_ENOTFOUND; else
 * $XDG_CACHE_HOME/bulwark/tls-sessions, else ~/.cache/...), who an
 * identity is there (hex SHA-256 of its public key; "-" for none), the
 * newest session for name (HOST:PORT) and who (malloc'd DER), a session
 * kept, and every session of name forgotten (a key trusted anew). */
#define BW_TLS_WHO_CAP (2 * 32 + 1)
int bw_tls_sessions_path(char *out, size_t cap);
int bw_tls_session_who(const struct bw_rsa *key, char who[BW_TLS_WHO_CAP]);
int bw_tls_session_load(const char *name, const char *who, uint8_t **der,
			size_t *len);
int bw_tls_session_save(const char *name, const char *who, const uint8_t *der,
			size_t len, int64_t ends);
/* who NULL: every identity's. */
int bw_tls_session_forget(const char *name, const char *who);

/* TLS on connected fd to host:port: the handshake within timeout_ms a
 * step (key, if not NULL: the identity proven to a server that asks),
 * then (pin) the server's key judged. 0, or an exit status (BW_EXIT_KEY: the
 * key is not the one pinned, told on stderr) with why[cap] saying what
 * failed. */
int bw_ctls_open(struct bw_ctls **out, int fd, const char *prog,
		 const char *host, uint16_t port, unsigned timeout_ms, int pin,
		 const struct bw_rsa *key, char *why, size_t cap);
void bw_ctls_free(struct bw_ctls *c);
/* The close_notify, sent before the socket is shut. */
void bw_ctls_end(struct bw_ctls *c);
const char *bw_ctls_fingerprint(struct bw_ctls *c, char fp[BW_TLS_FP_CAP]);
/* As send() with MSG_DONTWAIT and recv() with MSG_DONTWAIT on the socket:
 * bytes, 0 at the end (recv), -1 with errno (EAGAIN: wait for the
 * socket). A send waits until its records are on the socket. */
ssize_t bw_ctls_send(struct bw_ctls *c, const void *p, size_t n);
ssize_t bw_ctls_recv(struct bw_ctls *c, void *p, size_t n);
/* Plaintext or records held: a recv may give bytes without the socket. */
int bw_ctls_pending(const struct bw_ctls *c);

/* bulwark trust-server [tls://]HOST:PORT: an exit status. */
int bw_trust_server_main(int argc, char **argv);

#endif
