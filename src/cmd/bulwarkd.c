/* bulwarkd: the Bulwark daemon. Parses options, reads port.info, opens the
 * data directory and serves every service until SIGTERM/SIGINT.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "svc/daemon.h"

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwarkd [OPTION]...\n"
		"Bulwark daemon: the file vault and the messenger on one port, "
		"and the\noperator console on 127.0.0.1.\n\n"
		"  -d, --data-dir DIR       data directory (default: the "
		"current directory):\n"
		"                           defensive.db, files/, messages/, "
		"port.info\n"
		"  -p, --port N             the vault's and messenger's port "
		"(default:\n"
		"                           port.info and myport.info, else "
		"1357; 0 = any)\n"
		"  -l, --listen ADDR        vault address (default 0.0.0.0)\n"
		"      --max-conns N        simultaneous vault connections "
		"(default 16000)\n"
		"      --max-file-size N    largest upload in bytes of "
		"ciphertext\n"
		"                           (default and maximum 4294967024)\n"
		"      --max-uploads N      uploads in progress at once "
		"(default 256)\n"
		"      --max-uploads-per-addr N  of those, from one address "
		"(default 128)\n"
		"      --min-rate N         each --timeout window of an upload "
		"must bring\n"
		"                           N bytes/s (default 1024; 0 = off)\n"
		"      --key-lifetime SEC   an AES key is refused this long "
		"after it was\n"
		"                           issued (default 3600; 0 = never)\n"
		"      --key-failures N     decryption failures that revoke a "
		"key (default 3)\n"
		"      --max-reg-per-min N  registrations a minute from one "
		"address\n"
		"                           (default 1000; 0 = no limit)\n"
		"      --max-clients N      registered clients in all "
		"(default 1000000)\n"
		"      --timeout SEC        close a connection silent this "
		"long (default 30)\n"
		"      --request-timeout SEC  a request header must complete "
		"within this\n"
		"                           (default 10)\n"
		"      --shutdown-grace SEC on SIGTERM, let requests in "
		"progress finish\n"
		"                           for this long (default 10)\n"
		"      --workers N          threads for fsync/rename "
		"(default 2)\n"
		"      --console-port N     operator console port (default "
		"8820)\n"
		"      --console-listen ADDR  console address (default "
		"127.0.0.1)\n"
		"      --console-secret S   secret a console must send "
		"(required off loopback);\n"
		"                           visible to local users in ps: "
		"prefer the next two\n"
		"      --console-secret-file PATH  read the secret from PATH "
		"(first line)\n"
		"                           BULWARK_CONSOLE_SECRET in the "
		"environment also\n"
		"                           sets it (the options win)\n"
		"      --max-message-size N  largest message content in bytes "
		"(default\n"
		"                           1073741824)\n"
		"      --max-queued N       messages waiting for one recipient "
		"(default 100000)\n"
		"      --max-queued-bytes N  their content bytes (default "
		"4294967296)\n"
		"      --pull-cap N         largest answer to a pull (2104) "
		"in bytes\n"
		"                           (default 67108864; one larger "
		"message goes alone)\n"
		"      --no-console         do not start the console\n"
		"      --log-level LEVEL    debug, info, warn or error "
		"(default info)\n"
		"  -h, --help               this help\n"
		"  -V, --version            version\n\n"
		"Logs go to standard error, one line per event. Exit status: "
		"0 after a clean\nshutdown, 1 on a start-up error, 2 on bad "
		"usage.\n");
}

enum {
	OPT_MAX_CONNS = 256,
	OPT_MAX_FILE,
	OPT_MAX_UPLOADS,
	OPT_MIN_RATE,
	OPT_TIMEOUT,
	OPT_REQ_TIMEOUT,
	OPT_GRACE,
	OPT_WORKERS,
	OPT_CONSOLE_PORT,
	OPT_CONSOLE_LISTEN,
	OPT_CONSOLE_SECRET,
	OPT_NO_CONSOLE,
	OPT_LOG_LEVEL,
	OPT_UPLOADS_PER_ADDR,
	OPT_KEY_LIFETIME,
	OPT_KEY_FAILURES,
	OPT_REG_PER_MIN,
	OPT_MAX_CLIENTS,
	OPT_CONSOLE_SECRET_FILE,
	OPT_MAX_MESSAGE,
	OPT_MAX_QUEUED,
	OPT_MAX_QUEUED_BYTES,
	OPT_PULL_CAP,
};

static uint64_t
num_arg(const char *opt, const char *v, uint64_t min, uint64_t max)
{
	uint64_t n;

	if (bw_parse_u64(v, min, max, &n) != 0) {
		fprintf(stderr,
			"bulwarkd: %s needs a number from %llu to %llu, "
			"not '%s'\n",
			opt, (unsigned long long)min, (unsigned long long)max,
			v);
		exit(2);
	}
	return n;
}

static void
copy_arg(char *dst, size_t cap, const char *opt, const char *v)
{
	if (strlen(v) >= cap) {
		fprintf(stderr, "bulwarkd: %s is too long\n", opt);
		exit(2);
	}
	memcpy(dst, v, strlen(v) + 1);
}

/* The console secret from a file: its first line, without the line end.
 * Exits 2 if it cannot be read or is empty. */
