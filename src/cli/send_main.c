/* bulwark send, the command: options, transfer.info and me.info, and the
 * session from register or reconnect to the verified upload.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/crc.h"
#include "bulwark/cur.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/progress.h"
#include "cli/send.h"
#include "proto/vault_wire.h"

#include "cli/send_int.h"

/* --- options and files ---------------------------------------------------
 */

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark send [OPTION]...\n"
		"Send one file to the vault, encrypted, and check that the "
		"server got it\nintact (cksum), resending up to 3 times.\n\n"
		"Reads from the working directory: transfer.info (line 1 "
		"host:port, line 2\nyour name, line 3 the file), me.info "
		"and priv.key (written once a\nregistration's key exchange "
		"has succeeded, mode 0600). With me.info the\nname is "
		"me.info's and line 2 may be empty.\n\n"
		"  -C, --dir DIR         work in DIR instead of the current "
		"directory\n"
		"  -s, --server H:P      server (overrides transfer.info line "
		"1)\n"
		"  -n, --name NAME       name to register (overrides line 2)\n"
		"  -f, --file PATH       file to send (overrides line 3; a "
		"regular file)\n"
		"  -q, --quiet           nothing but errors (no progress bar, "
		"no\n"
		"                        line for a success), as scp -q\n"
		"  -t, --timeout SEC     limit on connecting and on each "
		"request with its\n"
		"                        whole reply (default 30); a file's "
		"bytes must keep\n"
		"                        moving (no stall of SEC) and average "
		"1 KiB/s\n" BW_CLI_CA_FILE_HELP
		"      --seed-upload     over TLS too, send the file "
		"AES-encrypted as the seed\n"
		"                        protocol does (1028), not as it is "
		"inside TLS (1106)\n"
		"  -h, --help            this help\n\n"
		"A request that gets an error reply, times out or loses the "
		"connection is\nsent again up to 3 times, after pauses of "
		"0.5, 1 and 2 s; an upload whose\nconnection was lost first "
		"asks for a fresh key (1027). A connection refused, or\na port "
		"that speaks another protocol, is not tried again.\n\n"
		"Exit status: 0 stored and verified; 1 the server or network "
		"failed (Fatal:);\n2 bad usage or local files (missing, not "
		"a regular file, changed while\nsent); 3 the server refused "
		"to register the name (taken, or no more\nregistrations for "
		"now); "
		"4 the CRC still disagreed after the last\nresend; 5 the "
		"server "
		"refused the file twice before reading its content\n(over its "
		"size limit, or no upload slot free).\n");
}

struct transfer {
	char server[300];
	char name[BW_NAME_CAP];
	char file[4096];
};

static int
read_transfer(struct transfer *t)
{
	char *text = NULL, *lines[3] = {NULL, NULL, NULL}, *p;
	size_t len = 0;
	int i, rc;

	if ((rc = bw_read_small_file("transfer.info", 16384, &text, &len)) != 0)
		return rc;
	p = text;
	for (i = 0; i < 3 && p != NULL; i++) {
		lines[i] = p;
		if ((p = strchr(p, '\n')) != NULL)
			*p++ = '\0';
		lines[i][strcspn(lines[i], "\r")] = '\0';
	}
	if (t->server[0] == '\0' && lines[0] != NULL)
		snprintf(t->server, sizeof(t->server), "%s", lines[0]);
	if (t->name[0] == '\0' && lines[1] != NULL)
		snprintf(t->name, sizeof(t->name), "%s", lines[1]);
	if (t->file[0] == '\0' && lines[2] != NULL)
		snprintf(t->file, sizeof(t->file), "%s", lines[2]);
	free(text);
	return 0;
}

/* Parses the options into t, x and *timeout_ms: -1 to go on, or the exit
 * status. */
#define OPT_SEED_UPLOAD (BW_CLI_OPT_CA_FILE + 0x10) /* long only */

