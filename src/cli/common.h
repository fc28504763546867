/* What every client subcommand shares: identity files (me.info, priv.key),
 * a connection to the server with a deadline per exchange, and one
 * request/response exchange of the 23/7-byte framed protocols.
 */
#ifndef BULWARK_CLI_COMMON_H
#define BULWARK_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bulwark/crypto.h"
#include "bulwark/ids.h"

#define BW_CLI_NAME_MAX 100 /* transfer.info's limit on a name */

/* Exit codes of the client programs. */
enum {
	BW_EXIT_OK = 0,
	BW_EXIT_FATAL = 1,   /* the server or the network failed */
	BW_EXIT_USAGE = 2,   /* bad arguments or local files */
	BW_EXIT_TAKEN = 3,   /* the name is registered already */
	BW_EXIT_CRC = 4,     /* CRC still wrong after the last resend */
	BW_EXIT_REFUSED = 5, /* the file refused before its content was read */
	BW_EXIT_NO_FILE = 6, /* ls/get/rm: no such file on the server */
	BW_EXIT_KEY = 7,     /* a tls:// server's key is not the one pinned */
};

struct bw_identity {
	char name[BW_NAME_CAP];
	uint8_t id[BW_ID_LEN];
	struct bw_rsa *key; /* private key */
};

/* Reads me.info (line 1 name, line 2 id in hex of either case, line 3 to
 * the end the base64 PKCS#8 private key, white space ignored); if the key
 * lines are missing, the key comes from priv.key. 0, -ENOENT when there is
 * no me.info, or BW_EPROTO with *why set to what is wrong. */
int bw_identity_load(struct bw_identity *me, const char *path,
		     const char *priv_path, const char **why) BW_WUR;
void bw_identity_fini(struct bw_identity *me);

/* A new identity is written before the server is told about it, so that a
 * disk that cannot take it fails the registration before a name is taken
 * for a key nobody keeps: bw_identity_stage writes me.info (with a
 * placeholder id) and priv.key as fsync'd temporary files, the server
 * answers, bw_identity_commit writes the id into the space already there
 * and renames both into place (me.info first). */
struct bw_identity_stage {
	char path[4096], tmp[4096 + 32];
	char priv_path[4096], priv_tmp[4096 + 32];
	int fd, priv_fd;
	long id_off; /* where the id's 32 hex digits are in tmp */
	/* there was no me.info when staged: it is put in place only if none
	 * appeared meanwhile (another client registering in the directory
	 * keeps its own) */
	int first;
};
int bw_identity_stage(const struct bw_identity *me, const char *path,
		      const char *priv_path,
		      struct bw_identity_stage *st) BW_WUR;
/* 0, or the failure (then the temporary files are still there, and the
 * caller tells the user where and what the id is); -EEXIST when a first
 * registration finds a me.info that appeared meanwhile. */
int bw_identity_commit(struct bw_identity_stage *st,
		       const uint8_t id[BW_ID_LEN]) BW_WUR;
/* Drops what bw_identity_stage wrote (the server said no). */
void bw_identity_abandon(struct bw_identity_stage *st);
/* Removes the temporary files of an identity staged and not yet committed,
 * kept or abandoned: for a process about to end at once. */
void bw_identity_drop_staged(void);
/* Closes the staged files and leaves them where they are (their names
 * told to the user): the outcome is not known, or they could not be put
 * in place. */
void bw_identity_keep(struct bw_identity_stage *st);

/* One connection to the server. Every send and receive waits at most
 * timeout_ms for progress and, once bw_session_deadline() has started the
 * clock of an exchange, fails with BW_ETIMEDOUT when its deadline passes. */
struct bw_ctls;

struct bw_session {
	char host[256]; /* without tls:// */
	uint16_t port;
	int tls; /* the address was tls://HOST:PORT */
	/* the identity proven in the TLS handshake (set by the caller before
	 * connecting), or NULL: a TLS server then serves nothing that names
	 * a registered client */
	const struct bw_rsa *key;
	struct bw_ctls *ctls; /* its session while connected */
	unsigned timeout_ms;
	uint64_t deadline_ms; /* bw_now_ms() by which to be done; 0: none */
	int fd;		      /* -1 when not connected */
	uint8_t version;
};

/* host may start with tls:// (TLS 1.3 then, never plain). */
void bw_session_init(struct bw_session *s, const char *host, uint16_t port,
		     unsigned timeout_ms, uint8_t version);
/* Connects if not connected; the connect (all addresses together) takes at
 * most timeout_ms. A tls:// server whose key cannot be trusted ends the
 * process (told on stderr, BW_EXIT_KEY) before a byte of the protocol. */
int bw_session_connect(struct bw_session *s) BW_WUR;
void bw_session_close(struct bw_session *s);
/* Closes with a reset (SO_LINGER 0): the server must not take it for the
 * orderly close that is evidence a reply arrived (the client could not
 * keep what it got). */
void bw_session_abort(struct bw_session *s);
/* Makes every close of s a reset (SO_LINGER 0), the process's death by a
 * signal included, until bw_session_end: 0 or -errno. */
int bw_session_reset_on_close(struct bw_session *s) BW_WUR;
/* Ends the connection in order after the last response was read: half-
 * closes, reads and drops what is left (a padded response's zeros, at most
 * a few KiB) until the server closes, then closes. The server sees a FIN
 * rather than a reset: the evidence that the response arrived (delivery of
 * messages). Waits at most 2 s (or timeout_ms if less). */
void bw_session_end(struct bw_session *s);
/* Starts the clock: the sends and receives that follow must be done within
 * ms milliseconds of now. */
void bw_session_deadline(struct bw_session *s, uint64_t ms);
/* Writes exactly n bytes (no SIGPIPE): 0, BW_ETIMEDOUT or -errno. Only
 * reads the session, so one thread may write while another waits. */
