/* bulwark msg: the messenger client. Without a command, the interactive
 * menu of docs/messenger-protocol.md, reading choices from a terminal or a pipe
 * (end of input exits 0); with one, a single action for scripts.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/msg_cli.h"
#include "cli/msg_cli_int.h"

#define LINE_MAX_IN  65536
#define LOCK_POLL_MS 100u

static const char menu_text[] = "MessageU client at your service.\n"
				"110) Register\n"
				"120) Request for clients list\n"
				"130) Request for public key\n"
				"140) Request for waiting messages\n"
				"150) Send a text message\n"
				"151) Send a request for symmetric key\n"
				"152) Send your symmetric key\n"
				"153) Send a file\n"
				"0) Exit client\n"
				"?\n";

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark msg [OPTION]... [COMMAND [ARG]...]\n"
		"The messenger: end-to-end encrypted messages and files, held "
		"by the server\nuntil pulled. Without a command, the "
		"interactive menu (110-153, 0).\n\n"
		"Commands:\n"
		"  register NAME          register; writes me.info\n"
		"  list                   the other clients' names\n"
		"  key NAME               fetch NAME's public key, pin it on "
		"first use\n"
		"  trust NAME             accept the new key the server gives "
		"for NAME\n"
		"  request-key NAME       ask NAME for a symmetric key (151)\n"
		"  send-key NAME          send NAME a new symmetric key (152)\n"
		"  send NAME TEXT         send a text message (150)\n"
		"  send-file NAME PATH    send a file (153)\n"
		"  pull                   show the waiting messages (140)\n"
		"  whoami                 your name, id and key fingerprint "
		"(what your\n"
		"                         contacts pin: compare it with "
		"them)\n\n"
		"Options:\n"
		"  -C, --dir DIR          where server.info, me.info (or "
		"my.info) and\n"
		"                         contacts.info are (default: the "
		"current directory;\n"
		"                         -d as well)\n"
		"  -s, --server HOST:PORT the server (default: server.info)\n"
		"  -o, --output DIR       where received files go (default: "
		"$TMPDIR, else\n"
		"                         /tmp)\n"
		"      --timeout SEC      give up on a silent server after SEC "
		"(default 30)\n"
		"      --ca-file FILE     a tls:// server's certificate must "
		"be signed for its\n"
		"                         name by a CA in FILE (PEM) instead "
		"of being pinned\n"
		"                         on first use in known_servers\n"
		"  -h, --help             this help\n\n"
		"contacts.info (mode 0600) keeps each contact's pinned public "
		"key, the\nsymmetric key you share and the ids of the "
		"messages already shown.\nA received file is named after its "
		"sender and the time (UTC) it "
		"came,\nfrom-alice-20261128-094500 "
		"(-2, -3... if taken, never over a file), mode\n0600, its path "
		"printed.\nTwo clients on one DIR "
		"take turns: each action waits for the other's\n(the lock is "
		"DIR/.bulwark-msg.lock), at most --timeout.\n\n"
		"Exit status: 0 done, 1 the server or the network failed (a "
		"9000 prints\n\"%s\"), 2 bad usage or local files, 3 the "
		"server refused\nto register the name (taken, or no more "
		"registrations for now), 5 a\ncontact's key changed (see "
		"trust), 6 no symmetric key with the contact\nyet.\n",
		MSG_ERR_TEXT);
}

/* --- set-up -------------------------------------------------------------- */

static int
join(char *out, size_t cap, const char *dir, const char *name)
{
	if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap) {
		fprintf(stderr, "bulwark msg: %s/%s: path too long\n", dir,
			name);
		return BW_EXIT_USAGE;
	}
	return 0;
}

static int
load_server(struct msg_ctx *x, const char *dir, const char *arg)
{
	char path[4200], *text = NULL;
	size_t len;
	int rc;

	if (arg == NULL) {
		if (join(path, sizeof(path), dir, "server.info") != 0)
			return BW_EXIT_USAGE;
		if ((rc = bw_read_small_file(path, 1024, &text, &len)) != 0) {
			fprintf(stderr, "bulwark msg: %s: %s\n", path,
				bw_strerror(rc));
			return BW_EXIT_USAGE;
		}
		text[strcspn(text, "\r\n")] = '\0';
		arg = text;
	}
	rc = bw_cli_parse_server(arg, x->host, sizeof(x->host), &x->port);
	if (rc != 0)
		fprintf(stderr,
			"bulwark msg: '%s' is not host:port or "
			"tls://host:port\n",
			arg);
	free(text);
	return rc != 0 ? BW_EXIT_USAGE : 0;
}