static int
parse_args(int argc, char **argv, struct transfer *t, struct send_ctx *x,
	   unsigned *timeout_ms)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, 'C'},
		{"server", required_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},
		{"file", required_argument, NULL, 'f'},
		{"quiet", no_argument, NULL, 'q'},
		{"timeout", required_argument, NULL, 't'},
		BW_CLI_CA_FILE_OPTION,
		{"seed-upload", no_argument, NULL, OPT_SEED_UPLOAD},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "C:s:n:f:qt:h", opts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'C':
			if (chdir(optarg) != 0) {
				bw_cli_fatal("cannot enter %s: %s", optarg,
					     strerror(errno));
				return BW_EXIT_USAGE;
			}
			break;
		case 's':
			snprintf(t->server, sizeof(t->server), "%s", optarg);
			break;
		case 'n':
			snprintf(t->name, sizeof(t->name), "%s", optarg);
			break;
		case 'f':
			snprintf(t->file, sizeof(t->file), "%s", optarg);
			break;
		case 'q':
			x->quiet = 1;
			break;
		case OPT_SEED_UPLOAD:
			x->seed_upload = 1;
			break;
		default:
			if ((rc = bw_cli_common_opt("bulwark send", ch, optarg,
						    timeout_ms, usage)) !=
			    BW_CLI_GO_ON)
				return rc;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return BW_EXIT_USAGE;
	}
	return -1;
}

/* Opens the file to send without blocking (a FIFO or a device would wait
 * for a writer forever) and refuses anything but a regular file. */
