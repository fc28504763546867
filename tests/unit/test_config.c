/* bulwarkd's configuration file parser, one test per error it reports and
 * per form it accepts: every refusal names the file and the line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/daemon.h"

static char path[64];

static int
setup(void **state)
{
	(void)state;
	snprintf(path, sizeof(path), "/tmp/bw-config-%d.conf", (int)getpid());
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	(void)unlink(path);
	return 0;
}

/* Writes n bytes of text to the file and parses it into cfg. */
static int
parse(const char *text, size_t n, struct bw_daemon_cfg *cfg, char *why,
      size_t cap)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
	bw_daemon_cfg_defaults(cfg);
	why[0] = '\0';
	return bw_daemon_read_config(cfg, path, why, cap);
}

#define PARSE(text, cfg, why)                                                  \
	parse(text, sizeof(text) - 1, cfg, why, sizeof(why))

/* The refusal names the file and the line, and says what. */
static void
refused_at(const char *why, unsigned line, const char *what)
{
	char want[128];

	snprintf(want, sizeof(want), "%s:%u: ", path, line);
	assert_non_null(strstr(why, want));
	assert_non_null(strstr(why, what));
}

static void
unknown_key_is_refused_with_its_line(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("# c\n\nport = 1\nbogus = 2\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 4, "unknown key 'bogus'");
	/* config names a file only on the command line */
	assert_int_equal(PARSE("config = /etc/x\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "unknown key 'config'");
}

static void
line_without_equals_is_refused(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("max-uploads 5\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "not \"key = value\"");
}

static void
bad_or_out_of_range_number_is_refused(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("max-uploads = five\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "max-uploads needs a number from 1 to 100000");
	assert_int_equal(PARSE("\nport = 70000\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 2, "port needs a number from 0 to 65535");
	assert_int_equal(PARSE("timeout = 0\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "timeout needs a number");
	assert_int_equal(PARSE("workers = -1\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "workers needs a number");
}

static void
flag_needs_yes_or_no(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("no-rooms = maybe\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "no-rooms needs yes or no");
	assert_int_equal(PARSE("no-rooms = yes\nno-console = no\n", &cfg, why),
			 0);
	assert_int_equal(cfg.rooms_enabled, 0);
	assert_int_equal(cfg.console_enabled, 1);
}

static void
bad_level_and_listen_address_are_refused(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("log-level = loud\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1,
		   "log-level needs debug, info, warn or error, not 'loud'");
	assert_int_equal(PARSE("metrics-listen = nowhere\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 1, "metrics-listen needs PORT or ADDR:PORT");
	/* a name is not resolved: it is refused here, not at bind time */
	assert_int_equal(PARSE("metrics-listen = localhost:9357\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 1, "metrics-listen needs PORT or ADDR:PORT");
	assert_int_equal(PARSE("\nlisten = example.org\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 2, "listen needs a numeric IPv4 or IPv6 address");
	assert_int_equal(PARSE("rooms-listen = 1.2.3\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 1, "rooms-listen needs a numeric");
	assert_int_equal(PARSE("console-listen = ::1x\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 1, "console-listen needs a numeric");
}

/* A port alone is on loopback; an address and port as given. */
static void
metrics_listen_forms(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("metrics-listen = 9357\n", &cfg, why), 0);
	assert_string_equal(cfg.metrics_listen.addr, "127.0.0.1");
	assert_int_equal(cfg.metrics_listen.port, 9357);
	assert_true(cfg.metrics_enabled);
	assert_int_equal(PARSE("metrics-listen = [::1]:0\n", &cfg, why), 0);
	assert_string_equal(cfg.metrics_listen.addr, "::1");
	assert_int_equal(cfg.metrics_listen.port, 0);
	assert_int_equal(
		PARSE("listen = ::\nrooms-listen = 127.0.0.2\n", &cfg, why), 0);
	assert_string_equal(cfg.port.addr, "::");
}

/* "key =" never means an empty path, address or secret. */
static void
empty_values_are_refused(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("data-dir =\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "data-dir needs a value");
	assert_int_equal(PARSE("port = 1\nlisten =   \n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 2, "listen needs a value");
	assert_int_equal(PARSE("console-secret =\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "console-secret needs a value");
	assert_int_equal(PARSE("log-file =\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "log-file needs a value");
	assert_int_equal(PARSE("max-uploads =\n", &cfg, why), BW_ECONFIG);
	refused_at(why, 1, "max-uploads needs a value");
}

static void
too_long_string_is_refused(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512], text[5000];

	(void)state;
	memcpy(text, "data-dir = ", 11);
	memset(text + 11, 'a', 4900);
	text[4911] = '\n';
	assert_int_equal(parse(text, 4912, &cfg, why, sizeof(why)), BW_ECONFIG);
	refused_at(why, 1, "data-dir is too long");
	memcpy(text, "console-secret = ", 17);
	memset(text + 17, 's', 600);
	text[617] = '\n';
	assert_int_equal(parse(text, 618, &cfg, why, sizeof(why)), BW_ECONFIG);
	refused_at(why, 1, "console-secret is too long");
}

static void
missing_file_and_nul_bytes_are_refused(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	bw_daemon_cfg_defaults(&cfg);
	assert_int_equal(bw_daemon_read_config(&cfg, "/nonexistent/bw.conf",
					       why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, "/nonexistent/bw.conf: "));
	assert_int_equal(parse("port = 1\n\0\n", 10, &cfg, why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, "not a text file"));
}

static void
a_fifo_is_refused_without_blocking(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	(void)unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	bw_daemon_cfg_defaults(&cfg);
	assert_int_equal(bw_daemon_read_config(&cfg, path, why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, path));
}

/* The secret's file: its first line, which must hold one. */
static void
console_secret_file_needs_a_first_line(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512], text[128];
	char secret[sizeof(path) + 8];
	FILE *f;

	(void)state;
	snprintf(secret, sizeof(secret), "%s.secret", path);
	f = fopen(secret, "w");
	assert_non_null(f);
	fputs("\nlater line\n", f);
	fclose(f);
	snprintf(text, sizeof(text), "console-secret-file = %s\n", secret);
	assert_int_equal(parse(text, strlen(text), &cfg, why, sizeof(why)),
			 BW_ECONFIG);
	refused_at(why, 1, "no secret on its first line");
	f = fopen(secret, "w");
	assert_non_null(f);
	fputs("s3cret\r\nignored\n", f);
	fclose(f);
	assert_int_equal(parse(text, strlen(text), &cfg, why, sizeof(why)), 0);
	assert_string_equal(cfg.console.secret, "s3cret");
	assert_true(cfg.secret_given);
	(void)unlink(secret);
	assert_int_equal(parse(text, strlen(text), &cfg, why, sizeof(why)),
			 BW_ECONFIG);
	refused_at(why, 1, "console-secret-file ");
}

/* What only bw_daemon_opt_set itself can be asked (getopt stops these on
 * the command line; the file's flags go through yes/no first). */
static void
opt_set_refuses_what_getopt_would(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	bw_daemon_cfg_defaults(&cfg);
	assert_int_equal(bw_daemon_opt_set(&cfg, "nope", "1", why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, "unknown option 'nope'"));
	assert_int_equal(
		bw_daemon_opt_set(&cfg, "no-rooms", "1", why, sizeof(why)),
		BW_ECONFIG);
	assert_non_null(strstr(why, "no-rooms takes no value"));
	assert_int_equal(
		bw_daemon_opt_set(&cfg, "port", NULL, why, sizeof(why)),
		BW_ECONFIG);
	assert_non_null(strstr(why, "port needs a value"));
	assert_int_equal(
		bw_daemon_opt_set(&cfg, "no-rooms", NULL, why, sizeof(why)), 0);
	assert_int_equal(cfg.rooms_enabled, 0);
}

/* BULWARK_CONSOLE_SECRET is an option too, and checked like one. */
static void
environment_secret_is_checked(void **state)
{
	struct bw_daemon_cfg cfg;
	struct bw_daemon_args args;
	char why[512], big[700];

	(void)state;
	memset(&args, 0, sizeof(args));
	memset(big, 'e', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(setenv("BULWARK_CONSOLE_SECRET", big, 1), 0);
	assert_int_equal(bw_daemon_configure(&cfg, &args, why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why,
			       "BULWARK_CONSOLE_SECRET: console-secret is too "
			       "long"));
	assert_int_equal(setenv("BULWARK_CONSOLE_SECRET", "envsecret", 1), 0);
	assert_int_equal(bw_daemon_configure(&cfg, &args, why, sizeof(why)), 0);
	assert_string_equal(cfg.console.secret, "envsecret");
	/* an option wins over the environment */
	args.name[0] = "console-secret";
	args.value[0] = "flag";
	args.n = 1;
	assert_int_equal(bw_daemon_configure(&cfg, &args, why, sizeof(why)), 0);
	assert_string_equal(cfg.console.secret, "flag");
	assert_int_equal(unsetenv("BULWARK_CONSOLE_SECRET"), 0);
}

/* A console off loopback needs a secret: at start, and a SIGHUP cannot
 * take it away (the address itself only changes at a restart). */
static void
console_off_loopback_keeps_its_secret(void **state)
{
	struct bw_daemon_cfg running, fresh;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("console-listen = 0.0.0.0\n", &running, why), 0);
	assert_int_equal(bw_daemon_cfg_check(&running, why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, "the console on 0.0.0.0 (not loopback) "
				    "needs --console-secret"));
	assert_int_equal(PARSE("console-listen = 0.0.0.0\nconsole-secret = "
			       "s\n",
			       &running, why),
			 0);
	assert_int_equal(bw_daemon_cfg_check(&running, why, sizeof(why)), 0);
	/* the reload drops the secret: refused */
	assert_int_equal(PARSE("console-listen = 0.0.0.0\n", &fresh, why), 0);
	assert_int_equal(
		bw_daemon_reload_check(&running, &fresh, why, sizeof(why)),
		BW_ECONFIG);
	/* ... also when the file moves the console to loopback, which only
	 * a restart would do */
	assert_int_equal(PARSE("console-listen = 127.0.0.1\n", &fresh, why), 0);
	assert_int_equal(
		bw_daemon_reload_check(&running, &fresh, why, sizeof(why)),
		BW_ECONFIG);
	/* a new secret is fine */
	assert_int_equal(PARSE("console-listen = 0.0.0.0\nconsole-secret = "
			       "t\n",
			       &fresh, why),
			 0);
	assert_int_equal(
		bw_daemon_reload_check(&running, &fresh, why, sizeof(why)), 0);
	/* off, the console needs nothing */
	assert_int_equal(PARSE("console-listen = 0.0.0.0\nno-console = yes\n",
			       &fresh, why),
			 0);
	assert_int_equal(bw_daemon_cfg_check(&fresh, why, sizeof(why)), 0);
}

/* Comments, blank lines, blanks around '=', CR LF and no last newline. */
static void
comments_blanks_and_crlf_are_accepted(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(PARSE("# a comment\r\n   # another\r\n\r\n"
			       "\tmax-uploads\t=  7 \r\n"
			       "console-secret = a#b = c\r\n"
			       "rooms-rate=3",
			       &cfg, why),
			 0);
	assert_int_equal(cfg.vault.max_uploads, 7);
	assert_string_equal(cfg.console.secret, "a#b = c");
	assert_int_equal(cfg.rooms.rate, 3);
	assert_true(cfg.secret_given);
}

/* A '#' after a blank ends the value (a comment), as nginx, HAProxy and
 * postgresql.conf read it; quotes keep a value as written. */
static void
trailing_comments_and_quoted_values(void **state)
{
	struct bw_daemon_cfg cfg;
	char why[512];

	(void)state;
	assert_int_equal(
		PARSE("max-uploads = 7   # at most seven\n"
		      "rooms-rate = 3\t# lines a second\n"
		      "console-secret = \"s3cr#t with # and \" # quoted\n"
		      "no-rooms = yes # a flag too\n",
		      &cfg, why),
		0);
	assert_int_equal(cfg.vault.max_uploads, 7);
	assert_int_equal(cfg.rooms.rate, 3);
	assert_string_equal(cfg.console.secret, "s3cr#t with # and ");
	assert_int_equal(PARSE("max-uploads = 7 #\n", &cfg, why), 0);
	assert_int_equal(cfg.vault.max_uploads, 7);
	assert_int_equal(PARSE("console-secret = \"open\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 1, "quote");
	assert_int_equal(PARSE("console-secret = \"a\" b\n", &cfg, why),
			 BW_ECONFIG);
	refused_at(why, 1, "quote");
	/* nothing left once the comment goes: an empty value, refused */
	assert_int_equal(PARSE("max-uploads = # none\n", &cfg, why),
			 BW_ECONFIG);
}

/* Flags win: the arguments are applied after the file. */
static void
arguments_win_over_the_file(void **state)
{
	struct bw_daemon_cfg cfg;
	struct bw_daemon_args args;
	char why[512];

	(void)state;
	assert_int_equal(
		PARSE("max-uploads = 7\nrooms-rate = 3\nport = 5\n", &cfg, why),
		0);
	memset(&args, 0, sizeof(args));
	args.name[0] = "config";
	args.value[0] = path;
	args.name[1] = "max-uploads";
	args.value[1] = "9";
	args.n = 2;
	assert_int_equal(bw_daemon_configure(&cfg, &args, why, sizeof(why)), 0);
	assert_int_equal(cfg.vault.max_uploads, 9);
	assert_int_equal(cfg.rooms.rate, 3);
	assert_int_equal(cfg.port.port, 5);
	args.name[1] = "max-uploads";
	args.value[1] = "0";
	assert_int_equal(bw_daemon_configure(&cfg, &args, why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, "--max-uploads needs a number"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			unknown_key_is_refused_with_its_line, setup, teardown),
		cmocka_unit_test_setup_teardown(line_without_equals_is_refused,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			bad_or_out_of_range_number_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(flag_needs_yes_or_no, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			bad_level_and_listen_address_are_refused, setup,
			teardown),
		cmocka_unit_test_setup_teardown(metrics_listen_forms, setup,
						teardown),
		cmocka_unit_test_setup_teardown(empty_values_are_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(too_long_string_is_refused,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			console_secret_file_needs_a_first_line, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			opt_set_refuses_what_getopt_would, setup, teardown),
		cmocka_unit_test_setup_teardown(environment_secret_is_checked,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			console_off_loopback_keeps_its_secret, setup, teardown),
		cmocka_unit_test_setup_teardown(
			missing_file_and_nul_bytes_are_refused, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			a_fifo_is_refused_without_blocking, setup, teardown),
		cmocka_unit_test_setup_teardown(
			comments_blanks_and_crlf_are_accepted, setup, teardown),
		cmocka_unit_test_setup_teardown(
			trailing_comments_and_quoted_values, setup, teardown),
		cmocka_unit_test_setup_teardown(arguments_win_over_the_file,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
