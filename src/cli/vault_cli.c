/* bulwark ls, get and rm: an owner's files back from the vault, over TLS
 * only (the server gives them to a client proven by its registered key:
 * docs/vault-protocol.md, "Bulwark extensions"). The identity and the
 * server are found as `bulwark send` finds them: me.info and priv.key in
 * the directory (-C DIR), the server from -s or transfer.info line 1.
 *
 * A get writes NAME.part beside its destination and resumes from its size
 * when run again; the server's SHA-256 of the whole file is checked
 * against the whole .part before it is renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/cur.h"
#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/progress.h"
#include "cli/tlsclient.h"
#include "cli/vault_cli.h"
#include "cli/vault_cli_int.h"
#include "proto/vault_wire.h"

#define CHUNK (256u * 1024u)

static void
usage_of(FILE *f, const char *cmd)
{
	fprintf(f,
		"Usage: bulwark %s [OPTION]...%s\n"
		"%s\n\n"
		"Over TLS only: the server gives files back only to the client "
		"proven by\nthe key it registered (me.info and priv.key, "
		"written by `bulwark send`).\nThe server comes from -s or "
		"transfer.info line 1 and must be tls://HOST:PORT.\n\n"
		"  -C, --dir DIR         work in DIR (where me.info is)\n"
		"  -s, --server ADDR     tls://HOST:PORT\n"
		"%s"
		"  -q, --quiet           nothing but errors\n"
		"  -t, --timeout SEC     network timeout (default "
		"30)\n" BW_CLI_CA_FILE_HELP
		"  -h, --help            this help\n\n"
		"Exit status: 0 done; 1 the server or network failed; 2 bad "
		"usage or local\nfiles; 6 no such file on the server; 7 the "
		"server's key is not the one\npinned.\n",
		cmd,
		strcmp(cmd, "ls") == 0 || strcmp(cmd, "tls-only") == 0
			? ""
			: " NAME",
		strcmp(cmd, "tls-only") == 0
			? "Ask the server to refuse this identity's id on its "
			  "plain ports from now\non (the seed protocols there "
			  "prove nothing: anyone who knows an id may\nuse it); "
			  "only a client proving its key over TLS is served "
			  "under it.\nIt cannot be undone. The console's USRS "
			  "shows it."
		: strcmp(cmd, "ls") == 0
			? "List your files in the vault: size, whether you "
			  "verified them, when they\nwere stored (UTC), and "
			  "whether a replacement waits for its verdict."
		: strcmp(cmd, "get") == 0
			? "Get your file NAME back from the vault, into "
			  "./NAME (or -o PATH). An\ninterrupted get resumes "
			  "from PATH.part when run again; the whole file is\n"
			  "checked against the server's SHA-256 before it is "
			  "put in place."
			: "Delete your file NAME from the vault.",
		strcmp(cmd, "get") == 0
			? "  -o, --output PATH     where the file goes (not "
			  "over an existing one)\n"
			: "");
}

static void
usage_ls(FILE *f)
{
	usage_of(f, "ls");
}
static void
usage_get(FILE *f)
{
	usage_of(f, "get");
}
static void
usage_rm(FILE *f)
{
	usage_of(f, "rm");
}

static void
usage_tls_only(FILE *f)
{
	usage_of(f, "tls-only");
}

/* transfer.info's first line into out, or BW_ENOTFOUND. */
static int
transfer_server(char *out, size_t cap)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if ((rc = bw_read_small_file("transfer.info", 16384, &text, &len)) != 0)
		return rc;
	text[strcspn(text, "\r\n")] = '\0';
	snprintf(out, cap, "%s", text);
	free(text);
	return out[0] != '\0' ? 0 : BW_ENOTFOUND;
}