static int
open_file(struct send_ctx *x, const char *path, int *fd)
{
	struct stat st;
	const char *why = NULL;
	int flags;

	if ((*fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) <
	    0)
		why = strerror(errno);
	else if (fstat(*fd, &st) != 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = S_ISFIFO(st.st_mode)  ? "a FIFO, not a regular file"
		      : S_ISDIR(st.st_mode) ? "a directory, not a regular file"
					    : "not a regular file";
	else if ((flags = fcntl(*fd, F_GETFL)) < 0 ||
		 fcntl(*fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
		why = strerror(errno);
	if (why != NULL) {
		bw_cli_fatal("cannot read the file '%s': %s", path, why);
		return BW_EXIT_USAGE;
	}
	if ((uint64_t)st.st_size > MAX_PLAIN) {
		bw_cli_fatal("'%s' is %llu bytes; the protocol carries at most "
			     "%u",
			     path, (unsigned long long)st.st_size, MAX_PLAIN);
		return BW_EXIT_USAGE;
	}
	x->plain_len = (uint64_t)st.st_size;
	x->cipher_len = (uint32_t)bw_aes_cipher_len(x->plain_len);
	return BW_EXIT_OK;
}

/* The base name of the file, which travels in the 1028. */
static int
set_file_field(struct send_ctx *x, const char *path)
{
	const char *base, *p;

	for (base = p = path; *p != '\0'; p++) {
		if (*p == '/')
			base = p + 1;
	}
	if (strlen(base) == 0 || strlen(base) > 254) {
		bw_cli_fatal("the file name '%s' cannot be sent", base);
		return BW_EXIT_USAGE;
	}
	memcpy(x->file_field, base, strlen(base) + 1);
	return BW_EXIT_OK;
}

/* Fills what the options left out from transfer.info and checks it. A name
 * is needed only without me.info (have_me): with it, me.info's is used. */
static int
resolve_transfer(struct transfer *t, int have_me)
{
	int rc;

	if ((t->server[0] == '\0' || t->file[0] == '\0' ||
	     (t->name[0] == '\0' && !have_me)) &&
	    (rc = read_transfer(t)) != 0) {
		bw_cli_fatal("cannot read transfer.info: %s", bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	if (!have_me &&
	    (strlen(t->name) == 0 || strlen(t->name) > BW_CLI_NAME_MAX)) {
		bw_cli_fatal("the name must be 1 to %d characters "
			     "(transfer.info line 2)",
			     BW_CLI_NAME_MAX);
		return BW_EXIT_USAGE;
	}
	if (t->file[0] == '\0') {
		bw_cli_fatal("no file to send (transfer.info line 3 or "
			     "--file)");
		return BW_EXIT_USAGE;
	}
	return BW_EXIT_OK;
}

/* The identity the server refused, kept aside before a new one takes its
 * files (the spec rewrites me.info and priv.key on a 2106; the old ones are
 * another server's, or this one's once its data comes back): hard links
 * me.info.old-<id> and priv.key.old-<id> (-N if taken), which the rename
 * of the new files leaves holding the old. 0, or -errno. */
static int
keep_aside(const struct bw_identity *me, char *me_old, char *priv_old,
	   size_t cap)
{
	char hex[2 * BW_ID_LEN + 1];
	int i;

	bw_hex_encode(me->id, BW_ID_LEN, hex);
	hex[8] = '\0';
	for (i = 0; i < 100; i++) {
		snprintf(me_old, cap,
			 i ? "me.info.old-%s-%d" : "me.info.old-%s", hex, i);
		snprintf(priv_old, cap,
			 i ? "priv.key.old-%s-%d" : "priv.key.old-%s", hex, i);
		if (link("me.info", me_old) != 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		if (link("priv.key", priv_old) != 0) {
			if (errno == EEXIST) {
				(void)unlink(me_old);
				continue;
			}
			priv_old[0] = '\0'; /* none: the key is in me.info */
		}
		return 0;
	}
	return -EEXIST;
}

/* Reconnects with me.info or registers, then uploads. A refused reconnect
 * registers again under name (-n, transfer.info's) or me.info's, the old
 * identity kept aside. */
static int
run_session(struct send_ctx *x, const char *name, int have_me, int fd)
{
	char me_old[64] = "", priv_old[64] = "", hex[2 * BW_ID_LEN + 1];
	char old_name[BW_NAME_CAP] = "";
	int rc, denied = 0;

	if (have_me) {
		if ((rc = send_reconnect(x, &denied)) != BW_EXIT_OK)
			return rc;
		if (denied && (rc = keep_aside(&x->me, me_old, priv_old,
					       sizeof(me_old))) != 0) {
			bw_cli_fatal("%s:%u does not know '%s' with this id, "
				     "and me.info cannot be kept aside before "
				     "registering again: %s (nothing changed)",
				     x->sess.host, x->sess.port, x->me.name,
				     bw_strerror(rc));
			return BW_EXIT_USAGE;
		}
	}
	if (denied) { /* x->me becomes the new identity */
		snprintf(old_name, sizeof(old_name), "%s", x->me.name);
		bw_hex_encode(x->me.id, BW_ID_LEN, hex);
	}
	if (!have_me || denied) {
		rc = send_register(x, name[0] != '\0' ? name
				      : have_me	      ? x->me.name
						      : name);
		if (denied && rc != BW_EXIT_OK) {
			(void)unlink(me_old); /* me.info is still the old */
			if (priv_old[0] != '\0')
				(void)unlink(priv_old);
		}
		if (rc != BW_EXIT_OK)
			return rc;
	}
	if (denied) {
		fprintf(stderr,
			"bulwark send: %s:%u does not know '%s' (id %s): "
			"registered a new identity here; the old one is kept "
			"as %s%s%s (move it back to me.info%s to use it with "
			"the "
			"server that knows it)\n",
			x->sess.host, x->sess.port, old_name, hex, me_old,
			priv_old[0] != '\0' ? " and " : "", priv_old,
			priv_old[0] != '\0' ? " and priv.key" : "");
	}
	return send_upload(x, fd);
}

int
bw_cli_send(int argc, char **argv)
{
	struct transfer t;
	struct send_ctx x;
	char host[256];
	const char *why = NULL;
	unsigned timeout_ms = 30u * 1000u;
	uint16_t port;
	int rc, fd = -1, have_me;

	memset(&t, 0, sizeof(t));
	memset(&x, 0, sizeof(x));
	x.sess.fd = -1;
	if ((rc = parse_args(argc, argv, &t, &x, &timeout_ms)) >= 0)
		return rc;
	rc = bw_identity_load(&x.me, "me.info", "priv.key", &why);
	have_me = rc == 0;
	if (rc != 0 && rc != -ENOENT) {
		bw_cli_fatal("me.info %s", why != NULL ? why : bw_strerror(rc));
		rc = BW_EXIT_USAGE;
		goto out;
	}
	if ((rc = resolve_transfer(&t, have_me)) != BW_EXIT_OK)
		goto out;
	if (bw_cli_parse_server(t.server, host, sizeof(host), &port) != 0) {
		bw_cli_fatal("'%s' is not host:port or tls://host:port "
			     "(transfer.info line 1)",
			     t.server);
		rc = BW_EXIT_USAGE;
		goto out;
	}
	x.path = t.file;
	if ((rc = open_file(&x, t.file, &fd)) != BW_EXIT_OK ||
	    (rc = set_file_field(&x, t.file)) != BW_EXIT_OK)
		goto out;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	send_guard_sigbus();
	bw_session_init(&x.sess, host, port, timeout_ms, BW_VAULT_VERSION);
	x.sess.key = x.me.key; /* proven over TLS */
	rc = run_session(&x, t.name, have_me, fd);
out:
	if (fd >= 0)
		close(fd);
	bw_session_close(&x.sess);
	bw_identity_fini(&x.me);
	bw_wipe(x.aes_key, sizeof(x.aes_key));
	return rc;
}