int bw_session_write(const struct bw_session *s, const void *p,
		     size_t n) BW_WUR;
/* Reads exactly n bytes: 0, BW_ECLOSED, BW_ETIMEDOUT or -errno. */
int bw_session_read(const struct bw_session *s, void *p, size_t n) BW_WUR;
/* Sends a request header announcing payload_size bytes (the caller writes
 * them). */
int bw_session_send_hdr(struct bw_session *s, const uint8_t id[BW_ID_LEN],
			uint16_t code, uint32_t payload_size) BW_WUR;
/* Holds back partial TCP segments while on (TCP_CORK), and sends what is
 * held when turned off: a request written in pieces then leaves as one
 * (up to a segment), for the servers that read a request with a single
 * recv(). */
void bw_session_cork(struct bw_session *s, int on);
/* Sends a whole request: header (id, code, payload size) then payload,
 * corked, so that it leaves in one segment when it fits one. A NULL id
 * sends zeros. */
int bw_session_send(struct bw_session *s, const uint8_t id[BW_ID_LEN],
		    uint16_t code, const void *payload, uint32_t len) BW_WUR;
/* Reads one response: its code and up to cap payload bytes into out.
 * BW_ETOOBIG (and the connection closed) if the payload is larger;
 * BW_ECLOSED if the server closed first; BW_ETIMEDOUT. */
int bw_session_recv(struct bw_session *s, uint16_t *code, uint8_t *out,
		    size_t cap, size_t *len) BW_WUR;
/* Waits ms milliseconds watching the connection: if the server closes it,
 * or sends bytes nobody asked for (the stream is out of step), the session
 * is closed. Returns 1 if it was closed (or was not open), 0 if it is still
 * open. */
int bw_session_idle(struct bw_session *s, unsigned ms);

/* Parses a --timeout argument (1..3600 seconds) into *ms; on a bad value
 * prints "<prog>: --timeout needs 1..3600 seconds" and returns BW_ECONFIG. */
int bw_cli_timeout_arg(const char *prog, const char *arg, unsigned *ms) BW_WUR;

/* The options every command shares, for the default of its getopt switch:
 * 't' (--timeout, into *timeout_ms) returns BW_CLI_GO_ON; 'h' (--help)
 * prints usage on stdout and returns BW_EXIT_OK; a bad --timeout, or any
 * other option, returns BW_EXIT_USAGE (usage on stderr). */
#define BW_CLI_GO_ON (-1)
/* --ca-file FILE (long only), taken by bw_cli_common_opt into
 * bw_cli_ca_file: a tls:// server's certificate must then be signed for
 * its name by that CA (no pinning). */
#define BW_CLI_OPT_CA_FILE 0x100
#define BW_CLI_CA_FILE_OPTION                                                  \
	{                                                                      \
		"ca-file", required_argument, NULL, BW_CLI_OPT_CA_FILE         \
	}
#define BW_CLI_CA_FILE_HELP                                                    \
	"      --ca-file FILE    a tls:// server's certificate must be "       \
	"signed "                                                              \
	"for\n"                                                                \
	"                        its name by a CA in FILE (PEM) instead of "   \
	"being\n"                                                              \
	"                        pinned on first use in known_servers\n"
int bw_cli_common_opt(const char *prog, int ch, const char *arg,
		      unsigned *timeout_ms, void (*usage)(FILE *f)) BW_WUR;
/* After the options: the server given by -s (given, or NULL) or an
 * optional HOST:PORT (default dflt), not both, and nothing else, into
 * host[cap] and *port. 0, or BW_EXIT_USAGE (told on stderr). */
int bw_cli_server_arg(const char *prog, const char *dflt, const char *given,
		      int argc, char **argv, void (*usage)(FILE *f), char *host,
		      size_t cap, uint16_t *port) BW_WUR;

/* HOST:PORT or tls://HOST:PORT into host[cap] (tls:// kept in front of the
 * host, as bw_session_init takes it) and *port; BW_ECONFIG if it is
 * neither. */
int bw_cli_parse_server(const char *text, char *host, size_t cap,
			uint16_t *port) BW_WUR;
/* "Fatal: ..." on stderr. */
void bw_cli_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Why a connection to host:port could not be made, in the one wording
 * every subcommand uses, into buf[cap]; returns buf. A refusal (nothing
 * listens there) is worth no retry. */
const char *bw_cli_connect_error(char *buf, size_t cap, const char *host,
				 uint16_t port, int rc);

/* Whether code is a reply either protocol of the shared port has (the
 * vault's and the messenger's 2100-2107, and 9000): any other says the
 * server at that address speaks something else. */
int bw_reply_code_known(uint16_t code);
/* "HOST:PORT does not speak the vault and messenger protocol (is it the
 * chat's or the console's port?)": one wording for every subcommand. */
#define BW_CLI_FOREIGN_FMT                                                     \
	"%s:%u does not speak the vault and messenger protocol (is it the "    \
	"chat's or the console's port?)"
/* A registration refused: one wording for every subcommand (their exit
 * status is BW_EXIT_TAKEN). Neither protocol says why; a name taken is
 * the cause a user can act on, a server that registers no more for now
 * the other. */
void bw_cli_register_refused(const char *prog, const char *name,
			     const char *host, uint16_t port);
/* A name as the user is shown it: escaped (bw_escape_display), and each
 * code point past ASCII (up to 8) named after it, "josé [U+0301]", so that
 * two names that read alike can be told apart. */
#define BW_CLI_NAME_CAP (BW_ESC_CAP + 8 * 9 + 8)
char *bw_cli_name_shown(const char *name, char *out, size_t cap);

#endif