static void
secret_file(char *dst, size_t cap, const char *path)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if ((rc = bw_read_small_file(path, cap, &text, &len)) != 0) {
		fprintf(stderr, "bulwarkd: --console-secret-file %s: %s\n",
			path, bw_strerror(rc));
		exit(2);
	}
	text[strcspn(text, "\r\n")] = '\0';
	if (text[0] == '\0' || strlen(text) >= cap) {
		fprintf(stderr,
			"bulwarkd: --console-secret-file %s: no secret "
			"on its first line\n",
			path);
		free(text);
		exit(2);
	}
	memcpy(dst, text, strlen(text) + 1);
	bw_wipe(text, len);
	free(text);
}

/* port.info (the vault's) and myport.info (the messenger's): a port number
 * each, white space ignored. The first valid one is the shared port; a
 * second, different one is listened on too (*second, else 0). */
static uint16_t
port_from_files(const char *dir, uint16_t *second)
{
	static const char *names[] = {"port.info", "myport.info"};
	char path[4200], *text = NULL;
	uint16_t found[2] = {0, 0};
	size_t len, i, n = 0;
	uint64_t port;

	*second = 0;
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (bw_read_small_file(path, 64, &text, &len) != 0)
			continue;
		if (bw_parse_u64(text, 1, 65535, &port) == 0)
			found[n++] = (uint16_t)port;
		else
			bw_warn("%s does not hold a port number; ignored",
				path);
		free(text);
		text = NULL;
	}
	if (n == 0) {
		bw_warn("no port.info or myport.info in %s; using port "
			"1357",
			dir);
		return 1357;
	}
	if (n == 2 && found[1] != found[0])
		*second = found[1];
	return found[0];
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data-dir", required_argument, NULL, 'd'},
		{"port", required_argument, NULL, 'p'},
		{"listen", required_argument, NULL, 'l'},
		{"max-conns", required_argument, NULL, OPT_MAX_CONNS},
		{"max-file-size", required_argument, NULL, OPT_MAX_FILE},
		{"max-uploads", required_argument, NULL, OPT_MAX_UPLOADS},
		{"min-rate", required_argument, NULL, OPT_MIN_RATE},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"request-timeout", required_argument, NULL, OPT_REQ_TIMEOUT},
		{"shutdown-grace", required_argument, NULL, OPT_GRACE},
		{"workers", required_argument, NULL, OPT_WORKERS},
		{"console-port", required_argument, NULL, OPT_CONSOLE_PORT},
		{"console-listen", required_argument, NULL, OPT_CONSOLE_LISTEN},
		{"console-secret", required_argument, NULL, OPT_CONSOLE_SECRET},
		{"no-console", no_argument, NULL, OPT_NO_CONSOLE},
		{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
		{"max-uploads-per-addr", required_argument, NULL,
		 OPT_UPLOADS_PER_ADDR},
		{"key-lifetime", required_argument, NULL, OPT_KEY_LIFETIME},
		{"key-failures", required_argument, NULL, OPT_KEY_FAILURES},
		{"max-reg-per-min", required_argument, NULL, OPT_REG_PER_MIN},
		{"max-clients", required_argument, NULL, OPT_MAX_CLIENTS},
		{"console-secret-file", required_argument, NULL,
		 OPT_CONSOLE_SECRET_FILE},
		{"max-message-size", required_argument, NULL, OPT_MAX_MESSAGE},
		{"max-queued", required_argument, NULL, OPT_MAX_QUEUED},
		{"max-queued-bytes", required_argument, NULL,
		 OPT_MAX_QUEUED_BYTES},
		{"pull-cap", required_argument, NULL, OPT_PULL_CAP},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct bw_daemon_cfg cfg;
	static struct bw_daemon d;
	const char *env;
	int ch, port_set = 0, secret_set = 0, rc;

	bw_daemon_cfg_defaults(&cfg);
	while ((ch = getopt_long(argc, argv, "d:p:l:hV", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			copy_arg(cfg.data_dir, sizeof(cfg.data_dir),
				 "--data-dir", optarg);
			break;
		case 'p':
			cfg.port.port =
				(uint16_t)num_arg("--port", optarg, 0, 65535);
			port_set = 1;
			break;
		case 'l':
			copy_arg(cfg.port.addr, sizeof(cfg.port.addr),
				 "--listen", optarg);
			break;
		case OPT_MAX_CONNS:
			cfg.port.max_conns = (unsigned)num_arg(
				"--max-conns", optarg, 1, 1000000);
			break;
		case OPT_MAX_FILE:
			cfg.vault.max_file_size = num_arg(
				"--max-file-size", optarg, 16, 0xFFFFFEF0u);
			break;
		case OPT_MAX_UPLOADS:
			cfg.vault.max_uploads = (unsigned)num_arg(
				"--max-uploads", optarg, 1, 100000);
			break;
		case OPT_MIN_RATE:
			cfg.vault.min_rate = (unsigned)num_arg(
				"--min-rate", optarg, 0, 1u << 30);
			break;
		case OPT_TIMEOUT:
			cfg.timeout_ms = (unsigned)num_arg("--timeout", optarg,
							   1, 86400) *
					 1000u;
			break;
		case OPT_REQ_TIMEOUT:
			cfg.request_timeout_ms =
				(unsigned)num_arg("--request-timeout", optarg,
						  1, 86400) *
				1000u;
			break;
		case OPT_GRACE:
			cfg.engine.shutdown_grace_ms =
				(unsigned)num_arg("--shutdown-grace", optarg, 0,
						  86400) *
				1000u;
			break;
		case OPT_WORKERS:
			cfg.engine.workers =
				(unsigned)num_arg("--workers", optarg, 1, 16);
			break;
		case OPT_CONSOLE_PORT:
			cfg.console_listen.port = (uint16_t)num_arg(
				"--console-port", optarg, 0, 65535);
			break;
		case OPT_CONSOLE_LISTEN:
			copy_arg(cfg.console_listen.addr,
				 sizeof(cfg.console_listen.addr),
				 "--console-listen", optarg);
			break;
		case OPT_CONSOLE_SECRET:
			copy_arg(cfg.console.secret, sizeof(cfg.console.secret),
				 "--console-secret", optarg);
			secret_set = 1;
			break;
		case OPT_NO_CONSOLE:
			cfg.console_enabled = 0;
			break;
		case OPT_UPLOADS_PER_ADDR:
			cfg.vault.max_uploads_per_addr = (unsigned)num_arg(
				"--max-uploads-per-addr", optarg, 1, 100000);
			break;
		case OPT_KEY_LIFETIME:
			cfg.vault.key_lifetime_s = (unsigned)num_arg(
				"--key-lifetime", optarg, 0, 86400u * 365u);
			break;
		case OPT_KEY_FAILURES:
			cfg.vault.key_failures = (unsigned)num_arg(
				"--key-failures", optarg, 1, 1000);
			break;
		case OPT_REG_PER_MIN:
			cfg.max_reg_per_min = (unsigned)num_arg(
				"--max-reg-per-min", optarg, 0, 1000000);
			break;
		case OPT_MAX_CLIENTS:
			cfg.max_clients =
				num_arg("--max-clients", optarg, 1, UINT32_MAX);
			break;
		case OPT_MAX_MESSAGE:
			cfg.msg.max_content =
				num_arg("--max-message-size", optarg, 0,
					0xFFFFFFFFu - 25u);
			break;
		case OPT_MAX_QUEUED:
			cfg.msg.max_queued_n =
				num_arg("--max-queued", optarg, 1, UINT32_MAX);
			break;
		case OPT_MAX_QUEUED_BYTES:
			cfg.msg.max_queued_bytes =
				num_arg("--max-queued-bytes", optarg, 1,
					UINT64_MAX / 2);
			break;
		case OPT_PULL_CAP:
			cfg.msg.pull_cap = num_arg("--pull-cap", optarg, 1024,
						   0xFFFFFFFFu);
			break;
		case OPT_CONSOLE_SECRET_FILE:
			secret_file(cfg.console.secret,
				    sizeof(cfg.console.secret), optarg);
			secret_set = 1;
			break;
		case OPT_LOG_LEVEL:
			if (strcmp(optarg, "debug") == 0)
				bw_log_set_level(BW_LOG_DEBUG);
			else if (strcmp(optarg, "info") == 0)
				bw_log_set_level(BW_LOG_INFO);
			else if (strcmp(optarg, "warn") == 0)
				bw_log_set_level(BW_LOG_WARN);
			else if (strcmp(optarg, "error") == 0)
				bw_log_set_level(BW_LOG_ERROR);
			else {
				fprintf(stderr,
					"bulwarkd: unknown log level "
					"'%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("bulwarkd %s (vault protocol 3)\n", BW_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "bulwarkd: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}
	if (!port_set)
		cfg.port.port = port_from_files(cfg.data_dir, &cfg.port2);
	if (!secret_set && (env = getenv("BULWARK_CONSOLE_SECRET")) != NULL &&
	    env[0] != '\0')
		copy_arg(cfg.console.secret, sizeof(cfg.console.secret),
			 "BULWARK_CONSOLE_SECRET", env);
	if (cfg.console_enabled &&
	    bw_net_is_loopback(cfg.console_listen.addr) != 1 &&
	    cfg.console.secret[0] == '\0') {
		fprintf(stderr,
			"bulwarkd: the console on %s (not loopback) needs "
			"--console-secret\n",
			cfg.console_listen.addr);
		return 2;
	}
	bw_info("bulwarkd %s starting, data directory %s", BW_VERSION,
		cfg.data_dir);
	rc = bw_daemon_open(&d, &cfg);
	bw_wipe(cfg.console.secret, sizeof(cfg.console.secret));
	if (rc != 0) {
		bw_daemon_close(&d);
		fprintf(stderr, "bulwarkd: cannot start: %s\n",
			bw_strerror(rc));
		return 1;
	}
	rc = bw_daemon_run(&d);
	bw_daemon_close(&d);
	return rc == 0 ? 0 : 1;
}