static int
load_identity(struct msg_ctx *x, const char *dir)
{
	char my[4200];
	const char *why = NULL, *path = x->me_path;
	int rc;

	if (access(x->me_path, F_OK) != 0) {
		if (join(my, sizeof(my), dir, "my.info") != 0)
			return BW_EXIT_USAGE;
		if (access(my, F_OK) != 0)
			return 0; /* not registered yet */
		path = my;
	}
	if ((rc = bw_identity_load(&x->me, path, NULL, &why)) != 0) {
		fprintf(stderr, "bulwark msg: %s: %s\n", path,
			why ? why : bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	x->have_me = 1;
	return 0;
}

static int
need_me(const struct msg_ctx *x)
{
	if (x->have_me)
		return 0;
	fprintf(stderr, "bulwark msg: not registered: no me.info (register "
			"first: 110)\n");
	return BW_EXIT_USAGE;
}

/* --- one action at a time in a directory ---------------------------------
 */

/* Two clients on one directory (a menu left open and a pull from cron)
 * would each rewrite contacts.info from what they read when they started,
 * and the later write drop the keys the other had saved. So every action
 * runs under an exclusive lock on DIR/.bulwark-msg.lock and starts from
 * the files as they are then. *fd is -1 where nothing can be written
 * anyway (a read-only or missing directory). */
static int
lock_dir(const struct msg_ctx *x, int *fd)
{
	static const struct timespec poll = {0, LOCK_POLL_MS * 1000000L};
	unsigned waited;
	int f, rc;

	*fd = -1;
	f = open(x->lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (f < 0 && (errno == EROFS || errno == EACCES || errno == ENOENT))
		return 0;
	if (f < 0)
		goto fail;
	if ((rc = flock(f, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK) {
		fprintf(stderr,
			"bulwark msg: waiting for another bulwark msg using "
			"%s\n",
			x->dir);
		/* as long as --timeout: an action of the other's may hang
		 * (a FIFO given to send-file, a pipe nobody reads) */
		for (waited = 0; (rc = flock(f, LOCK_EX | LOCK_NB)) != 0 &&
				 errno == EWOULDBLOCK && waited < x->timeout_ms;
		     waited += LOCK_POLL_MS)
			(void)nanosleep(&poll, NULL);
		if (rc != 0 && errno == EWOULDBLOCK) {
			fprintf(stderr,
				"bulwark msg: another bulwark msg has used %s "
				"for %u s: giving up\n",
				x->dir, x->timeout_ms / 1000u);
			close(f);
			return BW_EXIT_USAGE;
		}
	}
	if (rc == 0) {
		*fd = f;
		return 0;
	}
fail:
	fprintf(stderr, "bulwark msg: cannot lock %s: %s\n", x->lock_path,
		strerror(errno));
	if (f >= 0)
		close(f);
	return BW_EXIT_USAGE;
}

/* contacts.info and the identity again, as another client may have left
 * them. */
static int
reload(struct msg_ctx *x)
{
	const char *why = NULL;
	int rc;

	bw_contacts_fini(&x->cs);
	bw_identity_fini(&x->me);
	x->have_me = 0;
	if ((rc = load_identity(x, x->dir)) != 0)
		return rc;
	if (bw_contacts_load(x->contacts_path, &x->cs, &why) != 0) {
		fprintf(stderr, "bulwark msg: %s: %s\n", x->contacts_path, why);
		return BW_EXIT_USAGE;
	}
	x->loaded = 1;
	return 0;
}

/* What the trust prompt showed for c is what is there now: the same
 * client behind the name, the same key offered. */
static int
as_shown(const struct bw_contact *shown, const struct bw_contact *c)
{
	return memcmp(shown->id, c->id, BW_ID_LEN) == 0 &&
	       shown->moved == c->moved &&
	       shown->has_offered == c->has_offered &&
	       (!c->has_offered ||
		memcmp(shown->offered, c->offered, BW_RSA_PUB_LEN) == 0);
}

/* --- actions ------------------------------------------------------------- */

enum action {
	A_REGISTER = 110,
	A_LIST = 120,
	A_KEY = 130,
	A_PULL = 140,
	A_TEXT = 150,
	A_ASK = 151,
	A_GIVE = 152,
	A_FILE = 153,
	A_TRUST = 1000,
	A_WHOAMI = 1001,
};

int
msg_show_mine(const struct msg_ctx *x, int who)
{
	uint8_t spki[BW_RSA_PUB_LEN];
	char fp[BW_FINGERPRINT_CAP], hex[2 * BW_ID_LEN + 1];
	char shown[BW_CLI_NAME_CAP];

	if (bw_rsa_to_spki(x->me.key, spki) != 0 ||
	    bw_fingerprint(spki, fp) != 0) {
		fprintf(stderr, "bulwark msg: cannot read your key\n");
		return BW_EXIT_USAGE;
	}
	bw_hex_encode(x->me.id, BW_ID_LEN, hex);
	if (who)
		printf("you are %s (id %s)\n",
		       bw_cli_name_shown(x->me.name, shown, sizeof(shown)),
		       hex);
	printf("your key's fingerprint: %s\n", fp);
	return 0;
}

/* args: the name (and the text or path) the action needs. */
static int
run(struct msg_ctx *x, enum action a, const char *name, const char *arg)
{
	struct bw_contact *c = NULL;
	int rc;

	if (a == A_REGISTER)
		return msg_register(x, name);
	if ((rc = need_me(x)) != 0)
		return rc;
	if (a == A_LIST)
		return msg_list(x, 1);
	if (a == A_PULL)
		return msg_pull(x);
	if (a == A_WHOAMI || (a == A_KEY && strcmp(name, x->me.name) == 0))
		return msg_show_mine(x, 1);
	if ((rc = msg_resolve(x, name, &c)) != 0)
		return rc;
	switch (a) {
	case A_KEY:
		return msg_fetch_key(x, c);
	case A_TRUST:
		/* the menu's "yes" is to the key it showed, which another
		 * client may have replaced since */
		if (x->shown != NULL && !as_shown(x->shown, c)) {
			fprintf(stderr,
				"bulwark msg: what the server offers for '%s' "
				"changed since it was shown: nothing trusted "
				"(fetch the key again: 130)\n",
				name);
			return BW_EXIT_KEY_CHANGED;
		}
		return msg_trust(x, c);
	case A_ASK:
		return msg_send_key_request(x, c);
	case A_GIVE:
		return msg_send_sym_key(x, c);
	case A_TEXT:
		return msg_send_text(x, c, arg);
	case A_FILE:
		return msg_send_file(x, c, arg);
	default:
		return BW_EXIT_USAGE;
	}
}

/* run() under the directory's lock, from the files as they are. */
static int
act(struct msg_ctx *x, enum action a, const char *name, const char *arg)
{
	int fd, rc;

	if ((rc = lock_dir(x, &fd)) != 0)
		return rc;
	/* where nothing can be locked nothing can be written either (a
	 * read-only directory): what this run learned stays in memory */
	if ((fd >= 0 || !x->loaded) && (rc = reload(x)) != 0)
		goto out;
	rc = run(x, a, name, arg);
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* --- the menu ------------------------------------------------------------ */

/* One line of input without its line end; NULL at end of input. */
static char *
ask(struct msg_ctx *x, const char *prompt, char *buf, size_t cap)
{
	size_t n;

	if (prompt != NULL) {
		printf("%s", prompt);
		fflush(stdout);
	}
	if (fgets(buf, (int)cap, x->in) == NULL)
		return NULL;
	n = strcspn(buf, "\r\n");
	if (buf[n] == '\0' && n == cap - 1) {
		int ch; /* an over-long line: the rest is dropped */

		while ((ch = fgetc(x->in)) != EOF && ch != '\n')
			;
	}
	buf[n] = '\0';
	return buf;
}

/* The change just shown for name: accepted if the person types yes, and
 * if it is still what was shown (the prompt waits outside the lock). */
static void
offer_trust(struct msg_ctx *x, const char *name, char *line, size_t cap)
{
	struct bw_contact shown, *c = bw_contacts_by_name(&x->cs, name);

	if (c == NULL)
		return;
	shown = *c;
	if (ask(x, "Accept the new key? Type yes to accept: ", line, cap) &&
	    strcmp(line, "yes") == 0) {
		x->shown = &shown;
		(void)act(x, A_TRUST, name, NULL);
		x->shown = NULL;
	}
	bw_wipe(&shown, sizeof(shown));
}

static int
menu(struct msg_ctx *x)
{
	static char line[LINE_MAX_IN], name[LINE_MAX_IN], arg[LINE_MAX_IN];
	uint64_t choice;
	int rc;

	for (;;) {
		/* the spec's menu, exactly, every time (140's blocks end with
		 * their own blank line) */
		fputs(menu_text, stdout);
		fflush(stdout);
		if (ask(x, NULL, line, sizeof(line)) == NULL)
			return BW_EXIT_OK; /* end of input */
		if (bw_parse_u64(line, 0, 999, &choice) != 0) {
			printf("invalid choice '%s'\n", line);
			continue;
		}
		if (choice == 0)
			return BW_EXIT_OK;
		name[0] = arg[0] = '\0';
		switch (choice) {
		case A_REGISTER:
			if (ask(x, "Enter your name: ", name, sizeof(name)) ==
			    NULL)
				return BW_EXIT_OK;
			break;
		case A_LIST:
		case A_PULL:
			break;
		case A_KEY:
		case A_ASK:
		case A_GIVE:
		case A_TEXT:
		case A_FILE:
			if (ask(x, "Enter the recipient's name: ", name,
				sizeof(name)) == NULL)
				return BW_EXIT_OK;
			if (choice == A_TEXT &&
			    ask(x, "Enter the message: ", arg, sizeof(arg)) ==
				    NULL)
				return BW_EXIT_OK;
			if (choice == A_FILE &&
			    ask(x, "Enter the file's path: ", arg,
				sizeof(arg)) == NULL)
				return BW_EXIT_OK;
			break;
		default:
			printf("invalid choice '%s'\n", line);
			continue;
		}
		rc = act(x, (enum action)choice, name, arg);
		/* only a person is asked: a script's next line is its next
		 * choice (it accepts with "bulwark msg trust NAME") */
		if (rc == BW_EXIT_KEY_CHANGED && isatty(fileno(x->in)))
			offer_trust(x, name, line, sizeof(line));
	}
}

/* --- main ---------------------------------------------------------------- */

static const struct {
	const char *name;
	enum action a;
	int args; /* after the command */
} commands[] = {
	{"register", A_REGISTER, 1}, {"list", A_LIST, 0},
	{"key", A_KEY, 1},	     {"trust", A_TRUST, 1},
	{"request-key", A_ASK, 1},   {"send-key", A_GIVE, 1},
	{"send", A_TEXT, 2},	     {"send-file", A_FILE, 2},
	{"pull", A_PULL, 0},	     {"whoami", A_WHOAMI, 0},
};

int
bw_cli_msg(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"server", required_argument, NULL, 's'},
		{"output", required_argument, NULL, 'o'},
		{"timeout", required_argument, NULL, 't'},
		BW_CLI_CA_FILE_OPTION,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static struct msg_ctx x;
	const char *dir = ".", *server = NULL, *tmp, *output = NULL;
	size_t k;
	int ch, rc;

	memset(&x, 0, sizeof(x));
	x.timeout_ms = 30000;
	x.in = stdin;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+C:d:s:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'C': /* as bulwark send's */
		case 'd':
			dir = optarg;
			break;
		case 'o':
			output = optarg;
			break;
		case 's':
			server = optarg;
			break;
		default:
			if ((rc = bw_cli_common_opt("bulwark msg", ch, optarg,
						    &x.timeout_ms, usage)) !=
			    BW_CLI_GO_ON)
				return rc;
		}
	}
	for (k = 0; optind < argc && k < sizeof(commands) / sizeof(*commands);
	     k++) {
		if (strcmp(argv[optind], commands[k].name) == 0)
			break;
	}
	if (optind < argc && (k == sizeof(commands) / sizeof(*commands) ||
			      argc - optind - 1 != commands[k].args)) {
		fprintf(stderr, "bulwark msg: unknown command or wrong "
				"arguments (see --help)\n");
		return BW_EXIT_USAGE;
	}
	tmp = getenv("TMPDIR");
	if ((size_t)snprintf(x.tmpdir, sizeof(x.tmpdir), "%s",
			     output != NULL ? output
			     : tmp != NULL && tmp[0] == '/'
				     ? tmp
				     : "/tmp") >= sizeof(x.tmpdir)) {
		fprintf(stderr, "bulwark msg: the directory for received "
				"files is too long\n");
		return BW_EXIT_USAGE;
	}
	if ((rc = join(x.me_path, sizeof(x.me_path), dir, "me.info")) != 0 ||
	    (rc = join(x.contacts_path, sizeof(x.contacts_path), dir,
		       "contacts.info")) != 0 ||
	    (rc = join(x.lock_path, sizeof(x.lock_path), dir,
		       ".bulwark-msg.lock")) != 0 ||
	    (rc = load_server(&x, dir, server)) != 0)
		goto out;
	x.dir = dir;
	if (optind == argc) {
		/* files the menu could not use stop it at once (each action
		 * reads them again) */
		if ((rc = reload(&x)) != 0)
			goto out;
		x.menu = 1;
		rc = menu(&x);
	} else {
		rc = act(&x, commands[k].a,
			 commands[k].args > 0 ? argv[optind + 1] : NULL,
			 commands[k].args > 1 ? argv[optind + 2] : NULL);
	}
out:
	bw_contacts_fini(&x.cs);
	bw_identity_fini(&x.me);
	return rc;
}