/* The session to the owner's server, connected: 0 or an exit status. */
static int
vcli_open(struct vcli *x, const char *server, unsigned timeout_ms)
{
	char given[600], host[300], why[512];
	const char *me_why = NULL;
	uint16_t port;
	int rc;

	if ((rc = bw_identity_load(&x->me, "me.info", "priv.key", &me_why)) !=
	    0) {
		fprintf(stderr, "%s: %s (register with `bulwark send` first)\n",
			x->prog,
			rc == -ENOENT	 ? "no me.info here"
			: me_why != NULL ? me_why
					 : bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	if (server != NULL)
		snprintf(given, sizeof(given), "%s", server);
	else if (transfer_server(given, sizeof(given)) != 0) {
		fprintf(stderr, "%s: no server: give -s tls://HOST:PORT\n",
			x->prog);
		return BW_EXIT_USAGE;
	}
	if (bw_cli_parse_server(given, host, sizeof(host), &port) != 0) {
		fprintf(stderr, "%s: '%s' is not tls://HOST:PORT\n", x->prog,
			given);
		return BW_EXIT_USAGE;
	}
	if (!bw_tls_addr(host, &server)) {
		fprintf(stderr,
			"%s: %s is a plain address: the vault gives files "
			"back only over TLS,\nto the client proven by its key "
			"(give -s tls://HOST:PORT)\n",
			x->prog, given);
		return BW_EXIT_USAGE;
	}
	bw_hex_encode(x->me.id, 4, x->hex);
	bw_session_init(&x->s, host, port, timeout_ms, BW_VAULT_VERSION);
	x->s.key = x->me.key;
	if ((rc = bw_session_connect(&x->s)) != 0) {
		fprintf(stderr, "%s: %s\n", x->prog,
			bw_cli_connect_error(why, sizeof(why), x->s.host,
					     x->s.port, rc));
		return BW_EXIT_FATAL;
	}
	return 0;
}

int
vcli_head(struct vcli *x, uint16_t *code, uint32_t *size)
{
	uint8_t h[BW_RESP_HDR_LEN];
	struct bw_resp_hdr r;
	int rc;

	if ((rc = bw_session_read(&x->s, h, sizeof(h))) != 0 ||
	    bw_resp_hdr_decode(h, sizeof(h), &r) != BW_RESP_HDR_LEN) {
		fprintf(stderr, "%s: no reply from the server: %s\n", x->prog,
			rc != 0 ? bw_strerror(rc) : "malformed");
		return BW_EXIT_FATAL;
	}
	*code = r.code;
	*size = r.payload_size;
	if (r.code == BW_VAULT_RESP_ERROR) {
		fprintf(stderr,
			"%s: the server refused (2107): is this identity "
			"registered there, and\nis the key in priv.key the "
			"one it registered? (the server's log says why)\n",
			x->prog);
		return BW_EXIT_FATAL;
	}
	return 0;
}

int
vcli_send_req(struct vcli *x, uint16_t code, const void *p, uint32_t n)
{
	int rc = bw_session_send(&x->s, x->me.id, code, p, n);

	if (rc != 0) {
		fprintf(stderr, "%s: cannot send the request: %s\n", x->prog,
			bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	return 0;
}

/* --- rm ---------------------------------------------------------------- */

static int
do_rm(struct vcli *x, const char *name)
{
	uint8_t field[BW_NAME_FIELD], back[BW_NAME_FIELD];
	uint32_t size;
	uint16_t code;
	int rc;

	if (bw_name_encode(name, field) != 0) {
		fprintf(stderr, "%s: '%s' cannot be a file's name\n", x->prog,
			name);
		return BW_EXIT_USAGE;
	}
	if ((rc = vcli_send_req(x, BW_VAULT_REQ_DELETE, field,
				sizeof(field))) != 0 ||
	    (rc = vcli_head(x, &code, &size)) != 0)
		return rc;
	if (size != BW_NAME_FIELD || bw_session_read(&x->s, back, size) != 0 ||
	    memcmp(back, field, size) != 0 ||
	    (code != BW_VAULT_RESP_DELETED &&
	     code != BW_VAULT_RESP_NO_SUCH_FILE)) {
		fprintf(stderr, "%s: the server's answer is malformed (%u)\n",
			x->prog, code);
		return BW_EXIT_FATAL;
	}
	if (code == BW_VAULT_RESP_NO_SUCH_FILE) {
		fprintf(stderr, "%s: you have no file named '%s' there\n",
			x->prog, name);
		return BW_EXIT_NO_FILE;
	}
	if (!x->quiet)
		printf("deleted '%s'\n", name);
	return 0;
}

/* --- tls-only ----------------------------------------------------------- */

static int
do_tls_only(struct vcli *x)
{
	uint32_t size;
	uint16_t code;
	int rc;

	if ((rc = vcli_send_req(x, BW_VAULT_REQ_TLS_ONLY, NULL, 0)) != 0 ||
	    (rc = vcli_head(x, &code, &size)) != 0)
		return rc;
	if (code != BW_VAULT_RESP_TLS_ONLY || size != 0) {
		fprintf(stderr, "%s: the server's answer is malformed (%u)\n",
			x->prog, code);
		return BW_EXIT_FATAL;
	}
	if (!x->quiet)
		printf("'%s' (id %s...) is refused on the server's plain ports "
		       "from now on:\nonly a client proving its key over TLS "
		       "is served under that id\n",
		       x->me.name, x->hex);
	return 0;
}

/* --- get --------------------------------------------------------------- */

static int
write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The SHA-256 of the whole file at fd (read from the start). */
static int
hash_file(int fd, uint8_t md[BW_SHA256_LEN])
{
	struct bw_sha256_ctx *h = NULL;
	static uint8_t buf[CHUNK];
	off_t off = 0;
	ssize_t n;
	int rc;

	if ((rc = bw_sha256_new(&h)) != 0)
		return rc;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		if ((rc = bw_sha256_update(h, buf, (size_t)n)) != 0)
			break;
		off += n;
	}
	if (rc == 0 && n < 0)
		rc = -errno;
	if (rc == 0)
		rc = bw_sha256_final(h, md);
	bw_sha256_free(h);
	return rc;
}

/* Receives the file's bytes into fd (appending), then checks the hash:
 * 0 or an exit status (told). */
static int
receive(struct vcli *x, int fd, const char *part, uint64_t size,
	uint64_t offset)
{
	static uint8_t buf[CHUNK];
	uint8_t md[BW_SHA256_LEN], want[BW_SHA256_LEN];
	struct bw_progress pr;
	uint64_t left = size - offset;
	size_t n;
	int rc;

	bw_progress_start(&pr, "get", size, !x->quiet);
	bw_progress_update(&pr, offset);
	while (left > 0) {
		n = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		if ((rc = bw_session_read(&x->s, buf, n)) != 0) {
			bw_progress_end(&pr);
			fprintf(stderr,
				"%s: cut at %llu of %llu bytes (%s); run it "
				"again to resume from %s\n",
				x->prog, (unsigned long long)(size - left),
				(unsigned long long)size, bw_strerror(rc),
				part);
			return BW_EXIT_FATAL;
		}
		if (write_all(fd, buf, n) != 0) {
			bw_progress_end(&pr);
			fprintf(stderr, "%s: cannot write %s: %s\n", x->prog,
				part, strerror(errno));
			return BW_EXIT_USAGE;
		}
		left -= n;
		bw_progress_update(&pr, size - left);
	}
	bw_progress_end(&pr);
	if ((rc = bw_session_read(&x->s, want, sizeof(want))) != 0) {
		fprintf(stderr, "%s: the server's hash did not come (%s)\n",
			x->prog, bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	if ((rc = hash_file(fd, md)) != 0) {
		fprintf(stderr, "%s: cannot read %s back: %s\n", x->prog, part,
			bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	if (memcmp(md, want, sizeof(md)) != 0) {
		(void)unlink(part);
		fprintf(stderr,
			"%s: what arrived is not the server's file (SHA-256 "
			"differs); %s was removed: run it again\n",
			x->prog, part);
		return BW_EXIT_FATAL;
	}
	return 0;
}

static int
do_get(struct vcli *x, const char *name, const char *out)
{
	uint8_t req[BW_VAULT_GET_LEN], head[BW_VAULT_FILE_HEAD];
	char dest[4096], part[4096 + 8], stored[BW_NAME_CAP];
	uint64_t offset = 0, size, off;
	struct stat st;
	uint32_t psize;
	uint16_t code;
	int rc, fd, verified = 0;

	if (bw_name_encode(name, req) != 0 ||
	    (out == NULL && bw_file_name_sanitize(name, stored) != 0)) {
		fprintf(stderr, "%s: '%s' cannot be a file's name\n", x->prog,
			name);
		return BW_EXIT_USAGE;
	}
	snprintf(dest, sizeof(dest), "%s", out != NULL ? out : stored);
	snprintf(part, sizeof(part), "%s.part", dest);
	if (access(dest, F_OK) == 0) {
		fprintf(stderr, "%s: %s exists: remove it or give -o PATH\n",
			x->prog, dest);
		return BW_EXIT_USAGE;
	}
	if ((fd = open(part, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) <
		    0 ||
	    fstat(fd, &st) != 0) {
		fprintf(stderr, "%s: cannot open %s: %s\n", x->prog, part,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return BW_EXIT_USAGE;
	}
	offset = (uint64_t)st.st_size;
	bw_put_u64le(req + BW_NAME_FIELD, offset);
	if ((rc = vcli_send_req(x, BW_VAULT_REQ_GET, req, sizeof(req))) != 0 ||
	    (rc = vcli_head(x, &code, &psize)) != 0)
		goto out;
	if (code == BW_VAULT_RESP_NO_SUCH_FILE) {
		fprintf(stderr, "%s: you have no file named '%s' there\n",
			x->prog, name);
		rc = BW_EXIT_NO_FILE;
		if (offset == 0)
			(void)unlink(part);
		goto out;
	}
	rc = BW_EXIT_FATAL;
	if (code != BW_VAULT_RESP_FILE || psize < sizeof(head) + 32 ||
	    bw_session_read(&x->s, head, sizeof(head)) != 0) {
		fprintf(stderr, "%s: the server's answer is malformed (%u)\n",
			x->prog, code);
		goto out;
	}
	if (bw_vault_file_head_decode(head, sizeof(head), &size, &off,
				      &verified) != 0 ||
	    off != offset || psize != sizeof(head) + (size - off) + 32) {
		fprintf(stderr, "%s: the server's answer is malformed\n",
			x->prog);
		goto out;
	}
	if (offset > 0 && !x->quiet)
		fprintf(stderr, "%s: resuming %s at %llu of %llu bytes\n",
			x->prog, part, (unsigned long long)offset,
			(unsigned long long)size);
	if ((rc = receive(x, fd, part, size, offset)) != 0)
		goto out;
	if (fsync(fd) != 0 || rename(part, dest) != 0) {
		fprintf(stderr, "%s: cannot put %s in place: %s\n", x->prog,
			dest, strerror(errno));
		rc = BW_EXIT_USAGE;
		goto out;
	}
	if (!x->quiet)
		printf("'%s': %llu bytes into %s (%s on the server, SHA-256 "
		       "checked)\n",
		       name, (unsigned long long)size, dest,
		       verified ? "verified" : "not verified");
out:
	close(fd);
	return rc;
}

/* --- the commands -------------------------------------------------------
 */

int
bw_cli_vault(const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, 'C'},
		{"server", required_argument, NULL, 's'},
		{"output", required_argument, NULL, 'o'},
		{"quiet", no_argument, NULL, 'q'},
		{"timeout", required_argument, NULL, 't'},
		BW_CLI_CA_FILE_OPTION,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	void (*usage)(FILE *) = strcmp(cmd, "ls") == 0	       ? usage_ls
				: strcmp(cmd, "get") == 0      ? usage_get
				: strcmp(cmd, "tls-only") == 0 ? usage_tls_only
							       : usage_rm;
	const char *server = NULL, *out = NULL;
	unsigned timeout_ms = 30000;
	struct vcli x;
	int ch, rc,
		want = strcmp(cmd, "ls") == 0 || strcmp(cmd, "tls-only") == 0
			       ? 0
			       : 1;

	memset(&x, 0, sizeof(x));
	x.cmd = cmd;
	x.s.fd = -1;
	snprintf(x.prog, sizeof(x.prog), "bulwark %s", cmd);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "C:s:o:qt:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'C':
			if (chdir(optarg) != 0) {
				fprintf(stderr, "%s: cannot enter %s: %s\n",
					x.prog, optarg, strerror(errno));
				return BW_EXIT_USAGE;
			}
			break;
		case 's':
			server = optarg;
			break;
		case 'o':
			if (strcmp(cmd, "get") != 0) {
				usage(stderr);
				return BW_EXIT_USAGE;
			}
			out = optarg;
			break;
		case 'q':
			x.quiet = 1;
			break;
		default:
			if ((rc = bw_cli_common_opt(x.prog, ch, optarg,
						    &timeout_ms, usage)) !=
			    BW_CLI_GO_ON)
				return rc;
		}
	}
	if (argc - optind != want) {
		usage(stderr);
		return BW_EXIT_USAGE;
	}
	if ((rc = vcli_open(&x, server, timeout_ms)) == 0) {
		rc = strcmp(cmd, "tls-only") == 0 ? do_tls_only(&x)
		     : want == 0		  ? vcli_ls(&x)
		     : strcmp(cmd, "get") == 0 ? do_get(&x, argv[optind], out)
					       : do_rm(&x, argv[optind]);
		bw_session_close(&x.s);
	}
	bw_identity_fini(&x.me);
	return rc;
}
